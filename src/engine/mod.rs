//! The upgrade transaction: preflight, backup, fetch, switch, health gate,
//! rollback. Every transition is journaled before its side effect, so an
//! interrupted upgrade can always be told apart from a finished one.
//!
//! Beside it: recovery of interrupted upgrades (`recover`), the version check
//! and its policy (`check`), the status file the app reads with its heartbeat
//! (`status`) and the notifications (`announce`).

pub(crate) mod announce;
pub(crate) mod check;
pub(crate) mod data;
pub(crate) mod discover;
pub(crate) mod gate;
pub(crate) mod halt;
pub(crate) mod journal;
pub(crate) mod metrics;
pub(crate) mod pin;
pub(crate) mod pipeline;
pub(crate) mod preflight;
pub(crate) mod recover;
pub(crate) mod rollback;
pub(crate) mod sidecar;
pub(crate) mod status;
pub(crate) mod stores;
pub(crate) mod strategy;
pub(crate) mod transaction;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::ops::process::{EngineWait, Runner};
use crate::states::Status;
pub(crate) use crate::states::Terminal;
use crate::ui::Ui;

/// The id a dry run stands in for the one the upgrade gets: a dry run is
/// recorded nowhere, so it must not name an id that `history` never shows.
pub(crate) const DRY_RUN_ID: &str = "UPGRADE_ID";

/// What was asked for.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub target: crate::version::Target,
    pub backup: bool,
    pub force: bool,
    pub dry_run: bool,
    pub initiated_by: crate::states::Initiator,
    pub strategy: crate::states::Strategy,
    /// Given by the app's trigger; generated otherwise.
    pub upgrade_id: Option<String>,
    /// A stop request: before the switch it abandons the upgrade and ends interruptible children.
    pub shutdown: Option<crate::signals::Shutdown>,
}

impl Request {
    /// Asked for by the app (a trigger): a request, bound by the operator's
    /// policy, downgrade protection and quarantine; its `force` and
    /// `backup: false` count only where the operator opted in.
    pub(crate) fn is_from_app(&self) -> bool {
        self.initiated_by == crate::states::Initiator::Trigger
    }
}

/// The result of one upgrade attempt.
#[derive(Debug, Clone)]
pub(crate) struct Outcome {
    pub upgrade_id: String,
    pub terminal: Terminal,
    pub from_version: Option<String>,
    pub to_version: String,
    pub error: Option<String>,
    pub backup: Option<PathBuf>,
}

impl Outcome {
    /// The outcome as the app, notifications and `--json` see it.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "upgradeId": self.upgrade_id,
            "status": self.terminal.as_str(),
            "fromVersion": self.from_version,
            "toVersion": self.to_version,
            "error": self.error,
            "backupPath": self.backup,
        })
    }
}

/// The runner of everything that drives the deployment: its docker and
/// compose calls wait out an engine that is briefly unreachable (a restart),
/// for up to `UPGRADERD_ENGINE_WAIT` each time, said through `ui`.
pub(crate) fn deployment_runner(config: &Config, ui: &Ui, dry_run: bool) -> Runner {
    let ui = ui.clone();
    let announce = Arc::new(move |line: &str| ui.warn(line));
    Runner::new(dry_run).with_engine_wait(EngineWait::new(config.engine_wait, &config.docker, announce))
}

/// An attempt left interrupted, not ended: the Docker engine stayed
/// unreachable past `UPGRADERD_ENGINE_WAIT`, so what failed since says
/// nothing about the app. Its row stays unfinished at `at`; recovery (`watch`,
/// or the next `upgrade`) finishes it once the engine answers, as it finishes
/// an attempt whose upgrader was killed.
#[derive(Debug)]
pub(crate) struct EngineGone {
    pub upgrade_id: String,
    pub at: Status,
}

impl std::fmt::Display for EngineGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the Docker engine stayed unreachable past UPGRADERD_ENGINE_WAIT; upgrade {} is left interrupted during \
             {}, not ended: once the engine answers, `upgraderd watch` or the next `upgraderd upgrade` finishes it \
             (after the switch, by putting the previous version and its data back)",
            self.upgrade_id, self.at
        )
    }
}

impl std::error::Error for EngineGone {}

/// A random RFC 4122 version-4 id, the shape the app's API uses.
pub(crate) fn new_upgrade_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = (nanos ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// One error naming every failure of `results`, or `Ok` when none failed:
/// for undo steps that are each tried whatever the others do.
pub(crate) fn joined<const N: usize>(results: [anyhow::Result<()>; N]) -> anyhow::Result<()> {
    let failures: Vec<String> = results.into_iter().filter_map(|r| r.err().map(|e| format!("{e:#}"))).collect();
    match failures.is_empty() {
        true => Ok(()),
        false => Err(anyhow::anyhow!(failures.join("; "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_ids_look_like_uuids() {
        let id = new_upgrade_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_upgrade_id());
    }
}
