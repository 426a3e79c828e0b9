//! The trigger protocol: what the app may ask for, read without trusting it.
//!
//! The app drops `.upgrade-trigger` (name configurable) into the shared dir.
//! upgraderd claims it by renaming it to `.<name>.claimed` (so a trigger the
//! app writes meanwhile is a new file, never lost or deleted unread), reads
//! the claimed file with `O_NOFOLLOW` as a regular file of at most 64 KiB,
//! records the request, then removes it. A rejected trigger is renamed to
//! `<name>.rejected`. A claim left by a killed daemon is processed first on
//! the next start.
//!
//! Accepted forms: MeshMonitor's JSON (`upgradeId`, `version` or
//! `targetVersion`, `backup`, `force`, `timestamp`) and OpenTrace's plain
//! file (`update_requested`, or empty): upgrade to the latest version. The
//! trigger only requests; image, compose files and policy come from the host.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::config as names;
use crate::store::shared_dir::{Entry, ReadRefusal, SharedDir};
use crate::version::validate_version;

/// The largest trigger read; a bigger file is rejected unread.
pub(crate) const MAX_TRIGGER_BYTES: u64 = 64 * 1024;

/// What a valid trigger asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TriggerRequest {
    pub upgrade_id: Option<String>,
    /// A version tag, or `latest`.
    pub version: String,
    pub backup: bool,
    pub force: bool,
    /// Milliseconds since the epoch, as the app wrote it.
    pub timestamp: Option<i64>,
}

/// The result of parsing a trigger's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Parsed {
    Request(TriggerRequest),
    /// JSON that stops early: a non-atomic writer may still be writing it.
    Incomplete,
    Rejected(String),
}

/// The longest plain-text trigger (OpenTrace writes `update_requested`); longer text is not a note.
pub(crate) const MAX_PLAIN_TRIGGER_BYTES: usize = 1024;

/// Parses a trigger. Never panics, whatever the bytes.
pub(crate) fn parse(bytes: &[u8]) -> Parsed {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Parsed::Rejected(
            "the trigger is not UTF-8 text (UTF-16, or binary?); write JSON like {\"version\": \"2.14.0\"} or a short note"
                .into(),
        );
    };
    let trimmed = text.trim_start_matches('\u{feff}').trim();
    if !(trimmed.starts_with('{') || trimmed.starts_with('[')) {
        if let Err(reason) = plain_note(trimmed) {
            return Parsed::Rejected(reason);
        }
        // OpenTrace's `update_requested`, an empty file, or any other note: the latest version.
        return Parsed::Request(TriggerRequest {
            upgrade_id: None,
            version: "latest".into(),
            backup: true,
            force: false,
            timestamp: None,
        });
    }
    let value: Value = match serde_json::from_str(trimmed) {
        Ok(value) => value,
        Err(e) if e.is_eof() => return Parsed::Incomplete,
        Err(e) => return Parsed::Rejected(format!("the trigger is not valid JSON: {e}")),
    };
    match from_json(&value) {
        Ok(request) => Parsed::Request(request),
        Err(reason) => Parsed::Rejected(reason),
    }
}

/// A plain trigger is a short printable note; anything else (NUL bytes, control characters, a
/// large blob) is not something an app wrote on purpose and must not become an upgrade.
fn plain_note(text: &str) -> Result<(), String> {
    if text.len() > MAX_PLAIN_TRIGGER_BYTES {
        return Err(format!(
            "the trigger is {} bytes of text that is not JSON; a plain trigger is a short note (at most {MAX_PLAIN_TRIGGER_BYTES} bytes)",
            text.len()
        ));
    }
    match text.chars().find(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        Some(c) => Err(format!("the trigger holds the control character {:?}; a plain trigger is printable text", c)),
        None => Ok(()),
    }
}

fn from_json(value: &Value) -> Result<TriggerRequest, String> {
    let object = value.as_object().ok_or("a JSON trigger must be an object like {\"version\": \"2.14.0\"}")?;
    let text = |key: &str| -> Result<Option<&str>, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(format!("`{key}` must be a string, not {other}")),
        }
    };
    let flag = |key: &str, default: bool| -> Result<bool, String> {
        match object.get(key) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(format!("`{key}` must be true or false, not {other}")),
        }
    };
    let version = match (text("version")?, text("targetVersion")?) {
        (Some(v), _) | (None, Some(v)) => v,
        (None, None) => "latest",
    };
    validate_version(version)?;
    let upgrade_id = text("upgradeId")?.map(str::to_string);
    if let Some(id) = &upgrade_id {
        validate_upgrade_id(id)?;
    }
    let timestamp = match object.get("timestamp") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => Some(n.as_i64().ok_or("`timestamp` must be whole milliseconds since 1970")?),
        Some(other) => return Err(format!("`timestamp` must be a number of milliseconds, not {other}")),
    };
    Ok(TriggerRequest {
        upgrade_id,
        version: version.to_string(),
        backup: flag("backup", true)?,
        force: flag("force", false)?,
        timestamp,
    })
}

