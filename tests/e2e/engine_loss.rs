//! The Docker engine going away is not the app failing: a compose v1 project
//! on a private engine ([`PrivateEngine`]) that the test stops and starts
//! again while upgraderd drives it through `DOCKER_HOST`. upgraderd waits for
//! the engine (bounded by `UPGRADERD_ENGINE_WAIT`), the health gate's clock
//! does not run meanwhile, and each attempt ends `complete` or `rolled_back`
//! with the app answering the version the record names: the engine is taken
//! away during the backup, at the switch, during the gate, and at each step
//! of a rollback (its stop, its restore, its revert, its gate). An engine gone past
//! the limit leaves the attempt interrupted, not terminal, and the next
//! upgrader puts it right once the engine is back.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::engine_app::EngineApp;

/// The test builds each deployment has: 2.0.1 crashes.
const VERSIONS: &[&str] = &["1.0.0", "2.0.0", "2.0.1"];

/// What the engine-loss tests do with the app on a private engine.
impl EngineApp {
    /// upgraderd for this deployment, on the private engine.
    fn upgraderd(&self, args: &[&str], extra: &[(&str, &str)]) -> Upgrader {
        let state = self.state_dir();
        let mut all = vec!["--state-dir", state.as_str()];
        all.extend_from_slice(args);
        let mut cmd = self.sandbox.command(&all);
        cmd.envs(self.settings()).envs(extra.iter().copied());
        Upgrader::spawn(cmd, self.sandbox.path())
    }

    /// The status of the newest upgrade, read while an upgrader may run.
    fn last_status(&self) -> Option<String> {
        let state = self.sandbox.state().display().to_string();
        let run = self.sandbox.run(&["--state-dir", &state, "--json", "history", "--limit", "1"]);
        let history: Value = serde_json::from_str(&run.stdout).ok()?;
        history["history"][0]["status"].as_str().map(str::to_string)
    }

    /// Waits until the app's status file says `status` (read every few
    /// milliseconds: the switch is over in about a second).
    fn wait_status(&self, upgrader: &Upgrader, status: &str) {
        let path = self.sandbox.path().join(".upgrade-status.json");
        let now = || {
            let file: Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
            file["status"].as_str().map(str::to_string)
        };
        common::wait(format!("the upgrade to reach {status}"))
            .within(Duration::from_secs(300))
            .every(Duration::from_millis(5))
            .showing(|| format!("status file: {:?}; history: {:?}\n{}", now(), self.last_status(), upgrader.so_far()))
            .until_true(|| now().as_deref() == Some(status) || upgrader.gone_before(status));
    }

    /// Waits until the newest upgrade's log holds `count` lines matching `line`
    /// (a bound far above the seconds it takes: a loaded machine once took
    /// over two minutes to get there, and a failed wait shows why).
    fn wait_log(&self, upgrader: &Upgrader, what: &str, count: usize, line: &dyn Fn(&str) -> bool) {
        let history = || {
            let state = self.sandbox.state().display().to_string();
            self.sandbox.run(&["--state-dir", &state, "--json", "history", "--limit", "1"])
        };
        let matching = |run: &common::Run| {
            let history: Value = serde_json::from_str(&run.stdout).ok()?;
            let logs = history["history"][0]["logs"].as_array()?.clone();
            Some(logs.iter().filter_map(Value::as_str).filter(|l| line(l)).count())
        };
        let seen = || {
            let run = history();
            let read = format!("history exited {}: {}{}", run.code, run.stdout, run.stderr);
            format!("{:?} matching so far; {read}\n{}", matching(&run), upgrader.so_far())
        };
        common::wait(format!("the upgrade's log to show {what}"))
            .within(Duration::from_secs(300))
            .every(Duration::from_millis(20))
            .showing(seen)
            .until_true(|| matching(&history()).is_some_and(|n| n >= count) || upgrader.gone_before(what));
    }

    /// The engine away for `away` at `status`, then back.
    fn engine_away_at(&mut self, upgrader: &Upgrader, status: &str, away: Duration) {
        self.wait_status(upgrader, status);
        self.engine.stop();
        std::thread::sleep(away);
        self.engine.start_again();
    }
}

