//! Docker Compose: find the tool (`docker compose` v2 plugin, else
//! `docker-compose`, v1 or standalone v2), discover a service's project from
//! its container's labels, and build the `config`, `up` and `stop` commands
//! with the project's own files, directory and env file. An `up` can be
//! started ahead, held at a [`SocketGate`] until the switch ([`HeldUp`]).

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::ops::docker::Container;
use crate::ops::process::{Cmd, Failure, Output, ProcessError, Runner};
use crate::ops::socket_gate::SocketGate;

/// A compose CLI: its argv prefix and whether it speaks v2.
#[derive(Debug, Clone)]
pub(crate) struct Compose {
    argv: Vec<String>,
    v2: bool,
    runner: Runner,
}

/// The compose project an upgrade works on, and the services it moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Project {
    pub name: String,
    pub working_dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
    /// The primary service: the one the HTTP health check and the version label speak for.
    pub service: String,
    /// Every service the upgrade moves, the primary first. Named on the command
    /// line, which also activates a service that sits in a compose profile.
    pub services: Vec<String>,
    pub orchestrator: Orchestrator,
}

/// Who runs a project's containers, which decides the labels that find them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Orchestrator {
    /// `docker compose` / `docker-compose` on this host.
    #[default]
    Compose,
    /// A Docker Swarm stack (`docker stack deploy`): the project is the stack.
    Swarm,
}

impl Project {
    /// A Swarm stack as a project: no files or directory (Swarm, not compose,
    /// changes its services), the primary and the services that move with it
    /// (the primary alone when none is named).
    pub(crate) fn stack(name: impl Into<String>, primary: impl Into<String>, services: Vec<String>) -> Project {
        let primary = primary.into();
        Project {
            name: name.into(),
            working_dir: PathBuf::new(),
            files: Vec::new(),
            env_file: None,
            services: if services.is_empty() { vec![primary.clone()] } else { services },
            service: primary,
            orchestrator: Orchestrator::Swarm,
        }
    }

    /// The service of the project a container belongs to, by its labels.
    pub(crate) fn service_of(&self, container: &Container) -> Option<String> {
        match self.orchestrator {
            Orchestrator::Compose => container.label("com.docker.compose.service").map(str::to_string),
            Orchestrator::Swarm => {
                let full = container.label(crate::ops::swarm::SERVICE_LABEL)?;
                Some(full.strip_prefix(&format!("{}_", self.name)).unwrap_or(full).to_string())
            }
        }
    }

    /// The Swarm service behind one of the stack's services: `STACK_SERVICE`.
    pub(crate) fn swarm_service(&self, service: &str) -> String {
        format!("{}_{service}", self.name)
    }
}

/// What compose recorded about a container's project in its labels
/// (`com.docker.compose.*`); any of them may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProjectLabels {
    pub name: Option<String>,
    pub service: Option<String>,
    pub working_dir: Option<PathBuf>,
    /// As recorded: compose v1 writes them relative to the working dir.
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
}

impl ProjectLabels {
    pub(crate) fn read(container: &Container) -> ProjectLabels {
        let label = |key: &str| {
            container.label(&format!("com.docker.compose.{key}")).filter(|v| !v.is_empty()).map(str::to_string)
        };
        ProjectLabels {
            name: label("project"),
            service: label("service"),
            working_dir: label("project.working_dir").map(PathBuf::from),
            files: label("project.config_files")
                .map(|files| files.split(',').filter(|f| !f.is_empty()).map(PathBuf::from).collect())
                .unwrap_or_default(),
            env_file: label("project.environment_file").map(PathBuf::from),
        }
    }
}

impl Compose {
    /// The first of `candidates` (argv prefixes, in order of preference) whose
    /// `version` answers; a candidate whose second word is `compose` (the
    /// plugin) or that reports `v2.` speaks compose v2.
    pub(crate) fn detect(candidates: &[Vec<String>], runner: &Runner) -> Result<Compose> {
        let mut failures = Vec::new();
        for argv in candidates.iter().filter(|argv| !argv.is_empty()) {
            let probe = Cmd::new(&argv[0]).args(&argv[1..]).arg("version").timeout(Duration::from_secs(20));
            match runner.run(&probe) {
                Ok(out) => {
                    // The plugin says `v2.x`; Debian's standalone v2 says `version 2.x` with no `v`.
                    let text = out.stdout_text();
                    let v2 = argv.get(1).is_some_and(|w| w == "compose")
                        || text.contains("v2.")
                        || text.contains("version 2.");
                    return Ok(Compose { argv: argv.clone(), v2, runner: runner.clone() });
                }
                Err(e) => failures.push(format!("`{} version`: {e}", argv.join(" "))),
            }
        }
        Err(anyhow!("no Docker Compose answers: {}", failures.join("; ")))
    }

