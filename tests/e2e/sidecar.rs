//! upgraderd as a compose sidecar, nothing of it on the host: the image
//! `image/build.sh` makes (from this build's binary, the machine's docker CLI
//! and the compose v2 plugin the tests fetch), brought up next to a
//! MeshMonitor-shaped app with the example overlay
//! (`examples/meshmonitor/docker-compose.upgrade.yml`, its paths and names
//! replaced for the test), under compose v2: `up -d` of both files. The app's
//! trigger is written into its data directory as the app writes it; the
//! sidecar upgrades, rolls back with the data, survives the app's recreate,
//! recovers an upgrade it was killed in, and refuses a project directory not
//! mounted at the same path, naming the mount.
//!
//! The test registry listens on the host's loopback, which a container's is
//! not: a [`Forwarder`] gives the sidecar's network namespace the registry
//! at the same `127.0.0.1:PORT` (a real sidecar reaches its registry over the
//! network).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Sandbox};
use crate::private_engine::Forwarder;
use crate::scenario::sqlite_dump;
use crate::world::{free_port, must, sh, world};

/// The sidecar image, built once per run: `None` where it cannot be (no compose v2).
fn image() -> Option<&'static str> {
    static IMAGE: OnceLock<Option<String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let world = world()?;
            let config = match &world.compose_v2 {
                Ok(config) => config.clone(),
                Err(why) => {
                    assert!(!std::env::var("UPGRADERD_E2E_REQUIRED").is_ok_and(|v| v == "1"), "{why}");
                    eprintln!("SKIP: the sidecar needs compose v2: {why}");
                    return None;
                }
            };
            let tag = format!("{}-upgraderd:sidecar", world.prefix);
            let began = Instant::now();
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("image/build.sh");
            let out = Command::new(script)
                .args(["--binary", common::BIN, "--tag", &tag])
                .arg("--compose")
                .arg(config.join("cli-plugins/docker-compose"))
                .args(["--label", &format!("upgraderd-e2e={}", world.prefix)])
                .output()
                .unwrap();
            assert!(out.status.success(), "image/build.sh: {}", String::from_utf8_lossy(&out.stderr));
            eprintln!("sidecar image: {} in {:?}", String::from_utf8_lossy(&out.stdout).trim(), began.elapsed());
            Some(tag)
        })
        .as_deref()
}

/// The app and its sidecar, one compose project in `dir`.
struct Deployment {
    /// Holds `dir`; removed with the deployment.
    _sandbox: Sandbox,
    dir: PathBuf,
    project: String,
    app: String,
    sidecar: String,
    port: u16,
    compose_v2: PathBuf,
    /// The registry inside the sidecar's network namespace, for its container now.
    registry: std::cell::RefCell<Option<Forwarder>>,
}

impl Deployment {
    fn start(test: &str) -> Option<Deployment> {
        let world = world()?;
        let image = image()?;
        let project = format!("{}-sc-{test}", world.prefix);
        let repo = format!("{}/{project}/meshmonitor", world.registry);
        for version in ["1.0.0", "2.0.0", "2.0.3", "2.0.5"] {
            must(&["docker", "tag", &format!("{}-build:{version}", world.prefix), &format!("{repo}:{version}")]);
            must(&["docker", "push", &format!("{repo}:{version}")]);
        }
        must(&["docker", "tag", &format!("{repo}:1.0.0"), &format!("{repo}:latest")]);
        must(&["docker", "push", &format!("{repo}:latest")]);
        for version in ["2.0.0", "2.0.3", "2.0.5"] {
            must(&["docker", "rmi", &format!("{repo}:{version}")]);
        }
        let sandbox = Sandbox::new();
        let dir = sandbox.path().join("meshmonitor");
        std::fs::create_dir_all(dir.join("data")).unwrap();
        let port = free_port();
        let deployment = Deployment {
            dir,
            app: format!("{project}-app"),
            sidecar: format!("{project}-upgrader"),
            project,
            port,
            compose_v2: world.compose_v2.clone().ok()?,
            registry: Default::default(),
            _sandbox: sandbox,
        };
        deployment.write_files(&repo, image, &world.prefix);
        deployment.compose(&["up", "-d"]);
        deployment.forward_registry();
        deployment.wait_version("1.0.0");
        for item in ["alpha", "beta", "gamma"] {
            ureq::post(&format!("http://127.0.0.1:{port}/api/items?name={item}")).call().expect("seed data");
        }
        common::wait("the sidecar's daemon to beat")
            .within(Duration::from_secs(60))
            .showing(|| deployment.exec(&["watch", "--alive"]).stderr)
            .until_true(|| deployment.exec(&["watch", "--alive"]).code == 0);
        Some(deployment)
    }

