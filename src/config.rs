//! One validated [`Config`] from flags > `UPGRADERD_*` environment > env-style
//! file > defaults, remembering where every value came from.
//!
//! The names used by the systems upgraderd replaces (`DATA_DIR`,
//! `CONTAINER_NAME`, ...) are accepted as fallbacks, after the `UPGRADERD_*`
//! name in the same source. A value that does not parse is a usage error naming
//! the key, its source and a valid example.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::exit::usage;

/// The default configuration file, read when present and no `-c` is given.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/upgraderd/upgraderd.env";

/// A configuration key: its name, fallback, default and how it is shown.
#[derive(Debug)]
pub struct KeySpec {
    pub name: &'static str,
    /// The reference systems' name for the same setting.
    pub fallback: Option<&'static str>,
    /// Default as text; `None` means unset (or derived at run time).
    pub default: Option<&'static str>,
    pub secret: Secret,
    pub help: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret {
    No,
    /// The whole value is hidden.
    Whole,
    /// A URL whose password and query string are hidden.
    Url,
}

const fn key(
    name: &'static str,
    fallback: Option<&'static str>,
    default: Option<&'static str>,
    help: &'static str,
) -> KeySpec {
    KeySpec { name, fallback, default, secret: Secret::No, help }
}

/// Every configuration key, in the order `upgraderd config` prints them.
pub static KEYS: &[KeySpec] = &[
    key("UPGRADERD_STATE_DIR", None, Some("/var/lib/upgraderd"), "state database, lock, default backup dir"),
    key("UPGRADERD_STRATEGY", None, Some("pull"), "pull | rebuild"),
    key("UPGRADERD_CONTAINER", Some("CONTAINER_NAME"), None, "container of the service to upgrade"),
    key("UPGRADERD_SERVICE", None, None, "compose service (derived from the container)"),
    key("UPGRADERD_COMPOSE_PROJECT", Some("COMPOSE_PROJECT_NAME"), None, "compose project (derived)"),
    key("UPGRADERD_COMPOSE_DIR", Some("COMPOSE_PROJECT_DIR"), None, "compose working dir (derived)"),
    key("UPGRADERD_COMPOSE_FILES", None, None, "compose files, comma separated (derived)"),
    key("UPGRADERD_IMAGE", Some("IMAGE_NAME"), None, "image repository (derived from the container)"),
    key("UPGRADERD_COMPOSE_CMD", None, None, "compose command (auto: `docker compose`, else `docker-compose`)"),
    key("UPGRADERD_DOCKER", None, Some("docker"), "docker program"),
    key("UPGRADERD_GIT", None, Some("git"), "git program"),
    key(
        "UPGRADERD_DATA_DIR",
        Some("DATA_DIR"),
        None,
        "data paths to back up, comma separated (default: the container's writable mounts)",
    ),
    key("UPGRADERD_BACKUP_DIR", None, None, "backup directory (default: <state dir>/backups)"),
    key("UPGRADERD_BACKUP_KEEP", None, Some("5"), "backups kept by prune"),
    key("UPGRADERD_TRIGGER_DIR", None, None, "directory shared with the app"),
    key("UPGRADERD_TRIGGER_FILE", None, Some(".upgrade-trigger"), "trigger file name"),
    key("UPGRADERD_STATUS_FILE", None, Some(".upgrade-status.json"), "status file name"),
    key(
        "UPGRADERD_POLL_INTERVAL",
        Some("CHECK_INTERVAL"),
        Some("5s"),
        "trigger poll interval when inotify is unavailable",
    ),
    key("UPGRADERD_ENABLED", Some("AUTO_UPGRADE_ENABLED"), Some("true"), "honour triggers"),
    key("UPGRADERD_HEALTH_URL", None, Some("http://127.0.0.1:3001/api/health"), "HTTP health probe"),
    key("UPGRADERD_HEALTH_TIMEOUT", None, Some("120s"), "how long the new version has to become healthy"),
    key("UPGRADERD_HEALTH_STABLE", None, Some("3s"), "how long it must stay healthy"),
    key("UPGRADERD_HEALTH_VERSION_POINTER", None, None, "JSON pointer to the version in the health body"),
    key("UPGRADERD_MIN_FREE", None, Some("500MB"), "free space required before an upgrade"),
    key("UPGRADERD_GIT_DIR", None, None, "git checkout (default: the compose dir)"),
    key("UPGRADERD_GIT_REMOTE", None, Some("origin"), "git remote"),
    key("UPGRADERD_GIT_BRANCH", None, Some("main"), "git branch"),
    key("UPGRADERD_VERSION_URL", None, None, "version.json URL"),
    key("UPGRADERD_VERSION_POINTER", None, Some("/version"), "JSON pointer to the version in version.json"),
    key("UPGRADERD_GITHUB_REPO", None, None, "owner/name whose releases are versions"),
    KeySpec { secret: Secret::Whole, ..key("UPGRADERD_GITHUB_TOKEN", None, None, "GitHub token") },
    key("UPGRADERD_VERSION_SOURCE", None, None, "version source: url | github | registry"),
    key("UPGRADERD_GITHUB_API", None, Some("https://api.github.com"), "GitHub API base (GitHub Enterprise)"),
    key("UPGRADERD_MIN_RELEASE_AGE", None, Some("0"), "GitHub releases younger than this are not offered"),
    key("UPGRADERD_CURRENT_VERSION", None, None, "current version (derived)"),
    key("UPGRADERD_CHECK_EVERY", None, Some("4h"), "version check period of watch (0 = off)"),
    key("UPGRADERD_AUTO_UPGRADE", None, Some("false"), "watch upgrades to an allowed update on its own"),
    key("UPGRADERD_VERSION_CHECK_DISABLED", Some("VERSION_CHECK_DISABLED"), Some("false"), "no version checks at all"),
    key("UPGRADERD_POLICY", None, Some("minor"), "patch | minor | major: cap of automatic upgrades"),
    key("UPGRADERD_ALLOW_PRERELEASE", None, Some("false"), "consider prereleases"),
    key("UPGRADERD_ALLOW_DOWNGRADE", None, Some("false"), "allow a lower target version"),
    KeySpec {
        secret: Secret::Url,
        ..key("UPGRADERD_NOTIFY_URL", None, None, "URL that terminal states are POSTed to")
    },
    key("UPGRADERD_PRE_UPGRADE_CMD", None, None, "command that can veto an upgrade"),
    key("UPGRADERD_POST_UPGRADE_CMD", None, None, "command run after a terminal state"),
    key("UPGRADERD_STALE_AFTER", None, Some("30m"), "age after which an unfinished upgrade is recovered"),
];

/// Looks a key up by its `UPGRADERD_*` name.
pub fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// Where a configuration value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag,
    Env(String),
    File { path: PathBuf, line: usize, name: String },
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("flag"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::File { path, line, name } => write!(f, "{}:{line} ({name})", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// A resolved raw value with its source.
#[derive(Debug, Clone)]
pub struct Value {
    pub text: String,
    pub source: Source,
}

/// A snapshot of the environment, so tests can resolve configuration without touching the process's.
#[derive(Debug, Clone, Default)]
pub struct Env(pub HashMap<String, String>);

impl Env {
    pub fn from_process() -> Self {
        Env(std::env::vars_os().filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))).collect())
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn from_pairs<K: Into<String>>(pairs: impl IntoIterator<Item = (K, String)>) -> Self {
        Env(pairs.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

/// One `KEY=VALUE` line of an env-style file.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub value: String,
    pub line: usize,
}

/// A parsed env-style configuration file.
#[derive(Debug, Default)]
pub struct EnvFile {
    pub path: PathBuf,
    pub entries: HashMap<String, FileEntry>,
    /// Lines naming keys upgraderd does not know, for warnings.
    pub unknown: Vec<(usize, String)>,
}

impl EnvFile {
    pub fn read(path: &Path) -> Result<EnvFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        EnvFile::parse(path, &text)
    }

    /// Parses the subset of systemd's `EnvironmentFile=` syntax operators use:
    /// `KEY=VALUE`, `#`/`;` comments, blank lines, single or double quotes.
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile> {
        let mut file = EnvFile { path: path.to_path_buf(), ..EnvFile::default() };
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let at = |what: &str| {
                usage(format!(
                    "config file {}:{line_no}: {what}; expected KEY=VALUE, e.g. UPGRADERD_BACKUP_KEEP=5",
                    path.display()
                ))
            };
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err(at("no `=` on this line"));
            };
            let name = name.trim();
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(at(&format!("`{name}` is not a variable name")));
            }
            let value = unquote(value.trim()).map_err(at)?;
            if !is_known_name(name) {
                file.unknown.push((line_no, name.to_string()));
            }
            file.entries.insert(name.to_string(), FileEntry { value, line: line_no });
        }
        Ok(file)
    }
}

