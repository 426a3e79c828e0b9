//! Bounded waits: a test polls for the condition it needs instead of sleeping
//! a fixed time, and fails naming what never happened (and what it saw last).

use std::time::{Duration, Instant};

/// A wait for something to happen: what it is, how long at most, how often to look.
pub struct Wait<'a> {
    what: String,
    within: Duration,
    every: Duration,
    context: Option<Box<dyn Fn() -> String + 'a>>,
}

/// Starts describing a wait for `what` (at most 30 s, looking every 20 ms unless told).
pub fn wait(what: impl Into<String>) -> Wait<'static> {
    Wait { what: what.into(), within: Duration::from_secs(30), every: Duration::from_millis(20), context: None }
}

impl<'a> Wait<'a> {
    pub fn within(mut self, limit: Duration) -> Self {
        self.within = limit;
        self
    }

    pub fn every(mut self, interval: Duration) -> Self {
        self.every = interval;
        self
    }

    /// What to print when the wait fails: the state the test was watching.
    pub fn showing<'b>(self, context: impl Fn() -> String + 'b) -> Wait<'b> {
        Wait { what: self.what, within: self.within, every: self.every, context: Some(Box::new(context)) }
    }

    /// Polls `probe` until it returns a value, or panics once the time is up.
    #[track_caller]
    pub fn until<T>(self, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + self.within;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            if Instant::now() >= deadline {
                let seen = self.context.as_ref().map(|c| c()).unwrap_or_default();
                panic!("timed out after {:?} waiting for {}\n{seen}", self.within, self.what);
            }
            std::thread::sleep(self.every);
        }
    }

    /// Polls until `condition` holds.
    #[track_caller]
    pub fn until_true(self, mut condition: impl FnMut() -> bool) {
        self.until(|| condition().then_some(()))
    }
}
