//! The daemon's bookkeeping of requests, as pure decisions: what a worker's
//! result means for its request, what a restart does with a request a killed
//! daemon left running, and which spool names can be claimed.

use anyhow::Result;

use crate::engine::{EngineGone, Outcome};
use crate::states::{RequestState, Terminal};
use crate::store::db::UpgradeRecord;
use crate::store::lock::LockBusy;

/// The longest spool file name: its claim name (`.<name>.claimed`) must stay within the 255-byte limit.
pub(super) const MAX_SPOOL_NAME: usize = 200;

/// Whether upgraderd can claim a spool file by this name.
pub(super) fn spool_name_ok(name: &[u8]) -> bool {
    name.len() <= MAX_SPOOL_NAME && std::str::from_utf8(name).is_ok()
}

/// How a worker's upgrade ended, as far as its request is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Settled {
    /// It reached a terminal state.
    Ended(Terminal),
    /// Another upgrader held the lock: the request waits and is tried again.
    WaitForLock(String),
    /// It could not start (bad configuration, unreadable state): the reason ends the request.
    CouldNotRun(String),
    /// The Docker engine stayed away: the upgrade is left unfinished, and
    /// recovery finishes it once the engine answers; the request runs on until then.
    Interrupted(String),
    /// The engine stayed away while an earlier, unfinished upgrade was being
    /// put right before this one began: nothing of this one ran; it waits.
    WaitForEngine(String),
}

impl Settled {
    pub(super) fn request_state(&self) -> (RequestState, Option<String>) {
        match self {
            Settled::Ended(terminal) => (RequestState::Done, Some(terminal.as_str().to_string())),
            Settled::WaitForLock(_) | Settled::WaitForEngine(_) => (RequestState::Queued, None),
            Settled::CouldNotRun(reason) => (RequestState::Done, Some(reason.clone())),
            Settled::Interrupted(_) => (RequestState::Running, None),
        }
    }
}

/// What the result of the worker's upgrade `upgrade_id` means for its request.
pub(super) fn settle(upgrade_id: &str, result: Option<Result<Outcome>>) -> Settled {
    let engine_gone =
        |e: &anyhow::Error| e.chain().find_map(|c| c.downcast_ref::<EngineGone>()).map(|g| g.upgrade_id.clone());
    match result {
        Some(Ok(outcome)) => Settled::Ended(outcome.terminal),
        Some(Err(e)) if e.chain().any(|c| c.is::<LockBusy>()) => Settled::WaitForLock(e.to_string()),
        Some(Err(e)) => match engine_gone(&e) {
            Some(gone) if gone == upgrade_id => Settled::Interrupted(e.to_string()),
            Some(_) => Settled::WaitForEngine(e.to_string()),
            None => Settled::CouldNotRun(format!("{e:#}")),
        },
        None => Settled::CouldNotRun("the upgrade thread ended without a result".into()),
    }
}

/// A request a killed daemon left `running` whose upgrade had already ended
/// (the daemon died between the end and its bookkeeping): done, with the
/// upgrade's status, before recovery ends any other. `None`: not ended yet.
pub(super) fn ended_before_restart(row: Option<&UpgradeRecord>) -> Option<(RequestState, Option<String>)> {
    let row = row.filter(|r| r.is_terminal())?;
    Some((RequestState::Done, Some(row.status.as_str().to_string())))
}

/// A request a killed daemon left `running`: done when its upgrade got past its
/// switch (recovery puts that right), queued again when it had changed nothing.
pub(super) fn after_restart(row: Option<&UpgradeRecord>) -> (RequestState, Option<String>) {
    match row {
        Some(row) if row.switched => (RequestState::Done, Some(row.status.as_str().to_string())),
        // Interrupted before its switch (nothing changed) or before it began: the app still wants it.
        _ => (RequestState::Queued, None),
    }
}
