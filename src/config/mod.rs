//! One validated [`Config`] from flags > `UPGRADERD_*` environment > env-style
//! file > defaults, remembering where every value came from.
//!
//! The names used by the systems upgraderd replaces (`DATA_DIR`,
//! `CONTAINER_NAME`, ...) are accepted as fallbacks: in the file after the
//! `UPGRADERD_*` name, in the environment only where the key is set nowhere
//! else (see `layers`). A value that does not parse is a usage error naming
//! the key, its source and a valid example.
//!
//! Inside: `keys` is the table of keys, `layers` resolves each key to its raw
//! text and source, `envfile` reads the file, `values` types the text,
//! `shared_dir` owns the names upgraderd writes next to the trigger, `app`
//! turns `--app NAME` into a configuration file and a state directory,
//! `notify` the notification URLs and the format each is sent in, `steps`
//! the release steps.

pub(crate) mod app;
mod envfile;
mod keys;
mod layers;
mod notify;
mod shared_dir;
pub(crate) mod steps;
mod values;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::window::{self, Windows};

pub(crate) use envfile::EnvFile;
pub use keys::KEYS;
pub(crate) use keys::{display_value, shown, spec, KeySpec};
pub(crate) use layers::{Env, Layers, Source, Value};
pub(crate) use notify::NotifyTarget;
pub(crate) use shared_dir::{
    claimed_name, claimed_trigger, is_rejected, rejected_name, spool_name, BANNER_FILE, LEGACY_STATUS_FILE,
    SOCKET_TEST_ANSWER, SOCKET_TEST_PREFIX, SOCKET_TEST_REQUEST,
};
pub(crate) use values::parse_size;

use app::App;
use values::{
    as_path, as_text, parse_backup_modes, parse_count, parse_github_repo, parse_listen, parse_pointer,
    parse_swarm_service, parse_url, Parser,
};

/// The default configuration file, read when present and no `-c` is given.
pub(crate) const DEFAULT_CONFIG_FILE: &str = "/etc/upgraderd/upgraderd.env";
/// The state database, in the state directory.
pub(crate) const DB_FILE: &str = "upgraderd.db";
/// The single-upgrade lock, in the state directory: one per state directory, so one per app.
pub(crate) const LOCK_FILE: &str = "upgraderd.lock";
/// The default backup directory, in the state directory.
pub(crate) const BACKUPS_DIR: &str = "backups";

pub(crate) use crate::states::{BackupMode, Strategy};

/// How far an automatic upgrade may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Policy {
    Patch,
    Minor,
    Major,
}

/// The validated configuration every command works from.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub state_dir: PathBuf,
    pub strategy: Strategy,
    pub container: Option<String>,
    pub service: Option<String>,
    /// The services that move together; empty: every service on the primary's image repository.
    pub services: Vec<String>,
    /// The Docker Swarm service to upgrade (`STACK_SERVICE`), instead of a compose service.
    pub swarm_service: Option<String>,
    pub compose_project: Option<String>,
    pub compose_dir: Option<PathBuf>,
    pub compose_files: Vec<PathBuf>,
    /// Swarm: the stack files whose pins move with the services.
    pub stack_files: Vec<PathBuf>,
    /// `UPGRADERD_RELEASE_STEPS`: commands run with the new image before it serves.
    pub release_steps: Vec<steps::ReleaseStep>,
    pub image: Option<String>,
    /// Write the version over a channel tag (`release`) instead of moving the channel.
    pub pin_channels: bool,
    /// `UPGRADERD_EARLY_COMPOSE`: start compose's `up` ahead of the switch, held at a gate before the engine.
    pub early_compose: bool,
    pub compose_cmd: Option<Vec<String>>,
    pub docker: PathBuf,
    pub git: PathBuf,
    pub data_dirs: Vec<PathBuf>,
    /// Per service, how its data is kept consistent: wins over its `upgraderd.backup` label.
    pub backup_modes: Vec<(String, BackupMode)>,
    /// Host paths never backed up (a mount at or below one is left out).
    pub backup_exclude: Vec<PathBuf>,
    pub backup_dir: PathBuf,
    pub backup_keep: usize,
    /// What new backups are written as.
    pub backup_format: crate::store::backup::Form,
    pub trigger_dir: Option<PathBuf>,
    pub trigger_file: String,
    pub status_file: String,
    /// The one-word status of the MeshMonitor watchdog protocol; `None`: not written.
    pub legacy_status_file: Option<String>,
    pub poll_interval: Duration,
    pub enabled: bool,
    pub health_url: String,
    pub health_timeout: Duration,
    /// `UPGRADERD_ENGINE_WAIT`: how long a docker call waits for an unreachable engine to come back.
    pub engine_wait: Duration,
    /// `UPGRADERD_START_TIMEOUT`: how long a held service has to be ready again; each one's own when unset.
    pub start_timeout: Option<Duration>,
    pub health_stable: Duration,
    pub health_version_pointer: Option<String>,
    pub min_free: u64,
    pub git_dir: Option<PathBuf>,
    pub git_remote: String,
    pub git_branch: String,
    pub version_url: Option<String>,
    pub version_pointer: String,
    pub github_repo: Option<String>,
    pub github_token: Option<String>,
    pub version_source: Option<crate::states::VersionSource>,
    pub github_api: String,
    pub min_release_age: Duration,
    pub auto_upgrade: bool,
    /// When automatic upgrades may start; unrestricted when none is configured.
    pub auto_upgrade_window: Windows,
    pub current_version: Option<String>,
    pub check_every: Duration,
    pub version_check_disabled: bool,
    pub policy: Policy,
    pub allow_prerelease: bool,
    pub allow_downgrade: bool,
    /// The app's trigger may force past policy, downgrade protection and quarantine.
    pub trigger_may_force: bool,
    /// The app's trigger may skip the backup.
    pub trigger_may_skip_backup: bool,
    /// Where every outcome is announced, each in its own format.
    pub notify: Vec<NotifyTarget>,
    pub pre_upgrade_cmd: Option<String>,
    pub post_upgrade_cmd: Option<String>,
    pub stale_after: Duration,
    /// `UPGRADERD_METRICS_FILE`: the Prometheus textfile; `None`: not written.
    pub metrics_file: Option<PathBuf>,
    /// Where `watch` serves `/metrics`.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Reads the configuration file chosen by `-c`, `UPGRADERD_CONFIG` or the default location.
