//! The `watch` daemon: turns the app's triggers into upgrades, one at a time.
//!
//! The main thread never blocks on an upgrade: it waits in `poll(2)` on the
//! trigger directory's inotify descriptor and a wake-up pipe (signals, a
//! finished upgrade), so triggers written during an upgrade are claimed and
//! queued in the database at once, the systemd watchdog keeps being fed and a
//! stop request is seen immediately. Upgrades run on a worker thread through
//! the same pipeline as `upgraderd upgrade`. Without inotify the directory is
//! polled every `UPGRADERD_POLL_INTERVAL`.
//!
//! The periodic version check runs every `UPGRADERD_CHECK_EVERY`; with
//! `UPGRADERD_AUTO_UPGRADE` and an `UPGRADERD_AUTO_UPGRADE_WINDOW`, an update
//! found outside the window is not queued, and a check also runs as the
//! window opens. The app's triggers are never held back by the window.
//! The Docker socket check of the MeshMonitor watchdog protocol is answered
//! on a thread of its own (`socket_check`), handed its requests by this loop.
//!
//! [`run`] is the whole daemon, ended by the [`Shutdown`] it is given (the
//! integration tests run it as `upgraderd watch` and stop it with a signal).

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

mod bookkeeping;
mod socket_check;
#[cfg(test)]
mod tests;

use self::bookkeeping::{after_restart, ended_before_restart, settle, spool_name_ok, Settled, MAX_SPOOL_NAME};
use self::socket_check::SocketChecks;
use crate::config::{self, Config, Env};
use crate::engine::status::{Snapshot, StatusFile};
use crate::engine::{check, new_upgrade_id, pipeline, recover, Outcome, Request};
use crate::exit::usage;
use crate::ops::inotify::DirWatch;
use crate::ops::systemd::Notifier;
use crate::signals::{Shutdown, Waker};
use crate::states::{RequestState, Status};
use crate::store::db::{now_ms, Db, QueuedRequest};
use crate::store::files;
use crate::store::shared_dir::SharedDir;
use crate::trigger::{self, Found, Parsed, TriggerDir};
use crate::ui::Ui;
use crate::window::{self, Clock, Verdict};

/// A plainly written trigger must be unchanged this long before it is read.
const SETTLE: Duration = Duration::from_millis(150);
/// How long JSON that ends early may take to be completed by its writer.
const INCOMPLETE_GRACE: Duration = Duration::from_secs(2);
/// How often unfinished upgrades without a live upgrader are looked for.
const RECOVERY_EVERY: Duration = Duration::from_secs(60);
/// The first version check comes this soon after start (or after `UPGRADERD_CHECK_EVERY`, if shorter).
const FIRST_CHECK_AFTER: Duration = Duration::from_secs(60);
/// A check for an opening window comes this long after it opened, never just before.
const AFTER_OPENING: Duration = Duration::from_secs(1);
/// How long to wait before retrying a request another upgrader's lock held up.
const LOCK_RETRY: Duration = Duration::from_secs(5);
/// Without inotify, how often the Docker socket check's request is looked for (the app waits about 10 s).
const SOCKET_TEST_POLL: Duration = Duration::from_secs(1);
/// The `requests.source` of a request that came from the app's trigger.
const TRIGGER_SOURCE: &str = "trigger";