fn unquote(value: &str) -> std::result::Result<String, &'static str> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            let Some(inner) = rest.strip_suffix(quote) else {
                return Err("unterminated quote");
            };
            if quote == '"' {
                return Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
            return Ok(inner.to_string());
        }
    }
    Ok(value.to_string())
}

fn is_known_name(name: &str) -> bool {
    KEYS.iter().any(|k| k.name == name || k.fallback == Some(name)) || name == "UPGRADERD_CONFIG"
}

/// Every key's raw value and source, before typing.
#[derive(Debug)]
pub struct Layers {
    pub values: BTreeMap<&'static str, Value>,
    pub file: Option<EnvFile>,
}

impl Layers {
    /// Resolves every key through flags, environment, file and defaults.
    pub fn resolve(flags: &[(&'static str, String)], env: &Env, file: Option<EnvFile>) -> Layers {
        let mut values = BTreeMap::new();
        for spec in KEYS {
            if let Some(value) = resolve_one(spec, flags, env, file.as_ref()) {
                values.insert(spec.name, value);
            }
        }
        Layers { values, file }
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

fn resolve_one(spec: &KeySpec, flags: &[(&'static str, String)], env: &Env, file: Option<&EnvFile>) -> Option<Value> {
    if let Some((_, text)) = flags.iter().find(|(k, _)| *k == spec.name) {
        return Some(Value { text: text.clone(), source: Source::Flag });
    }
    let names = std::iter::once(spec.name).chain(spec.fallback);
    for name in names.clone() {
        if let Some(text) = env.get(name) {
            return Some(Value { text: text.to_string(), source: Source::Env(name.to_string()) });
        }
    }
    if let Some(file) = file {
        for name in names {
            if let Some(entry) = file.entries.get(name) {
                return Some(Value {
                    text: entry.value.clone(),
                    source: Source::File { path: file.path.clone(), line: entry.line, name: name.to_string() },
                });
            }
        }
    }
    spec.default.map(|d| Value { text: d.to_string(), source: Source::Default })
}

pub use crate::states::Strategy;

/// How far an automatic upgrade may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    Patch,
    Minor,
    Major,
}

/// The validated configuration every command works from.
#[derive(Debug, Clone)]
pub struct Config {
    pub state_dir: PathBuf,
    pub strategy: Strategy,
    pub container: Option<String>,
    pub service: Option<String>,
    pub compose_project: Option<String>,
    pub compose_dir: Option<PathBuf>,
    pub compose_files: Vec<PathBuf>,
    pub image: Option<String>,
    pub compose_cmd: Option<Vec<String>>,
    pub docker: PathBuf,
    pub git: PathBuf,
    pub data_dirs: Vec<PathBuf>,
    pub backup_dir: PathBuf,
    pub backup_keep: usize,
    pub trigger_dir: Option<PathBuf>,
    pub trigger_file: String,
    pub status_file: String,
    pub poll_interval: Duration,
    pub enabled: bool,
    pub health_url: String,
    pub health_timeout: Duration,
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
    pub version_source: Option<String>,
    pub github_api: String,
    pub min_release_age: Duration,
    pub auto_upgrade: bool,
    pub current_version: Option<String>,
    pub check_every: Duration,
    pub version_check_disabled: bool,
    pub policy: Policy,
    pub allow_prerelease: bool,
    pub allow_downgrade: bool,
    pub notify_url: Option<String>,
    pub pre_upgrade_cmd: Option<String>,
    pub post_upgrade_cmd: Option<String>,
    pub stale_after: Duration,
}

/// Reads the configuration file chosen by `-c`, `UPGRADERD_CONFIG` or the default location.
pub fn read_file(explicit: Option<&Path>, env: &Env) -> Result<Option<EnvFile>> {
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
    pub fn from_layers(layers: &Layers) -> Result<Config> {
        let p = Parser { layers };
        let state_dir = p.path("UPGRADERD_STATE_DIR")?.expect("has a default");
        let backup_dir = p.path("UPGRADERD_BACKUP_DIR")?.unwrap_or_else(|| state_dir.join("backups"));
        Ok(Config {
            strategy: p.parse("UPGRADERD_STRATEGY", "pull", |t| {
                Strategy::parse(t).ok_or_else(|| format!("expected {}", Strategy::choices()))
            })?,
            container: p.text("UPGRADERD_CONTAINER"),
            service: p.text("UPGRADERD_SERVICE"),
            compose_project: p.text("UPGRADERD_COMPOSE_PROJECT"),
            compose_dir: p.path("UPGRADERD_COMPOSE_DIR")?,
            compose_files: p.list("UPGRADERD_COMPOSE_FILES").into_iter().map(PathBuf::from).collect(),
            image: p.text("UPGRADERD_IMAGE"),
            compose_cmd: p.text("UPGRADERD_COMPOSE_CMD").map(|t| t.split_whitespace().map(String::from).collect()),
            docker: p.path("UPGRADERD_DOCKER")?.expect("has a default"),
            git: p.path("UPGRADERD_GIT")?.expect("has a default"),
            data_dirs: p.paths("UPGRADERD_DATA_DIR")?,
            backup_keep: p.parse("UPGRADERD_BACKUP_KEEP", "5", parse_count)?,
            trigger_dir: p.path("UPGRADERD_TRIGGER_DIR")?,
            trigger_file: p.file_name("UPGRADERD_TRIGGER_FILE")?,
            status_file: p.file_name("UPGRADERD_STATUS_FILE")?,
            poll_interval: p.duration("UPGRADERD_POLL_INTERVAL", true)?,
            enabled: p.bool("UPGRADERD_ENABLED")?,
            health_url: p.url("UPGRADERD_HEALTH_URL")?.expect("has a default"),
            health_timeout: p.duration("UPGRADERD_HEALTH_TIMEOUT", false)?,
            health_stable: p.duration("UPGRADERD_HEALTH_STABLE", false)?,
            health_version_pointer: p.pointer("UPGRADERD_HEALTH_VERSION_POINTER")?,
            min_free: p.parse("UPGRADERD_MIN_FREE", "500MB", parse_size)?,
            git_dir: p.path("UPGRADERD_GIT_DIR")?,
            git_remote: p.text("UPGRADERD_GIT_REMOTE").expect("has a default"),
            git_branch: p.text("UPGRADERD_GIT_BRANCH").expect("has a default"),
            version_url: p.url("UPGRADERD_VERSION_URL")?,
            version_pointer: p.pointer("UPGRADERD_VERSION_POINTER")?.expect("has a default"),
            github_repo: p.parse_opt("UPGRADERD_GITHUB_REPO", "owner/name", parse_github_repo)?,
            github_token: p.text("UPGRADERD_GITHUB_TOKEN"),
            version_source: p.parse_opt("UPGRADERD_VERSION_SOURCE", "github", |t| match t {
                "url" | "github" | "registry" => Ok(t.to_string()),
                _ => Err("expected url, github or registry".into()),
            })?,
            github_api: p.url("UPGRADERD_GITHUB_API")?.expect("has a default"),
            min_release_age: p.duration("UPGRADERD_MIN_RELEASE_AGE", false)?,
            auto_upgrade: p.bool("UPGRADERD_AUTO_UPGRADE")?,
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
            notify_url: p.url("UPGRADERD_NOTIFY_URL")?,
            pre_upgrade_cmd: p.text("UPGRADERD_PRE_UPGRADE_CMD"),
            post_upgrade_cmd: p.text("UPGRADERD_POST_UPGRADE_CMD"),
            stale_after: p.duration("UPGRADERD_STALE_AFTER", false)?,
            state_dir,
            backup_dir,
        })
    }

    /// The path of the state database.
    pub fn db_path(&self) -> PathBuf {
        self.state_dir.join("upgraderd.db")
    }

    /// The path of the single-upgrade lock file.
    pub fn lock_path(&self) -> PathBuf {
        self.state_dir.join("upgraderd.lock")
    }
}

/// Types raw values, turning failures into errors that name key, source and an example.
struct Parser<'a> {
    layers: &'a Layers,
}

impl Parser<'_> {
    fn text(&self, name: &str) -> Option<String> {
        self.layers.get(name).map(|v| v.text.trim().to_string()).filter(|t| !t.is_empty())
    }

    fn parse_opt<T>(
        &self,
        name: &str,
        example: &str,
        f: impl Fn(&str) -> std::result::Result<T, String>,
    ) -> Result<Option<T>> {
        let Some(value) = self.layers.get(name) else { return Ok(None) };
        let text = value.text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        f(text).map(Some).map_err(|why| {
            usage(format!("invalid {name}={text:?} (from {}): {why}; for example {name}={example}", value.source))
        })
    }

    fn parse<T>(&self, name: &str, example: &str, f: impl Fn(&str) -> std::result::Result<T, String>) -> Result<T> {
        match self.parse_opt(name, example, &f)? {
            Some(v) => Ok(v),
            None => {
                let default = spec(name).and_then(|s| s.default).expect("key with a default");
                Ok(f(default).expect("defaults are valid"))
            }
        }
    }

    fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.parse_opt(name, "/srv/app/data", |t| Ok(PathBuf::from(t)))
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.text(name)
            .map(|t| t.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect())
            .unwrap_or_default()
    }

    fn paths(&self, name: &str) -> Result<Vec<PathBuf>> {
        let paths: Vec<PathBuf> = self.list(name).into_iter().map(PathBuf::from).collect();
        if let Some(relative) = paths.iter().find(|p| p.is_relative()) {
            let source = &self.layers.get(name).expect("non-empty list has a value").source;
            return Err(usage(format!(
                "invalid {name} (from {source}): {} is not an absolute path; for example {name}=/srv/app/data,/srv/app/config",
                relative.display()
            )));
        }
        Ok(paths)
    }

    fn bool(&self, name: &str) -> Result<bool> {
        self.parse(name, "true", parse_bool)
    }

    fn duration(&self, name: &str, fallback_in_seconds: bool) -> Result<Duration> {
        // The reference watchdog's CHECK_INTERVAL is a bare number of seconds.
        let bare_seconds_allowed = fallback_in_seconds
            && matches!(&self.layers.get(name).map(|v| &v.source),
                Some(Source::Env(n)) | Some(Source::File { name: n, .. }) if !n.starts_with("UPGRADERD_"));
        self.parse(name, "90s", |t| match t.parse::<u64>() {
            Ok(secs) if bare_seconds_allowed => Ok(Duration::from_secs(secs)),
            _ => parse_duration(t),
        })
    }

    fn url(&self, name: &str) -> Result<Option<String>> {
        self.parse_opt(name, "http://127.0.0.1:3001/api/health", |t| {
            if (t.starts_with("http://") || t.starts_with("https://")) && t.len() > "https://".len() {
                Ok(t.to_string())
            } else {
                Err("expected an http:// or https:// URL".into())
            }
        })
    }

    fn pointer(&self, name: &str) -> Result<Option<String>> {
        self.parse_opt(name, "/version", |t| {
            if t.starts_with('/') {
                Ok(t.to_string())
            } else {
                Err("a JSON pointer starts with `/`".into())
            }
        })
    }

    fn file_name(&self, name: &str) -> Result<String> {
        self.parse(name, ".upgrade-trigger", |t| {
            if t.contains('/') || t == "." || t == ".." {
                Err("expected a plain file name, without `/`".into())
            } else {
                Ok(t.to_string())
            }
        })
    }
}

pub fn parse_bool(text: &str) -> std::result::Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn parse_count(text: &str) -> std::result::Result<usize, String> {
    text.parse::<usize>().map_err(|_| "expected a whole number".into())
}

fn parse_github_repo(text: &str) -> std::result::Result<String, String> {
    let valid_part = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match text.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(text.to_string()),
        _ => Err("expected owner/name".into()),
    }
}

/// Parses `90s`, `5m`, `4h`, `1d`, `250ms`; `0` means zero.
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| "expected a number with a unit, like 90s, 5m or 4h".to_string())?;
    let millis = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "" => return Err("missing unit: write 90s, 5m or 4h".into()),
        _ => return Err(format!("unknown unit `{unit}`: use ms, s, m, h or d")),
    };
    number.checked_mul(millis).map(Duration::from_millis).ok_or_else(|| "too large".into())
}

