//! The request bookkeeping decided without a daemon running.

use super::bookkeeping::*;
use crate::engine::{EngineGone, Outcome};
use crate::states::{RequestState, Status, Terminal};
use crate::store::db::UpgradeRecord;
use crate::store::lock::LockBusy;

fn outcome(terminal: Terminal) -> Outcome {
    Outcome {
        upgrade_id: "u1".into(),
        terminal,
        from_version: None,
        to_version: "2.0.0".into(),
        error: None,
        backup: None,
    }
}

#[test]
fn a_finished_upgrade_ends_its_request_with_the_terminal_state() {
    let settled = settle("u1", Some(Ok(outcome(Terminal::RolledBack))));
    assert_eq!(settled, Settled::Ended(Terminal::RolledBack));
    assert_eq!(settled.request_state(), (RequestState::Done, Some("rolled_back".into())));
}

#[test]
fn a_held_lock_requeues_and_other_errors_end_the_request_with_their_reason() {
    let busy =
        anyhow::Error::new(LockBusy { path: "/s/upgraderd.lock".into(), holder: None }).context("taking the lock");
    assert_eq!(settle("u1", Some(Err(busy))).request_state(), (RequestState::Queued, None));
    let broken = settle("u1", Some(Err(anyhow::anyhow!("state database is read-only"))));
    assert_eq!(broken.request_state(), (RequestState::Done, Some("state database is read-only".into())));
    assert!(matches!(settle("u1", None), Settled::CouldNotRun(_)));
}

#[test]
fn an_engine_gone_leaves_its_own_request_running_and_requeues_one_that_only_met_an_orphans() {
    let gone = |id: &str| anyhow::Error::new(EngineGone { upgrade_id: id.into(), at: Status::HealthCheck });
    assert_eq!(settle("u1", Some(Err(gone("u1")))).request_state(), (RequestState::Running, None));
    // Recovering u0 before u1 began met the engine gone: nothing of u1 ran, and it must not be stranded.
    let recovering = gone("u0").context("putting right an earlier upgrade");
    assert_eq!(settle("u1", Some(Err(recovering))).request_state(), (RequestState::Queued, None));
}

#[test]
fn after_a_restart_only_unswitched_requests_run_again() {
    let switched = UpgradeRecord { switched: true, status: Status::RollingBack, ..Default::default() };
    assert_eq!(after_restart(Some(&switched)), (RequestState::Done, Some("rolling_back".into())));
    let unswitched = UpgradeRecord { status: Status::Downloading, ..Default::default() };
    assert_eq!(after_restart(Some(&unswitched)), (RequestState::Queued, None));
    assert_eq!(after_restart(None), (RequestState::Queued, None));
}

#[test]
fn after_a_restart_a_request_whose_upgrade_had_ended_is_done_and_never_runs_again() {
    // A refusal is terminal but never switched: without this it would be queued again.
    let refused = UpgradeRecord { status: Status::Failed, ..Default::default() };
    assert_eq!(ended_before_restart(Some(&refused)), Some((RequestState::Done, Some("failed".into()))));
    let complete = UpgradeRecord { switched: true, status: Status::Complete, ..Default::default() };
    assert_eq!(ended_before_restart(Some(&complete)), Some((RequestState::Done, Some("complete".into()))));
    // Still under way when the daemon died: recovery and `after_restart` decide.
    let interrupted = UpgradeRecord { status: Status::Downloading, ..Default::default() };
    assert_eq!(ended_before_restart(Some(&interrupted)), None);
    assert_eq!(ended_before_restart(None), None);
}

#[test]
fn a_recovery_due_while_an_upgrade_runs_does_not_wake_the_loop() {
    use std::time::{Duration, Instant};
    let now = Instant::now();
    let (passed, later) = (now - Duration::from_secs(5), now + Duration::from_secs(30));
    // Idle, a recovery that is due wakes the loop at once.
    assert_eq!(super::next_wake(false, passed, &[Some(later)]), Some(passed));
    // With an upgrade running it waits for the upgrade (its end wakes the loop) or the next deadline.
    assert_eq!(super::next_wake(true, passed, &[Some(later), None]), Some(later));
    assert_eq!(super::next_wake(true, passed, &[None]), None);
}
