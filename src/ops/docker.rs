//! The `docker` CLI: inspect containers and images, pull, tag, remove tags,
//! registry manifests, engine info. Parsing only; callers decide what it means.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

use crate::ops::process::{Cmd, Runner};

/// A docker CLI bound to a program path and a runner.
#[derive(Debug, Clone)]
pub struct Docker {
    program: PathBuf,
    runner: Runner,
}

/// The parts of `docker inspect <container>` upgraderd uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Container {
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
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    /// The image reference the container was created from.
    pub image: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    #[serde(default)]
    pub restarting: bool,
    #[serde(default)]
    pub exit_code: i64,
    #[serde(default)]
    pub health: Option<Health>,
    #[serde(default)]
    pub started_at: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Mount {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(default)]
    pub name: Option<String>,
    pub source: PathBuf,
    pub destination: PathBuf,
    #[serde(rename = "RW")]
    pub rw: bool,
}

impl Container {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.config.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// Host paths of the container's writable volumes and bind mounts: its data.
    /// The Docker socket is a control channel, never data.
    pub fn data_paths(&self) -> Vec<PathBuf> {
        self.mounts
            .iter()
            .filter(|m| m.rw && (m.kind == "volume" || m.kind == "bind"))
            .filter(|m| !is_docker_socket(&m.source))
            .map(|m| m.source.clone())
            .collect()
    }
}

fn is_docker_socket(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "docker.sock")
}

impl Docker {
    pub fn new(program: impl Into<PathBuf>, runner: Runner) -> Docker {
        Docker { program: program.into(), runner }
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// A `docker` command with the given arguments.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new(&self.program).args(args).timeout(Duration::from_secs(60))
    }

    /// Inspects a container by name or id.
    pub fn inspect_container(&self, name: &str) -> Result<Container> {
        let out = self.runner.run(&self.cmd(["container", "inspect", "--", name])).map_err(|e| {
            let not_found = e.output().is_some_and(|o| o.stderr.to_lowercase().contains("no such"));
            if not_found {
                anyhow!(
                    "container `{name}` does not exist; check UPGRADERD_CONTAINER (`docker ps -a` lists containers)"
                )
            } else {
                anyhow::Error::new(e).context(format!("inspecting container `{name}`"))
            }
        })?;
        let mut parsed: Vec<Container> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker container inspect {name}` output"))?;
        parsed.pop().ok_or_else(|| anyhow!("container `{name}` does not exist"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_paths_are_writable_mounts_without_the_socket() {
        let json = r#"[{"Id":"abc","Name":"/app","Image":"sha256:1","RestartCount":0,
            "Config":{"Image":"app:1","Labels":{"com.docker.compose.service":"app"}},
            "State":{"Status":"running","Running":true,"ExitCode":0},
            "Mounts":[
              {"Type":"volume","Name":"data","Source":"/var/lib/docker/volumes/data/_data","Destination":"/data","RW":true},
              {"Type":"bind","Source":"/srv/conf","Destination":"/conf","RW":false},
              {"Type":"bind","Source":"/var/run/docker.sock","Destination":"/var/run/docker.sock","RW":true},
              {"Type":"tmpfs","Source":"","Destination":"/tmp","RW":true}]}]"#;
        let containers: Vec<Container> = serde_json::from_str(json).unwrap();
        let c = &containers[0];
        assert_eq!(c.data_paths(), vec![PathBuf::from("/var/lib/docker/volumes/data/_data")]);
        assert_eq!(c.label("com.docker.compose.service"), Some("app"));
    }
}
