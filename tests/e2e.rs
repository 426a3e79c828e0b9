//! End-to-end upgrades against the real Docker engine: a local registry on
//! 127.0.0.1 (Debian's `docker-registry`), test images built FROM scratch
//! around `examples/testapp`, compose v1 projects, and the real binary.
//!
//! Without an engine these tests print SKIP and pass, unless
//! `UPGRADERD_E2E_REQUIRED=1` (CI), which makes a missing engine a failure.
//! Everything they create carries `upgraderd-e2e-<pid>`; leftovers of earlier
//! runs are removed first, and a watcher removes this run's when it exits.

mod common;

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Sandbox;
use serde_json::Value;

struct World {
    registry: String,
    prefix: String,
}

/// Each test image: its version tag and how it behaves.
const VARIANTS: &[(&str, &str, &str)] = &[
    ("1.0.0", "good", "1"),
    ("2.0.0", "good", "2"),
    ("2.0.1", "crash", "2"),
    ("2.0.2", "hang", "2"),
    ("2.0.3", "http500", "2"),
    ("2.0.4", "wrong-version", "2"),
    ("2.0.5", "migrate-crash", "2"),
];

fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().expect("spawn");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[track_caller]
fn must(args: &[&str]) -> String {
    let (ok, text) = sh(args);
    assert!(ok, "`{}` failed:\n{text}", args.join(" "));
    text
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn world() -> Option<&'static World> {
    static WORLD: OnceLock<Option<World>> = OnceLock::new();
    WORLD.get_or_init(set_up).as_ref()
}

fn set_up() -> Option<World> {
    let required = std::env::var("UPGRADERD_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let engine = sh(&["docker", "info", "--format", "{{.ServerVersion}}"]);
    let tools = sh(&["docker-compose", "version"]).0 && sh(&["sh", "-c", "command -v docker-registry"]).0;
    if !engine.0 || !tools {
        let why = if engine.0 { "docker-compose or docker-registry is missing" } else { "no Docker engine answers" };
        assert!(!required, "UPGRADERD_E2E_REQUIRED=1 but {why}: {}", engine.1);
        eprintln!("SKIP e2e: {why}; end-to-end upgrades were NOT exercised");
        return None;
    }
    remove_leftovers("upgraderd-e2e-");
    let prefix = format!("upgraderd-e2e-{}", std::process::id());
    let port = free_port();
    let registry = format!("127.0.0.1:{port}");
    let storage = tempfile::Builder::new().prefix("upgraderd-e2e-registry-").tempdir().unwrap().keep();
    let config = storage.join("config.yml");
    fs::write(
        &config,
        format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {registry}\n", storage.join("data").display()),
    )
    .unwrap();
    // The registry lives as long as this test process; then the watcher cleans up after it.
    let watcher = format!(
        "docker-registry serve {cfg} >/dev/null 2>&1 & reg=$!; \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill $reg; \
         docker ps -aq --filter label=upgraderd-e2e={prefix} | xargs -r docker rm -f >/dev/null 2>&1; \
         docker volume ls -q --filter label=upgraderd-e2e={prefix} | xargs -r docker volume rm >/dev/null 2>&1; \
         for pass in 1 2; do \
           docker images -aq --filter label=upgraderd-e2e={prefix} | xargs -r docker rmi -f >/dev/null 2>&1; \
           docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep -F '{prefix}' | xargs -r docker rmi -f >/dev/null 2>&1; \
         done; \
         rm -rf {storage}",
        cfg = config.display(),
        pid = std::process::id(),
        storage = storage.display(),
    );
    // `setsid -f` forks the watcher off and returns at once.
    let started = Command::new("setsid")
        .args(["-f", "sh", "-c", &watcher])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(started.success(), "cannot start the registry watcher");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&registry).is_err() {
        assert!(Instant::now() < deadline, "the local registry did not start on {registry}");
        std::thread::sleep(Duration::from_millis(100));
    }
    build_images(&prefix);
    Some(World { registry, prefix })
}