/// Runs the daemon until `shutdown` is requested and no upgrade is in flight.
pub(crate) fn run(config: &Config, ui: &Ui, shutdown: Shutdown, env: &Env) -> Result<()> {
    let dir = config.trigger_dir.clone().ok_or_else(|| {
        usage("watch needs UPGRADERD_TRIGGER_DIR (or --trigger-dir): the directory the app shares with the host")
    })?;
    if !dir.is_dir() {
        return Err(usage(format!(
            "the trigger directory {} does not exist; create it (the app's shared data dir) or fix UPGRADERD_TRIGGER_DIR",
            dir.display()
        )));
    }
    if !crate::engine::discover::deployment_configured(config) {
        // Every request would fail the same way: say so now, as `upgrade` does, not at the first trigger.
        return Err(usage(
            "watch needs a service to upgrade: set UPGRADERD_CONTAINER (or UPGRADERD_COMPOSE_PROJECT and \
             UPGRADERD_SERVICE, or UPGRADERD_SWARM_SERVICE)",
        ));
    }
    let shared = Arc::new(SharedDir::open(&dir).map_err(|e| {
        usage(format!("{e}; set UPGRADERD_TRIGGER_DIR to the directory's real path, with no symlink in it"))
    })?);
    files::ensure_private_dir(&config.state_dir)
        .with_context(|| format!("cannot create the state directory {}", config.state_dir.display()))?;
    let waker = Waker::new().context("cannot create the daemon's wake-up pipe")?;
    shutdown.notify(waker.clone());
    let mut daemon = Daemon {
        config: config.clone(),
        ui: ui.clone(),
        db: Db::open(&config.db_path())?,
        trigger: TriggerDir::new(shared.clone(), &config.trigger_file),
        spool: None,
        unrecovered: false,
        status: StatusFile::new(shared.clone(), &config.status_file, config.legacy_status_file.as_deref()),
        socket_checks: SocketChecks::start(shared, config, ui),
        notifier: Notifier::from_env(|name| env.get(name).map(str::to_string)),
        clock: Clock::from_env(|name| env.get(name).map(str::to_string)).map_err(usage)?,
        shutdown,
        waker,
        watch: None,
        worker: None,
        intake_at: Some(Instant::now()),
        intake_complete: false,
        incomplete_since: None,
        start_after: Instant::now(),
    };
    daemon.start()?;
    daemon.serve();
    Ok(())
}

struct Daemon {
    config: Config,
    ui: Ui,
    db: Db,
    trigger: TriggerDir,
    /// The spool directory (`<trigger>.d/`), once the app made it.
    spool: Option<Arc<SharedDir>>,
    /// The startup recovery has not gone through yet: it is tried again soon.
    unrecovered: bool,
    status: Arc<StatusFile>,
    socket_checks: SocketChecks,
    notifier: Notifier,
    /// What time it is, for the auto-upgrade window.
    clock: Clock,
    shutdown: Shutdown,
    waker: Arc<Waker>,
    watch: Option<DirWatch>,
    worker: Option<Worker>,
    /// When to look at the trigger next (`None`: on the next event).
    intake_at: Option<Instant>,
    /// The last event said the trigger was renamed into place or closed.
    intake_complete: bool,
    /// Since when the claimed trigger has been JSON that ends early.
    incomplete_since: Option<Instant>,
    /// Queued upgrades wait until then (another upgrader held the lock).
    start_after: Instant,
}

/// The upgrade running on its own thread.
struct Worker {
    upgrade_id: String,
    result: Arc<Mutex<Option<Result<Outcome, anyhow::Error>>>>,
    thread: JoinHandle<()>,
}

impl Daemon {
    fn start(&mut self) -> Result<()> {
        self.ui.info(format!(
            "watching {} (state {}, pid {})",
            self.trigger.path().display(),
            self.config.state_dir.display(),
            std::process::id()
        ));
        if !self.config.enabled {
            self.ui.warn("UPGRADERD_ENABLED=false: triggers are rejected with that reason");
        }
        if let Some(verdict) = self.auto_upgrade_window() {
            self.ui.info(self.window_summary(&verdict));
        }
        // Before recovery, which ends the interrupted ones: a request whose upgrade had already
        // ended (a refusal, say) is done, never run again under a policy changed since.
        self.settle_finished_requests()?;
        self.unrecovered = !self.recover(None);
        self.requeue_interrupted_requests()?;
        self.open_watch();
        self.take_socket_test_request();
        self.notifier.ready(&self.idle_status());
        Ok(())
    }

