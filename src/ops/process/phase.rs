//! How far the run of one child has got, as a small state machine:
//!
//! ```text
//! running ──timeout or stop──▶ terminating ──grace over──▶ killed
//!    │      (SIGTERM to group)      │        (SIGKILL)        │
//!    └───────────── exit ───────────┴────────── exit ─────────┘
//!                                   ▼
//!           draining (pipes read to their end, for at most the linger)
//!                                   ▼
//!                                 done
//! ```
//!
//! Transitions are pure: they take the time and return the signal to send, so
//! they are tested without a child and without waiting. How the child ended
//! ([`Exit`]) is what upgraderd did to it plus its exit status.

use std::process::ExitStatus;
use std::time::{Duration, Instant};

use super::Ended;

/// Why upgraderd ended a child that had not exited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reason {
    /// It outlived its timeout (this long).
    TimedOut(Duration),
    /// upgraderd was asked to stop and the command is interruptible.
    Interrupted,
}

/// What upgraderd did to end a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Intervention {
    /// Nothing: it exited on its own.
    None,
    /// SIGTERM was sent to its group.
    Terminated(Reason),
    /// SIGTERM was not enough and SIGKILL was sent.
    Killed(Reason),
}

/// How a child ended: its exit status and what upgraderd did to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Exit {
    pub status: ExitStatus,
    pub by: Intervention,
}

impl Exit {
    /// What the caller is told: a stop upgraderd caused wins over the exit status it led to.
    pub(super) fn ended(&self) -> Ended {
        match self.by {
            Intervention::None => Ended::from_status(self.status),
            Intervention::Terminated(Reason::Interrupted) | Intervention::Killed(Reason::Interrupted) => {
                Ended::Interrupted
            }
            Intervention::Terminated(Reason::TimedOut(after)) => Ended::TimedOut { after, killed: false },
            Intervention::Killed(Reason::TimedOut(after)) => Ended::TimedOut { after, killed: true },
        }
    }
}

/// A signal for the child's process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Signal {
    Term,
    Kill,
}

impl Signal {
    pub(super) fn number(self) -> libc::c_int {
        match self {
            Signal::Term => libc::SIGTERM,
            Signal::Kill => libc::SIGKILL,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// The child runs; it is ended at `deadline` (its timeout), if it has one.
    Running { deadline: Option<Instant> },
    /// SIGTERM went to the group; SIGKILL follows at `kill_at`.
    Terminating { reason: Reason, kill_at: Instant },
    /// SIGKILL went to the group; only its exit is awaited.
    Killed { reason: Reason },
    /// The child has exited; its pipes are read until they close or `until`
    /// (a grandchild may hold them open).
    Draining { exit: Exit, until: Instant },
    /// Nothing more to wait for.
    Done { exit: Exit },
}

/// The run of one child: its phase, its timing and how many pipes are still open.
#[derive(Debug)]
pub(super) struct Machine {
    phase: Phase,
    timeout: Option<Duration>,
    grace: Duration,
    linger: Duration,
    open_pipes: usize,
}

impl Machine {
    pub(super) fn start(started: Instant, timeout: Option<Duration>, grace: Duration, linger: Duration) -> Machine {
        Machine {
            phase: Phase::Running { deadline: timeout.map(|t| started + t) },
            timeout,
            grace,
            linger,
            open_pipes: 2,
        }
    }

    #[cfg(test)]
    pub(super) fn phase(&self) -> Phase {
        self.phase
    }

    pub(super) fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    /// How the child ended, once it has.
    pub(super) fn exit(&self) -> Option<Exit> {
        match self.phase {
            Phase::Draining { exit, .. } | Phase::Done { exit } => Some(exit),
            _ => None,
        }
    }

    /// When the next transition is due without any event, if ever.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Running { deadline } => deadline,
            Phase::Terminating { kill_at, .. } => Some(kill_at),
            Phase::Draining { until, .. } => Some(until),
            Phase::Killed { .. } | Phase::Done { .. } => None,
        }
    }

    /// Whether a stop request would still change anything (nothing was sent to the group yet).
    pub(super) fn heeds_stop(&self) -> bool {
        match self.phase {
            Phase::Running { .. } => true,
            Phase::Draining { exit, .. } => exit.by == Intervention::None,
            _ => false,
        }
    }

