//! The names upgraderd uses in the trigger directory it shares with the app,
//! and the check that the configured trigger name clashes with none of them:
//! a trigger named like a file upgraderd writes would be claimed, consumed or
//! replaced by upgraderd itself (a daemon eating its own status file).

use anyhow::Result;

use super::layers::Layers;
use crate::exit::usage;

/// `.upgrade-available.json`, written by version checks for the app's banner.
pub(crate) const BANNER_FILE: &str = ".upgrade-available.json";
/// `.upgrade-status`, the one-word status token of the MeshMonitor watchdog
/// protocol (the default of `UPGRADERD_LEGACY_STATUS_FILE`).
pub(crate) const LEGACY_STATUS_FILE: &str = ".upgrade-status";
/// `.docker-socket-test` and `.docker-socket-test-request`, the socket check of that protocol.
pub(crate) const SOCKET_TEST_PREFIX: &str = ".docker-socket-test";
/// The app asks for the Docker socket check by creating this file.
pub(crate) const SOCKET_TEST_REQUEST: &str = ".docker-socket-test-request";
/// The answer to the socket check: `PASS: …`, `WARN: …` or `FAIL: …` on its first line.
pub(crate) const SOCKET_TEST_ANSWER: &str = ".docker-socket-test";

/// The name a trigger is renamed to while it is read.
pub(crate) fn claimed_name(trigger_file: &str) -> String {
    format!(".{trigger_file}.claimed")
}

/// The trigger a claimed name belongs to: `trigger` for `.trigger.claimed`.
pub(crate) fn claimed_trigger(name: &str) -> Option<&str> {
    name.strip_prefix('.')?.strip_suffix(".claimed")
}

/// Whether a name is a rejected trigger moved aside.
pub(crate) fn is_rejected(name: &str) -> bool {
    name.ends_with(".rejected")
}

/// The name a rejected trigger is moved aside to.
pub(crate) fn rejected_name(trigger_file: &str) -> String {
    format!("{trigger_file}.rejected")
}

/// The spool directory the app may make: one file per request.
pub(crate) fn spool_name(trigger_file: &str) -> String {
    format!("{trigger_file}.d")
}

/// A file upgraderd writes in the trigger directory.
struct Written<'a> {
    what: &'static str,
    name: &'a str,
    /// The name only starts the file names (a family of files).
    prefix: bool,
    /// The configuration key that chose the name, if one did.
    key: Option<&'static str>,
}

impl Written<'_> {
    /// Whether upgraderd may write a file of this name: the file itself, or the
    /// temporary `.<name>.<pid>.<attempt>.tmp` an atomic write of it goes through.
    fn covers(&self, name: &str) -> bool {
        let temporary = name
            .strip_prefix(&format!(".{}.", self.name))
            .and_then(|rest| rest.strip_suffix(".tmp"))
            .and_then(|middle| middle.split_once('.'))
            .is_some_and(|(pid, attempt)| all_digits(pid) && all_digits(attempt));
        temporary || if self.prefix { name.starts_with(self.name) } else { name == self.name }
    }
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Every file upgraderd writes in the trigger directory; the legacy token only when it is on.
fn written<'a>(status_file: &'a str, legacy_status_file: Option<&'a str>) -> Vec<Written<'a>> {
    let status =
        Written { what: "the status file", name: status_file, prefix: false, key: Some("UPGRADERD_STATUS_FILE") };
    let banner = Written { what: "the available-update file", name: BANNER_FILE, prefix: false, key: None };
    let legacy = legacy_status_file.map(|name| Written {
        what: "the legacy status token",
        name,
        prefix: false,
        key: Some("UPGRADERD_LEGACY_STATUS_FILE"),
    });
    let socket = Written { what: "the Docker socket check", name: SOCKET_TEST_PREFIX, prefix: true, key: None };
    [Some(status), Some(banner), legacy, Some(socket)].into_iter().flatten().collect()
}

/// Refuses a trigger name that is, or is claimed or rejected under, the name
/// of a file upgraderd writes, and a configured file named like another such file.
pub(super) fn check_names(
    layers: &Layers,
    trigger_file: &str,
    status_file: &str,
    legacy_status_file: Option<&str>,
) -> Result<()> {
    let given = |key: &str, value: &str| match layers.get(key) {
        Some(v) => format!("{key}={value} (from {})", v.source),
        None => format!("{key}={value}"),
    };
    let trigger = given("UPGRADERD_TRIGGER_FILE", trigger_file);
    let uses = [
        ("the trigger file", trigger_file.to_string()),
        ("the name a trigger is claimed under", claimed_name(trigger_file)),
        ("the name a rejected trigger is moved to", rejected_name(trigger_file)),
        ("the spool directory", spool_name(trigger_file)),
    ];
    let written = written(status_file, legacy_status_file);
    for (use_, name) in &uses {
        if let Some(file) = written.iter().find(|file| file.covers(name)) {
            let message = match file.key {
                Some(key) => format!(
                    "{trigger} clashes with {}: `{name}` would be both {use_} and {}, which upgraderd writes in the \
                     trigger directory; choose another name, for example UPGRADERD_TRIGGER_FILE=.upgrade-trigger \
                     and {key}={}",
                    given(key, file.name),
                    file.what,
                    default_of(key)
                ),
                None => format!(
                    "{trigger}: `{name}` would be both {use_} and {} (`{}{}`), which upgraderd writes in the trigger \
                     directory; choose another name, for example UPGRADERD_TRIGGER_FILE=.upgrade-trigger",
                    file.what,
                    file.name,
                    if file.prefix { "*" } else { "" }
                ),
            };
            return Err(usage(message));
        }
    }
    for (i, configured) in written.iter().enumerate() {
        let Some(key) = configured.key else { continue };
        let mut others = written.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, other)| other);
        if let Some(file) = others.find(|other| other.covers(configured.name)) {
            return Err(usage(format!(
                "{}: it would also be {} (`{}{}`{}), which upgraderd writes in the trigger directory; choose \
                 another name, for example {key}={}",
                given(key, configured.name),
                file.what,
                file.name,
                if file.prefix { "*" } else { "" },
                file.key.map(|other| format!(", {other}")).unwrap_or_default(),
                default_of(key)
            )));
        }
    }
    Ok(())
}

