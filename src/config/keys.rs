//! The configuration keys: every name upgraderd reads, the older name it
//! accepts for the same setting, its default, whether it is secret, and how a
//! value is shown with its secrets masked.
//!
//! What is secret here is masked wherever upgraderd shows a value: `config`,
//! errors, warnings, and the journal that feeds history and the status file
//! the app reads (see [`shown`]).

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
    /// The whole value is hidden: a token, or the operator's shell text (a hook
    /// command line may pass a password; it cannot be told apart from the rest).
    Whole,
    /// A URL whose password and query string are hidden.
    Url,
    /// Notification URLs, each with the secrets of its format hidden (see `config::notify`).
    NotifyUrls,
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
    key("UPGRADERD_STRATEGY", None, Some("pull"), "pull | rebuild | swarm (swarm: chosen by itself for a Swarm service)"),
    key("UPGRADERD_CONTAINER", Some("CONTAINER_NAME"), None, "container of the service to upgrade"),
    key("UPGRADERD_SERVICE", None, None, "compose service (derived from the container)"),
    key(
        "UPGRADERD_SERVICES",
        None,
        None,
        "services that move together, comma separated (default: every service on the container's image repository)",
    ),
    key(
        "UPGRADERD_SWARM_SERVICE",
        None,
        None,
        "Docker Swarm service to upgrade, STACK_SERVICE (derived from a task container's labels)",
    ),
    key("UPGRADERD_COMPOSE_PROJECT", Some("COMPOSE_PROJECT_NAME"), None, "compose project (derived)"),
    key("UPGRADERD_COMPOSE_DIR", Some("COMPOSE_PROJECT_DIR"), None, "compose working dir (derived)"),
    key("UPGRADERD_COMPOSE_FILES", None, None, "compose files, comma separated (derived)"),
    key(
        "UPGRADERD_STACK_FILES",
        None,
        None,
        "Swarm: the stack files `docker stack deploy` reads, comma separated; their version is kept in step",
    ),
    key("UPGRADERD_IMAGE", Some("IMAGE_NAME"), None, "image repository (derived from the container)"),
    key("UPGRADERD_COMPOSE_CMD", None, None, "compose command (auto: `docker compose`, else `docker-compose`)"),
    key(
        "UPGRADERD_RELEASE_STEPS",
        None,
        None,
        "commands run with the new image before it serves, `SERVICE: COMMAND ARGS`, separated by `;`",
    ),
    key(
        "UPGRADERD_PIN_CHANNELS",
        None,
        Some("false"),
        "write the exact version over a channel tag (`IMMICH_VERSION=release` becomes the version installed) instead of moving the channel",
    ),
    key(
        "UPGRADERD_EARLY_COMPOSE",
        None,
        Some("true"),
        "start compose's `up` while the backup's final pass runs, its requests held from the engine until the pass ends (compose v1 and a local engine socket only)",
    ),
    key("UPGRADERD_DOCKER", None, Some("docker"), "docker program"),
    key("UPGRADERD_GIT", None, Some("git"), "git program"),
    key(
        "UPGRADERD_DATA_DIR",
        Some("DATA_DIR"),
        None,
        "data paths to back up, comma separated (default: every service's writable mounts)",
    ),
    key(
        "UPGRADERD_BACKUP_MODES",
        None,
        None,
        "per service: SERVICE=stop|live|skip, comma separated (wins over the label upgraderd.backup)",
    ),
    key("UPGRADERD_BACKUP_EXCLUDE", None, None, "host paths left out of the backup, comma separated"),
    key("UPGRADERD_BACKUP_DIR", None, None, "backup directory (default: <state dir>/backups)"),
    key("UPGRADERD_BACKUP_KEEP", None, Some("5"), "backups kept by prune"),
    key(
        "UPGRADERD_BACKUP_FORMAT",
        None,
        Some("snapshot"),
        "snapshot (a directory sharing unchanged files with the previous one) or archive (one .tar.gz)",
    ),
    key("UPGRADERD_TRIGGER_DIR", None, None, "directory shared with the app"),
    key("UPGRADERD_TRIGGER_FILE", None, Some(".upgrade-trigger"), "trigger file name"),
    key("UPGRADERD_STATUS_FILE", None, Some(".upgrade-status.json"), "status file name"),
    key(
        "UPGRADERD_LEGACY_STATUS_FILE",
        None,
        Some(".upgrade-status"),
        "one-word status for apps written for the MeshMonitor watchdog (empty: not written)",
    ),
    key(
        "UPGRADERD_POLL_INTERVAL",
        Some("CHECK_INTERVAL"),
        Some("5s"),
        "trigger poll interval when inotify is unavailable",
    ),
    key("UPGRADERD_ENABLED", Some("AUTO_UPGRADE_ENABLED"), Some("true"), "honour triggers"),
    KeySpec {
        secret: Secret::Url,
        ..key("UPGRADERD_HEALTH_URL", None, Some("http://127.0.0.1:3001/api/health"), "HTTP health probe")
    },
    key("UPGRADERD_HEALTH_TIMEOUT", None, Some("120s"), "how long the new version has to become healthy"),
    key(
        "UPGRADERD_START_TIMEOUT",
        None,
        None,
        "how long a service stopped to hold its data still has to be ready again (default: its HEALTHCHECK's start period + 60s, at least 60s)",
    ),
    key("UPGRADERD_HEALTH_STABLE", None, Some("3s"), "how long it must stay healthy"),
    key(
        "UPGRADERD_ENGINE_WAIT",
        None,
        Some("5m"),
        "how long to wait for a Docker engine that cannot be reached (restarting) before leaving the upgrade interrupted",
    ),
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
    key(
        "UPGRADERD_AUTO_UPGRADE_WINDOW",
        None,
        None,
        "when automatic upgrades may start, host local time, comma separated (`Sun 02:00-05:00`, `Mon-Fri 01:00-03:00`)",
    ),
    key("UPGRADERD_VERSION_CHECK_DISABLED", Some("VERSION_CHECK_DISABLED"), Some("false"), "no version checks at all"),
    key("UPGRADERD_POLICY", None, Some("minor"), "patch | minor | major: cap of automatic upgrades"),
    key("UPGRADERD_ALLOW_PRERELEASE", None, Some("false"), "consider prereleases"),
    key("UPGRADERD_ALLOW_DOWNGRADE", None, Some("false"), "allow a lower target version"),
    key(
        "UPGRADERD_TRIGGER_MAY_FORCE",
        None,
        Some("false"),
        "honour `\"force\": true` in the app's trigger (past policy, downgrade protection, quarantine)",
    ),
    key("UPGRADERD_TRIGGER_MAY_SKIP_BACKUP", None, Some("false"), "honour `\"backup\": false` in the app's trigger"),
    KeySpec {
        secret: Secret::NotifyUrls,
        ..key(
            "UPGRADERD_NOTIFY_URL",
            None,
            None,
            "URLs told every outcome, comma separated: ntfy, Gotify, Discord, Slack or JSON, chosen by the URL",
        )
    },
    KeySpec {
        secret: Secret::Whole,
        ..key("UPGRADERD_PRE_UPGRADE_CMD", None, None, "command that can veto an upgrade (shown masked)")
    },
    KeySpec {
        secret: Secret::Whole,
        ..key("UPGRADERD_POST_UPGRADE_CMD", None, None, "command run after a terminal state (shown masked)")
    },
    key("UPGRADERD_STALE_AFTER", None, Some("30m"), "age after which an unfinished upgrade is recovered"),
    key(
        "UPGRADERD_METRICS_FILE",
        None,
        None,
        "Prometheus metrics file for node_exporter's textfile collector, rewritten after every outcome and check",
    ),
    key(
        "UPGRADERD_METRICS_LISTEN",
        None,
        None,
        "HOST:PORT on which `watch` serves GET /metrics for Prometheus (e.g. 127.0.0.1:9877; unset: off)",
    ),
];

