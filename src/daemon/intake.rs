//! Intake: the app's trigger and the spool directory beside it, claimed,
//! validated, recorded as queued requests in the database before the file is
//! removed (so no request is ever lost), or rejected with the reason written
//! to the status file.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use super::bookkeeping::{spool_name_ok, MAX_SPOOL_NAME};
use super::{Daemon, INCOMPLETE_GRACE, SETTLE};
use crate::config::{self};
use crate::engine::new_upgrade_id;
use crate::engine::status::Snapshot;
use crate::states::Initiator;
use crate::states::{RequestState, Status};
use crate::store::db::{now_ms, QueuedRequest};
use crate::store::shared_dir::SharedDir;
use crate::trigger::{self, Found, Parsed, TriggerDir};

impl Daemon {
    /// Looks at the trigger (and a claim left over), recording or rejecting what it finds.
    pub(super) fn intake(&mut self) {
        let complete = std::mem::take(&mut self.intake_complete);
        self.intake_at = None;
        if let Err(e) = self.trigger.dir.check() {
            // A trigger directory swapped for a link (or made again by someone else) is never used.
            self.watch = None;
            self.intake_at = Some(Instant::now() + self.poll_interval());
            return self.ui.warn(format!("{e}"));
        }
        if self.watch.is_none() {
            self.open_watch();
            self.intake_at = Some(Instant::now() + self.poll_interval());
        }
        let trigger = self.trigger.clone();
        if trigger.has_claim() && !self.process_claimed(&trigger, true) {
            return;
        }
        match self.trigger.look() {
            Ok(Found::Nothing) => {}
            Ok(Found::File { age }) if !complete && age < SETTLE => {
                // Written in place and maybe still being written: look again once it has settled.
                self.retry_intake_in(SETTLE - age);
            }
            Ok(_) => match trigger.claim() {
                Ok(true) => {
                    self.process_claimed(&trigger, true);
                }
                Ok(false) => {}
                Err(e) => self.ui.warn(format!("cannot claim the trigger {}: {e}", self.trigger.path().display())),
            },
            Err(e) => self.ui.warn(format!("cannot look at the trigger {}: {e}", self.trigger.path().display())),
        }
        self.intake_spool();
    }

    /// The spool form (`<trigger>.d/`, one file per request) loses nothing: every
    /// file is its own request, taken in name order. A leftover claim of a killed daemon goes first.
    fn intake_spool(&mut self) {
        let Some(spool) = self.spool_dir() else { return };
        let names = match spool.names() {
            Ok(names) => names,
            Err(e) => return self.ui.warn(format!("cannot list the spool {}: {e}", spool.path().display())),
        };
        let (names, odd): (Vec<_>, Vec<_>) = names.into_iter().partition(|n| spool_name_ok(n));
        for name in odd.iter().filter(|n| !n.starts_with(b".")) {
            self.reject_spool_name(&spool, name);
        }
        let names: Vec<String> = names.into_iter().filter_map(|n| String::from_utf8(n).ok()).collect();
        let claimed = names.iter().filter_map(|n| config::claimed_trigger(n));
        let waiting = names.iter().filter(|n| !n.starts_with('.') && !config::is_rejected(n));
        let pending: Vec<(String, bool)> =
            claimed.map(|n| (n.to_string(), true)).chain(waiting.map(|n| (n.clone(), false))).collect();
        for (name, already_claimed) in pending {
            let request = TriggerDir::new(spool.clone(), &name);
            let claimed = match already_claimed {
                true => Ok(true),
                false => request.claim(),
            };
            // Spool files are placed by rename, whole: nothing is waited for. One that could not be
            // claimed or recorded stops the pass, left in place: the next intake takes it first, so
            // requests are queued in name order.
            let taken = match claimed {
                Ok(true) => self.process_claimed(&request, false),
                // Gone meanwhile (its writer took it back): nothing to take.
                Ok(false) => true,
                Err(e) => {
                    self.ui.warn(format!("cannot claim the spooled request {}: {e}", request.path().display()));
                    false
                }
            };
            if !taken {
                self.retry_intake_in(Duration::from_secs(1));
                break;
            }
        }
    }

    /// A spool file whose name upgraderd cannot claim (not UTF-8, or too long to
    /// claim) is removed and its rejection recorded: never skipped without a word.
    fn reject_spool_name(&mut self, spool: &SharedDir, name: &[u8]) {
        let shown = String::from_utf8_lossy(name).into_owned();
        let reason = format!(
            "the spool file name {shown:?} is not UTF-8 or longer than {MAX_SPOOL_NAME} bytes; name requests like \
             `<nanoseconds>-<id>.json`"
        );
        self.record_rejection(&reason, None, None);
        if let Err(e) = spool.remove_bytes(name) {
            self.ui.warn(format!("cannot remove the rejected spool file {shown:?}: {e}"));
        }
    }

