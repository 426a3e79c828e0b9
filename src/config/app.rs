//! Several apps on one host: `--app NAME` stands for
//! `-c <config root>/NAME.env --state-dir <state root>/NAME`, the files the
//! template unit `upgraderd@NAME.service` uses. Each app has its own database
//! and lock, so two apps upgrade at the same time without waiting for each
//! other. An explicit `-c` or `--state-dir` replaces its half of `--app`.
//!
//! The roots are `/etc/upgraderd` and `/var/lib/upgraderd`;
//! `UPGRADERD_APP_CONFIG_ROOT` and `UPGRADERD_APP_STATE_ROOT` in the
//! environment move them (tests, hosts that keep configuration elsewhere).

use std::path::{Path, PathBuf};

use anyhow::Result;

use super::envfile::EnvFile;
use super::layers::Env;
use crate::exit::usage;

/// The environment variable that moves the directory of the apps' configuration files.
pub(crate) const CONFIG_ROOT_VAR: &str = "UPGRADERD_APP_CONFIG_ROOT";
/// The environment variable that moves the directory holding the apps' state directories.
pub(crate) const STATE_ROOT_VAR: &str = "UPGRADERD_APP_STATE_ROOT";
pub(crate) const DEFAULT_CONFIG_ROOT: &str = "/etc/upgraderd";
pub(crate) const DEFAULT_STATE_ROOT: &str = "/var/lib/upgraderd";

/// The longest app name: it ends up in a unit name, a file name and a directory name.
const MAX_NAME_LEN: usize = 64;

/// One app's configuration file and state directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct App {
    pub name: String,
    pub config_file: PathBuf,
    pub state_dir: PathBuf,
}

impl App {
    /// The app called `name`, under the roots the environment chooses.
    pub(crate) fn resolve(name: &str, env: &Env) -> Result<App> {
        check_name(name).map_err(|why| {
            usage(format!(
                "invalid app name {name:?} (from --app): {why}; the name becomes a file and a directory name, \
                 for example --app meshmonitor"
            ))
        })?;
        let config_root = root(env, CONFIG_ROOT_VAR, DEFAULT_CONFIG_ROOT)?;
        let state_root = root(env, STATE_ROOT_VAR, DEFAULT_STATE_ROOT)?;
        Ok(App {
            name: name.to_string(),
            config_file: config_root.join(format!("{name}.env")),
            state_dir: state_root.join(name),
        })
    }

    /// Reads the app's configuration file, which must exist: an app without one is a typo or not set up yet.
    pub(crate) fn read_config(&self) -> Result<EnvFile> {
        if !self.config_file.exists() {
            return Err(usage(format!(
                "no configuration for app {name:?}: {file} does not exist; create it (KEY=VALUE lines, \
                 like /etc/upgraderd/upgraderd.env) or check the name",
                name = self.name,
                file = self.config_file.display()
            )));
        }
        EnvFile::read(&self.config_file)
    }
}

/// Why `name` cannot name an app, if it cannot.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), String> {
    const ALLOWED: &str = "use letters, digits, `_`, `-` and `.`";
    if name.is_empty() {
        return Err("it is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} characters"));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))) {
        return Err(format!("{bad:?} is not allowed ({ALLOWED})"));
    }
    if name.starts_with(['-', '.']) {
        return Err(format!("it starts with {:?} ({ALLOWED}, starting with a letter, digit or `_`)", &name[..1]));
    }
    if name.contains("..") {
        return Err("it contains `..`".into());
    }
    if is_reserved(name) {
        return Err(format!(
            "it is a name upgraderd uses itself (the single instance's upgraderd.env, or an entry of its \
             state directory {DEFAULT_STATE_ROOT})"
        ));
    }
    Ok(())
}

/// `upgraderd` is the single instance's configuration file (`upgraderd.env`);
/// the others are entries of a state directory, so an app named like one
/// would keep its state inside the single instance's.
fn is_reserved(name: &str) -> bool {
    const STATE_ENTRIES: &[&str] = &[super::BACKUPS_DIR, "unrecorded", "reserve", "reserve.partial", "http-cache.json"];
    name == "upgraderd" || name.starts_with("upgraderd.") || STATE_ENTRIES.contains(&name)
}

fn root(env: &Env, var: &str, default: &str) -> Result<PathBuf> {
    let Some(text) = env.get(var).filter(|t| !t.is_empty()) else { return Ok(PathBuf::from(default)) };
    let path = Path::new(text);
    if path.is_relative() {
        return Err(usage(format!(
            "invalid {var}={text:?} (from env {var}): not an absolute path; for example {var}={default}"
        )));
    }
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_app_name_is_one_plain_path_component() {
        for good in ["meshmonitor", "open_trace", "app-2", "a", "app.example", "_x", "9lives"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("a/b", "'/' is not allowed"),
            ("..", "starts with \".\""),
            ("a..b", "contains `..`"),
            (".hidden", "starts with \".\""),
            ("-c", "starts with \"-\""),
            ("two words", "' ' is not allowed"),
            ("café", "'é' is not allowed"),
            ("upgraderd", "the single instance"),
            ("upgraderd.db", "the single instance"),
            ("backups", "state directory"),
        ] {
            let err = check_name(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(check_name(&"x".repeat(65)).unwrap_err().contains("longer than 64"));
        assert_eq!(check_name(&"x".repeat(64)), Ok(()));
    }

    #[test]
    fn the_roots_come_from_the_environment_or_the_defaults() {
        let app = App::resolve("meshmonitor", &Env::default()).unwrap();
        assert_eq!(app.config_file, Path::new("/etc/upgraderd/meshmonitor.env"));
        assert_eq!(app.state_dir, Path::new("/var/lib/upgraderd/meshmonitor"));

        let env = Env::from_pairs([(CONFIG_ROOT_VAR, "/tmp/conf".to_string()), (STATE_ROOT_VAR, "/tmp/st".into())]);
        let app = App::resolve("a", &env).unwrap();
        assert_eq!(
            (app.config_file.as_path(), app.state_dir.as_path()),
            (Path::new("/tmp/conf/a.env"), Path::new("/tmp/st/a"))
        );

        let relative = Env::from_pairs([(STATE_ROOT_VAR, "state".to_string())]);
        let err = App::resolve("a", &relative).unwrap_err().to_string();
        assert!(err.contains("UPGRADERD_APP_STATE_ROOT=\"state\"") && err.contains("absolute"), "{err}");
        let err = App::resolve("../etc", &Env::default()).unwrap_err().to_string();
        assert!(err.starts_with("invalid app name \"../etc\" (from --app): '/' is not allowed"), "{err}");
    }
}
