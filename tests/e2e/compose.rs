//! The two compose tools the scenarios run under: compose v1 (the system's
//! `docker-compose`) and compose v2 (`docker compose`, the plugin in the
//! private DOCKER_CONFIG that `tests/support/compose-v2.sh` fetches, so v1
//! stays the system's). A v2 scenario gives that DOCKER_CONFIG to its own
//! compose commands and to upgraderd, which then finds the plugin itself.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeVersion {
    V1,
    V2,
}

impl ComposeVersion {
    /// Appended to a scenario's name, so both versions' projects live side by side.
    pub fn suffix(self) -> &'static str {
        match self {
            ComposeVersion::V1 => "",
            ComposeVersion::V2 => "-v2",
        }
    }

    /// How upgraderd's logs show this compose being run.
    pub fn program(self) -> &'static str {
        match self {
            ComposeVersion::V1 => "docker-compose",
            ComposeVersion::V2 => "docker compose",
        }
    }

    /// This compose with `args`, run in `dir`; `docker_config` is the v2 plugin's DOCKER_CONFIG.
    pub fn command<I, S>(self, docker_config: Option<&Path>, dir: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = match self {
            ComposeVersion::V1 => Command::new("docker-compose"),
            ComposeVersion::V2 => {
                let mut docker = Command::new("docker");
                docker.arg("compose");
                docker
            }
        };
        command.args(args).current_dir(dir);
        if let Some(config) = docker_config {
            command.env("DOCKER_CONFIG", config);
        }
        command
    }

    /// The image compose names a built service's image: `<project>_<service>` in v1, `<project>-<service>` in v2.
    pub fn built_image(self, project: &str, service: &str) -> String {
        match self {
            ComposeVersion::V1 => format!("{project}_{service}"),
            ComposeVersion::V2 => format!("{project}-{service}"),
        }
    }
}

/// The DOCKER_CONFIG holding compose v2, when it works here:
/// `$UPGRADERD_E2E_COMPOSE_V2` (set by test.sh), else the cache the script fills.
pub fn find_v2() -> Result<PathBuf, String> {
    let config = std::env::var_os("UPGRADERD_E2E_COMPOSE_V2")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-cache/compose-v2/docker-config"));
    let out = Command::new("docker")
        .args(["compose", "version", "--short"])
        .env("DOCKER_CONFIG", &config)
        .output()
        .map_err(|e| format!("cannot run docker: {e}"))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if out.status.success() && version.trim_start_matches('v').starts_with("2.") {
        Ok(config)
    } else {
        Err(format!(
            "no compose v2 plugin in {} (run tests/support/compose-v2.sh, or set UPGRADERD_E2E_COMPOSE_V2): {}",
            config.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Declares a test per compose version, `NAME::compose_v1` and
/// `NAME::compose_v2`, each calling `NAME(version)`. A scenario that fails
/// under v2 because of upgraderd (not the harness) is declared with
/// `v2_ignored: "why"` until that is fixed; `cargo test -- --ignored` runs it.
macro_rules! each_compose {
    ($($name:ident $(, v2_ignored: $why:literal)?;)*) => {$(
        mod $name {
            #[test]
            fn compose_v1() {
                super::$name($crate::compose::ComposeVersion::V1)
            }

            #[test]
            $(#[ignore = $why])?
            fn compose_v2() {
                super::$name($crate::compose::ComposeVersion::V2)
            }
        }
    )*};
}
pub(crate) use each_compose;