    /// A compose command known to speak v2 (or not) without asking it: for configured commands.
    pub(crate) fn assume(argv: Vec<String>, v2: bool, runner: &Runner) -> Compose {
        Compose { argv, v2, runner: runner.clone() }
    }

    /// Whether it speaks compose v2 (a Go program) rather than v1 (Python).
    pub(crate) fn speaks_v2(&self) -> bool {
        self.v2
    }

    /// Whether the command names its engine itself (`docker --context X compose`,
    /// `-H`): then `DOCKER_HOST` does not decide where it goes.
    pub(crate) fn names_an_engine(&self) -> bool {
        self.argv.iter().any(|word| {
            ["-H", "--host", "-c", "--context"].contains(&word.as_str())
                || word.starts_with("--host=")
                || word.starts_with("--context=")
        })
    }

    /// `<compose> -p NAME --project-directory DIR -f FILE… [--env-file FILE]`.
    fn base(&self, project: &Project) -> Cmd {
        let mut cmd = Cmd::new(&self.argv[0]).args(&self.argv[1..]).arg("-p").arg(&project.name);
        cmd = cmd.arg("--project-directory").arg(&project.working_dir);
        for file in &project.files {
            cmd = cmd.arg("-f").arg(file);
        }
        if let Some(env_file) = &project.env_file {
            cmd = cmd.arg("--env-file").arg(env_file);
        }
        cmd.cwd(&project.working_dir).talks_to_engine()
    }

    /// Renders the project's configuration (read-only).
    pub(crate) fn config(&self, project: &Project) -> Result<String> {
        let mut cmd = self.base(project).arg("config");
        if self.v2 {
            cmd = cmd.args(["--format", "json"]);
        }
        let out =
            self.runner.run(&cmd.timeout(Duration::from_secs(60))).context("rendering the compose configuration")?;
        Ok(out.stdout_text())
    }

    /// The image references the rendered configuration gives the moved services.
    /// v2 renders for those services by name, which also activates the profiles
    /// they sit in; v1's `config` takes no service names and shows every profile's.
    pub(crate) fn service_images(&self, project: &Project) -> Result<Vec<(String, String)>> {
        let mut cmd = self.base(project).arg("config");
        if self.v2 {
            cmd = cmd.args(["--format", "json"]).args(&project.services);
        }
        let cmd = cmd.timeout(Duration::from_secs(60));
        let rendered = self.runner.run(&cmd).context("rendering the compose configuration")?.stdout_text();
        let mut images = Vec::new();
        for service in &project.services {
            let image =
                if self.v2 { image_from_json(&rendered, service)? } else { image_from_yaml(&rendered, service) };
            let image = image.ok_or_else(|| anyhow!("the compose configuration gives service `{service}` no image"))?;
            images.push((service.clone(), image));
        }
        Ok(images)
    }

