//! One deployment of the test app for one test: its compose project,
//! registry repository, volume and upgraderd sandbox, and what a test asks of it.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Sandbox};
use crate::compose::ComposeVersion;
use crate::world::{free_port, must, sh, world, World};

/// One deployment of the test app in its own compose project, registry repository and volume.
pub struct Scenario {
    pub name: String,
    pub repo: String,
    pub dir: PathBuf,
    pub port: u16,
    pub sandbox: Sandbox,
    /// The compose files, relative to `dir`.
    pub files: Vec<&'static str>,
    pub compose_version: ComposeVersion,
    /// Compose v2's private DOCKER_CONFIG, for the harness's compose commands and upgraderd's.
    pub docker_config: Option<PathBuf>,
    /// Further registry repositories the scenario pushed to (a release family's), removed with it.
    pub more_repos: Vec<String>,
}

impl Scenario {
    /// The engine, this scenario's project name and the DOCKER_CONFIG `compose`
    /// needs; `None` (the test skips) without an engine or without compose v2.
    pub fn enter(test: &str, compose: ComposeVersion) -> Option<(&'static World, String, Option<PathBuf>)> {
        let world = world()?;
        let name = format!("{}-{test}{}", world.prefix, compose.suffix());
        let docker_config = match (compose, &world.compose_v2) {
            (ComposeVersion::V1, _) => None,
            (ComposeVersion::V2, Ok(config)) => Some(config.clone()),
            (ComposeVersion::V2, Err(_)) => return None,
        };
        Some((world, name, docker_config))
    }

    /// Pushes `versions` for this scenario and starts 1.0.0 as `repo:latest` under `compose`.
    pub fn start(test: &str, versions: &[&str], compose: ComposeVersion) -> Option<Scenario> {
        Scenario::start_with(test, versions, compose, &single_app, &["up", "-d"])
    }

    /// Like [`Scenario::start`], with the compose file `layout(repo, port, prefix)` writes and started by `up`.
    pub fn start_with(
        test: &str,
        versions: &[&str],
        compose: ComposeVersion,
        layout: &dyn Fn(&str, u16, &str) -> String,
        up: &[&str],
    ) -> Option<Scenario> {
        let build = format!("{}-build", world()?.prefix);
        Scenario::start_from(&build, test, versions, compose, layout, up)
    }