pub(crate) fn read_file(explicit: Option<&Path>, env: &Env) -> Result<Option<EnvFile>> {
    if let Some(path) = explicit {
        return EnvFile::read(path).map(Some);
    }
    if let Some(path) = env.get("UPGRADERD_CONFIG") {
        return EnvFile::read(Path::new(path)).map(Some);
    }
    let default = Path::new(DEFAULT_CONFIG_FILE);
    if default.exists() {
        return EnvFile::read(default).map(Some);
    }
    Ok(None)
}

impl Config {
    /// Types and validates every resolved value.
    pub(crate) fn from_layers(layers: &Layers) -> Result<Config> {
        let p = Parser { layers };
        let trigger_file = p.file_name("UPGRADERD_TRIGGER_FILE")?;
        let status_file = p.file_name("UPGRADERD_STATUS_FILE")?;
        let legacy_status_file = p.file_name_or_off("UPGRADERD_LEGACY_STATUS_FILE")?;
        shared_dir::check_names(layers, &trigger_file, &status_file, legacy_status_file.as_deref())?;
        let state_dir = p.required("UPGRADERD_STATE_DIR", as_path)?;
        let backup_dir = p.path("UPGRADERD_BACKUP_DIR")?.unwrap_or_else(|| state_dir.join(BACKUPS_DIR));
        Ok(Config {
            strategy: p.parse("UPGRADERD_STRATEGY", "pull", |t| {
                Strategy::parse(t).ok_or_else(|| format!("expected {}", Strategy::choices()))
            })?,
            container: p.text("UPGRADERD_CONTAINER"),
            service: p.text("UPGRADERD_SERVICE"),
            services: p.list("UPGRADERD_SERVICES"),
            swarm_service: p.parse_opt("UPGRADERD_SWARM_SERVICE", "shop_app", parse_swarm_service)?,
            compose_project: p.text("UPGRADERD_COMPOSE_PROJECT"),
            compose_dir: p.path("UPGRADERD_COMPOSE_DIR")?,
            compose_files: p.list("UPGRADERD_COMPOSE_FILES").into_iter().map(PathBuf::from).collect(),
            stack_files: p.paths("UPGRADERD_STACK_FILES")?,
            release_steps: p
                .parse_opt("UPGRADERD_RELEASE_STEPS", "'web: bundle exec rails db:migrate'", steps::parse)?
                .unwrap_or_default(),
            image: p.text("UPGRADERD_IMAGE"),
            pin_channels: p.bool("UPGRADERD_PIN_CHANNELS")?,
            early_compose: p.bool("UPGRADERD_EARLY_COMPOSE")?,
            compose_cmd: p.text("UPGRADERD_COMPOSE_CMD").map(|t| t.split_whitespace().map(String::from).collect()),
            docker: p.required("UPGRADERD_DOCKER", as_path)?,
            git: p.required("UPGRADERD_GIT", as_path)?,
            data_dirs: p.paths("UPGRADERD_DATA_DIR")?,
            backup_modes: p
                .parse_opt("UPGRADERD_BACKUP_MODES", "db=stop,cache=skip", parse_backup_modes)?
                .unwrap_or_default(),
            backup_exclude: p.paths("UPGRADERD_BACKUP_EXCLUDE")?,
            backup_keep: p.parse("UPGRADERD_BACKUP_KEEP", "5", parse_count)?,
            backup_format: p.parse("UPGRADERD_BACKUP_FORMAT", "archive", str::parse)?,
            trigger_dir: p.path("UPGRADERD_TRIGGER_DIR")?,
            trigger_file,
            status_file,
            legacy_status_file,
            poll_interval: p.duration("UPGRADERD_POLL_INTERVAL", true)?,
            enabled: p.bool("UPGRADERD_ENABLED")?,
            health_url: p.required("UPGRADERD_HEALTH_URL", parse_url)?,
            health_timeout: p.duration("UPGRADERD_HEALTH_TIMEOUT", false)?,
            engine_wait: p.duration("UPGRADERD_ENGINE_WAIT", false)?,
            start_timeout: p.parse_opt("UPGRADERD_START_TIMEOUT", "90s", values::parse_duration)?,
            health_stable: p.duration("UPGRADERD_HEALTH_STABLE", false)?,
            health_version_pointer: p.pointer("UPGRADERD_HEALTH_VERSION_POINTER")?,
            min_free: p.parse("UPGRADERD_MIN_FREE", "500MB", parse_size)?,
            git_dir: p.path("UPGRADERD_GIT_DIR")?,
            git_remote: p.required("UPGRADERD_GIT_REMOTE", as_text)?,
            git_branch: p.required("UPGRADERD_GIT_BRANCH", as_text)?,
            version_url: p.url("UPGRADERD_VERSION_URL")?,
            version_pointer: p.required("UPGRADERD_VERSION_POINTER", parse_pointer)?,
            github_repo: p.parse_opt("UPGRADERD_GITHUB_REPO", "owner/name", parse_github_repo)?,
            github_token: p.text("UPGRADERD_GITHUB_TOKEN"),
            version_source: p.parse_opt("UPGRADERD_VERSION_SOURCE", "github", |t| {
                crate::states::VersionSource::parse(t).ok_or_else(|| "expected url, github or registry".into())
            })?,
            github_api: p.required("UPGRADERD_GITHUB_API", parse_url)?,
            min_release_age: p.duration("UPGRADERD_MIN_RELEASE_AGE", false)?,
            auto_upgrade: p.bool("UPGRADERD_AUTO_UPGRADE")?,
            auto_upgrade_window: p
                .parse_opt("UPGRADERD_AUTO_UPGRADE_WINDOW", window::EXAMPLE, Windows::parse)?
                .unwrap_or_default(),
            current_version: p.text("UPGRADERD_CURRENT_VERSION"),
            check_every: p.duration("UPGRADERD_CHECK_EVERY", false)?,
            version_check_disabled: p.bool("UPGRADERD_VERSION_CHECK_DISABLED")?,
            policy: p.parse("UPGRADERD_POLICY", "minor", |t| match t {
                "patch" => Ok(Policy::Patch),
                "minor" => Ok(Policy::Minor),
                "major" => Ok(Policy::Major),
                _ => Err("expected patch, minor or major".into()),
            })?,
            allow_prerelease: p.bool("UPGRADERD_ALLOW_PRERELEASE")?,
            allow_downgrade: p.bool("UPGRADERD_ALLOW_DOWNGRADE")?,
            trigger_may_force: p.bool("UPGRADERD_TRIGGER_MAY_FORCE")?,
            trigger_may_skip_backup: p.bool("UPGRADERD_TRIGGER_MAY_SKIP_BACKUP")?,
            notify: p.parse_opt("UPGRADERD_NOTIFY_URL", notify::EXAMPLE, notify::parse_list)?.unwrap_or_default(),
            pre_upgrade_cmd: p.text("UPGRADERD_PRE_UPGRADE_CMD"),
            post_upgrade_cmd: p.text("UPGRADERD_POST_UPGRADE_CMD"),
            stale_after: p.duration("UPGRADERD_STALE_AFTER", false)?,
            metrics_file: p.path("UPGRADERD_METRICS_FILE")?,
            metrics_listen: p.parse_opt("UPGRADERD_METRICS_LISTEN", "127.0.0.1:9877", parse_listen)?,
            state_dir,
            backup_dir,
        })
    }