/// Parses `500MB`, `2GiB`, `1024` (bytes).
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| "expected a size like 500MB or 2GiB".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "m" | "mb" => 1000_u64.pow(2),
        "g" | "gb" => 1000_u64.pow(3),
        "t" | "tb" => 1000_u64.pow(4),
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(format!("unknown unit `{unit}`: use B, KB, MB, GB, KiB, MiB or GiB")),
    };
    number.checked_mul(factor).ok_or_else(|| "too large".into())
}

/// Masks secrets for display.
pub fn display_value(spec: &KeySpec, text: &str) -> String {
    match spec.secret {
        Secret::No => text.to_string(),
        Secret::Whole => "********".to_string(),
        Secret::Url => mask_url(text),
    }
}

fn mask_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (authority_and_path, query) = match rest.split_once('?') {
        Some((a, _)) => (a, "?********"),
        None => (rest, ""),
    };
    let masked = match authority_and_path.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{user}:********@{host}")
        }
        None => authority_and_path.to_string(),
    };
    format!("{scheme}://{masked}{query}")
}

/// Loads the configuration for a command: file, environment and flags.
pub fn load(
    config_file: Option<&Path>,
    state_dir: Option<&Path>,
    flags: &[(&'static str, String)],
    env: &Env,
) -> Result<(Config, Layers)> {
    let file = read_file(config_file, env).context("reading configuration")?;
    let mut flags = flags.to_vec();
    if let Some(dir) = state_dir {
        flags.push(("UPGRADERD_STATE_DIR", dir.display().to_string()));
    }
    let layers = Layers::resolve(&flags, env, file);
    let config = Config::from_layers(&layers)?;
    Ok((config, layers))
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

    #[test]
    fn bare_seconds_only_through_the_fallback_name() {
        let layers = Layers::resolve(&[], &env(&[("UPGRADERD_POLL_INTERVAL", "7")]), None);
        let err = Config::from_layers(&layers).unwrap_err().to_string();
        assert!(err.contains("UPGRADERD_POLL_INTERVAL=\"7\" (from env UPGRADERD_POLL_INTERVAL)"), "{err}");
        assert!(err.contains("for example UPGRADERD_POLL_INTERVAL=90s"), "{err}");
    }

    #[test]
    fn bad_values_name_key_source_and_example() {
        let file = EnvFile::parse(Path::new("/etc/u.env"), "# c\n\nUPGRADERD_MIN_FREE=lots\n").unwrap();
        let err = Config::from_layers(&Layers::resolve(&[], &Env::default(), Some(file))).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("UPGRADERD_MIN_FREE=\"lots\" (from /etc/u.env:3"), "{text}");
        assert!(text.contains("for example UPGRADERD_MIN_FREE=500MB"), "{text}");
        assert_eq!(crate::exit::classify(&err), crate::exit::Exit::Usage);
    }

    #[test]
    fn env_file_syntax() {
        let file = EnvFile::parse(
            Path::new("f"),
            "; comment\nexport UPGRADERD_GIT_BRANCH=\"release\"\nUPGRADERD_GIT_REMOTE='up stream'\nMY_APP_SETTING=1\n",
        )
        .unwrap();
        assert_eq!(file.entries["UPGRADERD_GIT_BRANCH"].value, "release");
        assert_eq!(file.entries["UPGRADERD_GIT_REMOTE"].value, "up stream");
        assert_eq!(file.unknown, vec![(4, "MY_APP_SETTING".to_string())]);

        for (text, why) in
            [("UPGRADERD_X\n", "no `=`"), ("BAD-NAME=1\n", "not a variable name"), ("A=\"open\n", "unterminated quote")]
        {
            let err = EnvFile::parse(Path::new("/c.env"), text).unwrap_err().to_string();
            assert!(err.contains("/c.env:1") && err.contains(why), "{err}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("4h").unwrap(), Duration::from_secs(4 * 3600));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert!(parse_size("-1").is_err());
        assert!(parse_size("3 bananas").is_err());
    }

    #[test]
    fn secrets_are_masked() {
        let token = spec("UPGRADERD_GITHUB_TOKEN").unwrap();
        assert_eq!(display_value(token, "ghp_secret"), "********");
        let url = spec("UPGRADERD_NOTIFY_URL").unwrap();
        assert_eq!(
            display_value(url, "https://bot:pw@hooks.local/x?token=abc"),
            "https://bot:********@hooks.local/x?********"
        );
        assert_eq!(display_value(url, "http://127.0.0.1/n"), "http://127.0.0.1/n");
    }

    #[test]
    fn relative_data_dirs_are_refused() {
        let layers = Layers::resolve(&[("UPGRADERD_DATA_DIR", "/ok,data".into())], &Env::default(), None);
        let err = Config::from_layers(&layers).unwrap_err().to_string();
        assert!(err.contains("data is not an absolute path"), "{err}");
    }
}
