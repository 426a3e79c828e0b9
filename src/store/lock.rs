//! The single-upgrade lock: an advisory `flock` on `<state>/upgraderd.lock`
//! that the kernel drops when the holder dies. The holder writes who it is
//! (pid, command, upgrade id, since when) into the file so a refused caller can
//! name it.

use std::fmt;
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Who holds the lock, as written into the lock file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Holder {
    pub pid: u32,
    pub command: String,
    pub upgrade_id: Option<String>,
    /// RFC 3339 time the lock was taken.
    pub since: String,
}

/// Another process holds the lock (exit code 3).
#[derive(Debug)]
pub(crate) struct LockBusy {
    pub path: PathBuf,
    pub holder: Option<Holder>,
}

impl fmt::Display for LockBusy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.holder {
            Some(h) => {
                write!(
                    f,
                    "another upgraderd holds the lock {}: pid {} running `{}`",
                    self.path.display(),
                    h.pid,
                    h.command
                )?;
                if let Some(id) = &h.upgrade_id {
                    write!(f, " for upgrade {id}")?;
                }
                write!(f, " since {}; wait for it to finish (`upgraderd status`)", h.since)
            }
            None => write!(f, "another upgraderd holds the lock {}; wait for it to finish", self.path.display()),
        }
    }
}

impl std::error::Error for LockBusy {}

/// A held lock; dropping it (or the process dying) releases it.
#[derive(Debug)]
pub struct Lock {
    file: File,
    holder: Holder,
}

impl Lock {
    /// Takes the lock without waiting, or fails with [`LockBusy`].
    pub fn acquire(path: &Path, command: &str) -> Result<Lock> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .with_context(|| format!("cannot open the lock file {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let holder = serde_json::from_str(&text).ok();
                return Err(LockBusy { path: path.to_path_buf(), holder }.into());
            }
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        let holder = Holder {
            pid: std::process::id(),
            command: command.to_string(),
            upgrade_id: None,
            since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let mut lock = Lock { file, holder };
        lock.write_holder()?;
        Ok(lock)
    }

    /// Takes the lock when its file exists, without creating it (a dry run leaves
    /// nothing behind); no file means no upgrade ever ran on this state directory.
    pub(crate) fn acquire_if_present(path: &Path, command: &str) -> Result<Option<Lock>> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            _ => Lock::acquire(path, command).map(Some),
        }
    }

    /// Records the upgrade this holder is running, for whoever is refused next.
    pub fn set_upgrade(&mut self, upgrade_id: &str) -> Result<()> {
        self.holder.upgrade_id = Some(upgrade_id.to_string());
        self.write_holder()
    }

    fn write_holder(&mut self) -> Result<()> {
        let text = serde_json::to_string(&self.holder)?;
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(text.as_bytes())?;
        Ok(())
    }
}

/// Whether some live process holds the lock now (what the tests below check).
#[cfg(test)]
fn is_held(path: &Path) -> Result<Option<Holder>> {
    let file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot open the lock file {}", path.display())),
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(None),
        Err(TryLockError::WouldBlock) => {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            Ok(Some(serde_json::from_str(&text).unwrap_or_default()))
        }
        Err(TryLockError::Error(e)) => Err(e).with_context(|| format!("cannot test the lock {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgraderd.lock");
        let mut first = Lock::acquire(&path, "upgrade").unwrap();
        first.set_upgrade("abc123").unwrap();
        let err = Lock::acquire(&path, "backup create").unwrap_err();
        let busy = err.downcast_ref::<LockBusy>().unwrap();
        assert_eq!(busy.holder.as_ref().unwrap().upgrade_id.as_deref(), Some("abc123"));
        assert!(err.to_string().contains(&format!("pid {} running `upgrade` for upgrade abc123", std::process::id())));
        assert!(is_held(&path).unwrap().is_some());
        drop(first);
        assert!(is_held(&path).unwrap().is_none());
        Lock::acquire(&path, "upgrade").unwrap();
    }

    #[test]
    fn a_lock_that_is_not_there_is_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upgraderd.lock");
        assert!(Lock::acquire_if_present(&path, "upgrade --dry-run").unwrap().is_none());
        assert!(!path.exists());
        let held = Lock::acquire(&path, "upgrade").unwrap();
        assert!(Lock::acquire_if_present(&path, "upgrade --dry-run").unwrap_err().is::<LockBusy>());
        drop(held);
        assert!(Lock::acquire_if_present(&path, "upgrade --dry-run").unwrap().is_some());
    }
}
