//! The `docker` CLI: inspect containers and images, pull, tag, remove tags,
//! registry manifests, engine info. Parsing only; callers decide what it means.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use crate::ops::process::{Cmd, Runner};

/// A docker CLI bound to a program path and a runner.
#[derive(Debug, Clone)]
pub(crate) struct Docker {
    program: PathBuf,
    runner: Runner,
}

/// The parts of `docker inspect <container>` upgraderd uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Container {
    pub id: String,
    pub name: String,
    /// The image id the container runs.
    pub image: String,
    pub config: ContainerConfig,
    pub state: ContainerState,
    #[serde(default)]
    pub restart_count: i64,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct HostConfig {
    #[serde(default)]
    pub restart_policy: RestartPolicy,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RestartPolicy {
    /// `no` (or empty), `always`, `unless-stopped`, `on-failure`.
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerConfig {
    /// The image reference the container was created from.
    pub image: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// `{"5432/tcp": {}}`.
    #[serde(default)]
    pub exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub healthcheck: Option<Healthcheck>,
}

impl ContainerConfig {
    /// The port numbers the container exposes.
    pub(crate) fn exposed_ports(&self) -> Vec<u16> {
        let ports = self.exposed_ports.iter().flatten();
        ports.filter_map(|(port, _)| port.split('/').next()?.parse().ok()).collect()
    }
}

/// The container's HEALTHCHECK, as Docker records it (durations in nanoseconds).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Healthcheck {
    /// `["CMD", argv…]`, `["CMD-SHELL", command]` or `["NONE"]`.
    #[serde(default)]
    pub test: Vec<String>,
    #[serde(default)]
    pub timeout: u64,
    #[serde(default)]
    pub start_period: u64,
}

impl Healthcheck {
    /// The check as an argv for `docker exec`; none for `NONE` or an empty test.
    pub(crate) fn argv(&self) -> Option<Vec<String>> {
        match self.test.split_first()? {
            (kind, rest) if kind == "CMD" && !rest.is_empty() => Some(rest.to_vec()),
            (kind, [command]) if kind == "CMD-SHELL" => Some(vec!["/bin/sh".into(), "-c".into(), command.clone()]),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerState {
    pub status: String,
    pub running: bool,
    /// The main process, in the engine's host's PID namespace (0 when it does not run).
    #[serde(default)]
    pub pid: i64,
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub health: Option<Health>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Mount {
    #[serde(rename = "Type")]
    pub kind: String,
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(rename = "RW")]
    pub rw: bool,
}

impl Container {
    pub(crate) fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }
}

impl Docker {
    pub(crate) fn new(program: impl Into<PathBuf>, runner: Runner) -> Docker {
        Docker { program: program.into(), runner }
    }

    pub(crate) fn runner(&self) -> &Runner {
        &self.runner
    }

    /// A `docker` command with the given arguments.
    pub(crate) fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new(&self.program).args(args).timeout(Duration::from_secs(60)).talks_to_engine()
    }

    /// Inspects a container by name or id.
    pub(crate) fn inspect_container(&self, name: &str) -> Result<Container> {
        self.inspect_container_within(name, Duration::from_secs(60))
    }

    /// Inspects a container by name or id, giving up after `within`.
    pub(crate) fn inspect_container_within(&self, name: &str, within: Duration) -> Result<Container> {
        let cmd = self.cmd(["container", "inspect", "--", name]).timeout(within);
        let out = self.runner.run(&cmd).map_err(|e| {
            let not_found = e.output().is_some_and(|o| o.stderr.to_lowercase().contains("no such"));
            if not_found {
                anyhow!("container `{name}` does not exist (`docker ps -a` lists containers)")
            } else {
                anyhow::Error::new(e).context(format!("inspecting container `{name}`"))
            }
        })?;
        let mut parsed: Vec<Container> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker container inspect {name}` output"))?;
        parsed.pop().ok_or_else(|| anyhow!("container `{name}` does not exist"))
    }
}

/// `REPOSITORY:TAG@sha256:…` (what Swarm runs) without the digest: `REPOSITORY:TAG`.
pub(crate) fn without_digest(image: &str) -> &str {
    image.split_once('@').map_or(image, |(name, _)| name)
}

/// An image reference split into repository and tag (`repo[:tag]`, digests kept in the repository).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageRef {
    pub repository: String,
    pub tag: String,
}

impl ImageRef {
    pub(crate) fn parse(reference: &str) -> ImageRef {
        let last_slash = reference.rfind('/').map_or(0, |i| i + 1);
        match reference[last_slash..].rfind(':') {
            Some(colon) if !reference.contains('@') => ImageRef {
                repository: reference[..last_slash + colon].to_string(),
                tag: reference[last_slash + colon + 1..].to_string(),
            },
            _ => ImageRef { repository: reference.to_string(), tag: "latest".to_string() },
        }
    }

    pub(crate) fn with_tag(&self, tag: &str) -> String {
        format!("{}:{tag}", self.repository)
    }

    /// The registry host, when the repository names one (`host:port/…`, `host.tld/…`, `localhost/…`).
    pub(crate) fn registry(&self) -> Option<&str> {
        let first = self.repository.split('/').next()?;
        let names_host =
            self.repository.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost");
        names_host.then_some(first)
    }

    /// Loopback registries speak plain HTTP, as the Docker engine allows by default.
    pub(crate) fn registry_is_loopback(&self) -> bool {
        self.registry().is_some_and(|host| {
            let name = host.rsplit_once(':').map_or(host, |(h, _)| h);
            name == "localhost" || name.starts_with("127.") || name == "[::1]"
        })
    }
}

impl std::fmt::Display for ImageRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

impl Docker {
    /// The engine's data root; fails when the engine cannot be reached.
    pub(crate) fn root_dir(&self) -> Result<PathBuf> {
        let out = self
            .runner
            .run(&self.cmd(["info", "--format", "{{.DockerRootDir}}"]).timeout(Duration::from_secs(30)))
            .context("the Docker engine cannot be reached (`docker info` failed); is it running, and may upgraderd use its socket?")?;
        let dir = out.stdout_text().trim().to_string();
        if dir.is_empty() {
            return Err(anyhow!("`docker info` did not report the engine's root dir; is the engine running?"));
        }
        Ok(PathBuf::from(dir))
    }

    /// The engine's id (`docker info`), asked at `docker_host` when given,
    /// else where the CLI's own settings say: two answers that match are one engine.
    pub(crate) fn engine_id(&self, docker_host: Option<&str>) -> Result<String> {
        let mut cmd = self.cmd(["info", "--format", "{{.ID}}"]).timeout(Duration::from_secs(30));
        if let Some(host) = docker_host {
            cmd = cmd.env("DOCKER_HOST", host);
        }
        let id = self.runner.clone().without_engine_wait().run(&cmd)?.stdout_text().trim().to_string();
        if id.is_empty() {
            return Err(anyhow!("`docker info` did not report the engine's id"));
        }
        Ok(id)
    }

    /// The engine's version (`docker version`); fails when the engine cannot be reached within `within`.
    pub(crate) fn server_version(&self, within: Duration) -> Result<String> {
        let cmd =
            self.cmd(["version", "--format", "{{.Server.Version}}"]).timeout(within).grace(Duration::from_secs(1));
        let out = self.runner.run(&cmd)?;
        let version = out.stdout_text().trim().to_string();
        if version.is_empty() {
            return Err(anyhow!("`docker version` did not report the engine's version; is the engine running?"));
        }
        Ok(version)
    }

    /// The ids of the running containers (`docker ps`), within `within`.
    pub(crate) fn running_containers(&self, within: Duration) -> Result<Vec<String>> {
        let cmd = self.cmd(["ps", "--quiet"]).timeout(within).grace(Duration::from_secs(1));
        let out = self.runner.run(&cmd)?;
        Ok(out.stdout_text().lines().map(str::to_string).collect())
    }

    /// The id of a local image, `None` when there is no such image.
    pub(crate) fn image_id(&self, reference: &str) -> Result<Option<String>> {
        let out = self.runner.output(&self.cmd(["image", "inspect", "--format", "{{.Id}}", "--", reference]))?;
        if out.ended.success() {
            return Ok(Some(out.stdout_text().trim().to_string()));
        }
        if out.stderr.to_lowercase().contains("no such image") {
            return Ok(None);
        }
        Err(anyhow!("`docker image inspect {reference}` failed: {}", out.stderr_tail(3)))
    }

    /// An image's `org.opencontainers.image.version` label.
    pub(crate) fn image_version_label(&self, reference: &str) -> Result<Option<String>> {
        let format = r#"{{index .Config.Labels "org.opencontainers.image.version"}}"#;
        let out = self.runner.output(&self.cmd(["image", "inspect", "--format", format, "--", reference]))?;
        let text = out.stdout_text().trim().to_string();
        Ok((out.ended.success() && !text.is_empty() && text != "<no value>").then_some(text))
    }

    /// The registry digest an image was pulled by (`repo@sha256:…`), if any.
    pub(crate) fn repo_digest(&self, reference: &str) -> Result<Option<String>> {
        let out = self.runner.output(&self.cmd([
            "image",
            "inspect",
            "--format",
            "{{json .RepoDigests}}",
            "--",
            reference,
        ]))?;
        if !out.ended.success() {
            return Ok(None);
        }
        let digests: Vec<String> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let repository = ImageRef::parse(reference).repository;
        Ok(digests.iter().find(|d| d.starts_with(&format!("{repository}@"))).or(digests.first()).cloned())
    }

    /// Whether the registry has this reference, without pulling it; `insecure`
    /// lets the client speak plain HTTP to the registry.
    pub(crate) fn manifest_exists(&self, image: &ImageRef, insecure: bool) -> Result<bool> {
        let mut args = vec!["manifest".to_string(), "inspect".to_string()];
        if insecure {
            args.push("--insecure".to_string());
        }
        args.push(image.to_string());
        let out = self.runner.output(&self.cmd(args))?;
        if out.ended.success() {
            return Ok(true);
        }
        let stderr = out.stderr.to_lowercase();
        if stderr.contains("no such manifest") || stderr.contains("manifest unknown") || stderr.contains("not found") {
            return Ok(false);
        }
        Err(anyhow!("cannot ask the registry about {image}: {}", out.stderr_tail(3)))
    }

    /// `docker pull`, its progress streamed.
    pub(crate) fn pull(&self, reference: &str) -> Cmd {
        self.cmd(["pull", reference]).timeout(Duration::from_secs(1800)).streamed().mutating()
    }

    /// `docker tag SOURCE TARGET`.
    pub(crate) fn tag(&self, source: &str, target: &str) -> Cmd {
        self.cmd(["tag", source, target]).mutating()
    }

    /// Removes one tag (`docker image rm` of a tag only untags while other tags remain).
    pub(crate) fn untag(&self, reference: &str) -> Cmd {
        self.cmd(["image", "rm", reference]).mutating()
    }

    /// The tags of `repository` that start with `prefix`, newest image first.
    pub(crate) fn tags_with_prefix(&self, repository: &str, prefix: &str) -> Result<Vec<String>> {
        let out = self.runner.run(&self.cmd(["image", "ls", "--format", "{{.Tag}}", repository]))?;
        Ok(out.stdout_text().lines().filter(|t| t.starts_with(prefix)).map(str::to_string).collect())
    }

    /// The container compose runs for a service, by its labels (never a `compose run` one-off).
    pub(crate) fn service_container(&self, project: &str, service: &str) -> Result<Option<String>> {
        let service = format!("label=com.docker.compose.service={service}");
        Ok(self.project_container_ids(project, Some(&service))?.into_iter().next())
    }

    /// The ids of a compose project's containers (one-offs of `compose run` left out), with one more filter.
    fn project_container_ids(&self, project: &str, filter: Option<&str>) -> Result<Vec<String>> {
        let mut args = vec![
            "ps".to_string(),
            "-a".into(),
            "--filter".into(),
            format!("label=com.docker.compose.project={project}"),
            "--filter".into(),
            "label=com.docker.compose.oneoff=False".into(),
        ];
        if let Some(filter) = filter {
            args.extend(["--filter".to_string(), filter.to_string()]);
        }
        args.extend(["--format".to_string(), "{{.ID}}".to_string()]);
        let out = self.runner.run(&self.cmd(args))?;
        Ok(out.stdout_text().lines().map(str::to_string).collect())
    }

    /// Every container of a compose project (one-offs of `compose run` left out), inspected.
    pub(crate) fn project_containers(&self, project: &str) -> Result<Vec<Container>> {
        let ids = self.project_container_ids(project, None)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.runner.run(&self.cmd(["container", "inspect", "--"]).args(&ids))?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker container inspect` output for project {project}"))
    }

    /// The containers carrying `label=value`, inspected: running ones, or all with `all`.
    pub(crate) fn containers_with_label(&self, label: &str, value: &str, all: bool) -> Result<Vec<Container>> {
        let mut args = vec!["ps".to_string(), "-q".into(), "--filter".into(), format!("label={label}={value}")];
        if all {
            args.push("-a".into());
        }
        let ids: Vec<String> = self.runner.run(&self.cmd(args))?.stdout_text().lines().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.runner.run(&self.cmd(["container", "inspect", "--"]).args(&ids))?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker container inspect` output for {label}={value}"))
    }

    /// An image's labels (empty when it has none).
    pub(crate) fn image_labels(&self, reference: &str) -> Result<BTreeMap<String, String>> {
        let out =
            self.runner.run(&self.cmd(["image", "inspect", "--format", "{{json .Config.Labels}}", "--", reference]))?;
        let text = out.stdout_text();
        Ok(serde_json::from_str::<Option<BTreeMap<String, String>>>(text.trim()).ok().flatten().unwrap_or_default())
    }

    /// Stops a container with its own stop signal, killing it after `grace`.
    pub(crate) fn stop(&self, container: &str, grace: Duration) -> Cmd {
        let seconds = grace.as_secs().to_string();
        self.cmd(["stop", "-t", &seconds, "--", container]).timeout(grace + Duration::from_secs(30)).mutating()
    }

    /// Starts a stopped container as it was.
    pub(crate) fn start(&self, container: &str) -> Cmd {
        self.cmd(["start", "--", container]).mutating()
    }

    /// Runs `argv` inside a running container (a native dump can take a while).
    pub(crate) fn exec(&self, container: &str, argv: &[String]) -> Cmd {
        self.cmd(["exec", container]).args(argv).timeout(Duration::from_secs(3600)).streamed().mutating()
    }

    /// Runs a container's own check command (its HEALTHCHECK) once; its output is not streamed.
    pub(crate) fn exec_check(&self, container: &str, argv: &[String], timeout: Duration) -> Cmd {
        self.cmd(["exec", container]).args(argv).timeout(timeout)
    }

    /// The last lines a container logged, for failure messages.
    pub(crate) fn logs_tail(&self, container: &str, lines: usize) -> String {
        let cmd = self.cmd(["logs", "--tail", &lines.to_string(), container]).timeout(Duration::from_secs(20));
        match self.runner.output(&cmd) {
            Ok(out) => {
                let mut text = out.stdout_text();
                text.push_str(&out.stderr);
                text.trim().to_string()
            }
            Err(_) => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_references_split_into_repository_and_tag() {
        let r = ImageRef::parse("127.0.0.1:5000/team/app:2.0.0");
        assert_eq!((r.repository.as_str(), r.tag.as_str()), ("127.0.0.1:5000/team/app", "2.0.0"));
        assert!(r.registry_is_loopback());
        let r = ImageRef::parse("ghcr.io/yeraze/meshmonitor");
        assert_eq!(r.to_string(), "ghcr.io/yeraze/meshmonitor:latest");
        assert!(!r.registry_is_loopback());
        assert_eq!(ImageRef::parse("nginx:1.25").registry(), None);
        assert_eq!(ImageRef::parse("localhost:5000/x").with_tag("v1"), "localhost:5000/x:v1");
    }
}