    /// Makes the transition whose deadline has passed at `now`, if any.
    pub(super) fn tick(&mut self, now: Instant) -> Option<Signal> {
        if self.next_deadline().is_none_or(|due| now < due) {
            return None;
        }
        match self.phase {
            Phase::Running { .. } => {
                let after = self.timeout.unwrap_or_default();
                self.terminate(Reason::TimedOut(after), now)
            }
            Phase::Terminating { reason, .. } => {
                self.phase = Phase::Killed { reason };
                Some(Signal::Kill)
            }
            Phase::Draining { exit, .. } => {
                self.phase = Phase::Done { exit };
                None
            }
            Phase::Killed { .. } | Phase::Done { .. } => None,
        }
    }

    /// upgraderd was asked to stop: an interruptible child still running gets SIGTERM.
    pub(super) fn stop_requested(&mut self, now: Instant) -> Option<Signal> {
        match self.phase {
            Phase::Running { .. } => self.terminate(Reason::Interrupted, now),
            // A grandchild still holding the pipes of a child that exited is stopped too.
            Phase::Draining { exit, until } if exit.by == Intervention::None => {
                let by = Intervention::Terminated(Reason::Interrupted);
                self.phase = Phase::Draining { exit: Exit { by, ..exit }, until };
                Some(Signal::Term)
            }
            _ => None,
        }
    }

    /// The child exited with `status`.
    pub(super) fn exited(&mut self, status: ExitStatus, now: Instant) {
        let by = match self.phase {
            Phase::Running { .. } => Intervention::None,
            Phase::Terminating { reason, .. } => Intervention::Terminated(reason),
            Phase::Killed { reason } => Intervention::Killed(reason),
            Phase::Draining { .. } | Phase::Done { .. } => return,
        };
        let exit = Exit { status, by };
        self.phase = Phase::Draining { exit, until: now + self.linger };
        self.finish_when_drained();
    }

    /// One of the child's pipes reached its end.
    pub(super) fn pipe_closed(&mut self) {
        self.open_pipes = self.open_pipes.saturating_sub(1);
        self.finish_when_drained();
    }

    fn terminate(&mut self, reason: Reason, now: Instant) -> Option<Signal> {
        self.phase = Phase::Terminating { reason, kill_at: now + self.grace };
        Some(Signal::Term)
    }