    /// The names of the services the configuration defines (`config --services`).
    pub(crate) fn service_names(&self, project: &Project) -> Result<Vec<String>> {
        let cmd = self.base(project).args(["config", "--services"]).timeout(Duration::from_secs(60));
        let out = self.runner.run(&cmd).context("listing the compose services")?;
        Ok(out.stdout_text().lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_string).collect())
    }

    /// Recreates the moved services (compose orders them by `depends_on`), with the image their reference now points to.
    pub(crate) fn up(&self, project: &Project) -> Cmd {
        let mut cmd = self.base(project).args(["up", "-d", "--no-deps", "--force-recreate"]);
        if self.v2 {
            // The image was pulled and tagged already; never fetch a moving tag again.
            cmd = cmd.args(["--pull", "never"]);
        }
        cmd.args(&project.services).timeout(Duration::from_secs(600)).streamed().mutating()
    }

    /// Runs `argv` once in a new container of `service` (its image as the
    /// files now say), removed afterwards; other services are not started.
    pub(crate) fn run_once(&self, project: &Project, service: &str, argv: &[String]) -> Cmd {
        self.base(project)
            .args(["run", "--rm", "--no-deps", "-T", service])
            .args(argv)
            .timeout(Duration::from_secs(3600))
            .streamed()
            .mutating()
    }

    /// The services whose image the project builds (`build:` in the rendered configuration).
    pub(crate) fn built_services(&self, project: &Project) -> Result<Vec<String>> {
        let rendered = self.config(project)?;
        if self.v2 {
            let value: serde_json::Value =
                serde_json::from_str(&rendered).context("parsing `compose config --format json`")?;
            let services = value["services"].as_object().cloned().unwrap_or_default();
            Ok(services.iter().filter(|(_, s)| s.get("build").is_some()).map(|(name, _)| name.clone()).collect())
        } else {
            Ok(built_from_yaml(&rendered))
        }
    }

    /// Builds every service with a `build:` section, its output streamed.
    pub(crate) fn build(&self, project: &Project) -> Cmd {
        self.base(project).arg("build").timeout(Duration::from_secs(3600)).streamed().mutating().interruptible()
    }

    /// Starts the whole project with the images as they are (never building or pulling).
    pub(crate) fn up_all(&self, project: &Project) -> Cmd {
        self.base(project).args(["up", "-d", "--no-build"]).timeout(Duration::from_secs(600)).streamed().mutating()
    }

    /// Stops every service of the project.
    pub(crate) fn stop_all(&self, project: &Project) -> Cmd {
        self.base(project).args(["stop", "-t", "10"]).timeout(Duration::from_secs(300)).streamed().mutating()
    }

    /// Starts the moved services' existing containers again (none recreated).
    pub(crate) fn start(&self, project: &Project) -> Cmd {
        self.base(project).arg("start").args(&project.services).timeout(Duration::from_secs(120)).streamed().mutating()
    }

    /// Starts every service's existing containers again (none recreated).
    pub(crate) fn start_all(&self, project: &Project) -> Cmd {
        self.base(project).arg("start").timeout(Duration::from_secs(300)).streamed().mutating()
    }

    /// Stops the moved services' containers.
    pub(crate) fn stop(&self, project: &Project) -> Cmd {
        self.base(project)
            .args(["stop", "-t", "10"])
            .args(&project.services)
            .timeout(Duration::from_secs(120))
            .streamed()
            .mutating()
    }
}

/// A compose `up` started ahead of the switch with its engine connections
/// held at a [`SocketGate`] until [`HeldUp::release`]. Dropped unreleased, it
/// is stopped before any of its requests reaches the engine.
pub(crate) struct HeldUp {
    gate: SocketGate,
    line: String,
    started: Instant,
    /// Ends the held compose (SIGTERM, then SIGKILL): it is interruptible by this flag alone.
    stop: Arc<AtomicBool>,
    run: Option<JoinHandle<Result<Output, ProcessError>>>,
}

/// How a released `up` ended, and whether it changed anything: whether a
/// request beyond reads reached the engine.
pub(crate) struct Released {
    pub ran: Result<Output, ProcessError>,
    pub reached_engine: bool,
    /// It had ended before the gate opened: whatever it did, it did not do through the gate.
    pub ended_before_release: bool,
}

impl Compose {
    /// Starts [`Compose::up`] now, talking to the engine through `gate`, which holds it until released.
    pub(crate) fn up_held(&self, project: &Project, gate: SocketGate) -> io::Result<HeldUp> {
        let stop = Arc::new(AtomicBool::new(false));
        // Not waited for when it misses the engine: the caller runs a plain `up` then.
        let runner = self.runner.clone().without_engine_wait().with_stop_flag(stop.clone());
        // Ended quickly when dropped: nothing of it has reached the engine.
        let cmd =
            self.up(project).env("DOCKER_HOST", gate.docker_host()).interruptible().grace(Duration::from_millis(200));
        let line = cmd.display();
        let run = std::thread::Builder::new().name("compose-held".into()).spawn(move || runner.run(&cmd))?;
        Ok(HeldUp { gate, line, started: Instant::now(), stop, run: Some(run) })
    }
}

impl Compose {
    /// `ps` at `docker_host`, read-only: whether this compose goes where `DOCKER_HOST` says.
    pub(crate) fn ps_at(&self, project: &Project, docker_host: &str) -> Result<()> {
        let cmd =
            self.base(project).args(["ps", "-q"]).env("DOCKER_HOST", docker_host).timeout(Duration::from_secs(60));
        self.runner.clone().without_engine_wait().run(&cmd)?;
        Ok(())
    }
}

impl HeldUp {
    pub(crate) fn line(&self) -> &str {
        &self.line
    }