    /// The app's compose file (MeshMonitor's shape: the data and trigger
    /// directory bind-mounted from the project directory), the example overlay
    /// as an operator would adapt it, and labels that let a later run find
    /// what a killed one left.
    fn write_files(&self, repo: &str, image: &str, prefix: &str) {
        let dir = self.dir.display().to_string();
        let app = format!(
            "services:\n  meshmonitor:\n    image: {repo}:latest\n    container_name: {}\n    restart: unless-stopped\n    \
             ports:\n      - \"{}:3001\"\n    volumes:\n      - {dir}/data:/data\n    environment:\n      - \
             AUTO_UPGRADE_ENABLED=true\n",
            self.app, self.port
        );
        std::fs::write(self.dir.join("docker-compose.yml"), app).unwrap();
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/meshmonitor/docker-compose.upgrade.yml");
        let overlay = std::fs::read_to_string(example)
            .unwrap()
            .replace("/srv/meshmonitor", &dir)
            .replace("image: upgraderd:latest", &format!("image: {image}"))
            .replace("container_name: meshmonitor-upgrader", &format!("container_name: {}", self.sidecar))
            .replace("UPGRADERD_CONTAINER: meshmonitor", &format!("UPGRADERD_CONTAINER: {}", self.app))
            .replace("UPGRADERD_HEALTH_TIMEOUT: 120s", "UPGRADERD_HEALTH_TIMEOUT: 20s")
            .replace("UPGRADERD_HEALTH_STABLE: 5s", "UPGRADERD_HEALTH_STABLE: 2s");
        std::fs::write(self.dir.join("docker-compose.upgrade.yml"), overlay).unwrap();
        let labels = format!(
            "services:\n  meshmonitor:\n    labels:\n      upgraderd-e2e: {prefix}\n  upgraderd:\n    labels:\n      \
             upgraderd-e2e: {prefix}\n"
        );
        std::fs::write(self.dir.join("test.yml"), labels).unwrap();
    }

    /// Forwards the test registry into the sidecar's network namespace, as it
    /// runs now (a new one after each start of the sidecar).
    fn forward_registry(&self) {
        let world = world().unwrap();
        let port: u16 = world.registry.rsplit_once(':').unwrap().1.parse().unwrap();
        let pid = must(&["docker", "inspect", "--format", "{{.State.Pid}}", &self.sidecar]).trim().to_string();
        let netns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let forwarder =
            Forwarder::start(&netns, port, &world.registry).expect("the registry forwarded into the sidecar");
        if let Some(old) = self.registry.replace(Some(forwarder)) {
            old.stop();
        }
    }

