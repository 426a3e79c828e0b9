//! Typing raw values: the parsers for durations, sizes, booleans and the
//! other value kinds, and [`Parser`], which types a key's resolved value and
//! turns a failure into a usage error naming the key, its source and a valid
//! example.

use std::path::PathBuf;
use std::time::Duration;

use crate::states::BackupMode;
use anyhow::{anyhow, Result};

use super::keys::spec;
use super::layers::{Layers, Source};
use crate::exit::usage;

/// Types raw values, turning failures into errors that name key, source and an example.
pub(super) struct Parser<'a> {
    pub layers: &'a Layers,
}

type Parse<T> = std::result::Result<T, String>;

impl Parser<'_> {
    pub(super) fn text(&self, name: &str) -> Option<String> {
        self.layers.get(name).map(|v| v.text.trim().to_string()).filter(|t| !t.is_empty())
    }

    /// A key without a default: unset or empty is `None`.
    pub(super) fn parse_opt<T>(&self, name: &str, example: &str, f: impl Fn(&str) -> Parse<T>) -> Result<Option<T>> {
        let Some(value) = self.layers.get(name) else { return Ok(None) };
        let text = value.text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        f(text).map(Some).map_err(|why| invalid(name, text, &value.source, &why, example))
    }

    /// A key with a default that an empty value also selects.
    pub(super) fn parse<T>(&self, name: &str, example: &str, f: impl Fn(&str) -> Parse<T>) -> Result<T> {
        match self.parse_opt(name, example, &f)? {
            Some(v) => Ok(v),
            None => default_of(name, f),
        }
    }

    /// A key with a default whose value, when given, cannot be empty: an
    /// empty program path, URL or branch has no meaning to fall back from.
    pub(super) fn required<T>(&self, name: &str, f: impl Fn(&str) -> Parse<T>) -> Result<T> {
        let example = spec(name).and_then(|s| s.default).unwrap_or("VALUE");
        let Some(value) = self.layers.get(name) else { return default_of(name, f) };
        let text = value.text.trim();
        if text.is_empty() {
            return Err(usage(format!(
                "{name} is empty (from {}): it needs a value; for example {name}={example}, \
                 or remove the setting to use the default",
                value.source
            )));
        }
        f(text).map_err(|why| invalid(name, text, &value.source, &why, example))
    }

    pub(super) fn path(&self, name: &str) -> Result<Option<PathBuf>> {
        self.parse_opt(name, "/srv/app/data", as_path)
    }

    pub(super) fn list(&self, name: &str) -> Vec<String> {
        self.layers.get(name).map(|v| split_list(&v.text)).unwrap_or_default()
    }

    pub(super) fn paths(&self, name: &str) -> Result<Vec<PathBuf>> {
        let Some(value) = self.layers.get(name) else { return Ok(Vec::new()) };
        let paths: Vec<PathBuf> = split_list(&value.text).into_iter().map(PathBuf::from).collect();
        if let Some(relative) = paths.iter().find(|p| p.is_relative()) {
            return Err(usage(format!(
                "invalid {name} (from {}): {} is not an absolute path; for example {name}=/srv/app/data,/srv/app/config",
                value.source,
                relative.display()
            )));
        }
        Ok(paths)
    }

    pub(super) fn bool(&self, name: &str) -> Result<bool> {
        self.parse(name, "true", parse_bool)
    }

    pub(super) fn duration(&self, name: &str, fallback_in_seconds: bool) -> Result<Duration> {
        // The reference watchdog's CHECK_INTERVAL is a bare number of seconds.
        let bare_seconds_allowed = fallback_in_seconds
            && matches!(&self.layers.get(name).map(|v| &v.source),
                Some(Source::Env(n)) | Some(Source::File { name: n, .. }) if !n.starts_with("UPGRADERD_"));
        self.parse(name, "90s", |t| match t.parse::<u64>() {
            Ok(secs) if bare_seconds_allowed => Ok(Duration::from_secs(secs)),
            _ => parse_duration(t),
        })
    }

    pub(super) fn url(&self, name: &str) -> Result<Option<String>> {
        self.parse_opt(name, "http://127.0.0.1:3001/api/health", parse_url)
    }

    pub(super) fn pointer(&self, name: &str) -> Result<Option<String>> {
        self.parse_opt(name, "/version", parse_pointer)
    }

    pub(super) fn file_name(&self, name: &str) -> Result<String> {
        let example = spec(name).and_then(|s| s.default).unwrap_or(".upgrade-trigger");
        self.parse(name, example, |t| {
            if t.contains('/') || t == "." || t == ".." {
                Err("expected a plain file name, without `/`".into())
            } else {
                Ok(t.to_string())
            }
        })
    }

    /// A file name that an empty value turns off (`None`); unset is the default.
    pub(super) fn file_name_or_off(&self, name: &str) -> Result<Option<String>> {
        match self.layers.get(name) {
            Some(value) if value.text.trim().is_empty() => Ok(None),
            _ => self.file_name(name).map(Some),
        }
    }
}

fn invalid(name: &str, text: &str, source: &Source, why: &str, example: &str) -> anyhow::Error {
    // A secret never reaches a message: the value is shown as `config` shows it.
    let shown = super::keys::shown(name, text);
    usage(format!("invalid {name}={shown:?} (from {source}): {why}; for example {name}={example}"))
}

