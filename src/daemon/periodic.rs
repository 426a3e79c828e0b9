//! What the daemon does on a schedule: the version check (with the
//! auto-upgrade window, and a check as the window opens) and the recovery
//! of unfinished upgrades whose upgrader is gone.

use std::time::{Duration, Instant};

use super::{Daemon, AFTER_OPENING};
use crate::engine::{check, new_upgrade_id, recover};
use crate::states::{Initiator, RequestState};
use crate::store::db::{now_ms, QueuedRequest};
use crate::window::{self, Verdict};

impl Daemon {
    /// The periodic version check: the banner file, and with
    /// `UPGRADERD_AUTO_UPGRADE=true` a request for the allowed update.
    pub(super) fn check_version(&mut self) {
        let report = match check::run(&self.config) {
            Ok(report) => report,
            Err(e) => return self.ui.warn(format!("version check failed: {e:#}")),
        };
        if let Err(e) = check::write_banner(&self.config, &report) {
            self.ui.warn(format!("{e:#}"));
        }
        crate::engine::metrics::after_check(&self.config, &self.ui, &report);
        let Some(version) = report.allowed_version else {
            return self.ui.detail(format!("version check: running {}, nothing to do", report.current_version));
        };
        if !self.config.auto_upgrade {
            return self.ui.info(format!(
                "version check: {version} is available (set UPGRADERD_AUTO_UPGRADE=true to take it automatically)"
            ));
        }
        if let Some(Verdict::Closed { opens }) = self.auto_upgrade_window() {
            return self.ui.info(format!(
                "version check: {version} is available; automatic upgrades wait for the window {} (host local time), \
                 which opens {}",
                self.config.auto_upgrade_window,
                window::show(&opens)
            ));
        }
        match self.db.has_pending_request() {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => return self.ui.warn(format!("cannot read the request queue: {e:#}")),
        }
        let request = QueuedRequest {
            upgrade_id: new_upgrade_id(),
            version,
            backup: true,
            source: Initiator::CheckVersion,
            received_at: now_ms(),
            state: RequestState::Queued,
            ..QueuedRequest::default()
        };
        if let Err(e) = self.queue(&request) {
            self.ui.warn(format!("cannot queue the automatic upgrade: {e:#}"));
        }
    }

    /// Where now stands in `UPGRADERD_AUTO_UPGRADE_WINDOW`, when automatic upgrades are on and one is set.
    pub(super) fn auto_upgrade_window(&self) -> Option<Verdict> {
        let windows = &self.config.auto_upgrade_window;
        (self.config.auto_upgrade && !windows.is_unrestricted()).then(|| self.clock.verdict(windows))
    }

    pub(super) fn window_summary(&self, verdict: &Verdict) -> String {
        window::summary(&self.config.auto_upgrade_window, verdict)
    }

    /// The next periodic check: `UPGRADERD_CHECK_EVERY` from now, or as the auto-upgrade window opens if sooner.
    pub(super) fn next_check(&self) -> Instant {
        let every = Instant::now() + self.config.check_every;
        match self.auto_upgrade_window() {
            Some(Verdict::Closed { opens }) => {
                let until = (opens - self.clock.now()).to_std().unwrap_or_default();
                every.min(Instant::now() + until + AFTER_OPENING)
            }
            _ => every,
        }
    }

    /// Reconciles unfinished upgrades; `false` when it could not (the lock was held, or it failed).
    pub(super) fn recover(&mut self, stale_after: Option<Duration>) -> bool {
        match recover::reconcile_if_unlocked(&self.config, &self.ui, stale_after) {
            Ok(Some(outcomes)) => {
                for outcome in &outcomes {
                    self.ui.info(format!("recovered upgrade {}: {}", outcome.upgrade_id, outcome.terminal.as_str()));
                }
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.ui.warn(format!("recovery failed: {e:#}; trying again"));
                false
            }
        }
    }
}
