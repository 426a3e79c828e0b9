//! The request bookkeeping decided without a daemon running.

use super::bookkeeping::*;
use crate::engine::Outcome;
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
    let settled = settle(Some(Ok(outcome(Terminal::RolledBack))));
    assert_eq!(settled, Settled::Ended(Terminal::RolledBack));
    assert_eq!(settled.request_state(), (RequestState::Done, Some("rolled_back".into())));
}

#[test]
fn a_held_lock_requeues_and_other_errors_end_the_request_with_their_reason() {
    let busy =
        anyhow::Error::new(LockBusy { path: "/s/upgraderd.lock".into(), holder: None }).context("taking the lock");
    assert_eq!(settle(Some(Err(busy))).request_state(), (RequestState::Queued, None));
    let broken = settle(Some(Err(anyhow::anyhow!("state database is read-only"))));
    assert_eq!(broken.request_state(), (RequestState::Done, Some("state database is read-only".into())));
    assert!(matches!(settle(None), Settled::CouldNotRun(_)));
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