/// An `upgraderd` running in the background. Its output goes to files, so a
/// run never blocks on a pipe nobody reads, and a wait that fails shows it.
struct Upgrader {
    child: RefCell<Child>,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Upgrader {
    fn spawn(mut command: Command, dir: &Path) -> Upgrader {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let (stdout, stderr) = (dir.join(format!("upgrader-{n}.out")), dir.join(format!("upgrader-{n}.err")));
        let child = command
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("upgraderd starts");
        Upgrader { child: RefCell::new(child), stdout, stderr }
    }

    fn exit_code(&self) -> Option<i32> {
        self.child.borrow_mut().try_wait().unwrap().map(|status| status.code().unwrap_or(-1))
    }

    /// Whether it has exited, and what it printed so far.
    fn so_far(&self) -> String {
        let state = self.exit_code().map_or_else(|| "still running".to_string(), |code| format!("exited {code}"));
        format!("upgraderd {state}; its stderr:\n{}", std::fs::read_to_string(&self.stderr).unwrap_or_default())
    }

    /// Fails the test when upgraderd has ended before the moment it waits for.
    #[track_caller]
    fn gone_before(&self, moment: &str) -> bool {
        assert!(self.exit_code().is_none(), "upgraderd ended before {moment}: {}", self.so_far());
        false
    }

    fn finished(self) -> common::Run {
        let code = self.child.borrow_mut().wait().unwrap().code().unwrap_or(-1);
        let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
        common::Run { code, stdout: read(&self.stdout), stderr: read(&self.stderr) }
    }
}

impl Drop for Upgrader {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn the_engine_restarting_during_the_gate_of_a_good_version_ends_complete() {
    let Some(mut d) = EngineApp::start("gate", VERSIONS) else { return };
    // Away longer than the whole gate may take: only a clock that stops while
    // the engine is away lets the good version pass.
    let gate = [("UPGRADERD_HEALTH_TIMEOUT", "8s"), ("UPGRADERD_HEALTH_STABLE", "2s")];
    let upgrader = d.upgraderd(&["upgrade", "--to", "2.0.0"], &gate);
    d.engine_away_at(&upgrader, "health_check", Duration::from_secs(10));
    let run = upgrader.finished();
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the Docker engine is unreachable; waiting up to 300s"), "{}", run.stderr);
    assert!(run.stderr.contains("answers again after"), "{}", run.stderr);
    let row = d.last_history();
    assert_eq!(row["status"], "complete", "{row}");
    let logs = row["logs"].to_string();
    assert!(logs.contains("The Docker engine was unreachable for"), "the record says so: {logs}");
    assert_eq!(row["toVersion"], "2.0.0");
    d.wait_version("2.0.0");
}

/// A good version, the engine away for 3 s when the attempt reaches `status`: it ends complete.
fn a_good_upgrade_waits_out_the_engine_at(name: &str, status: &str) {
    let Some(mut d) = EngineApp::start(name, VERSIONS) else { return };
    let upgrader = d.upgraderd(&["upgrade", "--to", "2.0.0"], &[]);
    d.engine_away_at(&upgrader, status, Duration::from_secs(3));
    let run = upgrader.finished();
    assert_eq!(run.code, 0, "engine away at {status}:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the Docker engine is unreachable; waiting"), "{}", run.stderr);
    let row = d.last_history();
    assert_eq!(row["status"], "complete", "{row}");
    d.wait_version("2.0.0");
}

#[test]
fn the_engine_restarting_during_the_backup_ends_complete() {
    a_good_upgrade_waits_out_the_engine_at("backup", "backing_up");
}

#[test]
fn the_engine_restarting_at_the_switch_ends_complete() {
    a_good_upgrade_waits_out_the_engine_at("switch", "restarting");
}

#[test]
fn the_engine_restarting_during_the_rollback_of_a_crashing_version_ends_rolled_back() {
    let Some(mut d) = EngineApp::start("rollback", VERSIONS) else { return };
    // 2.0.1 crashes at once; the rollback's gate of 1.0.0 lasts the stable period: the engine goes within it.
    let upgrader = d.upgraderd(&["upgrade", "--to", "2.0.1"], &[("UPGRADERD_HEALTH_STABLE", "6s")]);
    d.engine_away_at(&upgrader, "rolling_back", Duration::from_secs(3));
    let run = upgrader.finished();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let row = d.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}\n{}", run.stderr);
    assert_eq!(row["fromVersion"], "1.0.0");
    d.wait_version("1.0.0");
}