/// Upgrade ids end up in image tags and file names: letters, digits, `_`, `.`, `-`; at most 64.
pub(crate) fn validate_upgrade_id(id: &str) -> Result<(), String> {
    let mut chars = id.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if first && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) && id.len() <= 64 {
        Ok(())
    } else {
        Err(format!(
            "`upgradeId` `{}` is not usable: letters, digits, `_`, `.` and `-`, starting with a letter or digit, at most 64 characters",
            id.chars().take(80).collect::<String>().escape_debug()
        ))
    }
}

/// The trigger's name in the shared directory (held by a handle), and its claimed and rejected names.
#[derive(Debug, Clone)]
pub(crate) struct TriggerDir {
    pub dir: Arc<SharedDir>,
    pub name: String,
}

/// What the shared directory holds at the trigger's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    Nothing,
    /// A regular file, last modified this long ago.
    File {
        age: std::time::Duration,
    },
    /// A symlink, FIFO, directory or device: rejected without being opened.
    NotAFile,
}

impl TriggerDir {
    pub(crate) fn new(dir: Arc<SharedDir>, name: &str) -> TriggerDir {
        TriggerDir { dir, name: name.to_string() }
    }

    /// The trigger's path, for messages.
    pub(crate) fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    fn claimed_name(&self) -> String {
        names::claimed_name(&self.name)
    }

    fn rejected_name(&self) -> String {
        names::rejected_name(&self.name)
    }

    /// Looks at the trigger's name without opening or following anything.
    pub(crate) fn look(&self) -> io::Result<Found> {
        Ok(match self.dir.entry(&self.name)? {
            Entry::Missing => Found::Nothing,
            Entry::File { age } => Found::File { age },
            Entry::Other => Found::NotAFile,
        })
    }

    pub(crate) fn has_claim(&self) -> bool {
        !matches!(self.dir.entry(&self.claimed_name()), Ok(Entry::Missing) | Err(_))
    }

