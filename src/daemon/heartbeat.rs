//! The daemon's heartbeat: a file in the state directory, rewritten every
//! [`EVERY`] by the main loop, that `watch --alive` reads. A container's
//! HEALTHCHECK has neither a shell nor the daemon's pid to ask; a loop that
//! hangs stops beating, where a process that merely exists would not tell.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::store::files;

/// How often the daemon beats.
pub(crate) const EVERY: Duration = Duration::from_secs(30);
/// A heartbeat older than this is a daemon gone or stuck: three beats missed.
pub(crate) const STALE: Duration = Duration::from_secs(90);

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("watch.alive")
}

/// Writes the heartbeat: this process's pid, the time in the file's mtime.
pub(crate) fn beat(state_dir: &Path) -> io::Result<()> {
    files::write_atomic(&path(state_dir), format!("{}\n", std::process::id()).as_bytes(), 0o644)
}

/// How old the last heartbeat is, and the pid that wrote it.
pub(crate) fn last(state_dir: &Path) -> io::Result<(Duration, String)> {
    let file = path(state_dir);
    let written = std::fs::metadata(&file)?.modified()?;
    let age = SystemTime::now().duration_since(written).unwrap_or_default();
    let pid = std::fs::read_to_string(&file)?.trim().to_string();
    Ok((age, pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_beat_is_read_back_with_its_age_and_pid() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(last(dir.path()).unwrap_err().kind(), io::ErrorKind::NotFound);
        beat(dir.path()).unwrap();
        let (age, pid) = last(dir.path()).unwrap();
        assert!(age < STALE, "{age:?}");
        assert_eq!(pid, std::process::id().to_string());
    }
}
