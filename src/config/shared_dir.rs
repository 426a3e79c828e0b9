//! The names upgraderd uses in the trigger directory it shares with the app,
//! and the check that the configured trigger name clashes with none of them:
//! a trigger named like a file upgraderd writes would be claimed, consumed or
//! replaced by upgraderd itself (a daemon eating its own status file).

use anyhow::Result;

use super::layers::Layers;
use crate::exit::usage;

/// `.upgrade-available.json`, written by version checks for the app's banner.
pub const BANNER_FILE: &str = ".upgrade-available.json";
/// `.upgrade-status`, the one-word status token of the MeshMonitor watchdog protocol.
pub const LEGACY_STATUS_FILE: &str = ".upgrade-status";
/// `.docker-socket-test` and `.docker-socket-test-request`, the socket check of that protocol.
pub const SOCKET_TEST_PREFIX: &str = ".docker-socket-test";

/// The name a trigger is renamed to while it is read.
pub fn claimed_name(trigger_file: &str) -> String {
    format!(".{trigger_file}.claimed")
}

/// The trigger a claimed name belongs to: `trigger` for `.trigger.claimed`.
pub fn claimed_trigger(name: &str) -> Option<&str> {
    name.strip_prefix('.')?.strip_suffix(".claimed")
}

/// Whether a name is a rejected trigger moved aside.
pub fn is_rejected(name: &str) -> bool {
    name.ends_with(".rejected")
}

/// The name a rejected trigger is moved aside to.
pub fn rejected_name(trigger_file: &str) -> String {
    format!("{trigger_file}.rejected")
}

/// The spool directory the app may make: one file per request.
pub fn spool_name(trigger_file: &str) -> String {
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

fn written(status_file: &str) -> [Written<'_>; 4] {
    [
        Written { what: "the status file", name: status_file, prefix: false, key: Some("UPGRADERD_STATUS_FILE") },
        Written { what: "the available-update file", name: BANNER_FILE, prefix: false, key: None },
        Written { what: "the legacy status token", name: LEGACY_STATUS_FILE, prefix: false, key: None },
        Written { what: "the Docker socket check", name: SOCKET_TEST_PREFIX, prefix: true, key: None },
    ]
}

/// Refuses a trigger name that is, or is claimed or rejected under, the name
/// of a file upgraderd writes, and a status file named like another such file.
pub(super) fn check_names(layers: &Layers, trigger_file: &str, status_file: &str) -> Result<()> {
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
    let written = written(status_file);
    for (use_, name) in &uses {
        if let Some(file) = written.iter().find(|file| file.covers(name)) {
            let message = match file.key {
                Some(key) => format!(
                    "{trigger} clashes with {}: `{name}` would be both {use_} and {}, so upgraderd would consume \
                     its own file; give them different names, for example UPGRADERD_TRIGGER_FILE=.upgrade-trigger \
                     and UPGRADERD_STATUS_FILE=.upgrade-status.json",
                    given(key, status_file),
                    file.what
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
    if let Some(file) = written[1..].iter().find(|file| file.covers(status_file)) {
        return Err(usage(format!(
            "{}: it would also be {} (`{}{}`), which upgraderd writes in the trigger directory; choose another \
             name, for example UPGRADERD_STATUS_FILE=.upgrade-status.json",
            given("UPGRADERD_STATUS_FILE", status_file),
            file.what,
            file.name,
            if file.prefix { "*" } else { "" }
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Env;

    fn check(trigger: &str, status: &str) -> std::result::Result<(), String> {
        let layers = Layers::resolve(&[], &Env::default(), None);
        check_names(&layers, trigger, status).map_err(|e| e.to_string())
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
    }
}