/// A crashing version, the engine away for 3 s at one step of its rollback
/// (`count` log lines matching `line`): it ends rolled back, 1.0.0 answering.
fn a_rollback_waits_out_the_engine_at(name: &str, step: &str, count: usize, line: &dyn Fn(&str) -> bool) {
    let Some(mut d) = EngineApp::start(name, VERSIONS) else { return };
    let upgrader = d.upgraderd(&["upgrade", "--to", "2.0.1"], &[]);
    d.wait_log(&upgrader, step, count, line);
    d.engine.stop();
    std::thread::sleep(Duration::from_secs(3));
    d.engine.start_again();
    let run = upgrader.finished();
    assert_eq!(run.code, 1, "engine away at the rollback's {step}:\n{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("the Docker engine is unreachable; waiting"), "waited for it: {}", run.stderr);
    let row = d.last_history();
    assert_eq!(row["status"], "rolled_back", "engine away at the rollback's {step}: {row}\n{}", run.stderr);
    d.wait_version("1.0.0");
}

#[test]
fn the_engine_restarting_as_the_rollback_stops_the_new_version_ends_rolled_back() {
    a_rollback_waits_out_the_engine_at("rbstop", "its stop", 1, &|l| {
        l.starts_with("$ ") && l.ends_with(" stop -t 10 app")
    });
}

#[test]
fn the_engine_restarting_as_the_rollback_restores_the_data_ends_rolled_back() {
    a_rollback_waits_out_the_engine_at("rbrestore", "its restore", 1, &|l| l.starts_with("Restoring data from"));
}

#[test]
fn the_engine_restarting_as_the_rollback_recreates_the_previous_version_ends_rolled_back() {
    // The switch recreated the service once; the revert does it again.
    a_rollback_waits_out_the_engine_at("rbrevert", "its revert", 2, &|l| l.starts_with("$ ") && l.contains(" up -d"));
}

#[test]
fn an_engine_gone_past_the_limit_leaves_the_upgrade_interrupted_and_the_next_upgrader_puts_it_back() {
    let Some(mut d) = EngineApp::start("gone", VERSIONS) else { return };
    let upgrader = d.upgraderd(
        &["upgrade", "--to", "2.0.0"],
        &[("UPGRADERD_HEALTH_STABLE", "8s"), ("UPGRADERD_ENGINE_WAIT", "2s")],
    );
    d.wait_status(&upgrader, "health_check");
    d.engine.stop();
    let run = upgrader.finished();
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("is left interrupted during health_check, not ended"), "{}", run.stderr);

    let interrupted = d.last_history();
    assert_eq!(interrupted["status"], "health_check", "{interrupted}");

    d.engine.start_again();
    let next = d.upgraderd(&["upgrade", "--to", "2.0.0"], &[]).finished();
    assert_eq!(next.code, 0, "{}\n{}", next.stdout, next.stderr);
    assert!(next.stderr.contains("was interrupted during health_check"), "{}", next.stderr);
    let state = d.sandbox.state().display().to_string();
    let history = d.sandbox.run(&["--state-dir", &state, "--json", "history", "--limit", "2"]).success().json();
    let rows = history["history"].as_array().unwrap();
    let recovered = rows.iter().find(|r| r["upgradeId"] == interrupted["upgradeId"]).expect("the interrupted upgrade");
    assert_eq!(recovered["status"], "rolled_back", "recovered once the engine was back: {recovered}");
    assert_eq!(rows[0]["status"], "complete", "then the new upgrade ran: {}", rows[0]);
    d.wait_version("2.0.0");
}