    /// Takes the trigger by renaming it; `false` when there was none.
    pub(crate) fn claim(&self) -> io::Result<bool> {
        match self.dir.rename(&self.name, &self.claimed_name()) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Reads the claimed trigger with every guard of the protocol.
    pub(crate) fn read_claimed(&self) -> Result<Vec<u8>, String> {
        self.dir.read(&self.claimed_name(), MAX_TRIGGER_BYTES).map_err(|refusal| match refusal {
            ReadRefusal::Missing => "the trigger disappeared before it could be read".to_string(),
            ReadRefusal::Symlink => "the trigger is a symlink; write a regular file instead".to_string(),
            ReadRefusal::NotRegular => "the trigger is not a regular file (a FIFO, directory or device)".to_string(),
            ReadRefusal::TooLarge(n) => {
                format!("the trigger is {n} bytes, more than the {MAX_TRIGGER_BYTES} bytes a trigger may have")
            }
            ReadRefusal::Io(e) => format!("the trigger cannot be read: {e}"),
        })
    }

    /// Removes the claimed trigger once its request is recorded.
    pub(crate) fn release(&self) -> io::Result<()> {
        self.dir.remove(&self.claimed_name())
    }

    /// Moves the claimed trigger aside as `<name>.rejected`, replacing an earlier one.
    pub(crate) fn reject(&self) -> io::Result<()> {
        if self.dir.rename(&self.claimed_name(), &self.rejected_name()).is_ok() {
            return Ok(());
        }
        // An earlier rejected directory cannot be renamed over: move it out of the way first
        // (a rename, whatever it holds), so the claim never lingers, then remove it if it can be.
        let old = format!(".{}.old-{}", self.rejected_name(), crate::store::files::unique_suffix());
        self.dir.rename(&self.rejected_name(), &old)?;
        self.dir.rename(&self.claimed_name(), &self.rejected_name())?;
        // What the app planted there may be too deep to remove; it stays, hidden, in the app's own directory.
        let _ = self.dir.remove(&old);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(bytes: &[u8]) -> TriggerRequest {
        match parse(bytes) {
            Parsed::Request(r) => r,
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    fn rejected(bytes: &[u8]) -> String {
        match parse(bytes) {
            Parsed::Rejected(why) => why,
            other => panic!("{:?} gave {other:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn meshmonitor_json_and_opentrace_plain_files() {
        let r = request(
            br#"{"upgradeId":"6f1c-2a","version":"2.14.0","backup":false,"force":true,"timestamp":1736000000000}"#,
        );
        assert_eq!(
            r,
            TriggerRequest {
                upgrade_id: Some("6f1c-2a".into()),
                version: "2.14.0".into(),
                backup: false,
                force: true,
                timestamp: Some(1736000000000)
            }
        );
        assert_eq!(request(br#"{"targetVersion":"v3.0.0"}"#).version, "v3.0.0");
        assert_eq!(request(b"{}").version, "latest");
        for plain in [&b"update_requested\n"[..], b"", b"   \n"] {
            let r = request(plain);
            assert_eq!((r.version.as_str(), r.backup, r.upgrade_id), ("latest", true, None));
        }
    }

    #[test]
    fn binary_utf16_and_long_notes_are_not_requests() {
        assert!(rejected(b"\0\0\0\0update").contains("control character"));
        let utf16: Vec<u8> = "update_requested".encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        assert!(rejected(&utf16).contains("control character"), "UTF-16 of ASCII is valid UTF-8 with NULs");
        let utf16_bom: Vec<u8> = [0xff, 0xfe].into_iter().chain(utf16).collect();
        assert!(rejected(&utf16_bom).contains("not UTF-8 text"));
        assert!(rejected(b"\xc3\x28").contains("not UTF-8 text"));
        assert!(rejected("x".repeat(MAX_PLAIN_TRIGGER_BYTES + 1).as_bytes()).contains("short note"));
        assert!(rejected(b"update\x1b[2J").contains("control character"));
        assert_eq!(request(b"update_requested\r\n").version, "latest");
        assert_eq!(request("\u{feff}please upgrade\n".as_bytes()).version, "latest");
    }

    #[test]
    fn json_cut_short_is_incomplete_not_rejected() {
        assert_eq!(parse(br#"{"version": "2.1"#), Parsed::Incomplete);
        assert_eq!(parse(b"{"), Parsed::Incomplete);
    }

    #[test]
    fn hostile_and_malformed_triggers_are_rejected_with_the_reason() {
        assert!(rejected(br#"{"version": "../x"}"#).contains("not a valid version tag"));
        assert!(rejected(br#"{"version": "--help"}"#).contains("not a valid version tag"));
        assert!(rejected(br#"{"version": "$(reboot)"}"#).contains("not a valid version tag"));
        assert!(rejected("{\"version\": \"2.\u{ff10}.0\"}".as_bytes()).contains("not a valid version tag"));
        assert!(rejected(br#"{"version": 2}"#).contains("`version` must be a string"));
        assert!(rejected(br#"{"backup": "no"}"#).contains("`backup` must be true or false"));
        assert!(rejected(br#"{"upgradeId": "../../etc"}"#).contains("`upgradeId`"));
        assert!(rejected(br#"{"timestamp": "soon"}"#).contains("`timestamp`"));
        assert!(rejected(br#"["2.0.0"]"#).contains("must be an object"));
        assert!(rejected(br#"{"version": "1"} trailing"#).contains("not valid JSON"));
    }

    /// A small deterministic generator, so the property run needs no extra crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Property: whatever the bytes, parsing never panics, and anything accepted
    /// carries a version and id that pass the grammars argv and tags rely on.
    #[test]
    fn parser_property_over_mutated_and_random_triggers() {
        let seeds: &[&[u8]] = &[
            br#"{"upgradeId":"a1","version":"2.14.0","backup":true,"force":false,"timestamp":1736000000000}"#,
            br#"{"targetVersion":"v1.2.3-rc.1"}"#,
            b"update_requested",
            b"{}",
        ];
        let alphabet: &[u8] = b"{}[]\":,.-_/\\$()` \n\t0123456789abcvV\x00\xff\xc3\xa9";
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20_000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..=rng.below(6) {
                match rng.below(4) {
                    0 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len());
                        bytes[i] = alphabet[rng.below(alphabet.len())];
                    }
                    1 => {
                        let i = rng.below(bytes.len() + 1);
                        bytes.insert(i, alphabet[rng.below(alphabet.len())]);
                    }
                    2 if !bytes.is_empty() => {
                        let i = rng.below(bytes.len());
                        bytes.remove(i);
                    }
                    _ => bytes.truncate(rng.below(bytes.len() + 1)),
                }
            }
            if let Parsed::Request(r) = parse(&bytes) {
                assert!(validate_version(&r.version).is_ok(), "{bytes:?} gave version {:?}", r.version);
                if let Some(id) = &r.upgrade_id {
                    assert!(validate_upgrade_id(id).is_ok(), "{bytes:?} gave id {id:?}");
                }
            }
        }
    }
}
