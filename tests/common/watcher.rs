//! A running `upgraderd watch` against a fake deployment: its log, bounded
//! waits on it, signals, and a SIGKILL when dropped.

use std::cell::RefCell;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use super::fake_engine::Deployment;
use super::wait;

pub struct Watcher {
    child: RefCell<Child>,
    log: PathBuf,
}

impl Watcher {
    /// Starts `watch` and waits until it says it is watching.
    pub fn start(d: &Deployment) -> Watcher {
        static STARTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let log = d.sb.path().join(format!("watch-{n}.log"));
        let child =
            d.sb.command(&["watch"])
                .stdout(Stdio::null())
                .stderr(fs::File::create(&log).unwrap())
                .spawn()
                .expect("watch starts");
        let w = Watcher { child: RefCell::new(child), log };
        w.wait_for_log("watching ");
        w
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    #[track_caller]
    pub fn wait_for_log(&self, needle: &str) {
        self.wait_for_log_count(needle, 1);
    }

    #[track_caller]
    pub fn wait_for_log_count(&self, needle: &str, count: usize) {
        wait(format!("{count} times {needle:?} in the daemon's log"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(10))
            .showing(|| self.log())
            .until_true(|| self.log().matches(needle).count() >= count);
    }

    pub fn is_alive(&self) -> bool {
        self.child.borrow_mut().try_wait().unwrap().is_none()
    }

    pub fn signal(&self, signal: i32) {
        unsafe { libc::kill(self.child.borrow().id() as i32, signal) };
    }

    /// SIGTERM, then the exit code (within `within`).
    #[track_caller]
    pub fn stop(self, within: Duration) -> i32 {
        self.signal(libc::SIGTERM);
        wait("watch to stop")
            .within(within)
            .showing(|| self.log())
            .until(|| self.child.borrow_mut().try_wait().unwrap())
            .code()
            .unwrap_or(-1)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}