    fn serve(&mut self) {
        let mut next_recovery = Instant::now() + if self.unrecovered { LOCK_RETRY } else { RECOVERY_EVERY };
        let mut next_watchdog = self.notifier.watchdog_every().map(|every| Instant::now() + every);
        let checks = !self.config.check_every.is_zero() && !self.config.version_check_disabled;
        let mut next_check = checks.then(|| Instant::now() + FIRST_CHECK_AFTER.min(self.config.check_every));
        let mut next_socket_test_look = None;
        loop {
            self.reap_worker();
            // inotify tells of a request as it comes; without it, look every second.
            next_socket_test_look = self.watch.is_none().then(|| {
                let due = next_socket_test_look.unwrap_or_else(Instant::now);
                if due > Instant::now() {
                    return due;
                }
                self.take_socket_test_request();
                Instant::now() + SOCKET_TEST_POLL
            });
            if self.shutdown.is_requested() {
                if self.worker.is_none() {
                    self.notifier.stopping("stopping");
                    self.ui.info("stopped");
                    return;
                }
                self.notifier.status("stop requested; finishing the running upgrade safely");
            } else {
                if self.intake_at.is_some_and(|at| at <= Instant::now()) {
                    self.intake();
                }
                self.start_next();
                if self.worker.is_none() && Instant::now() >= next_recovery {
                    // Until the startup recovery went through (the lock or the database was
                    // busy), every unfinished upgrade is an orphan to put right, not only stale ones.
                    let stale_after = (!self.unrecovered).then_some(self.config.stale_after);
                    let done = self.recover(stale_after);
                    self.unrecovered &= !done;
                    next_recovery = Instant::now() + if self.unrecovered { LOCK_RETRY } else { RECOVERY_EVERY };
                }
                if next_check.is_some_and(|at| at <= Instant::now()) {
                    self.check_version();
                    next_check = Some(self.next_check());
                    self.start_next();
                }
            }
            if let Some(at) = next_watchdog.filter(|at| *at <= Instant::now()) {
                self.notifier.watchdog();
                next_watchdog = self.notifier.watchdog_every().map(|every| at.max(Instant::now()) + every);
            }
            let mut deadlines = vec![next_watchdog, Some(next_recovery), next_check, next_socket_test_look];
            if !self.shutdown.is_requested() {
                deadlines.push(self.intake_at);
                if self.worker.is_none() && self.start_after > Instant::now() {
                    deadlines.push(Some(self.start_after));
                }
            }
            self.wait(deadlines.into_iter().flatten().min());
        }
    }

    /// Blocks until an inotify event, a wake-up, or the deadline.
    fn wait(&mut self, deadline: Option<Instant>) {
        let timeout_ms = match deadline {
            None => -1,
            Some(at) => at.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
        };
        let mut fds = vec![libc::pollfd { fd: self.waker.fd(), events: libc::POLLIN, revents: 0 }];
        if let Some(watch) = &self.watch {
            fds.push(libc::pollfd { fd: watch.fd(), events: libc::POLLIN, revents: 0 });
        }
        // SAFETY: `fds` is a valid array of pollfd for the length given.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
        if ready <= 0 {
            return;
        }
        if fds[0].revents != 0 {
            self.waker.drain();
        }
        if fds.len() > 1 && fds[1].revents != 0 {
            self.read_events();
        }
    }

    fn read_events(&mut self) {
        let Some(watch) = &self.watch else { return };
        match watch.read(&self.trigger.name, config::SOCKET_TEST_REQUEST) {
            Ok(seen) => {
                if seen.other || seen.rescan {
                    self.take_socket_test_request();
                }
                if seen.watch_gone {
                    self.ui.warn(format!(
                        "the trigger directory {} was removed or moved; polling until it is back",
                        self.trigger.dir.path().display()
                    ));
                    self.watch = None;
                }
                if seen.complete || seen.touched || seen.rescan {
                    self.intake_complete |= seen.complete;
                    self.intake_at = Some(Instant::now());
                }
            }
            Err(e) => {
                self.ui.warn(format!("reading inotify events failed ({e}); polling instead"));
                self.watch = None;
                self.intake_at = Some(Instant::now());
            }
        }
    }

    /// Hands a Docker socket check request waiting in the trigger directory to its thread.
    fn take_socket_test_request(&self) {
        // A trigger directory swapped for a link is never used; the intake reports it.
        if self.trigger.dir.check().is_ok() {
            self.socket_checks.take_request();
        }
    }

    /// inotify when the kernel allows it, else polling.
    fn open_watch(&mut self) {
        // A new watch knows no spool yet: the next intake opens and adds it again.
        self.spool = None;
        match DirWatch::new(self.trigger.dir.path()) {
            Ok(watch) => self.watch = Some(watch),
            Err(e) => self.ui.warn(format!(
                "inotify is unavailable for {} ({e}); polling every {}s",
                self.trigger.dir.path().display(),
                self.poll_interval().as_secs_f64()
            )),
        }
    }