    /// The path of the state database.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.state_dir.join(DB_FILE)
    }

    /// The path of the single-upgrade lock file.
    pub(crate) fn lock_path(&self) -> PathBuf {
        self.state_dir.join(LOCK_FILE)
    }
}

/// Which configuration and state the command line chose: `--app`, `-c`, `--state-dir`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Selection<'a> {
    pub app: Option<&'a str>,
    pub config_file: Option<&'a Path>,
    pub state_dir: Option<&'a Path>,
}

/// Loads the configuration for a command: file, environment and flags,
/// handing every warning about the file (lines systemd ignores, unknown keys)
/// to `warn` before any value is checked, so a bad value does not hide them.
pub(crate) fn load_reporting(
    selection: Selection,
    flags: &[(&'static str, String)],
    env: &Env,
    warn: &mut dyn FnMut(String),
) -> Result<(Config, Layers)> {
    let app = selection.app.map(|name| App::resolve(name, env)).transpose()?;
    let file = match (selection.config_file, &app) {
        (None, Some(app)) => Some(app.read_config()?),
        (explicit, _) => read_file(explicit, env).context("reading configuration")?,
    };
    for warning in file.iter().flat_map(EnvFile::warnings) {
        warn(warning);
    }
    let mut flags = flags.to_vec();
    if let Some(dir) = selection.state_dir {
        flags.push(("UPGRADERD_STATE_DIR", dir.display().to_string()));
    }
    let mut layers = Layers::resolve(&flags, env, file);
    for warning in layers.set_aside() {
        warn(warning);
    }
    if let (Some(app), None) = (&app, selection.state_dir) {
        pin_app_state_dir(&mut layers, app, warn);
    }
    let config = Config::from_layers(&layers)?;
    Ok((config, layers))
}

/// `--app` chooses the state directory as a flag would: an `UPGRADERD_STATE_DIR`
/// from the environment or the file would put two apps in one state (one
/// lock, one history), so it is set aside, with a warning when it differed.
fn pin_app_state_dir(layers: &mut Layers, app: &App, warn: &mut dyn FnMut(String)) {
    let state_dir = app.state_dir.display().to_string();
    if let Some(value) = layers.get("UPGRADERD_STATE_DIR") {
        if value.source != Source::Default && value.text != state_dir {
            warn(format!(
                "UPGRADERD_STATE_DIR={} (from {}) is ignored: --app {} keeps its state in {state_dir} \
                 (pass --state-dir to choose another)",
                value.text, value.source, app.name
            ));
        }
    }
    layers.values.insert("UPGRADERD_STATE_DIR", Value { text: state_dir, source: Source::App(app.name.clone()) });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    #[test]
    fn flags_beat_env_beat_file_beat_defaults() {
        let file = EnvFile::parse(
            Path::new("/etc/u.env"),
            "UPGRADERD_BACKUP_KEEP=7\nUPGRADERD_CONTAINER=from-file\nUPGRADERD_HEALTH_TIMEOUT=5m\n",
        )
        .unwrap();
        let layers = Layers::resolve(
            &[("UPGRADERD_CONTAINER", "from-flag".into())],
            &env(&[("UPGRADERD_BACKUP_KEEP", "9")]),
            Some(file),
        );
        let config = Config::from_layers(&layers).unwrap();
        assert_eq!(config.container.as_deref(), Some("from-flag"));
        assert_eq!(config.backup_keep, 9);
        assert_eq!(config.health_timeout, Duration::from_secs(300));
        assert_eq!(
            layers.get("UPGRADERD_HEALTH_TIMEOUT").unwrap().source.to_string(),
            "/etc/u.env:3 (UPGRADERD_HEALTH_TIMEOUT)"
        );
        assert_eq!(layers.get("UPGRADERD_STALE_AFTER").unwrap().source, Source::Default);
    }

    #[test]
    fn fallback_names_are_accepted_after_the_upgraderd_name() {
        let layers = Layers::resolve(
            &[],
            &env(&[("CONTAINER_NAME", "meshmonitor"), ("CHECK_INTERVAL", "7"), ("DATA_DIR", "/data")]),
            None,
        );
        let config = Config::from_layers(&layers).unwrap();
        assert_eq!(config.container.as_deref(), Some("meshmonitor"));
        assert_eq!(config.poll_interval, Duration::from_secs(7));
        assert_eq!(config.data_dirs, vec![PathBuf::from("/data")]);

        let both = Layers::resolve(&[], &env(&[("CONTAINER_NAME", "old"), ("UPGRADERD_CONTAINER", "new")]), None);
        assert_eq!(Config::from_layers(&both).unwrap().container.as_deref(), Some("new"));
    }

    /// A shell that exports `CONTAINER_NAME` for something else must not retarget upgraderd: an
    /// older name in the environment counts only where its key is set nowhere else.
    #[test]
    fn an_older_name_in_the_environment_counts_only_where_the_key_is_set_nowhere() {
        let file = |text: &str| Some(EnvFile::parse(Path::new("/etc/u.env"), text).unwrap());
        let stray = env(&[("CONTAINER_NAME", "other")]);

        let layers = Layers::resolve(&[], &stray, file("UPGRADERD_CONTAINER=app\n"));
        assert_eq!(Config::from_layers(&layers).unwrap().container.as_deref(), Some("app"));
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().source.to_string(), "/etc/u.env:1 (UPGRADERD_CONTAINER)");

        // The older name in the file is the operator's configuration: it beats the environment's.
        let layers = Layers::resolve(&[], &stray, file("CONTAINER_NAME=mesh\n"));
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().text, "mesh");
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().source.to_string(), "/etc/u.env:1 (CONTAINER_NAME)");

        let layers = Layers::resolve(&[("UPGRADERD_CONTAINER", "flagged".into())], &stray, None);
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().source, Source::Flag);

        // Set nowhere else, the older name in the environment still moves an existing setup over.
        let layers = Layers::resolve(&[], &stray, file("UPGRADERD_IMAGE=ghcr.io/x/app\n"));
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().text, "other");
        assert_eq!(layers.get("UPGRADERD_CONTAINER").unwrap().source, Source::Env("CONTAINER_NAME".into()));

        // Every older name, the same way.
        for spec in KEYS.iter().filter(|k| k.fallback.is_some()) {
            let older = spec.fallback.unwrap();
            let layers =
                Layers::resolve(&[], &env(&[(older, "from-environment")]), file(&format!("{}=from-file\n", spec.name)));
            let value = layers.get(spec.name).unwrap();
            assert_eq!(
                (value.text.as_str(), &value.source.to_string()),
                ("from-file", &format!("/etc/u.env:1 ({})", spec.name))
            );
        }
    }

    #[test]
    fn an_older_name_set_aside_is_reported_when_it_differs() {
        let file = EnvFile::parse(Path::new("/etc/u.env"), "UPGRADERD_CONTAINER=app\nUPGRADERD_IMAGE=x/app\n").unwrap();
        let layers = Layers::resolve(
            &[],
            &env(&[("CONTAINER_NAME", "other"), ("IMAGE_NAME", "x/app"), ("DATA_DIR", "/srv")]),
            Some(file),
        );
        let set_aside = layers.set_aside();
        assert_eq!(set_aside.len(), 1, "{set_aside:?}");
        assert!(
            set_aside[0].contains("CONTAINER_NAME=other")
                && set_aside[0].contains("UPGRADERD_CONTAINER=app")
                && set_aside[0].contains("/etc/u.env:1"),
            "{}",
            set_aside[0]
        );
    }

    #[test]
    fn the_legacy_status_token_defaults_on_and_an_empty_value_turns_it_off() {
        let config = |pairs: &[(&str, &str)]| Config::from_layers(&Layers::resolve(&[], &env(pairs), None));
        assert_eq!(config(&[]).unwrap().legacy_status_file.as_deref(), Some(".upgrade-status"));
        assert_eq!(config(&[("UPGRADERD_LEGACY_STATUS_FILE", "")]).unwrap().legacy_status_file, None);
        assert_eq!(config(&[("UPGRADERD_LEGACY_STATUS_FILE", " ")]).unwrap().legacy_status_file, None);
        let named = config(&[("UPGRADERD_LEGACY_STATUS_FILE", "status.word")]).unwrap();
        assert_eq!(named.legacy_status_file.as_deref(), Some("status.word"));
        let err = config(&[("UPGRADERD_LEGACY_STATUS_FILE", "../x")]).unwrap_err().to_string();
        assert!(
            err.contains("UPGRADERD_LEGACY_STATUS_FILE")
                && err.contains("for example UPGRADERD_LEGACY_STATUS_FILE=.upgrade-status"),
            "{err}"
        );
    }
}