/// Looks a key up by its `UPGRADERD_*` name.
pub(crate) fn spec(name: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|k| k.name == name)
}

/// Every name upgraderd reads: the keys, their older names and `UPGRADERD_CONFIG`.
fn known_names() -> impl Iterator<Item = &'static str> {
    KEYS.iter().flat_map(|k| std::iter::once(k.name).chain(k.fallback)).chain(["UPGRADERD_CONFIG"])
}

pub(super) fn is_known_name(name: &str) -> bool {
    known_names().any(|known| known == name)
}

/// The known name an unknown one was most likely meant to be: the closest by
/// edit distance (ignoring case), when it is close enough to be a typo.
pub(super) fn closest_known_name(name: &str) -> Option<&'static str> {
    const MAX_TYPOS: usize = 3;
    let name = name.to_ascii_uppercase();
    known_names()
        .map(|known| (edit_distance(&name, known), known))
        .filter(|(distance, _)| *distance <= MAX_TYPOS)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, known)| known)
}

/// Levenshtein distance between two strings, by character.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

/// A key's value as upgraderd may show it anywhere, its secrets masked (the text as is for an unknown name).
pub(crate) fn shown(name: &str, text: &str) -> String {
    spec(name).map(|s| display_value(s, text)).unwrap_or_else(|| text.to_string())
}

