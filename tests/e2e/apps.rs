//! Several apps on one host: two compose projects, each configured only by
//! its own `--app` file under a test configuration root
//! (`UPGRADERD_APP_CONFIG_ROOT`) and keeping its state under a test state root
//! (`UPGRADERD_APP_STATE_ROOT`), upgraded at the same time. Both upgrades are
//! held inside their locked section at once, so neither waits for the other's
//! lock; both complete, and each history holds only its own upgrade.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Run};
use crate::compose::ComposeVersion;
use crate::scenario::Scenario;

/// The `--app` roots of one test: `etc/NAME.env` and `lib/NAME/`, and the hooks' marker files.
struct Host {
    dir: tempfile::TempDir,
}

impl Host {
    fn new() -> Host {
        let dir = tempfile::Builder::new().prefix("upgraderd-e2e-apps-").tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        Host { dir }
    }

    fn config_root(&self) -> PathBuf {
        self.dir.path().join("etc")
    }

    fn state_root(&self) -> PathBuf {
        self.dir.path().join("lib")
    }

    /// A marker file the hooks and the test pass between them.
    fn marker(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `etc/NAME.env` for the scenario: everything its upgraderd needs,
    /// and a pre-upgrade hook (run under the app's lock) that says it is there
    /// and then waits for the test to release it.
    fn configure(&self, app: &str, s: &Scenario) {
        let waiting = self.marker(&format!("{app}-waiting"));
        let release = self.marker(&format!("{app}-release"));
        let text = format!(
            "UPGRADERD_CONTAINER={container}\n\
             UPGRADERD_HEALTH_URL=http://127.0.0.1:{port}/api/health\n\
             UPGRADERD_HEALTH_TIMEOUT=60s\n\
             UPGRADERD_HEALTH_STABLE=1s\n\
             UPGRADERD_HEALTH_VERSION_POINTER=/version\n\
             UPGRADERD_MIN_FREE=1MB\n\
             UPGRADERD_TRIGGER_DIR={trigger}\n\
             UPGRADERD_PRE_UPGRADE_CMD='touch {waiting}; until [ -e {release} ]; do sleep 0.1; done'\n",
            container = s.container(),
            port = s.port,
            trigger = s.sandbox.path().display(),
            waiting = waiting.display(),
            release = release.display(),
        );
        fs::write(self.config_root().join(format!("{app}.env")), text).unwrap();
    }

    /// `upgraderd --app APP ARGS`, configured by the app's file alone.
    fn upgraderd(&self, s: &Scenario, app: &str, args: &[&str]) -> Command {
        let mut all = vec!["--app", app];
        all.extend_from_slice(args);
        let mut cmd = s.sandbox.command(&all);
        cmd.env_remove("UPGRADERD_STATE_DIR")
            .env_remove("UPGRADERD_CONFIG")
            .env("UPGRADERD_APP_CONFIG_ROOT", self.config_root())
            .env("UPGRADERD_APP_STATE_ROOT", self.state_root());
        cmd
    }

    fn history(&self, s: &Scenario, app: &str) -> Value {
        let run = Run::from_output(self.upgraderd(s, app, &["--json", "history"]).output().unwrap());
        run.success().json()
    }
}

fn spawn_upgrade(host: &Host, s: &Scenario, app: &str) -> Child {
    host.upgraderd(s, app, &["upgrade", "--to", "2.0.0"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
}

/// The holder named in a lock file, while a live process holds it.
fn lock_holder(path: &Path) -> Option<Value> {
    let file = fs::File::open(path).ok()?;
    match file.try_lock_shared() {
        Err(fs::TryLockError::WouldBlock) => serde_json::from_slice(&fs::read(path).ok()?).ok(),
        _ => None,
    }
}

fn finish(child: Child, app: &str) -> Run {
    let run = Run::from_output(child.wait_with_output().unwrap());
    assert_eq!(run.code, 0, "upgrade of app {app}:\n{}\n{}", run.stdout, run.stderr);
    run
}

#[test]
fn two_apps_upgrade_at_the_same_time_each_with_its_own_lock_and_history() {
    let Some(a) = Scenario::start("apps-a", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let Some(b) = Scenario::start("apps-b", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let host = Host::new();
    host.configure("alpha", &a);
    host.configure("beta", &b);

    let first = spawn_upgrade(&host, &a, "alpha");
    let second = spawn_upgrade(&host, &b, "beta");
    let (first_pid, second_pid) = (first.id(), second.id());
    let locks = [host.state_root().join("alpha/upgraderd.lock"), host.state_root().join("beta/upgraderd.lock")];
    // Each hook runs under its app's lock and waits for the release: both
    // inside at once means neither upgrade waited for the other.
    common::wait("both upgrades inside their locked section at once")
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(100))
        .showing(|| format!("holders: {:?}, {:?}", lock_holder(&locks[0]), lock_holder(&locks[1])))
        .until_true(|| host.marker("alpha-waiting").exists() && host.marker("beta-waiting").exists());
    assert_eq!(lock_holder(&locks[0]).map(|h| h["pid"].clone()), Some(first_pid.into()), "alpha holds its own lock");
    assert_eq!(lock_holder(&locks[1]).map(|h| h["pid"].clone()), Some(second_pid.into()), "beta holds its own lock");
    fs::write(host.marker("alpha-release"), "").unwrap();
    fs::write(host.marker("beta-release"), "").unwrap();
    finish(first, "alpha");
    finish(second, "beta");
    a.wait_version("2.0.0");
    b.wait_version("2.0.0");

    // Separate histories: each app's database holds its own upgrade alone.
    let alpha = host.history(&a, "alpha");
    let beta = host.history(&b, "beta");
    assert_eq!((alpha["count"].as_u64(), beta["count"].as_u64()), (Some(1), Some(1)), "{alpha}\n{beta}");
    for (app, history, scenario) in [("alpha", &alpha, &a), ("beta", &beta, &b)] {
        let row = &history["history"][0];
        assert_eq!(row["status"], "complete", "{row}");
        assert_eq!(row["toVersion"], "2.0.0");
        assert_eq!(scenario.status_file()["upgradeId"], row["upgradeId"], "the app's own trigger dir says so");
        let backup = Path::new(row["backupPath"].as_str().unwrap());
        assert!(backup.starts_with(host.state_root().join(app).join("backups")) && backup.exists(), "{row}");
    }
    assert_ne!(alpha["history"][0]["upgradeId"], beta["history"][0]["upgradeId"]);
    assert!(!a.sandbox.state().exists() && !b.sandbox.state().exists(), "no state outside the apps' own");
}
