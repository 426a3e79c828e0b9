//! The upgrade transaction: preflight, backup, fetch, switch, health gate,
//! rollback. Every transition is journaled before its side effect, so an
//! interrupted upgrade can always be told apart from a finished one.

pub mod check;
pub mod gate;
pub mod journal;
pub mod pipeline;
pub mod recover;
pub mod status;
pub mod strategy;

use std::path::PathBuf;

/// What was asked for.
#[derive(Debug, Clone)]
pub struct Request {
    /// A version tag, or `latest`.
    pub target: String,
    pub backup: bool,
    pub force: bool,
    pub dry_run: bool,
    /// `cli`, `trigger`, `check-version`, …
    pub initiated_by: String,
    pub strategy: crate::config::Strategy,
    /// Given by the app's trigger; generated otherwise.
    pub upgrade_id: Option<String>,
    /// A stop request: before the switch it abandons the upgrade and ends interruptible children.
    pub shutdown: Option<crate::signals::Shutdown>,
}

/// How an upgrade ended: one of the invariant's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    Complete,
    RolledBack,
    Failed,
}

impl Terminal {
    pub fn as_str(self) -> &'static str {
        match self {
            Terminal::Complete => "complete",
            Terminal::RolledBack => "rolled_back",
            Terminal::Failed => "failed",
        }
    }
}

/// The result of one upgrade attempt.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub upgrade_id: String,
    pub terminal: Terminal,
    pub from_version: Option<String>,
    pub to_version: String,
    pub error: Option<String>,
    pub backup: Option<PathBuf>,
}

impl Outcome {
    /// The outcome as the app, notifications and `--json` see it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "upgradeId": self.upgrade_id,
            "status": self.terminal.as_str(),
            "fromVersion": self.from_version,
            "toVersion": self.to_version,
            "error": self.error,
            "backupPath": self.backup,
        })
    }
}

/// Checks a requested version against the strict tag grammar before it goes
/// near an argv: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_version(version: &str) -> Result<(), String> {
    let mut chars = version.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid_first && valid_rest && version.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid version tag: use letters, digits, `_`, `.` and `-`, not starting with `.` or `-`, at most 128 characters",
            version.escape_debug()
        ))
    }
}

/// A random RFC 4122 version-4 id, the shape the app's API uses.
pub fn new_upgrade_id() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = (nanos ^ ((std::process::id() as u128) << 64)).to_le_bytes();
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Orders two versions when both are semver (a leading `v` allowed).
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    Some(parse(a)?.cmp(&parse(b)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_grammar_refuses_what_could_become_an_option_or_a_path() {
        for good in ["2.14.0", "latest", "v1.2.3-rc.1", "_x"] {
            assert!(validate_version(good).is_ok(), "{good}");
        }
        for bad in ["", "-rf", "--help", "../x", "a/b", "$(id)", "1.0 ", ".hidden", "2.０.0", &"x".repeat(129)] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn upgrade_ids_look_like_uuids() {
        let id = new_upgrade_id();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_ne!(id, new_upgrade_id());
    }

    #[test]
    fn semver_ordering() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("2.0.0", "1.10.0"), Some(Greater));
        assert_eq!(compare_versions("v1.0.0", "1.0.0"), Some(Equal));
        assert_eq!(compare_versions("latest", "1.0.0"), None);
    }
}
