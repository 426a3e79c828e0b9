//! The engine-wide set-up shared by every e2e test: the local registry, the
//! test images (built once per test binary) and the removal of what earlier
//! runs left behind.

use std::fs;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

pub struct World {
    pub registry: String,
    pub prefix: String,
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