    /// Like [`Scenario::start_with`], with the app's versions taken from the local images `build:<version>`.
    pub fn start_from(
        build: &str,
        test: &str,
        versions: &[&str],
        compose: ComposeVersion,
        layout: &dyn Fn(&str, u16, &str) -> String,
        up: &[&str],
    ) -> Option<Scenario> {
        let (world, name, docker_config) = Scenario::enter(test, compose)?;
        let repo = format!("{}/{name}/app", world.registry);
        for version in versions {
            must(&["docker", "tag", &format!("{build}:{version}"), &format!("{repo}:{version}")]);
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
        // `version:` keeps compose v1 on the v3 format; compose v2 accepts it (and says it is obsolete).
        fs::write(dir.join("docker-compose.yml"), layout(&repo, port, &world.prefix)).unwrap();
        fs::write(
            dir.join("docker-compose.prod.yml"),
            "version: '3.7'\nservices:\n  app:\n    environment:\n      OVERLAY: from-overlay\n",
        )
        .unwrap();
        fs::write(dir.join("app.env"), "GREETING=hello-from-env-file\n").unwrap();
        let files = vec!["docker-compose.yml", "docker-compose.prod.yml"];
        let scenario = Scenario {
            name,
            repo,
            dir,
            port,
            sandbox,
            files,
            compose_version: compose,
            docker_config,
            more_repos: Vec::new(),
        };
        scenario.compose(up);
        scenario.wait_version("1.0.0");
        scenario.seed();
        Some(scenario)
    }

    /// The data every scenario starts with.
    pub fn seed(&self) {
        for item in ["alpha", "beta", "gamma"] {
            let url = format!("http://127.0.0.1:{}/api/items?name={item}", self.port);
            ureq::post(&url).call().expect("seed data");
        }
    }

    /// Runs this scenario's compose on its project.
    pub fn compose(&self, args: &[&str]) -> String {
        let out = self.compose_command(args).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?}: {}",
            self.compose_version.program(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn compose_command(&self, args: &[&str]) -> Command {
        let mut argv = vec!["-p", &self.name];
        for file in &self.files {
            argv.extend(["-f", file]);
        }
        argv.extend_from_slice(args);
        self.compose_version.command(self.docker_config.as_deref(), &self.dir, argv)
    }

    /// The primary service's (`app`) container.
    pub fn container(&self) -> String {
        self.service_container("app").expect("the app service has a container")
    }

    /// The container compose runs for `service`, when there is one.
    pub fn service_container(&self, service: &str) -> Option<String> {
        let project = format!("label=com.docker.compose.project={}", self.name);
        let service = format!("label=com.docker.compose.service={service}");
        let out = must(&["docker", "ps", "-aq", "--filter", &project, "--filter", &service]);
        out.lines().next().map(str::to_string)
    }

    /// Waits until the app answers its health check with `version`; returns that answer.
    pub fn wait_version(&self, version: &str) -> Value {
        wait_version_at(self.port, version)
    }

    /// The host directory of the app's named volume: what the app itself can write.
    pub fn volume_dir(&self) -> PathBuf {
        let volume = format!("{}_appdata", self.name);
        PathBuf::from(must(&["docker", "volume", "inspect", "--format", "{{.Mountpoint}}", &volume]).trim())
    }

    /// A consistent dump of the app's data: schema version and every row.
    pub fn dump(&self) -> String {
        sqlite_dump(&self.volume_dir())
    }

    /// upgraderd configured for this scenario's deployment, its trigger dir the sandbox.
    pub fn upgraderd_command(&self, args: &[&str]) -> Command {
        let mut cmd = configured(&self.sandbox, self.port, "20s", args);
        cmd.env("UPGRADERD_CONTAINER", self.container());
        if let Some(config) = &self.docker_config {
            // upgraderd finds the compose v2 plugin there by itself.
            cmd.env("DOCKER_CONFIG", config);
        }
        cmd
    }

    pub fn upgraderd(&self, args: &[&str]) -> common::Run {
        common::Run::from_output(self.upgraderd_command(args).output().unwrap())
    }

    pub fn try_status_file(&self) -> Option<Value> {
        serde_json::from_slice(&fs::read(self.sandbox.path().join(".upgrade-status.json")).ok()?).ok()
    }

    pub fn status_file(&self) -> Value {
        serde_json::from_slice(&fs::read(self.sandbox.path().join(".upgrade-status.json")).unwrap()).unwrap()
    }

    pub fn last_history(&self) -> Value {
        self.read_only(&["--json", "history", "--limit", "1"])["history"][0].clone()
    }

    /// Runs `watch` until its recovery ends the last upgrade in one of `ends`; that end.
    pub fn recover_with_watch(&self, ends: &[&str]) -> String {
        let mut watch = self.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
        let end = common::wait(format!("recovery to end the upgrade {}", ends.join(" or ")))
            .within(Duration::from_secs(120))
            .every(Duration::from_millis(200))
            .showing(|| self.last_history().to_string())
            .until(|| {
                let status = self.last_history()["status"].as_str().map(str::to_string)?;
                ends.contains(&status.as_str()).then_some(status)
            });
        unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
        watch.wait().unwrap();
        end
    }

    /// The last upgrade's journal (`status --json`): each step with when it began.
    pub fn last_journal(&self) -> Vec<Value> {
        self.read_only(&["--json", "status"])["events"].as_array().cloned().unwrap_or_default()
    }

    /// How long the last upgrade's health gate ran: from its `health_check` step to the step after it.
    pub fn gate_time(&self) -> Duration {
        let journal = self.last_journal();
        let at = |i: usize| journal[i]["at"].as_u64().unwrap_or_default();
        let gate = journal.iter().rposition(|e| e["status"] == "health_check");
        match gate.filter(|i| i + 1 < journal.len()) {
            Some(i) => Duration::from_millis(at(i + 1).saturating_sub(at(i))),
            None => panic!("the journal has no step after health_check: {journal:#?}"),
        }
    }

    /// The lock file of the scenario's state dir, when a live process holds it: the holder it names.
    pub fn lock_holder(&self) -> Option<Value> {
        let path = self.sandbox.state().join("upgraderd.lock");
        let file = fs::File::open(&path).ok()?;
        match file.try_lock_shared() {
            Err(fs::TryLockError::WouldBlock) => serde_json::from_slice(&fs::read(&path).ok()?).ok(),
            _ => None,
        }
    }

    /// A read-only upgraderd command's JSON output.
    fn read_only(&self, args: &[&str]) -> Value {
        let state = self.sandbox.state().display().to_string();
        let mut all = vec!["--state-dir", state.as_str()];
        all.extend_from_slice(args);
        self.sandbox.run(&all).success().json()
    }
}

/// The app alone: one service, its data in a named volume, a port on loopback.
pub fn single_app(repo: &str, port: u16, prefix: &str) -> String {
    format!(
        "version: '3.7'\nservices:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
         volumes:\n      - appdata:/data\n    env_file: app.env\n    labels:\n      upgraderd-e2e: {prefix}\nvolumes:\n  appdata:\n    labels:\n      upgraderd-e2e: {prefix}\n"
    )
}

impl Drop for Scenario {
    fn drop(&mut self) {
        // An image's VOLUME gives a container an anonymous volume, which compose hands on by
        // name when it recreates the container (an upgrade, a rollback): `down -v` then
        // leaves it behind. Every volume the project's containers mount goes with the project.
        let label = format!("label=com.docker.compose.project={}", self.name);
        let (_, ids) = sh(&["docker", "ps", "-aq", "--filter", &label]);
        let mut volumes = Vec::new();
        for id in ids.lines() {
            let format = "{{range .Mounts}}{{if eq .Type \"volume\"}}{{.Name}} {{end}}{{end}}";
            let (_, names) = sh(&["docker", "inspect", "--format", format, id]);
            volumes.extend(names.split_whitespace().map(str::to_string));
        }
        let _ = self.compose_command(&["down", "-v", "-t", "1"]).output();
        for volume in &volumes {
            let _ = sh(&["docker", "volume", "rm", volume]);
        }
        for repo in std::iter::once(&self.repo).chain(&self.more_repos) {
            let (_, images) = sh(&["docker", "images", "--format", "{{.Repository}}:{{.Tag}}", repo]);
            for image in images.lines() {
                let _ = sh(&["docker", "rmi", "-f", image]);
            }
        }
    }
}

/// A consistent dump of the test app's SQLite data in `volume`: schema version and every row.
pub fn sqlite_dump(volume: &std::path::Path) -> String {
    let db = rusqlite::Connection::open_with_flags(volume.join("app.db"), rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
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

/// The test app's health answer on `port`, when it answers.
pub fn health_at(port: u16) -> Option<Value> {
    let url = format!("http://127.0.0.1:{port}/api/health");
    let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
    agent.get(&url).call().ok()?.into_json().ok()
}

/// Waits until the app on `port` answers its health check with `version`; returns that answer.
pub fn wait_version_at(port: u16, version: &str) -> Value {
    common::wait(format!("{version} to answer on port {port}"))
        .every(Duration::from_millis(200))
        .showing(|| format!("last answer: {:?}", health_at(port)))
        .until(|| health_at(port).filter(|h| h["version"] == version))
}

/// upgraderd in `sandbox` (its state dir and trigger dir) with the test app's
/// health settings on `port`; the caller names the deployment.
pub fn configured(sandbox: &Sandbox, port: u16, health_timeout: &str, args: &[&str]) -> Command {
    let state = sandbox.state().display().to_string();
    let mut all = vec!["--state-dir", state.as_str()];
    all.extend_from_slice(args);
    let mut cmd = sandbox.command(&all);
    cmd.env("UPGRADERD_HEALTH_URL", format!("http://127.0.0.1:{port}/api/health"))
        .env("UPGRADERD_HEALTH_TIMEOUT", health_timeout)
        .env("UPGRADERD_HEALTH_STABLE", "1s")
        .env("UPGRADERD_HEALTH_VERSION_POINTER", "/version")
        .env("UPGRADERD_MIN_FREE", "1MB")
        // The app's triggers ask for 1.0.0 -> 2.0.x, a major step: the operator allows it here.
        .env("UPGRADERD_POLICY", "major")
        .env("UPGRADERD_TRIGGER_DIR", sandbox.path());
    cmd
}