    /// How long ago it was started.
    pub(crate) fn held_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits, at most `limit`, until compose waits at the gate with its first
    /// change (its start and its reads are done); false when it ended instead or the time ran out.
    pub(crate) fn wait_at_gate(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.gate.knocked(Duration::from_millis(20)) {
                return true;
            }
            if self.run.as_ref().is_none_or(|run| run.is_finished()) {
                return false;
            }
        }
        false
    }

    /// Opens the gate and waits for compose to end; one that ended already
    /// (it failed, or went around the gate) is not let through.
    pub(crate) fn release(mut self) -> Released {
        let ended_before_release = self.run.as_ref().is_none_or(|run| run.is_finished());
        if !ended_before_release {
            self.gate.open();
        }
        let ran = self.join();
        Released { ran, reached_engine: self.gate.relayed() > 0, ended_before_release }
    }

    fn join(&mut self) -> Result<Output, ProcessError> {
        let Some(run) = self.run.take() else {
            let failure = Failure::Spawn(io::Error::other("it was released already"));
            return Err(ProcessError { command: self.line.clone(), failure });
        };
        run.join().unwrap_or_else(|_| {
            let failure = Failure::Spawn(io::Error::other("the thread that ran it panicked"));
            Err(ProcessError { command: self.line.clone(), failure })
        })
    }
}

/// Unreleased: compose is stopped while the gate still holds it, then the gate resets what it held.
impl Drop for HeldUp {
    fn drop(&mut self) {
        if self.run.is_some() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = self.join();
        }
    }
}

fn image_from_json(rendered: &str, service: &str) -> Result<Option<String>> {
    let value: serde_json::Value = serde_json::from_str(rendered).context("parsing `compose config --format json`")?;
    Ok(value["services"][service]["image"].as_str().map(str::to_string))
}

/// Reads `services.<service>.image` from the normalised YAML that compose v1
/// prints (two-space indentation, one key per line).
fn image_from_yaml(rendered: &str, service: &str) -> Option<String> {
    let mut in_services = false;
    let mut in_service = false;
    for line in rendered.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_services = text == "services:";
            in_service = false;
        } else if in_services && indent == 2 {
            in_service = text.trim_end_matches(':').trim_matches(['\'', '"']) == service && text.ends_with(':');
        } else if in_service && indent == 4 {
            if let Some(image) = text.strip_prefix("image:") {
                return Some(image.trim().trim_matches(['\'', '"']).to_string());
            }
        }
    }
    None
}

/// The services with a `build:` key in compose v1's normalised YAML.
fn built_from_yaml(rendered: &str) -> Vec<String> {
    let mut in_services = false;
    let mut current: Option<String> = None;
    let mut built = Vec::new();
    for line in rendered.lines() {
        let indent = line.len() - line.trim_start().len();
        let text = line.trim();
        if indent == 0 {
            in_services = text == "services:";
            current = None;
        } else if in_services && indent == 2 && text.ends_with(':') {
            current = Some(text.trim_end_matches(':').trim_matches(['\'', '"']).to_string());
        } else if in_services && indent == 4 && (text == "build:" || text.starts_with("build:")) {
            if let Some(service) = current.take() {
                built.push(service);
            }
        }
    }
    built
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_of_a_service_from_v1_yaml() {
        let yaml = "services:\n  app:\n    environment:\n      A: '1'\n    image: 127.0.0.1:5000/app:latest\n  db:\n    image: postgres:16\nversion: '3.9'\n";
        assert_eq!(image_from_yaml(yaml, "app").as_deref(), Some("127.0.0.1:5000/app:latest"));
        assert_eq!(image_from_yaml(yaml, "db").as_deref(), Some("postgres:16"));
        assert_eq!(image_from_yaml(yaml, "web"), None);
    }

    #[test]
    fn built_services_from_v1_yaml() {
        let yaml = "services:\n  app:\n    build:\n      context: /srv/app\n    image: app\n  db:\n    image: postgres:16\n  worker:\n    build: /srv/worker\nversion: '3.9'\n";
        assert_eq!(built_from_yaml(yaml), vec!["app".to_string(), "worker".to_string()]);
    }

    #[test]
    fn image_of_a_service_from_v2_json() {
        let json = r#"{"name":"p","services":{"app":{"image":"ghcr.io/x/app:latest"}}}"#;
        assert_eq!(image_from_json(json, "app").unwrap().as_deref(), Some("ghcr.io/x/app:latest"));
    }
}
