//! The status file the app reads (`.upgrade-status.json` in the trigger dir):
//! its JSON shape, atomic writes that never follow a planted symlink, and a
//! heartbeat that refreshes `updatedAt` during long steps so the app can tell
//! a slow upgrade from a dead watcher.
//!
//! Beside it, for apps written for the MeshMonitor watchdog, the one-word
//! token file (`.upgrade-status`, `UPGRADERD_LEGACY_STATUS_FILE`): written
//! with every snapshot, right after the JSON, by the same atomic no-symlink
//! rules, so both files change at the same transitions wherever the status is
//! written (an upgrade, recovery, a manual rollback, a rejected trigger).

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::config::Config;
use crate::states::Status;
use crate::store::db::now_ms;
use crate::store::shared_dir::SharedDir;
use crate::ui::Ui;

/// How often a running upgrade rewrites its status file when nothing else happens.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(2);

/// One snapshot of an upgrade as the app sees it (the reference API's status shape).
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    pub upgrade_id: String,
    pub status: Status,
    pub progress: u8,
    pub current_step: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub started_at: i64,
    pub logs: Vec<String>,
    pub error: Option<String>,
}

impl Snapshot {
    pub(crate) fn to_json(&self) -> Value {
        json!({
            "upgradeId": self.upgrade_id,
            "status": self.status.as_str(),
            "progress": self.progress,
            "currentStep": self.current_step,
            "fromVersion": self.from_version,
            "toVersion": self.to_version,
            "startedAt": iso(self.started_at),
            "updatedAt": iso(now_ms()),
            "logs": self.logs,
            "error": self.error,
        })
    }
}

pub(crate) fn iso(ms: i64) -> Option<String> {
    chrono::DateTime::from_timestamp_millis(ms).map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
}

/// The status file of the configured trigger directory, when there is one to write.
/// A trigger directory that cannot be held safely (a symlink the app planted)
/// is reported and left alone: the upgrade goes on without a status file.
pub(crate) fn open_status_file(config: &Config, ui: &Ui) -> Option<Arc<StatusFile>> {
    let dir = config.trigger_dir.as_ref()?;
    match SharedDir::open(dir) {
        Ok(shared) => {
            Some(StatusFile::new(Arc::new(shared), &config.status_file, config.legacy_status_file.as_deref()))
        }
        Err(e) => {
            ui.warn(format!("not writing the status file: {e}"));
            None
        }
    }
}

/// The status file (and the legacy token beside it), shared by the journal and its heartbeat.
#[derive(Debug)]
pub(crate) struct StatusFile {
    dir: Arc<SharedDir>,
    name: String,
    /// The MeshMonitor watchdog's one-word status file, when it is written.
    legacy: Option<String>,
    last: Mutex<Option<Snapshot>>,
}

impl StatusFile {
    pub(crate) fn new(dir: Arc<SharedDir>, name: &str, legacy: Option<&str>) -> Arc<StatusFile> {
        Arc::new(StatusFile { dir, name: name.to_string(), legacy: legacy.map(str::to_string), last: Mutex::new(None) })
    }