    /// `docker compose` with the three files, in the project directory.
    fn compose(&self, args: &[&str]) {
        let mut all = vec!["compose", "-p", &self.project];
        all.extend(["-f", "docker-compose.yml", "-f", "docker-compose.upgrade.yml", "-f", "test.yml"]);
        all.extend_from_slice(args);
        let out = Command::new("docker")
            .args(&all)
            .current_dir(&self.dir)
            .env("DOCKER_CONFIG", &self.compose_v2)
            .output()
            .unwrap();
        assert!(out.status.success(), "docker {all:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// upgraderd in the sidecar (`docker exec`: the image has no shell).
    fn exec(&self, args: &[&str]) -> common::Run {
        let out = Command::new("docker")
            .args(["exec", &self.sidecar, "/usr/local/bin/upgraderd"])
            .args(args)
            .output()
            .unwrap();
        common::Run::from_output(out)
    }

    fn wait_version(&self, version: &str) {
        crate::scenario::wait_version_at(self.port, version);
    }

    fn dump(&self) -> String {
        sqlite_dump(&self.dir.join("data"))
    }

    /// The trigger, written as the app writes it: a temp file renamed into place.
    fn trigger(&self, version: &str) -> String {
        let id = format!("{:08x}-0000-4000-8000-{:012x}", std::process::id(), free_port());
        let body = format!(r#"{{"upgradeId":"{id}","version":"{version}","backup":true,"timestamp":1}}"#);
        let data = self.dir.join("data");
        std::fs::write(data.join(".upgrade-trigger.tmp"), body).unwrap();
        std::fs::rename(data.join(".upgrade-trigger.tmp"), data.join(".upgrade-trigger")).unwrap();
        id
    }

    fn status_file(&self) -> Option<Value> {
        serde_json::from_slice(&std::fs::read(self.dir.join("data/.upgrade-status.json")).ok()?).ok()
    }

    /// Waits until the status file says the upgrade `id` ended, and returns its state.
    fn wait_end(&self, id: &str) -> String {
        let ended = |st: &Value| {
            st["upgradeId"] == id
                && ["complete", "rolled_back", "failed"].contains(&st["status"].as_str().unwrap_or_default())
        };
        common::wait(format!("upgrade {id} to end"))
            .within(Duration::from_secs(180))
            .every(Duration::from_millis(200))
            .showing(|| {
                format!("{:?}\n{}", self.status_file(), sh(&["docker", "logs", "--tail", "30", &self.sidecar]).1)
            })
            .until(|| self.status_file().filter(ended).map(|st| st["status"].as_str().unwrap().to_string()))
    }

    fn last_history(&self) -> Value {
        self.exec(&["--json", "history", "--limit", "1"]).success().json()["history"][0].clone()
    }

    fn container_id(&self, name: &str) -> String {
        must(&["docker", "inspect", "--format", "{{.Id}}", name]).trim().to_string()
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let mut all = vec!["compose", "-p", &self.project];
        all.extend(["-f", "docker-compose.yml", "-f", "docker-compose.upgrade.yml", "-f", "test.yml"]);
        all.extend(["down", "-v", "--remove-orphans", "-t", "1"]);
        let _ =
            Command::new("docker").args(&all).current_dir(&self.dir).env("DOCKER_CONFIG", &self.compose_v2).output();
    }
}

#[test]
fn a_sidecar_from_the_overlay_upgrades_on_the_apps_trigger_and_rolls_a_failing_version_back_with_its_data() {
    let Some(d) = Deployment::start("mm") else { return };
    let sidecar = d.container_id(&d.sidecar);
    let pid = must(&["docker", "inspect", "--format", "{{.State.Pid}}", &d.sidecar]).trim().to_string();
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    eprintln!("sidecar idle: {}", rss.lines().find(|l| l.starts_with("VmRSS")).unwrap_or("VmRSS unknown"));
    let config = d.exec(&["config"]).success();
    assert!(config.stdout.contains(&format!("runs in container {}", d.sidecar)), "{}", config.stdout);
    assert!(config.stdout.contains(&format!("{} at the same path (rw, bind)", d.dir.display())), "{}", config.stdout);

    let id = d.trigger("2.0.0");
    assert_eq!(d.wait_end(&id), "complete", "{}", d.last_history());
    d.wait_version("2.0.0");
    let migrated = d.dump();
    assert!(migrated.starts_with("schema 2"), "{migrated}");
    assert_eq!(std::fs::read_to_string(d.dir.join("data/.upgrade-status")).unwrap().trim(), "complete");
    // The sidecar was never in the set it stopped or moved: the same container, running.
    assert_eq!(d.container_id(&d.sidecar), sidecar, "the sidecar survived the app's recreate");
    let row = d.last_history();
    let logs = row["logs"].to_string();
    assert!(logs.contains(&format!("upgraderd runs in container {}", d.sidecar)), "{logs}");
    // In a PID namespace of its own it cannot watch the app's processes end: it waits for the stop.
    assert!(logs.contains("Final pass: ") && !logs.contains("begun as the stopped processes ended"), "{logs}");
    assert!(row["backupPath"].as_str().is_some_and(|p| p.starts_with("/var/lib/upgraderd/")), "{row}");

    // 2.0.5 migrates and crashes: its data goes back with 2.0.0.
    let id = d.trigger("2.0.5");
    assert_eq!(d.wait_end(&id), "rolled_back", "{}", d.last_history());
    d.wait_version("2.0.0");
    assert_eq!(d.dump(), migrated, "the data came back for 2.0.0");
    assert_eq!(std::fs::read_to_string(d.dir.join("data/.upgrade-status")).unwrap().trim(), "failed");
    assert_eq!(d.container_id(&d.sidecar), sidecar);
}

#[test]
fn a_sidecar_killed_during_the_gate_and_started_again_ends_the_upgrade_rolled_back() {
    let Some(d) = Deployment::start("kill") else { return };
    let before = d.dump();
    // 2.0.3 answers 500: the gate holds until its timeout, time enough to kill the sidecar in it.
    let id = d.trigger("2.0.3");
    common::wait("the upgrade to reach its health gate")
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(50))
        .showing(|| format!("{:?}", d.status_file()))
        .until_true(|| d.status_file().is_some_and(|st| st["upgradeId"] == id && st["status"] == "health_check"));
    must(&["docker", "kill", &d.sidecar]);
    let began = Instant::now();
    must(&["docker", "start", &d.sidecar]);
    d.forward_registry();
    assert_eq!(d.wait_end(&id), "rolled_back", "{}", d.last_history());
    eprintln!("sidecar: the restarted sidecar rolled the upgrade back in {:?}", began.elapsed());
    d.wait_version("1.0.0");
    assert_eq!(d.dump(), before, "the data came back for 1.0.0");
    let row = d.last_history();
    assert_eq!((row["status"].as_str(), row["toVersion"].as_str()), (Some("rolled_back"), Some("2.0.3")), "{row}");
}

#[test]
fn a_project_directory_not_mounted_at_the_same_path_is_refused_naming_the_mount() {
    let Some(d) = Deployment::start("path") else { return };
    let dir = d.dir.display().to_string();
    // The operator mounted the project at /compose, as the watchdog's overlay did.
    let overlay = d.dir.join("docker-compose.upgrade.yml");
    let text = std::fs::read_to_string(&overlay).unwrap();
    let moved = text
        .replace(&format!("- {dir}:{dir}"), &format!("- {dir}:/compose"))
        .replace(&format!("UPGRADERD_TRIGGER_DIR: {dir}/data"), "UPGRADERD_TRIGGER_DIR: /compose/data");
    assert_ne!(moved, text);
    std::fs::write(&overlay, moved).unwrap();
    d.compose(&["up", "-d"]);
    d.forward_registry();
    common::wait("the recreated sidecar's daemon to beat")
        .within(Duration::from_secs(60))
        .until_true(|| d.exec(&["watch", "--alive"]).code == 0);
    let run = d.exec(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains(&format!("where the compose project directory {dir} is at /compose")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("(`- {dir}:{dir}` under its `volumes:`)")), "{}", run.stderr);
    assert!(run.stderr.contains(&format!("the data path {dir}/data is at /compose/data")), "{}", run.stderr);
    d.wait_version("1.0.0");
}