fn remove_leftovers(marker: &str) {
    let mine = format!("{marker}{}", std::process::id());
    let (_, containers) = sh(&["docker", "ps", "-a", "--format", "{{.ID}} {{.Labels}}"]);
    for line in containers.lines().filter(|l| l.contains(marker) && !l.contains(&mine)) {
        let _ = sh(&["docker", "rm", "-f", line.split_whitespace().next().unwrap()]);
    }
    let (_, volumes) = sh(&["docker", "volume", "ls", "-q"]);
    for volume in volumes.lines().filter(|v| v.contains(marker) && !v.contains(&mine)) {
        let _ = sh(&["docker", "volume", "rm", "-f", volume]);
    }
    let (_, images) = sh(&["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]);
    for image in images.lines().filter(|i| i.contains(marker) && !i.contains(&mine)) {
        let _ = sh(&["docker", "rmi", "-f", image]);
    }
    // Untagged images an earlier run built (a rolled-back build, intermediate layers), by their label.
    let (_, labelled) = sh(&["docker", "images", "-aq", "--filter", "label=upgraderd-e2e"]);
    for id in labelled.lines() {
        let (_, label) = sh(&["docker", "inspect", "--format", "{{index .Config.Labels \"upgraderd-e2e\"}}", id]);
        if !label.contains(&mine) {
            let _ = sh(&["docker", "rmi", "-f", id]);
        }
    }
}

fn testapp_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join("examples/testapp");
    assert!(path.is_file(), "{} missing: `cargo test` builds it", path.display());
    path
}

fn build_images(prefix: &str) {
    let context = tempfile::tempdir().unwrap();
    fs::copy(testapp_binary(), context.path().join("testapp")).unwrap();
    for (version, behavior, schema) in VARIANTS {
        let dockerfile = format!(
            "FROM scratch\nCOPY testapp /testapp\nENV APP_VERSION={version} APP_BEHAVIOR={behavior} APP_SCHEMA={schema} APP_REPORTED_VERSION=1.9.9\n\
             LABEL org.opencontainers.image.version={version} upgraderd-e2e={prefix}\nENTRYPOINT [\"/testapp\"]\n"
        );
        fs::write(context.path().join("Dockerfile"), dockerfile).unwrap();
        must(&["docker", "build", "-q", "-t", &format!("{prefix}-build:{version}"), context.path().to_str().unwrap()]);
    }
}

/// One deployment of the test app in its own compose project, registry repository and volume.
struct Scenario {
    name: String,
    repo: String,
    dir: PathBuf,
    port: u16,
    sandbox: Sandbox,
    /// The compose files, relative to `dir`.
    files: Vec<&'static str>,
}

impl Scenario {
    /// Pushes `versions` for this scenario and starts 1.0.0 as `repo:latest`.
    fn start(test: &str, versions: &[&str]) -> Option<Scenario> {
        let world = world()?;
        let name = format!("{}-{test}", world.prefix);
        let repo = format!("{}/{name}/app", world.registry);
        for version in versions {
            must(&["docker", "tag", &format!("{}-build:{version}", world.prefix), &format!("{repo}:{version}")]);
            must(&["docker", "push", &format!("{repo}:{version}")]);
        }
        must(&["docker", "tag", &format!("{repo}:1.0.0"), &format!("{repo}:latest")]);
        // Only what the service runs stays local: the upgrade must pull its target.
        for version in versions.iter().filter(|v| **v != "1.0.0") {
            must(&["docker", "rmi", &format!("{repo}:{version}")]);
        }
        let sandbox = Sandbox::new();
        let dir = sandbox.path().join("deploy");
        fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        fs::write(
            dir.join("docker-compose.yml"),
            format!(
                "version: '3.7'\nservices:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
                 volumes:\n      - appdata:/data\n    env_file: app.env\n    labels:\n      upgraderd-e2e: {prefix}\nvolumes:\n  appdata:\n    labels:\n      upgraderd-e2e: {prefix}\n",
                prefix = world.prefix
            ),
        )
        .unwrap();
        fs::write(
            dir.join("docker-compose.prod.yml"),
            "version: '3.7'\nservices:\n  app:\n    environment:\n      OVERLAY: from-overlay\n",
        )
        .unwrap();
        fs::write(dir.join("app.env"), "GREETING=hello-from-env-file\n").unwrap();
        let files = vec!["docker-compose.yml", "docker-compose.prod.yml"];
        let scenario = Scenario { name, repo, dir, port, sandbox, files };
        scenario.compose(&["up", "-d"]);
        scenario.wait_version("1.0.0");
        for item in ["alpha", "beta", "gamma"] {
            let url = format!("http://127.0.0.1:{}/api/items?name={item}", scenario.port);
            ureq::post(&url).call().expect("seed data");
        }
        Some(scenario)
    }

    fn compose(&self, args: &[&str]) -> String {
        let mut argv = vec!["docker-compose", "-p", &self.name];
        for file in &self.files {
            argv.extend(["-f", file]);
        }
        argv.extend_from_slice(args);
        let out = Command::new(argv[0]).args(&argv[1..]).current_dir(&self.dir).output().unwrap();
        assert!(out.status.success(), "compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn container(&self) -> String {
        let out =
            must(&["docker", "ps", "-aq", "--filter", &format!("label=com.docker.compose.project={}", self.name)]);
        out.lines().next().expect("the service has a container").to_string()
    }

    fn health(&self) -> Option<Value> {
        let url = format!("http://127.0.0.1:{}/api/health", self.port);
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        agent.get(&url).call().ok()?.into_json().ok()
    }

    fn wait_version(&self, version: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(health) = self.health().filter(|h| h["version"] == version) {
                return health;
            }
            assert!(Instant::now() < deadline, "{version} never answered; last: {:?}", self.health());
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// A consistent dump of the app's data: schema version and every row.
    fn dump(&self) -> String {
        let volume = format!("{}_appdata", self.name);
        let mountpoint = must(&["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
        let db = rusqlite::Connection::open_with_flags(
            Path::new(mountpoint.trim()).join("app.db"),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
        )
        .unwrap();
        let version: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap();
        let mut stmt = db.prepare("SELECT * FROM items ORDER BY id").unwrap();
        let columns = stmt.column_count();
        let rows: Vec<String> = stmt
            .query_map([], |r| {
                Ok((0..columns)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect::<Vec<_>>()
                    .join("|"))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect();
        format!("schema {version}\n{}", rows.join("\n"))
    }

    /// upgraderd configured for this scenario's deployment, its trigger dir the sandbox.
    fn upgraderd_command(&self, args: &[&str]) -> Command {
        let state = self.sandbox.state().display().to_string();
        let mut sb_args = vec!["--state-dir", state.as_str()];
        sb_args.extend_from_slice(args);
        let mut cmd = self.sandbox.command(&sb_args);
        cmd.env("UPGRADERD_CONTAINER", self.container())
            .env("UPGRADERD_HEALTH_URL", format!("http://127.0.0.1:{}/api/health", self.port))
            .env("UPGRADERD_HEALTH_TIMEOUT", "20s")
            .env("UPGRADERD_HEALTH_STABLE", "1s")
            .env("UPGRADERD_HEALTH_VERSION_POINTER", "/version")
            .env("UPGRADERD_MIN_FREE", "1MB")
            .env("UPGRADERD_TRIGGER_DIR", self.sandbox.path());
        cmd
    }

    fn upgraderd(&self, args: &[&str]) -> common::Run {
        let out = self.upgraderd_command(args).output().unwrap();
        common::Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn try_status_file(&self) -> Option<Value> {
        serde_json::from_slice(&fs::read(self.sandbox.path().join(".upgrade-status.json")).ok()?).ok()
    }

    fn status_file(&self) -> Value {
        serde_json::from_slice(&fs::read(self.sandbox.path().join(".upgrade-status.json")).unwrap()).unwrap()
    }

    fn last_history(&self) -> Value {
        let run = self.sandbox.run(&[
            "--state-dir",
            self.sandbox.state().to_str().unwrap(),
            "--json",
            "history",
            "--limit",
            "1",
        ]);
        run.success().json()["history"][0].clone()
    }
}

impl Drop for Scenario {
    fn drop(&mut self) {
        let mut args = vec!["-p".to_string(), self.name.clone()];
        for file in &self.files {
            args.extend(["-f".to_string(), file.to_string()]);
        }
        args.extend(["down", "-v", "-t", "1"].map(String::from));
        let _ = Command::new("docker-compose").args(&args).current_dir(&self.dir).output();
        let (_, images) = sh(&["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", &self.repo]);
        for image in images.lines() {
            let _ = sh(&["docker", "rmi", "-f", image]);
        }
    }
}

#[test]
fn happy_path_keeps_settings_and_migrates_data() {
    let Some(s) = Scenario::start("happy", &["1.0.0", "2.0.0"]) else { return };
    let before = s.dump();
    assert!(before.starts_with("schema 1"), "{before}");
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("[ 40%] downloading"), "{}", run.stderr);
    let health = s.wait_version("2.0.0");
    assert_eq!(health["greeting"], "hello-from-env-file");
    assert_eq!(health["overlay"], "from-overlay");
    let after = s.dump();
    assert!(after.starts_with("schema 2") && after.contains("ALPHA"), "{after}");
    let row = s.last_history();
    assert_eq!(row["status"], "complete");
    assert_eq!((row["fromVersion"].as_str(), row["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    assert!(Path::new(row["backupPath"].as_str().unwrap()).is_file());
    let status = s.status_file();
    assert_eq!((status["status"].as_str(), status["progress"].as_i64()), (Some("complete"), Some(100)));
    assert_eq!(status["upgradeId"], row["upgradeId"]);

    // Manual rollback puts 1.0.0 and its data back.
    let run = s.upgraderd(&["rollback"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
}

fn bad_version_rolls_back(test: &str, version: &str, reason: &str) {
    let Some(s) = Scenario::start(test, &["1.0.0", version]) else { return };
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", version]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before, "data must be restored byte for byte in content");
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    let error = row["errorMessage"].as_str().unwrap();
    assert!(error.contains(reason), "expected {reason:?} in {error}");
    assert_eq!(s.status_file()["status"], "rolled_back");
}

#[test]
fn a_version_that_crashes_at_start_is_rolled_back_without_waiting_for_the_timeout() {
    // The reason names the exit or the crash loop, not the timeout: the gate failed fast.
    let Some(_) = world() else { return };
    bad_version_rolls_back("crash", "2.0.1", "the container");
}

#[test]
fn a_version_that_never_listens_is_rolled_back() {
    bad_version_rolls_back("hang", "2.0.2", "not healthy after 20s");
}

#[test]
fn a_version_whose_health_answers_500_is_rolled_back() {
    bad_version_rolls_back("http500", "2.0.3", "answered HTTP 500");
}

#[test]
fn a_version_reporting_the_wrong_version_is_rolled_back() {
    bad_version_rolls_back("wrongver", "2.0.4", "reports version 1.9.9 at /version, expected 2.0.4");
}

#[test]
fn a_version_that_migrates_then_crashes_is_rolled_back_with_its_data() {
    bad_version_rolls_back("migcrash", "2.0.5", "the container");
}

#[test]
fn a_target_missing_from_the_registry_is_refused_before_anything_changes() {
    let Some(s) = Scenario::start("absent", &["1.0.0"]) else { return };
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "9.9.9"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("does not exist in the registry"), "{}", run.stderr);
    assert_eq!(s.container(), container, "the container was not recreated");
    let row = s.last_history();
    assert_eq!(row["status"], "failed");
    assert!(row["errorMessage"].as_str().unwrap().contains("refused in preflight"));
    assert!(row["backupPath"].is_null());
}

#[test]
fn a_compose_file_pinning_another_tag_is_refused_naming_the_file() {
    let Some(s) = Scenario::start("pinned", &["1.0.0", "2.0.0"]) else { return };
    let container = s.container();
    fs::write(
        s.dir.join("docker-compose.prod.yml"),
        format!(
            "version: '3.7'\nservices:\n  app:\n    image: {}:1.0.0\n    environment:\n      OVERLAY: from-overlay\n",
            s.repo
        ),
    )
    .unwrap();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("docker-compose.prod.yml:4 sets the image"), "{}", run.stderr);
    assert_eq!(s.container(), container);
    s.wait_version("1.0.0");
}

#[test]
fn a_second_upgrade_while_one_runs_exits_3() {
    let Some(s) = Scenario::start("twice", &["1.0.0", "2.0.2"]) else { return };
    let first = {
        let mut args = vec!["--state-dir".to_string(), s.sandbox.state().display().to_string()];
        args.extend(["upgrade", "--to", "2.0.2"].map(String::from));
        let mut cmd = s.sandbox.command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        cmd.env("UPGRADERD_CONTAINER", s.container())
            .env("UPGRADERD_HEALTH_URL", format!("http://127.0.0.1:{}/api/health", s.port))
            .env("UPGRADERD_HEALTH_TIMEOUT", "20s")
            .env("UPGRADERD_MIN_FREE", "1MB");
        cmd.spawn().unwrap()
    };
    std::thread::sleep(Duration::from_secs(2));
    let second = s.upgraderd(&["upgrade", "--to", "2.0.2"]);
    assert_eq!(second.code, 3, "{}", second.stderr);
    assert!(second.stderr.contains("another upgraderd holds the lock"), "{}", second.stderr);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    s.wait_version("1.0.0");
}

#[test]
fn dry_run_prints_the_commands_and_changes_nothing() {
    let Some(s) = Scenario::start("dryrun", &["1.0.0", "2.0.0"]) else { return };
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0", "--dry-run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("pull {}:2.0.0", s.repo)), "{}", run.stdout);
    assert!(run.stdout.contains("up -d --no-deps --force-recreate app"), "{}", run.stdout);
    assert_eq!(s.container(), container);
    assert!(!s.sandbox.state().join("upgraderd.db").exists() || s.last_history().is_null());
}

const STEPS: &[&str] = &["preflight", "backing_up", "downloading", "restarting", "health_check"];
const TERMINAL: &[&str] = &["complete", "rolled_back", "failed"];

/// SIGKILLs `watch` once the upgrade reaches `STEPS[i]` (or the first later
/// step, when that one passed too fast to catch), restarts it, and checks the
/// upgrade still ends `complete` or `rolled_back` with the data intact.
fn kill_the_daemon_at(test: &str, version: &str, i: usize) {
    let step = STEPS[i];
    let Some(s) = Scenario::start(test, &["1.0.0", version]) else { return };
    let before = s.dump();
    let id = format!("kill-{test}");
    let spawn = || s.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut daemon = spawn();
    let trigger = s.sandbox.path().join(".upgrade-trigger");
    fs::write(s.sandbox.path().join(".trigger.tmp"), format!(r#"{{"upgradeId":"{id}","version":"{version}"}}"#))
        .unwrap();
    fs::rename(s.sandbox.path().join(".trigger.tmp"), &trigger).unwrap();
    let later: Vec<&str> = STEPS[i..].iter().chain(TERMINAL).copied().collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen = loop {
        if let Some(status) = s.try_status_file().filter(|st| st["upgradeId"] == id.as_str()) {
            let state = status["status"].as_str().unwrap_or_default().to_string();
            if later.contains(&state.as_str()) {
                break state;
            }
        }
        assert!(Instant::now() < deadline, "{id} never reached {step}: {:?}", s.try_status_file());
        std::thread::sleep(Duration::from_millis(2));
    };
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let mut daemon = spawn();
    let deadline = Instant::now() + Duration::from_secs(120);
    let end = loop {
        let status = s.try_status_file().filter(|st| st["upgradeId"] == id.as_str());
        if let Some(state) = status.as_ref().and_then(|st| st["status"].as_str()) {
            if TERMINAL.contains(&state) && s.last_history()["status"] == state {
                break state.to_string();
            }
        }
        assert!(Instant::now() < deadline, "{id} (killed at {seen}) never ended: {status:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    match end.as_str() {
        "complete" => {
            s.wait_version(version);
            assert!(s.dump().starts_with("schema 2"), "killed at {seen}: {}", s.dump());
        }
        "rolled_back" => {
            s.wait_version("1.0.0");
            assert_eq!(s.dump(), before, "killed at {seen}: data restored");
        }
        other => panic!("killed at {seen}, {id} ended {other}: {}", s.last_history()),
    }
    eprintln!("{test}: aimed at {step}, killed at {seen}, ended {end}");
}

/// One test per step and version, so they run in parallel.
macro_rules! kill_tests {
    ($($name:ident: $version:expr, $step:expr;)*) => {$(
        #[test]
        fn $name() {
            kill_the_daemon_at(stringify!($name), $version, $step);
        }
    )*};
}

// A good version: killed before the switch the request runs again → complete; after it → rolled_back.
// A bad version (2.0.5 migrates the schema, then crashes): always rolled_back with the data restored.
kill_tests! {
    kill_good_at_preflight: "2.0.0", 0;
    kill_good_at_backing_up: "2.0.0", 1;
    kill_good_at_downloading: "2.0.0", 2;
    kill_good_at_restarting: "2.0.0", 3;
    kill_good_at_health_check: "2.0.0", 4;
    kill_bad_at_preflight: "2.0.5", 0;
    kill_bad_at_backing_up: "2.0.5", 1;
    kill_bad_at_downloading: "2.0.5", 2;
    kill_bad_at_restarting: "2.0.5", 3;
    kill_bad_at_health_check: "2.0.5", 4;
}

#[test]
fn check_version_reads_the_real_registry_tags_and_upgrades() {
    let Some(s) = Scenario::start("tags", &["1.0.0", "2.0.0", "2.0.1"]) else { return };
    let json = s.upgraderd(&["--json", "check-version"]);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["source"], "registry");
    assert_eq!(report["currentVersion"], "1.0.0", "from the image's version label");
    assert_eq!(report["latestVersion"], "2.0.1");
    assert_eq!(report["allowedVersion"], Value::Null, "2.x is beyond the default minor policy");
    let run = s.upgraderd_command(&["check-version", "--upgrade"]).env("UPGRADERD_POLICY", "major").output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    // 2.0.1 crashes at start: the automatic upgrade is rolled back, and 2.0.1 is quarantined.
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    s.wait_version("1.0.0");
    let report: Value = serde_json::from_slice(
        &s.upgraderd_command(&["--json", "check-version"]).env("UPGRADERD_POLICY", "major").output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(report["allowedVersion"], "2.0.0", "{report}");
    assert!(report["heldBack"][0].as_str().unwrap().contains("rolled back on this host"), "{report}");
}

/// Runs git in `dir` with a fixed identity.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=upgraderd tests",
            "-c",
            "user.email=tests@upgraderd.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The app's source at one release: a Dockerfile on the locally built base.
fn commit_release(src: &Path, prefix: &str, version: &str, behavior: &str, schema: u8, message: &str) -> String {
    fs::write(
        src.join("Dockerfile"),
        format!(
            "FROM {prefix}-build:1.0.0\nENV APP_VERSION={version} APP_BEHAVIOR={behavior} APP_SCHEMA={schema}\n\
             LABEL org.opencontainers.image.version={version}\n"
        ),
    )
    .unwrap();
    git(src, &["add", "-A"]);
    git(src, &["commit", "-q", "-m", message]);
    git(src, &["rev-parse", "HEAD"])
}

impl Scenario {
    /// The OpenTrace layout: a checkout of a local bare repository (file URL)
    /// deployed with `docker-compose -f docker-compose.prod.yml up --build -d`
    /// at v1.0.0, while origin/main has 2.0.0 (tag v2.0.0) and a broken 2.0.1
    /// at its tip; tag v9.9.9 names a commit whose build fails.
    fn start_rebuild(test: &str) -> Option<(Scenario, Vec<String>)> {
        let world = world()?;
        let name = format!("{}-{test}", world.prefix);
        let sandbox = Sandbox::new();
        let src = sandbox.path().join("src");
        fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        let port = free_port();
        fs::write(
            src.join("docker-compose.prod.yml"),
            format!(
                "version: '3.7'\nservices:\n  app:\n    build: .\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
                 volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\nvolumes:\n  appdata:\n    labels:\n      upgraderd-e2e: {prefix}\n",
                prefix = world.prefix
            ),
        )
        .unwrap();
        let p = &world.prefix;
        let mut commits = vec![commit_release(&src, p, "1.0.0", "good", 1, "Release 1.0.0")];
        git(&src, &["tag", "v1.0.0"]);
        commits.push(commit_release(&src, p, "2.0.0", "good", 2, "Release 2.0.0"));
        git(&src, &["tag", "v2.0.0"]);
        commits.push(commit_release(&src, p, "2.0.1", "migrate-crash", 2, "Release 2.0.1 (broken migration)"));
        git(&src, &["checkout", "-q", "-b", "broken", "v1.0.0"]);
        fs::write(src.join("Dockerfile"), "FROM scratch\nCOPY does-not-exist /nothing\n").unwrap();
        git(&src, &["commit", "-q", "-am", "A build that fails"]);
        git(&src, &["tag", "v9.9.9"]);
        git(&src, &["checkout", "-q", "main"]);
        let origin = sandbox.path().join("origin.git");
        git(sandbox.path(), &["clone", "-q", "--bare", src.to_str().unwrap(), origin.to_str().unwrap()]);
        let dir = sandbox.path().join("deploy");
        git(sandbox.path(), &["clone", "-q", &format!("file://{}", origin.display()), dir.to_str().unwrap()]);
        git(&dir, &["reset", "-q", "--hard", "v1.0.0"]);
        let repo = format!("{}_app", name.replace(['.'], ""));
        let scenario = Scenario { name, repo, dir, port, sandbox, files: vec!["docker-compose.prod.yml"] };
        scenario.compose(&["up", "-d", "--build"]);
        scenario.wait_version("1.0.0");
        for item in ["alpha", "beta", "gamma"] {
            let url = format!("http://127.0.0.1:{}/api/items?name={item}", scenario.port);
            ureq::post(&url).call().expect("seed data");
        }
        Some((scenario, commits))
    }

    fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    fn rebuild(&self, args: &[&str]) -> common::Run {
        let mut all = vec!["upgrade", "--strategy", "rebuild"];
        all.extend_from_slice(args);
        self.upgraderd(&all)
    }
}

#[test]
fn rebuild_to_a_tag_then_a_bad_tip_rolls_back_to_the_commit_its_images_and_data() {
    let Some((s, commits)) = Scenario::start_rebuild("rebuild") else { return };
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1]);
    assert!(s.dump().starts_with("schema 2"));
    let row = s.last_history();
    assert_eq!((row["strategy"].as_str(), row["status"].as_str()), (Some("rebuild"), Some("complete")));
    assert_eq!(row["previousCommit"], commits[0].as_str());
    assert!(row["targetSubject"].as_str().unwrap().ends_with("Release 2.0.0"), "{row}");
    let table = s.upgraderd(&["history"]);
    assert!(table.stdout.contains("Release 2.0.0"), "history shows commits:\n{}", table.stdout);

    let before = s.dump();
    let container = s.container();
    let run = s.rebuild(&["--to", "latest"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Building"), "the build is its own step:\n{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1], "the checkout is back at the previous commit");
    assert_eq!(s.dump(), before, "data restored");
    assert_ne!(s.container(), container, "recreated from the kept image");
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    assert!(!run.stderr.contains("Building 2.0.0"));
}

#[test]
fn rebuild_refuses_what_it_cannot_do_safely_before_anything_running_changes() {
    let Some((s, commits)) = Scenario::start_rebuild("rbrefuse") else { return };
    let container = s.container();
    let unchanged = |what: &str| {
        assert_eq!(s.container(), container, "{what}: the container was not touched");
        assert_eq!(s.head(), commits[0], "{what}: the checkout did not move");
        s.wait_version("1.0.0");
    };

    // A local modification to a tracked file.
    fs::write(
        s.dir.join("docker-compose.prod.yml"),
        fs::read_to_string(s.dir.join("docker-compose.prod.yml")).unwrap() + "# local\n",
    )
    .unwrap();
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("local modifications to tracked files: docker-compose.prod.yml"), "{}", run.stderr);
    git(&s.dir, &["checkout", "--", "docker-compose.prod.yml"]);
    unchanged("dirty tree");

    // A diverged branch: a local commit the remote does not have.
    fs::write(s.dir.join("NOTES"), "local\n").unwrap();
    git(&s.dir, &["add", "NOTES"]);
    git(&s.dir, &["commit", "-q", "-m", "local change"]);
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert!(run.stderr.contains("is not a fast-forward of the checkout"), "{}", run.stderr);
    git(&s.dir, &["reset", "-q", "--hard", &commits[0]]);
    unchanged("diverged");

    // An unreachable remote.
    git(&s.dir, &["remote", "set-url", "origin", "file:///nonexistent/origin.git"]);
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert!(run.stderr.contains("the remote origin cannot be reached"), "{}", run.stderr);
    let origin = s.sandbox.path().join("origin.git");
    git(&s.dir, &["remote", "set-url", "origin", &format!("file://{}", origin.display())]);
    unchanged("unreachable remote");

    // A build that fails: nothing running changes and the checkout goes back.
    let run = s.rebuild(&["--to", "9.9.9", "--force"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("building the new version failed; the checkout is back"), "{}", run.stderr);
    unchanged("failed build");
    let row = s.last_history();
    assert_eq!(row["status"], "failed");
    assert_eq!(row["switched"], false);
}

#[test]
fn a_rebuild_upgrader_killed_after_the_switch_is_put_back_by_the_next_watch() {
    let Some((s, commits)) = Scenario::start_rebuild("rbkill") else { return };
    let before = s.dump();
    let mut upgrade = s
        .upgraderd_command(&["upgrade", "--strategy", "rebuild", "--to", "2.0.0"])
        .env("UPGRADERD_HEALTH_STABLE", "120s")
        .env("UPGRADERD_HEALTH_TIMEOUT", "180s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.try_status_file().is_none_or(|st| st["status"] != "health_check") {
        assert!(Instant::now() < deadline, "never reached health_check: {:?}", s.try_status_file());
        std::thread::sleep(Duration::from_millis(20));
    }
    upgrade.kill().unwrap();
    upgrade.wait().unwrap();
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1]);

    let mut daemon = s.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.last_history()["status"] != "rolled_back" {
        assert!(Instant::now() < deadline, "not recovered: {}", s.last_history());
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    s.wait_version("1.0.0");
    assert_eq!(s.head(), commits[0], "the checkout is back at the recorded commit");
    assert_eq!(s.dump(), before);
}

#[test]
fn a_rebuild_upgrader_killed_after_moving_the_checkout_gets_the_checkout_back() {
    let Some((s, commits)) = Scenario::start_rebuild("rbmoved") else { return };
    let before = s.dump();
    let mut upgrade = s
        .upgraderd_command(&["upgrade", "--strategy", "rebuild", "--to", "2.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the checkout has moved: while the build runs, before the switch.
    let deadline = Instant::now() + Duration::from_secs(120);
    while s.head() == commits[0] {
        assert!(Instant::now() < deadline, "the checkout never moved: {:?}", s.try_status_file());
        std::thread::sleep(Duration::from_millis(5));
    }
    upgrade.kill().unwrap();
    upgrade.wait().unwrap();

    let mut daemon = s.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !["failed", "rolled_back"].contains(&s.last_history()["status"].as_str().unwrap_or_default()) {
        assert!(Instant::now() < deadline, "not recovered: {}", s.last_history());
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    assert_eq!(s.head(), commits[0], "the checkout is back where the running version was built from");
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
    eprintln!("rbmoved: recovered as {}", s.last_history()["status"]);
}
