//! Docker Compose: find the tool (`docker compose` v2 plugin, else
//! `docker-compose`, v1 or standalone v2), discover a service's project from
//! its container's labels, and build the `config`, `up` and `stop` commands
//! with the project's own files, directory and env file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::ops::docker::Container;
use crate::ops::process::{Cmd, Runner};

/// A compose CLI: its argv prefix and whether it speaks v2.
#[derive(Debug, Clone)]
pub struct Compose {
    argv: Vec<String>,
    v2: bool,
    runner: Runner,
}

/// The compose project a service lives in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub name: String,
    pub working_dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub env_file: Option<PathBuf>,
    pub service: String,
}

/// Explicit settings that win over what the container's labels say.
#[derive(Debug, Clone, Default)]
pub struct ProjectOverrides {
    pub name: Option<String>,
    pub working_dir: Option<PathBuf>,
    pub files: Vec<PathBuf>,
    pub service: Option<String>,
}

impl Project {
    /// Reads the project from the compose labels of a running container.
    pub fn discover(container: &Container, overrides: &ProjectOverrides) -> Result<Project> {
        let label = |key: &str| container.label(&format!("com.docker.compose.{key}")).map(str::to_string);
        let missing = |what: &str, key: &str| {
            anyhow!(
                "container {} has no compose label com.docker.compose.{what} (was it started by compose?); set {key}",
                container.name.trim_start_matches('/')
            )
        };
        let name = overrides
            .name
            .clone()
            .or_else(|| label("project"))
            .ok_or_else(|| missing("project", "UPGRADERD_COMPOSE_PROJECT"))?;
        let service = overrides
            .service
            .clone()
            .or_else(|| label("service"))
            .ok_or_else(|| missing("service", "UPGRADERD_SERVICE"))?;
        let working_dir = overrides
            .working_dir
            .clone()
            .or_else(|| label("project.working_dir").map(PathBuf::from))
            .ok_or_else(|| missing("project.working_dir", "UPGRADERD_COMPOSE_DIR"))?;
        let files: Vec<PathBuf> = if overrides.files.is_empty() {
            label("project.config_files")
                .ok_or_else(|| missing("project.config_files", "UPGRADERD_COMPOSE_FILES"))?
                .split(',')
                .filter(|f| !f.is_empty())
                .map(PathBuf::from)
                .collect()
        } else {
            overrides.files.clone()
        };
        // compose v1 records paths as given on its command line: relative to the working dir.
        let absolute = |p: PathBuf| if p.is_absolute() { p } else { working_dir.join(p) };
        let files = files.into_iter().map(absolute).collect();
        let env_file = label("project.environment_file").filter(|f| !f.is_empty()).map(PathBuf::from).map(absolute);
        Ok(Project { name, working_dir, files, env_file, service })
    }
}

impl Compose {
    /// Uses the configured command, else `docker compose` when the plugin answers, else `docker-compose`.
    pub fn detect(configured: Option<&[String]>, docker: &Path, runner: &Runner) -> Result<Compose> {
        if let Some(argv) = configured {
            if argv.is_empty() {
                bail!("UPGRADERD_COMPOSE_CMD is empty; set it to `docker compose` or `docker-compose`");
            }
            let v2 = argv.len() >= 2 && argv[1] == "compose" || Self::reports_v2(argv, runner);
            return Ok(Compose { argv: argv.to_vec(), v2, runner: runner.clone() });
        }
        let plugin = vec![docker.display().to_string(), "compose".to_string()];
        let probe = Cmd::new(&plugin[0]).args(["compose", "version"]).timeout(Duration::from_secs(20));
        if runner.run(&probe).is_ok() {
            return Ok(Compose { argv: plugin, v2: true, runner: runner.clone() });
        }
        let standalone = vec!["docker-compose".to_string()];
        let probe = Cmd::new("docker-compose").arg("version").timeout(Duration::from_secs(20));
        match runner.run(&probe) {
            Ok(out) => {
                let v2 = out.stdout_text().contains("v2.");
                Ok(Compose { argv: standalone, v2, runner: runner.clone() })
            }
            Err(e) => Err(anyhow!(
                "no Docker Compose found: `docker compose version` failed and {e}; install compose or set UPGRADERD_COMPOSE_CMD"
            )),
        }
    }

    fn reports_v2(argv: &[String], runner: &Runner) -> bool {
        let probe = Cmd::new(&argv[0]).args(&argv[1..]).arg("version").timeout(Duration::from_secs(20));
        runner.run(&probe).is_ok_and(|o| o.stdout_text().contains("v2."))
    }

    pub fn is_v2(&self) -> bool {
        self.v2
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
        cmd.cwd(&project.working_dir)
    }

    /// Renders the project's configuration (read-only).
    pub fn config(&self, project: &Project) -> Result<String> {
        let mut cmd = self.base(project).arg("config");
        if self.v2 {
            cmd = cmd.args(["--format", "json"]);
        }
        let out =
            self.runner.run(&cmd.timeout(Duration::from_secs(60))).context("rendering the compose configuration")?;
        Ok(out.stdout_text())
    }

    /// The image reference the rendered configuration gives the service.
    pub fn service_image(&self, project: &Project) -> Result<String> {
        let rendered = self.config(project)?;
        let image = if self.v2 {
            image_from_json(&rendered, &project.service)?
        } else {
            image_from_yaml(&rendered, &project.service)
        };
        image.ok_or_else(|| anyhow!("the compose configuration gives service `{}` no image", project.service))
    }

    /// Recreates only the service, with the image its reference now points to.
    pub fn up(&self, project: &Project) -> Cmd {
        let mut cmd = self.base(project).args(["up", "-d", "--no-deps", "--force-recreate"]);
        if self.v2 {
            // The image was pulled and tagged already; never fetch a moving tag again.
            cmd = cmd.args(["--pull", "never"]);
        }
        cmd.arg(&project.service).timeout(Duration::from_secs(600)).streamed().mutating()
    }

    /// The services whose image the project builds (`build:` in the rendered configuration).
    pub fn built_services(&self, project: &Project) -> Result<Vec<String>> {
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
    pub fn build(&self, project: &Project) -> Cmd {
        self.base(project).arg("build").timeout(Duration::from_secs(3600)).streamed().mutating().interruptible()
    }

    /// Starts the whole project with the images as they are (never building or pulling).
    pub fn up_all(&self, project: &Project) -> Cmd {
        self.base(project).args(["up", "-d", "--no-build"]).timeout(Duration::from_secs(600)).streamed().mutating()
    }

    /// Stops every service of the project.
    pub fn stop_all(&self, project: &Project) -> Cmd {
        self.base(project).args(["stop", "-t", "10"]).timeout(Duration::from_secs(300)).streamed().mutating()
    }

    /// Stops the service's container.
    pub fn stop(&self, project: &Project) -> Cmd {
        self.base(project)
            .args(["stop", "-t", "10"])
            .arg(&project.service)
            .timeout(Duration::from_secs(120))
            .streamed()
            .mutating()
    }

    pub fn runner(&self) -> &Runner {
        &self.runner
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

/// Finds the line of a compose file that sets `image:` to `reference`, for messages.
pub fn locate_image_line(files: &[PathBuf], reference: &str) -> Option<(PathBuf, usize)> {
    for file in files {
        let Ok(text) = std::fs::read_to_string(file) else { continue };
        for (index, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if let Some(value) = trimmed.strip_prefix("image:") {
                if value.trim().trim_matches(['\'', '"']) == reference {
                    return Some((file.clone(), index + 1));
                }
            }
        }
    }
    None
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
