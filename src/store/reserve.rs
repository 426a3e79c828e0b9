//! Room kept back on the state filesystem. Recording an upgrade's outcome
//! must not depend on the disk having space at that moment: the reserve is a
//! file of real (not sparse) bytes written before the upgrade begins, and
//! released the moment a write to the state database finds the disk full, so
//! the journal can still record what happened.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Enough for the journal of an upgrade's last steps, with SQLite's rollback journal.
pub(crate) const RESERVE_BYTES: usize = 4 * 1024 * 1024;
const NAME: &str = "reserve";

#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
}

impl Reserve {
    /// Makes sure the reserve exists in `state_dir` (written in full, fsynced).
    pub(crate) fn ensure(state_dir: &Path) -> io::Result<Reserve> {
        let path = state_dir.join(NAME);
        let reserve = Reserve { path };
        if fs::symlink_metadata(&reserve.path).is_ok_and(|m| m.is_file() && m.len() == RESERVE_BYTES as u64) {
            return Ok(reserve);
        }
        let partial = state_dir.join(format!("{NAME}.partial"));
        let written = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&partial)?;
            file.write_all(&vec![0u8; RESERVE_BYTES])?;
            file.sync_all()?;
            fs::rename(&partial, &reserve.path)?;
            File::open(state_dir)?.sync_all()
        })();
        if written.is_err() {
            let _ = fs::remove_file(&partial);
        }
        written.map(|()| reserve)
    }

    /// Gives the room back to the filesystem; `true` when there was any to give.
    pub(crate) fn release(&self) -> bool {
        fs::remove_file(&self.path).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_real_bytes_made_once_and_released_once() {
        let dir = tempfile::tempdir().unwrap();
        let reserve = Reserve::ensure(dir.path()).unwrap();
        let meta = fs::metadata(dir.path().join(NAME)).unwrap();
        assert_eq!(meta.len(), RESERVE_BYTES as u64);
        use std::os::unix::fs::MetadataExt;
        assert!(meta.blocks() * 512 >= RESERVE_BYTES as u64, "the reserve is not sparse");
        Reserve::ensure(dir.path()).unwrap();
        assert!(reserve.release());
        assert!(!reserve.release());
    }
}