/// The key's default, typed. Failing here is a fault in the key table, not in the input.
fn default_of<T>(name: &str, f: impl Fn(&str) -> Parse<T>) -> Result<T> {
    let default = spec(name)
        .and_then(|s| s.default)
        .ok_or_else(|| anyhow!("configuration key {name} has no default; please report this upgraderd bug"))?;
    f(default)
        .map_err(|why| anyhow!("the default {name}={default} is invalid ({why}); please report this upgraderd bug"))
}

fn split_list(text: &str) -> Vec<String> {
    text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect()
}

pub(super) fn as_path(text: &str) -> Parse<PathBuf> {
    Ok(PathBuf::from(text))
}

pub(super) fn as_text(text: &str) -> Parse<String> {
    Ok(text.to_string())
}

pub(super) fn parse_url(text: &str) -> Parse<String> {
    if (text.starts_with("http://") || text.starts_with("https://")) && text.len() > "https://".len() {
        Ok(text.to_string())
    } else {
        Err("expected an http:// or https:// URL".into())
    }
}

pub(super) fn parse_pointer(text: &str) -> Parse<String> {
    if text.starts_with('/') {
        Ok(text.to_string())
    } else {
        Err("a JSON pointer starts with `/`".into())
    }
}

pub(crate) fn parse_bool(text: &str) -> std::result::Result<bool, String> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

/// `HOST:PORT` with a literal address (`127.0.0.1:9877`, `[::1]:9877`, `0.0.0.0:9877`): no name to resolve.
pub(super) fn parse_listen(text: &str) -> std::result::Result<std::net::SocketAddr, String> {
    text.parse().map_err(|_| "expected an IP address and a port, like 127.0.0.1:9877 or [::1]:9877".into())
}

pub(super) fn parse_count(text: &str) -> std::result::Result<usize, String> {
    text.parse::<usize>().map_err(|_| "expected a whole number".into())
}

/// `db=stop,cache=skip`: each service once, each mode one of stop, live or skip.
pub(super) fn parse_backup_modes(text: &str) -> std::result::Result<Vec<(String, BackupMode)>, String> {
    let mut modes: Vec<(String, BackupMode)> = Vec::new();
    for pair in split_list(text) {
        let Some((service, mode)) = pair.split_once('=') else {
            return Err(format!("`{pair}` is not SERVICE=MODE"));
        };
        let (service, mode) = (service.trim(), mode.trim());
        let mode = BackupMode::parse(mode)
            .ok_or_else(|| format!("`{mode}` for service {service} is not a mode: use {}", BackupMode::choices()))?;
        if service.is_empty() {
            return Err(format!("`{pair}` names no service"));
        }
        if modes.iter().any(|(s, _)| s == service) {
            return Err(format!("service {service} is named twice"));
        }
        modes.push((service.to_string(), mode));
    }
    Ok(modes)
}

/// A Swarm service name as Docker allows it (`shop_app`): it goes into argv, so never a leading `-`.
pub(super) fn parse_swarm_service(text: &str) -> std::result::Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    match text.chars().next() {
        Some(first) if first.is_ascii_alphanumeric() && text.len() <= 63 && text.chars().all(allowed) => {
            Ok(text.to_string())
        }
        _ => Err("expected a service name (letters, digits, `_`, `.`, `-`; starting with a letter or digit)".into()),
    }
}

pub(super) fn parse_github_repo(text: &str) -> std::result::Result<String, String> {
    let valid_part = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match text.split_once('/') {
        Some((owner, name)) if valid_part(owner) && valid_part(name) => Ok(text.to_string()),
        _ => Err("expected owner/name".into()),
    }
}

/// Parses `90s`, `5m`, `4h`, `1d`, `250ms`; `0` means zero.
pub(crate) fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
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
pub(crate) fn parse_size(text: &str) -> std::result::Result<u64, String> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Env, EnvFile};
    use std::path::Path;

    #[test]
    fn bare_seconds_only_through_the_fallback_name() {
        let layers = Layers::resolve(&[], &Env::from_pairs([("UPGRADERD_POLL_INTERVAL", "7".to_string())]), None);
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
    fn relative_data_dirs_are_refused() {
        let layers = Layers::resolve(&[("UPGRADERD_DATA_DIR", "/ok,data".into())], &Env::default(), None);
        let err = Config::from_layers(&layers).unwrap_err().to_string();
        assert!(err.contains("data is not an absolute path"), "{err}");
    }

    #[test]
    fn defaults_alone_give_a_valid_configuration() {
        let config = Config::from_layers(&Layers::resolve(&[], &Env::default(), None)).unwrap();
        assert_eq!(config.docker, PathBuf::from("docker"));
        assert_eq!(config.github_api, "https://api.github.com");
    }

    #[test]
    fn an_empty_value_for_a_key_that_needs_one_is_a_usage_error() {
        let layers = Layers::resolve(&[], &Env::from_pairs([("UPGRADERD_GIT_BRANCH", " ".to_string())]), None);
        let err = Config::from_layers(&layers).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("UPGRADERD_GIT_BRANCH is empty (from env UPGRADERD_GIT_BRANCH)"), "{text}");
        assert!(text.contains("for example UPGRADERD_GIT_BRANCH=main"), "{text}");
        assert_eq!(crate::exit::classify(&err), crate::exit::Exit::Usage);
    }
}