    fn poll_interval(&self) -> Duration {
        if self.config.poll_interval.is_zero() {
            Duration::from_secs(5)
        } else {
            self.config.poll_interval
        }
    }

    /// Looks at the trigger (and a claim left over), recording or rejecting what it finds.
    fn intake(&mut self) {
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
            let claimed = already_claimed
                || request.claim().unwrap_or_else(|e| {
                    // Left in place: the next intake tries again.
                    self.ui.warn(format!("cannot claim the spooled request {}: {e}", request.path().display()));
                    false
                });
            if claimed {
                // Spool files are placed by rename, whole: nothing is waited for.
                self.process_claimed(&request, false);
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
                    source: TRIGGER_SOURCE.into(),
                    raw: Some(raw),
                    received_at: now_ms(),
                    state: RequestState::Queued,
                    reason: None,
                };
                self.record(trigger, queued);
            }
        }
        self.incomplete_since = None;
        true
    }

    /// Records the trigger's request before the trigger is removed, so it is never lost.
    fn record(&mut self, trigger: &TriggerDir, queued: QueuedRequest) {
        if let Err(e) = self.queue(&queued) {
            // Leave the claim in place: the next intake tries again, nothing is lost.
            self.ui.warn(format!("cannot record the trigger's request ({e:#}); retrying"));
            self.retry_intake_in(Duration::from_secs(1));
            return;
        }
        if let Err(e) = trigger.release() {
            self.ui.warn(format!("cannot remove the claimed trigger: {e}"));
        }
    }

    /// Adds a request to the queue; a repeated upgrade id is a duplicate, not an error.
    fn queue(&mut self, queued: &QueuedRequest) -> Result<()> {
        if self.db.insert_request(queued)? {
            self.ui.info(format!(
                "{}: upgrade {} to {} queued{}",
                queued.source,
                queued.upgrade_id,
                queued.version,
                if self.worker.is_some() { " behind the running upgrade" } else { "" }
            ));
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
            source: TRIGGER_SOURCE.into(),
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

    fn write_status(&self, upgrade_id: &str, status: Status, step: &str, error: Option<&str>) {
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

    /// Starts the oldest queued request when nothing runs.
    fn start_next(&mut self) {
        if self.worker.is_some() || Instant::now() < self.start_after {
            return;
        }
        let queued = match self.db.next_queued() {
            Ok(Some(queued)) => queued,
            Ok(None) => return,
            Err(e) => return self.ui.warn(format!("cannot read the request queue: {e:#}")),
        };
        if let Err(e) = self.db.set_request_state(&queued.upgrade_id, RequestState::Running, None) {
            return self.ui.warn(format!("cannot update the request queue: {e:#}"));
        }
        let request = Request {
            target: queued.version.clone(),
            backup: queued.backup,
            force: queued.force,
            dry_run: false,
            initiated_by: queued.source.clone(),
            from_app: queued.source == TRIGGER_SOURCE,
            strategy: self.config.strategy,
            upgrade_id: Some(queued.upgrade_id.clone()),
            shutdown: Some(self.shutdown.clone()),
        };
        self.notifier.status(&format!("upgrading to {} (upgrade {})", queued.version, queued.upgrade_id));
        let result = Arc::new(Mutex::new(None));
        let (config, ui, waker, slot) = (self.config.clone(), self.ui.clone(), self.waker.clone(), result.clone());
        let thread = std::thread::Builder::new()
            .name("upgrade".into())
            // Room for walking data trees up to their depth limit.
            .stack_size(16 << 20)
            .spawn(move || {
                let outcome = pipeline::run(&config, &ui, &request);
                *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(outcome);
                waker.wake();
            })
            .expect("spawning the upgrade thread");
        self.worker = Some(Worker { upgrade_id: queued.upgrade_id, result, thread });
    }

    /// Collects a finished upgrade and records what became of its request.
    fn reap_worker(&mut self) {
        let finished = self.worker.as_ref().is_some_and(|w| w.result.lock().map(|r| r.is_some()).unwrap_or(true));
        if !finished {
            return;
        }
        let worker = self.worker.take().expect("checked above");
        let _ = worker.thread.join();
        let result = worker.result.lock().unwrap_or_else(|e| e.into_inner()).take();
        let id = worker.upgrade_id;
        let settled = settle(result);
        match &settled {
            Settled::Ended(terminal) => self.ui.info(format!("upgrade {id} ended {terminal}")),
            Settled::WaitForLock(why) => {
                self.ui.info(format!("another upgrader holds the lock; upgrade {id} waits ({why})"));
                self.start_after = Instant::now() + LOCK_RETRY;
            }
            Settled::CouldNotRun(reason) => {
                self.ui.warn(format!("upgrade {id} could not run: {reason}"));
                self.write_status(&id, Status::Failed, "Upgrade could not start", Some(reason));
            }
        }
        let (state, reason) = settled.request_state();
        if let Err(e) = self.db.set_request_state(&id, state, reason.as_deref()) {
            self.ui.warn(format!("cannot update the request queue: {e:#}"));
        }
        self.notifier.status(&self.idle_status());
    }

    /// Requests a killed daemon left `running` although their upgrade had ended:
    /// the daemon died between the end and its bookkeeping. They are done.
    fn settle_finished_requests(&mut self) -> Result<()> {
        for request in self.db.requests()?.into_iter().filter(|r| r.state == RequestState::Running) {
            if let Some((state, reason)) = ended_before_restart(self.db.get(&request.upgrade_id)?.as_ref()) {
                self.db.set_request_state(&request.upgrade_id, state, reason.as_deref())?;
            }
        }
        Ok(())
    }

    /// Requests a killed daemon left `running`: done when their upgrade got past
    /// its switch (recovery has rolled it back), queued again when it had changed nothing.
    fn requeue_interrupted_requests(&mut self) -> Result<()> {
        for request in self.db.requests()?.into_iter().filter(|r| r.state == RequestState::Running) {
            let row = self.db.get(&request.upgrade_id)?;
            let (state, reason) = after_restart(row.as_ref());
            if state == RequestState::Queued {
                self.ui.info(format!(
                    "upgrade {} was interrupted before its switch; running it again",
                    request.upgrade_id
                ));
            }
            self.db.set_request_state(&request.upgrade_id, state, reason.as_deref())?;
        }
        Ok(())
    }

    /// The periodic version check: the banner file, and with
    /// `UPGRADERD_AUTO_UPGRADE=true` a request for the allowed update.
    fn check_version(&mut self) {
        let report = match check::run(&self.config) {
            Ok(report) => report,
            Err(e) => return self.ui.warn(format!("version check failed: {e:#}")),
        };
        if let Err(e) = check::write_banner(&self.config, &report) {
            self.ui.warn(format!("{e:#}"));
        }
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
            source: "check-version".into(),
            received_at: now_ms(),
            state: RequestState::Queued,
            ..QueuedRequest::default()
        };
        if let Err(e) = self.queue(&request) {
            self.ui.warn(format!("cannot queue the automatic upgrade: {e:#}"));
        }
    }

    /// Where now stands in `UPGRADERD_AUTO_UPGRADE_WINDOW`, when automatic upgrades are on and one is set.
    fn auto_upgrade_window(&self) -> Option<Verdict> {
        let windows = &self.config.auto_upgrade_window;
        (self.config.auto_upgrade && !windows.is_unrestricted()).then(|| self.clock.verdict(windows))
    }

    fn window_summary(&self, verdict: &Verdict) -> String {
        window::summary(&self.config.auto_upgrade_window, verdict)
    }

    /// The next periodic check: `UPGRADERD_CHECK_EVERY` from now, or as the auto-upgrade window opens if sooner.
    fn next_check(&self) -> Instant {
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
    fn recover(&mut self, stale_after: Option<Duration>) -> bool {
        match recover::reconcile_if_unlocked(&self.config, &self.ui, stale_after) {
            Ok(Some(outcomes)) => {
                for outcome in outcomes {
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

    fn idle_status(&self) -> String {
        format!("idle; watching {}", self.trigger.path().display())
    }
}