    fn finish_when_drained(&mut self) {
        if let Phase::Draining { exit, .. } = self.phase {
            if self.open_pipes == 0 {
                self.phase = Phase::Done { exit };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    const SECOND: Duration = Duration::from_secs(1);
    const GRACE: Duration = Duration::from_secs(10);
    const LINGER: Duration = Duration::from_secs(2);

    fn code(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    fn signalled(signal: i32) -> ExitStatus {
        ExitStatus::from_raw(signal)
    }

    fn machine(t0: Instant, timeout: Option<Duration>) -> Machine {
        Machine::start(t0, timeout, GRACE, LINGER)
    }

    fn close_both_pipes(m: &mut Machine) {
        m.pipe_closed();
        m.pipe_closed();
    }

    #[test]
    fn a_child_that_exits_on_its_own_drains_then_is_done() {
        let t0 = Instant::now();
        let mut m = machine(t0, Some(30 * SECOND));
        assert_eq!(m.next_deadline(), Some(t0 + 30 * SECOND));
        m.exited(code(3), t0 + SECOND);
        assert_eq!(
            m.phase(),
            Phase::Draining { exit: Exit { status: code(3), by: Intervention::None }, until: t0 + SECOND + LINGER }
        );
        close_both_pipes(&mut m);
        assert!(m.is_done());
        assert_eq!(m.exit().unwrap().ended(), Ended::Code(3));
    }

    #[test]
    fn pipes_closed_before_the_exit_is_seen_end_the_run_at_the_exit() {
        let t0 = Instant::now();
        let mut m = machine(t0, None);
        close_both_pipes(&mut m);
        assert!(matches!(m.phase(), Phase::Running { deadline: None }));
        m.exited(code(0), t0);
        assert!(m.is_done());
        assert!(m.exit().unwrap().ended().success());
    }

    #[test]
    fn nothing_happens_before_a_deadline() {
        let t0 = Instant::now();
        let mut m = machine(t0, Some(5 * SECOND));
        assert_eq!(m.tick(t0 + 4 * SECOND), None);
        assert!(matches!(m.phase(), Phase::Running { .. }));
        let mut without_timeout = machine(t0, None);
        assert_eq!(without_timeout.tick(t0 + 3600 * SECOND), None);
        assert_eq!(without_timeout.next_deadline(), None);
    }

    #[test]
    fn timeout_sends_sigterm_then_sigkill_after_the_grace_period() {
        let t0 = Instant::now();
        let mut m = machine(t0, Some(5 * SECOND));
        let timed_out = Reason::TimedOut(5 * SECOND);

        assert_eq!(m.tick(t0 + 5 * SECOND), Some(Signal::Term));
        assert_eq!(m.phase(), Phase::Terminating { reason: timed_out, kill_at: t0 + 5 * SECOND + GRACE });
        assert!(!m.heeds_stop(), "a stop request adds nothing once SIGTERM went out");
        assert_eq!(m.tick(t0 + 6 * SECOND), None, "still in its grace period");

        assert_eq!(m.tick(t0 + 5 * SECOND + GRACE), Some(Signal::Kill));
        assert_eq!(m.phase(), Phase::Killed { reason: timed_out });
        assert_eq!(m.next_deadline(), None, "after SIGKILL only the exit is awaited");
        assert_eq!(m.tick(t0 + 3600 * SECOND), None);

        m.exited(signalled(libc::SIGKILL), t0 + 16 * SECOND);
        close_both_pipes(&mut m);
        assert_eq!(m.exit().unwrap().ended(), Ended::TimedOut { after: 5 * SECOND, killed: true });
    }

    #[test]
    fn a_child_that_exits_on_sigterm_timed_out_without_being_killed() {
        let t0 = Instant::now();
        let mut m = machine(t0, Some(SECOND));
        m.tick(t0 + SECOND);
        m.exited(code(0), t0 + 2 * SECOND);
        assert_eq!(m.exit().unwrap().ended(), Ended::TimedOut { after: SECOND, killed: false });
    }

    #[test]
    fn a_stop_request_terminates_a_running_child_and_reports_an_interruption() {
        let t0 = Instant::now();
        let mut m = machine(t0, None);
        assert!(m.heeds_stop());
        assert_eq!(m.stop_requested(t0), Some(Signal::Term));
        assert_eq!(m.phase(), Phase::Terminating { reason: Reason::Interrupted, kill_at: t0 + GRACE });
        assert_eq!(m.stop_requested(t0 + SECOND), None, "SIGTERM is sent once");
        assert_eq!(m.tick(t0 + GRACE), Some(Signal::Kill));
        m.exited(signalled(libc::SIGKILL), t0 + GRACE);
        assert_eq!(m.exit().unwrap().ended(), Ended::Interrupted);
    }

    #[test]
    fn a_stop_while_draining_stops_the_grandchildren_holding_the_pipes() {
        let t0 = Instant::now();
        let mut m = machine(t0, None);
        m.exited(code(0), t0);
        assert!(m.heeds_stop());
        assert_eq!(m.stop_requested(t0 + SECOND), Some(Signal::Term));
        assert!(!m.heeds_stop());
        assert_eq!(m.next_deadline(), Some(t0 + LINGER), "the linger is not extended");
        close_both_pipes(&mut m);
        assert_eq!(m.exit().unwrap().ended(), Ended::Interrupted);
    }

    #[test]
    fn draining_gives_up_on_held_pipes_after_the_linger() {
        let t0 = Instant::now();
        let mut m = machine(t0, None);
        m.pipe_closed();
        m.exited(signalled(libc::SIGSEGV), t0);
        assert_eq!(m.tick(t0 + SECOND), None);
        assert!(!m.is_done());
        assert_eq!(m.tick(t0 + LINGER), None);
        assert!(m.is_done());
        assert_eq!(m.exit().unwrap().ended(), Ended::Signal(libc::SIGSEGV));
    }

    #[test]
    fn an_exit_is_recorded_once() {
        let t0 = Instant::now();
        let mut m = machine(t0, None);
        m.exited(code(1), t0);
        m.exited(code(2), t0 + SECOND);
        assert_eq!(m.exit().unwrap().status, code(1));
        assert_eq!(m.next_deadline(), Some(t0 + LINGER));
    }
}