    /// Replaces the file atomically, then the legacy token; a planted symlink
    /// is replaced, never followed. The error names the file that failed.
    pub(crate) fn write(&self, snapshot: Snapshot) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let json = self.write_snapshot(&snapshot).map_err(|e| self.failed(&self.name, e));
        // The token comes second: an app that reads `complete` there finds the JSON complete too.
        let token = self.write_token(snapshot.status);
        *last = Some(snapshot);
        json.and(token)
    }

    /// The MeshMonitor watchdog's one word for `status` (see [`Status::watchdog_token`]).
    fn write_token(&self, status: Status) -> std::io::Result<()> {
        let Some(name) = &self.legacy else { return Ok(()) };
        let line = format!("{}\n", status.watchdog_token());
        self.dir
            .check()
            .and_then(|()| self.dir.write_atomic(name, line.as_bytes(), 0o644))
            .map_err(|e| self.failed(name, e))
    }

    fn failed(&self, name: &str, e: std::io::Error) -> std::io::Error {
        std::io::Error::new(e.kind(), format!("{}: {e}", self.dir.path().join(name).display()))
    }

    /// Replaces the log lines of the last snapshot and rewrites it.
    pub(crate) fn set_logs(&self, logs: Vec<String>) -> std::io::Result<()> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match last.as_mut() {
            Some(snapshot) => {
                snapshot.logs = logs;
                self.write_snapshot(snapshot)
            }
            None => Ok(()),
        }
    }

    /// Rewrites the last snapshot with a fresh `updatedAt`.
    fn refresh(&self) {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(snapshot) = last.as_ref() {
            let _ = self.write_snapshot(snapshot);
        }
    }

    fn write_snapshot(&self, snapshot: &Snapshot) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&snapshot.to_json()).unwrap_or_default();
        self.dir.check()?;
        self.dir.write_atomic(&self.name, &bytes, 0o644)
    }

    /// Starts refreshing the file every `every` until the returned guard is dropped.
    pub(crate) fn heartbeat(self: &Arc<Self>, every: Duration) -> Heartbeat {
        let (stop, stopped) = mpsc::channel::<()>();
        let file = Arc::clone(self);
        let thread = std::thread::Builder::new()
            .name("status-heartbeat".into())
            .spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                    file.refresh();
                }
            })
            .ok();
        Heartbeat { stop: Some(stop), thread }
    }
}

/// Stops the heartbeat thread when dropped.
pub(crate) struct Heartbeat {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_snapshot_writes_the_legacy_token_after_the_json_and_a_planted_link_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".upgrade-status")).unwrap();
        let file = StatusFile::new(Arc::new(SharedDir::open(dir.path()).unwrap()), "s.json", Some(".upgrade-status"));
        let token = || std::fs::read_to_string(dir.path().join(".upgrade-status")).unwrap();
        let json = || -> Value { serde_json::from_slice(&std::fs::read(dir.path().join("s.json")).unwrap()).unwrap() };
        for (status, word) in [
            (Status::Preflight, "pending\n"),
            (Status::Downloading, "downloading\n"),
            (Status::RollingBack, "rolling_back\n"),
            (Status::RolledBack, "failed\n"),
            (Status::Complete, "complete\n"),
        ] {
            file.write(Snapshot { upgrade_id: "u1".into(), status, ..Snapshot::default() }).unwrap();
            assert_eq!((token(), json()["status"].clone()), (word.to_string(), Value::from(status.as_str())));
        }
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious", "the link was replaced, not followed");
        file.set_logs(vec!["a log line".into()]).unwrap();
        assert_eq!(token(), "complete\n");
    }

    #[test]
    fn without_a_legacy_name_only_the_json_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let file = StatusFile::new(Arc::new(SharedDir::open(dir.path()).unwrap()), "s.json", None);
        file.write(Snapshot { upgrade_id: "u1".into(), status: Status::Complete, ..Snapshot::default() }).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("s.json")]);
    }

    #[test]
    fn the_heartbeat_refreshes_updated_at_and_stops_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let file = StatusFile::new(Arc::new(SharedDir::open(dir.path()).unwrap()), "status.json", None);
        file.write(Snapshot { upgrade_id: "u1".into(), status: Status::Downloading, ..Snapshot::default() }).unwrap();
        let read =
            || -> Value { serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap() };
        let first = read()["updatedAt"].clone();
        let beat = file.heartbeat(Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(120));
        drop(beat);
        let after = read();
        assert_eq!(after["status"], "downloading");
        assert_ne!(after["updatedAt"], first);
        let settled = std::fs::read(dir.path().join("status.json")).unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(std::fs::read(dir.path().join("status.json")).unwrap(), settled, "no write after the drop");
    }
}
