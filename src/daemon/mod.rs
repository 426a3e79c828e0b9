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
//! on a thread of its own (`socket_check`), handed its requests by this loop;
//! so is `GET /metrics` when `UPGRADERD_METRICS_LISTEN` is set (`metrics_http`).
//!
//! [`run`] is the whole daemon, ended by the [`Shutdown`] it is given (the
//! integration tests run it as `upgraderd watch` and stop it with a signal;
//! `tests/cli/daemon.rs` runs it on a thread through `testing::daemon`).
//!
//! Here: the loop (wait, events, deadlines). Inside: `intake` claims and
//! records triggers, `worker` runs one upgrade at a time, `periodic` checks
//! versions and recovers, `socket_check` answers the socket check,
//! `bookkeeping` holds the pure decisions about requests.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

mod bookkeeping;
pub(crate) mod heartbeat;
mod intake;
mod metrics_http;
mod periodic;
mod socket_check;
#[cfg(test)]
mod tests;
mod worker;

use self::metrics_http::MetricsEndpoint;
use self::socket_check::SocketChecks;
use crate::config::{self, Config, Env};
use crate::engine::status::StatusFile;
use crate::engine::Outcome;
use crate::exit::usage;
use crate::ops::inotify::DirWatch;
use crate::ops::systemd::Notifier;
use crate::signals::{Shutdown, Waker};
use crate::store::db::Db;
use crate::store::files;
use crate::store::shared_dir::SharedDir;
use crate::trigger::TriggerDir;
use crate::ui::Ui;
use crate::window::Clock;

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
    let metrics = MetricsEndpoint::start(config, ui)?;
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
        _metrics: metrics,
        beat_failed: false,
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
    /// `/metrics`, when served; stopped with the daemon.
    _metrics: Option<MetricsEndpoint>,
    /// The last heartbeat could not be written (said once, until one can).
    beat_failed: bool,
}

/// When the loop must wake next: the earliest of `deadlines` and, unless an
/// upgrade runs, `recovery`. Recovery waits for the running upgrade, whose end
/// wakes the loop; its time, passed meanwhile, would make every wait return
/// at once, and the loop spin for the rest of the upgrade.
fn next_wake(upgrade_runs: bool, recovery: Instant, deadlines: &[Option<Instant>]) -> Option<Instant> {
    let recovery = (!upgrade_runs).then_some(recovery);
    deadlines.iter().copied().chain([recovery]).flatten().min()
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
        crate::engine::metrics::write(&self.config, &self.ui);
        self.open_watch();
        self.take_socket_test_request();
        // Alive before it says it is ready: a HEALTHCHECK or a supervisor may look at once.
        self.beat();
        self.notifier.ready(&self.idle_status());
        Ok(())
    }

    fn serve(&mut self) {
        let mut next_recovery = Instant::now() + if self.unrecovered { LOCK_RETRY } else { RECOVERY_EVERY };
        let mut next_watchdog = self.notifier.watchdog_every().map(|every| Instant::now() + every);
        let checks = !self.config.check_every.is_zero() && !self.config.version_check_disabled;
        let mut next_check = checks.then(|| Instant::now() + FIRST_CHECK_AFTER.min(self.config.check_every));
        let mut next_socket_test_look = None;
        let mut next_beat = Instant::now() + heartbeat::EVERY;
        loop {
            self.reap_worker();
            if next_beat <= Instant::now() {
                self.beat();
                next_beat = Instant::now() + heartbeat::EVERY;
            }
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
                    // A request whose upgrade was left interrupted (the engine was away) ends with its recovery.
                    if done {
                        if let Err(e) = self.settle_finished_requests() {
                            self.ui.warn(format!("cannot update the request queue: {e:#}"));
                        }
                    }
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
            let mut deadlines = vec![next_watchdog, next_check, next_socket_test_look, Some(next_beat)];
            if !self.shutdown.is_requested() {
                deadlines.push(self.intake_at);
                if self.worker.is_none() && self.start_after > Instant::now() {
                    deadlines.push(Some(self.start_after));
                }
            }
            self.wait(next_wake(self.worker.is_some(), next_recovery, &deadlines));
        }
    }

    /// Writes the heartbeat `watch --alive` reads; says once when it cannot.
    fn beat(&mut self) {
        match heartbeat::beat(&self.config.state_dir) {
            Ok(()) => self.beat_failed = false,
            Err(e) if !self.beat_failed => {
                self.beat_failed = true;
                self.ui.warn(format!("cannot write the heartbeat in {}: {e}", self.config.state_dir.display()));
            }
            Err(_) => {}
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

    fn idle_status(&self) -> String {
        format!("idle; watching {}", self.trigger.path().display())
    }
}
