//! The app's side of the MeshMonitor watchdog protocol, byte for byte as
//! MeshMonitor's backend (up to 4.12) speaks it, for tests that put upgraderd
//! where the watchdog sidecar was:
//!
//! - the trigger: `.upgrade-status` removed first, then
//!   `JSON.stringify({upgradeId, version, backup, timestamp}, null, 2)` written
//!   (mode 0644) to `.upgrade-trigger.tmp.<Date.now()>.<Math.random() in base 36>`
//!   and renamed to `.upgrade-trigger`;
//! - progress: `.upgrade-status` read, trimmed and lowercased; `complete` and
//!   `ready` mean success, `failed` failure, anything else "still running";
//! - the socket check: `.docker-socket-test` removed, `.docker-socket-test-request`
//!   written in place with `Date.now()`, the answer polled every 100 ms, then the
//!   request removed if it is still there.

use std::cell::RefCell;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::wait;

/// What the backend reads from `.upgrade-status` that ends its upgrade.
pub const SUCCESS: &[&str] = &["complete", "ready"];
/// Every word the watchdog protocol has, in upgraderd's runbook order (the download comes before the
/// backup), and `pending`, the backend's own word for an upgrade not yet started.
pub const TOKENS: &[&str] = &[
    "pending",
    "downloading",
    "backing_up",
    "restarting",
    "health_check",
    "cleanup",
    "rolling_back",
    "complete",
    "failed",
];

/// The backend of one app, sharing `dir` with upgraderd.
pub struct Backend {
    pub dir: PathBuf,
}

/// One upgrade as the backend saw it.
#[derive(Debug)]
pub struct Followed {
    /// The distinct words `.upgrade-status` held, in the order they were read.
    pub tokens: Vec<String>,
    /// The status file's last snapshot of this upgrade.
    pub status: Value,
}

impl Followed {
    pub fn last_token(&self) -> &str {
        self.tokens.last().map(String::as_str).unwrap_or_default()
    }
}

impl Backend {
    pub fn new(dir: &Path) -> Backend {
        Backend { dir: dir.to_path_buf() }
    }

    /// `triggerUpgrade`: clears the stale status word, writes the trigger atomically; returns the upgrade id.
    pub fn trigger(&self, version: &str) -> String {
        let upgrade_id = uuid_v4();
        let _ = fs::remove_file(self.dir.join(".upgrade-status"));
        let timestamp = now_ms();
        let body = format!(
            "{{\n  \"upgradeId\": \"{upgrade_id}\",\n  \"version\": \"{version}\",\n  \"backup\": true,\n  \"timestamp\": {timestamp}\n}}"
        );
        let tmp = self.dir.join(self.temp_name());
        fs::write(&tmp, body).unwrap();
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o644)).unwrap();
        fs::rename(&tmp, self.dir.join(".upgrade-trigger")).unwrap();
        upgrade_id
    }

    /// The name `atomicWriteFile` gives its temp file: `.upgrade-trigger.tmp.<ms>.<base 36>`.
    pub fn temp_name(&self) -> String {
        format!(".upgrade-trigger.tmp.{}.{}", now_ms(), base36(&random_bytes::<8>()))
    }

    /// `getLatestUpgradeStatus`: the word, trimmed and lowercased, when the file is there.
    pub fn token(&self) -> Option<String> {
        fs::read_to_string(self.dir.join(".upgrade-status")).ok().map(|t| t.trim().to_lowercase())
    }

    /// The status file (`.upgrade-status.json`), when it is there and whole.
    pub fn status(&self) -> Option<Value> {
        serde_json::from_slice(&fs::read(self.dir.join(".upgrade-status.json")).ok()?).ok()
    }

    /// Polls both files, as the backend and its UI do, until the word and the
    /// status file both say `upgrade_id` ended; every word read is kept.
    #[track_caller]
    pub fn follow(&self, upgrade_id: &str, context: &dyn Fn() -> String) -> Followed {
        let tokens: RefCell<Vec<String>> = RefCell::default();
        let status = wait(format!("upgrade {upgrade_id} to end in .upgrade-status and .upgrade-status.json"))
            .within(Duration::from_secs(120))
            .every(Duration::from_millis(5))
            .showing(|| format!("words so far: {:?}\n{}", tokens.borrow(), context()))
            .until(|| {
                // The word first: upgraderd writes it after the JSON, so a final word means a final JSON.
                let token = self.token();
                if let Some(token) = &token {
                    let mut seen = tokens.borrow_mut();
                    if seen.last() != Some(token) {
                        seen.push(token.clone());
                    }
                }
                let ended = token.is_some_and(|t| SUCCESS.contains(&t.as_str()) || t == "failed");
                let status = self.status().filter(|s| s["upgradeId"] == upgrade_id)?;
                (ended && ["complete", "rolled_back", "failed"].contains(&status["status"].as_str()?)).then_some(status)
            });
        Followed { tokens: tokens.into_inner(), status }
    }

    /// `testConfiguration`'s socket check: the answer (trimmed), once there is one.
    #[track_caller]
    pub fn socket_test(&self, context: &dyn Fn() -> String) -> String {
        let request = self.dir.join(".docker-socket-test-request");
        let answer = self.dir.join(".docker-socket-test");
        let _ = fs::remove_file(&answer);
        fs::write(&request, now_ms().to_string()).unwrap();
        let text = wait("the Docker socket check to be answered")
            .every(Duration::from_millis(100))
            .showing(context)
            .until(|| fs::read_to_string(&answer).ok().map(|t| t.trim().to_string()));
        if request.exists() {
            fs::remove_file(&request).unwrap();
        }
        text
    }
}

/// The order of the runbook's words: a word never follows a later one.
pub fn runbook_rank(token: &str) -> usize {
    TOKENS.iter().position(|t| *t == token).unwrap_or_else(|| panic!("{token:?} is not a word of the protocol"))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis()
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    fs::File::open("/dev/urandom").unwrap().read_exact(&mut bytes).unwrap();
    bytes
}

/// `uuid.v4()`: 36 characters, lowercase hex.
fn uuid_v4() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// `Math.random().toString(36).slice(2)`: up to a dozen characters of `[0-9a-z]`.
fn base36(bytes: &[u8]) -> String {
    let mut n = bytes.iter().fold(0u64, |n, b| n << 8 | u64::from(*b)) >> 4;
    let mut digits = Vec::new();
    while n > 0 && digits.len() < 11 {
        digits.push(char::from_digit((n % 36) as u32, 36).unwrap());
        n /= 36;
    }
    if digits.is_empty() {
        digits.push('0');
    }
    digits.into_iter().collect()
}