    /// The spool directory when the app made one; never created by upgraderd (it would be root's).
    fn spool_dir(&mut self) -> Option<Arc<SharedDir>> {
        let path = self.trigger.dir.path().join(config::spool_name(&self.trigger.name));
        if let Some(spool) = &self.spool {
            match spool.check() {
                Ok(()) => return Some(spool.clone()),
                Err(e) => {
                    self.ui.warn(format!("{e}"));
                    self.spool = None;
                    return None;
                }
            }
        }
        if !std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            return None;
        }
        match SharedDir::open(&path) {
            Ok(spool) => self.spool = Some(Arc::new(spool)),
            Err(e) => self.ui.warn(format!("{e}")),
        }
        if let (Some(watch), Some(_)) = (&mut self.watch, &self.spool) {
            if let Err(e) = watch.add_spool(&path) {
                self.ui.warn(format!("cannot watch the spool {} ({e}); it is polled", path.display()));
            }
        }
        self.spool.clone()
    }

    fn retry_intake_in(&mut self, delay: Duration) {
        let at = Instant::now() + delay;
        self.intake_at = Some(self.intake_at.map_or(at, |current| current.min(at)));
    }

    /// Reads, records or rejects the claimed trigger; `false` while it waits for its writer
    /// (only a trigger that may be written in place gets that `grace`).
    fn process_claimed(&mut self, trigger: &TriggerDir, grace: bool) -> bool {
        let bytes = match trigger.read_claimed() {
            Ok(bytes) => bytes,
            Err(reason) => {
                self.reject(trigger, &reason, None, None);
                return true;
            }
        };
        let raw = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
        match trigger::parse(&bytes) {
            Parsed::Incomplete if grace => {
                let since = *self.incomplete_since.get_or_insert_with(Instant::now);
                if since.elapsed() < INCOMPLETE_GRACE {
                    self.retry_intake_in(Duration::from_millis(100));
                    return false;
                }
                let reason = "the trigger is JSON that ends early and was not completed within 2s";
                self.reject(trigger, reason, Some(raw), None);
            }
            Parsed::Incomplete => self.reject(trigger, "the trigger is JSON that ends early", Some(raw), None),
            Parsed::Rejected(reason) => self.reject(trigger, &reason, Some(raw), None),
            Parsed::Request(request) if !self.config.enabled => {
                let reason = "upgrades from the app are disabled on this host (UPGRADERD_ENABLED=false)";
                self.reject(trigger, reason, Some(raw), request.upgrade_id.as_deref());
            }
            Parsed::Request(request) => {
                let queued = QueuedRequest {
                    upgrade_id: request.upgrade_id.clone().unwrap_or_else(new_upgrade_id),
                    version: request.version,
                    backup: request.backup,
                    force: request.force,
                    source: Initiator::Trigger,
                    raw: Some(raw),
                    received_at: now_ms(),
                    state: RequestState::Queued,
                    reason: None,
                };
                if !self.record(trigger, queued) {
                    return false;
                }
            }
        }
        self.incomplete_since = None;
        true
    }

    /// Records the trigger's request before the trigger is removed, so it is
    /// never lost; whether it was recorded (if not, the claim stays for the next intake).
    fn record(&mut self, trigger: &TriggerDir, queued: QueuedRequest) -> bool {
        if let Err(e) = self.queue(&queued) {
            // Leave the claim in place: the next intake tries again, nothing is lost.
            self.ui.warn(format!("cannot record the trigger's request ({e:#}); retrying"));
            self.retry_intake_in(Duration::from_secs(1));
            return false;
        }
        if let Err(e) = trigger.release() {
            self.ui.warn(format!("cannot remove the claimed trigger: {e}"));
        }
        true
    }

    /// Adds a request to the queue; a repeated upgrade id is a duplicate, not an error.
    pub(super) fn queue(&mut self, queued: &QueuedRequest) -> Result<()> {
        if self.db.insert_request(queued)? {
            self.ui.info(format!(
                "{}: upgrade {} to {} queued{}",
                queued.source,
                queued.upgrade_id,
                queued.version,
                if self.worker.is_some() { " behind the running upgrade" } else { "" }
            ));
            crate::engine::metrics::write(&self.config, &self.ui);
        } else {
            self.ui.info(format!(
                "{}: upgrade {} was already requested; duplicate ignored",
                queued.source, queued.upgrade_id
            ));
        }
        Ok(())
    }

    fn reject(&mut self, trigger: &TriggerDir, reason: &str, raw: Option<String>, upgrade_id: Option<&str>) {
        self.record_rejection(reason, raw, upgrade_id);
        if let Err(e) = trigger.reject() {
            self.ui.warn(format!("cannot move the rejected trigger aside: {e}"));
        }
    }

    /// The rejection in the request log, the daemon's log and (when no upgrade runs) the status file.
    fn record_rejection(&mut self, reason: &str, raw: Option<String>, upgrade_id: Option<&str>) {
        let upgrade_id = upgrade_id.map(str::to_string).unwrap_or_else(new_upgrade_id);
        self.ui.warn(format!("trigger rejected: {reason}"));
        let record = QueuedRequest {
            upgrade_id: upgrade_id.clone(),
            version: String::new(),
            source: Initiator::Trigger,
            raw,
            received_at: now_ms(),
            state: RequestState::Rejected,
            reason: Some(reason.to_string()),
            ..QueuedRequest::default()
        };
        if let Err(e) = self.db.insert_request(&record) {
            self.ui.warn(format!("cannot record the rejection: {e:#}"));
        }
        // While an upgrade runs, the status file is its own; the rejection stays in the request log.
        if self.worker.is_none() {
            self.write_status(&upgrade_id, Status::Failed, "Trigger rejected", Some(reason));
        }
    }

    pub(super) fn write_status(&self, upgrade_id: &str, status: Status, step: &str, error: Option<&str>) {
        let snapshot = Snapshot {
            upgrade_id: upgrade_id.to_string(),
            status,
            progress: status.progress(),
            current_step: step.to_string(),
            started_at: now_ms(),
            logs: vec![step.to_string()],
            error: error.map(str::to_string),
            ..Snapshot::default()
        };
        if let Err(e) = self.status.write(snapshot) {
            self.ui.warn(format!("cannot write the app's status file {e}"));
        }
    }
}