/// The default name of a configurable file, for examples in messages.
fn default_of(key: &str) -> &'static str {
    super::keys::spec(key).and_then(|spec| spec.default).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn check(trigger: &str, status: &str) -> std::result::Result<(), String> {
        check_with_legacy(trigger, status, Some(LEGACY_STATUS_FILE))
    }

    fn check_with_legacy(trigger: &str, status: &str, legacy: Option<&str>) -> std::result::Result<(), String> {
        let layers = Layers::resolve(&[], &Env::default(), None);
        check_names(&layers, trigger, status, legacy).map_err(|e| e.to_string())
    }

    #[test]
    fn distinct_names_pass() {
        assert_eq!(check(".upgrade-trigger", ".upgrade-status.json"), Ok(()));
        assert_eq!(check("update_requested", "status.json"), Ok(()));
        assert_eq!(check(".upgrade-status.json.request", ".upgrade-status.json"), Ok(()));
        assert_eq!(check("..upgrade-status.json.x.tmp", ".upgrade-status.json"), Ok(()));
    }

    #[test]
    fn a_trigger_named_like_the_status_file_or_its_temporary_names_both_keys() {
        for (trigger, status) in [
            ("s.json", "s.json"),
            (".s.json.4242.0.tmp", "s.json"),
            ("t", ".t.claimed"),
            ("t", "t.rejected"),
            ("t", "t.d"),
        ] {
            let err = check(trigger, status).unwrap_err();
            assert!(err.contains("UPGRADERD_TRIGGER_FILE=") && err.contains("UPGRADERD_STATUS_FILE="), "{err}");
        }
    }

    #[test]
    fn a_trigger_named_like_a_file_of_the_protocol_is_refused() {
        for (trigger, what) in [
            (".upgrade-available.json", "available-update file"),
            (".upgrade-status", "legacy status token"),
            (".docker-socket-test-request", "Docker socket check"),
            ("docker-socket-test", "Docker socket check"),
            ("..upgrade-available.json.7.1.tmp", "available-update file"),
        ] {
            let err = check(trigger, ".upgrade-status.json").unwrap_err();
            assert!(err.contains("UPGRADERD_TRIGGER_FILE=") && err.contains(what), "{trigger}: {err}");
        }
    }

    #[test]
    fn a_status_file_named_like_another_file_of_the_protocol_is_refused() {
        let err = check(".upgrade-trigger", ".upgrade-available.json").unwrap_err();
        assert!(err.contains("UPGRADERD_STATUS_FILE=.upgrade-available.json") && err.contains("available-update"));
        let err = check(".upgrade-trigger", ".upgrade-status").unwrap_err();
        assert!(err.contains("legacy status token") && err.contains("UPGRADERD_LEGACY_STATUS_FILE"), "{err}");
    }

    #[test]
    fn the_legacy_token_is_checked_under_its_configured_name_and_not_at_all_when_off() {
        let err = check_with_legacy(".upgrade-trigger", ".upgrade-status.json", Some(".upgrade-status.json"));
        let err = err.unwrap_err();
        assert!(err.contains("UPGRADERD_STATUS_FILE=.upgrade-status.json") && err.contains("legacy status token"));
        let err = check_with_legacy(".upgrade-trigger", "s.json", Some(".docker-socket-test")).unwrap_err();
        assert!(err.contains("UPGRADERD_LEGACY_STATUS_FILE=.docker-socket-test") && err.contains("socket check"));
        let err = check_with_legacy("state", "s.json", Some("state")).unwrap_err();
        assert!(err.contains("UPGRADERD_TRIGGER_FILE=state") && err.contains("UPGRADERD_LEGACY_STATUS_FILE=state"));
        assert_eq!(check_with_legacy(".upgrade-status", "s.json", None), Ok(()), "off: the name is free");
        assert_eq!(check_with_legacy(".upgrade-trigger", "s.json", Some("status.word")), Ok(()));
    }
}