/// Masks secrets for display.
pub(crate) fn display_value(spec: &KeySpec, text: &str) -> String {
    match spec.secret {
        Secret::No => text.to_string(),
        Secret::Whole => "********".to_string(),
        Secret::Url => mask_url(text),
        Secret::NotifyUrls => super::notify::mask_list(text),
    }
}

fn mask_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
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
    format!("{scheme}{masked}{query}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_masked() {
        let token = spec("UPGRADERD_GITHUB_TOKEN").unwrap();
        assert_eq!(display_value(token, "ghp_secret"), "********");
        let url = spec("UPGRADERD_NOTIFY_URL").unwrap();
        assert_eq!(
            display_value(url, "https://bot:pw@hooks.local/x?token=abc,https://discord.com/api/webhooks/1/t"),
            "https://bot:********@hooks.local/********?********,https://discord.com/api/webhooks/********"
        );
        assert_eq!(display_value(url, "http://127.0.0.1/"), "http://127.0.0.1/");
    }

    #[test]
    fn hook_commands_and_the_health_urls_credentials_are_masked() {
        for hook in ["UPGRADERD_PRE_UPGRADE_CMD", "UPGRADERD_POST_UPGRADE_CMD"] {
            assert_eq!(shown(hook, "/usr/local/bin/check --password=hunter2"), "********");
        }
        let health = "UPGRADERD_HEALTH_URL";
        assert_eq!(shown(health, "http://127.0.0.1:3001/api/health"), "http://127.0.0.1:3001/api/health");
        assert_eq!(
            shown(health, "http://probe:pw@127.0.0.1:3001/health?token=t0k"),
            "http://probe:********@127.0.0.1:3001/health?********"
        );
        assert_eq!(shown(health, "127.0.0.1/health?token=t0k"), "127.0.0.1/health?********");
        assert_eq!(shown("UPGRADERD_CONTAINER", "app"), "app");
        assert_eq!(shown("NOT_A_KEY", "text"), "text");
    }

    #[test]
    fn a_typo_is_matched_to_the_key_it_was_meant_to_be() {
        assert_eq!(closest_known_name("UPGRADERD_DOKCER"), Some("UPGRADERD_DOCKER"));
        assert_eq!(closest_known_name("upgraderd_backup_keep"), Some("UPGRADERD_BACKUP_KEEP"));
        assert_eq!(closest_known_name("UPGRADER_HEALTH_URL"), Some("UPGRADERD_HEALTH_URL"));
        assert_eq!(closest_known_name("DATA_DIRS"), Some("DATA_DIR"));
        assert_eq!(closest_known_name("MY_APP_SETTING"), None);
        assert_eq!(closest_known_name("UPGRADERD_TIMEOUT"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
