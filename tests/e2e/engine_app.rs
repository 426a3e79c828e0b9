//! The test app deployed with compose v1 on a [`PrivateEngine`]: one
//! service `app` with a named volume, published on a free port at the
//! engine's address, its versions pushed to the test registry under a
//! repository of its own. The engine-loss tests stop and start its engine;
//! the fleet tests run three of them as three hosts.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use crate::common::{self, Sandbox};
use crate::compose::ComposeVersion;
use crate::private_engine::PrivateEngine;
use crate::world::{free_port, must, world};

pub struct EngineApp {
    pub engine: PrivateEngine,
    pub sandbox: Sandbox,
    /// The compose project directory.
    pub dir: PathBuf,
    pub project: String,
    pub port: u16,
}

impl EngineApp {
    /// The app on a new private engine `name`, with the test builds of `versions`, running 1.0.0.
    pub fn start(name: &str, versions: &[&str]) -> Option<EngineApp> {
        let world = world()?;
        let builds: Vec<(&str, String)> =
            versions.iter().map(|version| (*version, format!("{}-build:{version}", world.prefix))).collect();
        let builds: Vec<(&str, &str)> = builds.iter().map(|(tag, image)| (*tag, image.as_str())).collect();
        EngineApp::start_with_images(name, &builds)
    }

    /// The app on a new private engine `name`, each `(tag, local image)` pushed
    /// as that tag of its repository (1.0.0 among them), running 1.0.0.
    pub fn start_with_images(name: &str, images: &[(&str, &str)]) -> Option<EngineApp> {
        let engine = PrivateEngine::start(name)?;
        let world = world()?;
        let project = engine.name().to_string();
        let repo = format!("{}/{project}/app", world.registry);
        for (tag, local) in images {
            let image = format!("{repo}:{tag}");
            must(&["docker", "tag", local, &image]);
            must(&["docker", "push", &image]);
            must(&["docker", "rmi", &image]);
        }
        let sandbox = Sandbox::new();
        let dir = sandbox.path().join("deploy");
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        std::fs::write(
            dir.join("docker-compose.yml"),
            format!(
                "version: '3.7'\nservices:\n  app:\n    image: {repo}:1.0.0\n    restart: unless-stopped\n    ports:\n      - \"{port}:3001\"\n    \
                 volumes:\n      - appdata:/data\nvolumes:\n  appdata:\n"
            ),
        )
        .unwrap();
        let deployment = EngineApp { engine, sandbox, dir, project, port };
        deployment.compose(&["up", "-d"]);
        deployment.wait_version("1.0.0");
        Some(deployment)
    }

    pub fn compose(&self, args: &[&str]) {
        let mut all = vec!["-p", self.project.as_str()];
        all.extend_from_slice(args);
        let out = ComposeVersion::V1
            .command(None, &self.dir, &all)
            .env("DOCKER_HOST", self.engine.docker_host())
            .output()
            .unwrap();
        assert!(out.status.success(), "docker-compose {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn health(&self) -> Option<Value> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        let url = format!("http://{}:{}/api/health", self.engine.address(), self.port);
        agent.get(&url).call().ok()?.into_json().ok()
    }

    pub fn wait_version(&self, version: &str) {
        common::wait(format!("{version} to answer on the private engine {}", self.project))
            .within(Duration::from_secs(90))
            .every(Duration::from_millis(200))
            .showing(|| format!("last answer: {:?}", self.health()))
            .until_true(|| self.health().is_some_and(|h| h["version"] == version));
    }

    /// `DOCKER_HOST` and upgraderd's settings for this deployment.
    pub fn settings(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DOCKER_HOST", self.engine.docker_host()),
            ("UPGRADERD_COMPOSE_DIR", self.dir.display().to_string()),
            ("UPGRADERD_COMPOSE_PROJECT", self.project.clone()),
            ("UPGRADERD_SERVICE", "app".into()),
            ("UPGRADERD_HEALTH_URL", format!("http://{}:{}/api/health", self.engine.address(), self.port)),
            ("UPGRADERD_HEALTH_TIMEOUT", "20s".into()),
            ("UPGRADERD_HEALTH_STABLE", "1s".into()),
            ("UPGRADERD_HEALTH_VERSION_POINTER", "/version".into()),
            ("UPGRADERD_MIN_FREE", "1MB".into()),
            ("UPGRADERD_POLICY", "major".into()),
            ("UPGRADERD_TRIGGER_DIR", self.sandbox.path().display().to_string()),
        ]
    }

    pub fn state_dir(&self) -> String {
        self.sandbox.state().display().to_string()
    }

    pub fn last_history(&self) -> Value {
        let state = self.state_dir();
        self.sandbox.run(&["--state-dir", &state, "--json", "history", "--limit", "1"]).success().json()["history"][0]
            .clone()
    }
}
