//! The engine-wide set-up shared by every e2e test: the local registry, the
//! test images (built once per test binary) and the removal of what earlier
//! runs left behind.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::common;
use crate::compose;
use crate::owner::{is_leftover, RunId};

pub struct World {
    pub registry: String,
    pub prefix: String,
    /// The DOCKER_CONFIG holding the compose v2 plugin, or why there is none.
    pub compose_v2: Result<PathBuf, String>,
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

pub fn sh(args: &[&str]) -> (bool, String) {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().expect("spawn");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[track_caller]
pub fn must(args: &[&str]) -> String {
    let (ok, text) = sh(args);
    assert!(ok, "`{}` failed:\n{text}", args.join(" "));
    text
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

pub fn world() -> Option<&'static World> {
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
    let compose_v2 = compose::find_v2();
    if let Err(why) = &compose_v2 {
        assert!(!required, "UPGRADERD_E2E_REQUIRED=1 but {why}");
        eprintln!("SKIP e2e under compose v2: {why}; those scenarios run under compose v1 only");
    }
    let me = RunId::current();
    remove_leftovers(me);
    let prefix = me.marker();
    let port = free_port();
    let registry = format!("127.0.0.1:{port}");
    let storage = tempfile::Builder::new().prefix("upgraderd-e2e-registry-").tempdir().unwrap().keep();
    let config = storage.join("config.yml");
    fs::write(
        &config,
        format!("version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {registry}\n", storage.join("data").display()),
    )
    .unwrap();
    start_watcher(me, &config, &storage);
    common::wait(format!("the local registry to listen on {registry}"))
        .within(Duration::from_secs(20))
        .every(Duration::from_millis(50))
        .until_true(|| std::net::TcpStream::connect(&registry).is_ok());
    build_images(&prefix);
    Some(World { registry, prefix, compose_v2 })
}

/// Starts the registry and a watcher that outlives this process: once this
/// run's process is gone (its pid no longer names a process started at the
/// same time), it stops the registry and removes everything marked with this
/// run's marker. The trailing `-` keeps `…-12-555` from matching `…-12-5551`.
fn start_watcher(me: RunId, config: &Path, storage: &Path) {
    let watcher = format!(
        "docker-registry serve {cfg} >/dev/null 2>&1 & reg=$!; \
         while [ \"$(sed 's/.*) //' /proc/{pid}/stat 2>/dev/null | cut -d' ' -f20)\" = {started} ]; do sleep 1; done; \
         kill $reg; \
         docker service ls --format '{{{{.Name}}}}' 2>/dev/null | grep -F '{prefix}-' | xargs -r docker service rm >/dev/null 2>&1; sleep 2; \
         docker ps -aq --filter label=upgraderd-e2e={prefix} | xargs -r docker rm -f >/dev/null 2>&1; \
         docker volume ls -q --filter label=upgraderd-e2e={prefix} | xargs -r docker volume rm >/dev/null 2>&1; \
         docker network ls --format '{{{{.Name}}}}' | grep -F '{prefix}-' | xargs -r docker network rm >/dev/null 2>&1; \
         for pass in 1 2; do \
           docker images -aq --filter label=upgraderd-e2e={prefix} | xargs -r docker rmi -f >/dev/null 2>&1; \
           docker images --format '{{{{.Repository}}}}:{{{{.Tag}}}}' | grep -F '{prefix}-' | xargs -r docker rmi -f >/dev/null 2>&1; \
         done; \
         rm -rf {storage}",
        cfg = config.display(),
        pid = me.pid,
        started = me.started,
        prefix = me.marker(),
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
}

/// Removes what runs whose process is gone left on the engine (a run killed
/// with its watcher, a machine restarted mid-run); live runs' resources stay.
fn remove_leftovers(me: RunId) {
    let leftovers = |listing: &[&str]| -> Vec<String> {
        let (_, text) = sh(listing);
        text.lines()
            .filter(|line| is_leftover(line, me))
            .filter_map(|line| line.split_whitespace().next())
            .map(str::to_string)
            .collect()
    };
    // A stack's services first: Swarm would start their task containers again.
    for service in leftovers(&["docker", "service", "ls", "--format", "{{.Name}}"]) {
        let _ = sh(&["docker", "service", "rm", &service]);
    }
    for id in leftovers(&["docker", "ps", "-a", "--format", "{{.ID}} {{.Names}} {{.Labels}}"]) {
        let _ = sh(&["docker", "rm", "-f", &id]);
    }
    for volume in leftovers(&["docker", "volume", "ls", "--format", "{{.Name}} {{.Labels}}"]) {
        let _ = sh(&["docker", "volume", "rm", "-f", &volume]);
    }
    for network in leftovers(&["docker", "network", "ls", "--format", "{{.ID}} {{.Name}} {{.Labels}}"]) {
        let _ = sh(&["docker", "network", "rm", &network]);
    }
    for image in leftovers(&["docker", "images", "--format", "{{.Repository}}:{{.Tag}}"]) {
        let _ = sh(&["docker", "rmi", "-f", &image]);
    }
    // Untagged images a run built (a rolled-back build, intermediate layers), by their label.
    let (_, labelled) = sh(&["docker", "images", "-aq", "--filter", "label=upgraderd-e2e"]);
    for id in labelled.lines() {
        let (_, label) = sh(&["docker", "inspect", "--format", "{{index .Config.Labels \"upgraderd-e2e\"}}", id]);
        if is_leftover(&label, me) {
            let _ = sh(&["docker", "rmi", "-f", id]);
        }
    }
}

/// The app the test images run. `cargo test` builds it with every target;
/// `cargo test --test e2e` does not, so it is built here (a no-op when fresh).
pub fn testapp_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    if let Some(cargo) = std::env::var_os("CARGO") {
        let mut build = Command::new(cargo);
        build.args(["build", "--quiet", "--example", "testapp"]).current_dir(env!("CARGO_MANIFEST_DIR"));
        if profile_dir.file_name().is_some_and(|name| name == "release") {
            build.arg("--release");
        }
        let status = build.status().unwrap();
        assert!(status.success(), "`cargo build --example testapp` failed");
    }
    let path = profile_dir.join("examples/testapp");
    assert!(path.is_file(), "{} missing: `cargo build --example testapp` builds it", path.display());
    path
}

/// Builds `<prefix>-build:<version>` for every variant: one base image holds
/// the app, and each variant only sets its behaviour on top, so the app's
/// layer is built, stored and pushed once.
fn build_images(prefix: &str) {
    let context = tempfile::tempdir().unwrap();
    fs::copy(testapp_binary(), context.path().join("testapp")).unwrap();
    let base = format!("{prefix}-build:base");
    let dockerfile = format!(
        "FROM scratch\nCOPY testapp /testapp\nLABEL upgraderd-e2e={prefix}\nENV APP_REPORTED_VERSION=1.9.9\nENTRYPOINT [\"/testapp\"]\n"
    );
    docker_build(context.path(), &dockerfile, &base);
    // Each variant is two metadata steps: built side by side, they take the time of one.
    std::thread::scope(|scope| {
        for (version, behavior, schema) in VARIANTS {
            let base = &base;
            scope.spawn(move || {
                let context = tempfile::tempdir().unwrap();
                let dockerfile = format!(
                    "FROM {base}\nENV APP_VERSION={version} APP_BEHAVIOR={behavior} APP_SCHEMA={schema}\n\
                     LABEL org.opencontainers.image.version={version}\n"
                );
                docker_build(context.path(), &dockerfile, &format!("{prefix}-build:{version}"));
            });
        }
    });
}

pub fn docker_build(context: &Path, dockerfile: &str, tag: &str) {
    fs::write(context.join("Dockerfile"), dockerfile).unwrap();
    must(&["docker", "build", "-q", "-t", tag, context.to_str().unwrap()]);
}
