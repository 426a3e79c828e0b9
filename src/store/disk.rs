//! Free space on a filesystem, and whether it is writable, for preflight checks and disk-full messages.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Bytes available to unprivileged writers on the filesystem holding `path`
/// (the nearest existing ancestor when `path` does not exist yet).
pub fn free_bytes(path: &Path) -> io::Result<u64> {
    let existing = nearest_existing(path);
    let c_path = CString::new(existing.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_bavail as u64 * stat.f_frsize as u64)
}

fn nearest_existing(path: &Path) -> &Path {
    path.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"))
}

/// What is to be written on one filesystem, and the room it has for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Room {
    /// The paths to be written there.
    pub paths: Vec<PathBuf>,
    /// What they need together.
    pub needed: u64,
    pub free: u64,
}

impl Room {
    pub(crate) fn fits(&self) -> bool {
        self.needed <= self.free
    }

    /// The paths, for a message: `/a, /b`.
    pub(crate) fn shown_paths(&self) -> String {
        self.paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    }
}

/// Adds up what each path needs per filesystem (paths on one filesystem share
/// its free space), with each filesystem's free space. Free space that cannot
/// be read counts as enough: the write says what failed.
pub(crate) fn rooms(needs: &[(PathBuf, u64)]) -> Vec<Room> {
    let mut by_filesystem: Vec<(Option<u64>, Room)> = Vec::new();
    for (path, needed) in needs {
        // A path whose filesystem cannot be told is taken as one of its own.
        let device = std::fs::metadata(nearest_existing(path)).ok().map(|m| m.dev());
        match by_filesystem.iter_mut().find(|(d, _)| device.is_some() && *d == device) {
            Some((_, group)) => {
                group.paths.push(path.clone());
                group.needed += needed;
            }
            None => by_filesystem.push((
                device,
                Room { paths: vec![path.clone()], needed: *needed, free: free_bytes(path).unwrap_or(u64::MAX) },
            )),
        }
    }
    by_filesystem.into_iter().map(|(_, room)| room).collect()
}

/// Whether an error, or one it was caused by, is a full disk (or an exhausted quota).
pub(crate) fn is_full(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        let code = cause.downcast_ref::<io::Error>().and_then(io::Error::raw_os_error);
        matches!(code, Some(libc::ENOSPC | libc::EDQUOT))
    })
}

/// Whether the filesystem holding `path` is mounted read-only.
pub(crate) fn is_read_only(path: &Path) -> bool {
    let Ok(c_path) = CString::new(path.as_os_str().as_bytes()) else { return false };
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: c_path is a valid NUL-terminated string and stat a valid out-pointer.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) };
    rc == 0 && stat.f_flag & libc::ST_RDONLY != 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn reports_free_space_of_an_ancestor() {
        let free = super::free_bytes(std::path::Path::new("/tmp/does/not/exist/yet")).unwrap();
        assert!(free > 0);
    }

    #[test]
    fn paths_on_one_filesystem_share_its_free_space() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b/not/yet"));
        let small = super::rooms(&[(a.clone(), 1 << 10), (b.clone(), 1 << 10)]);
        assert_eq!((small.len(), small[0].needed, small[0].fits()), (1, 2 << 10, true), "{small:?}");
        // Two paths on one filesystem need their needs added up.
        let half = u64::MAX / 2;
        let large = super::rooms(&[(a.clone(), half), (b.clone(), half)]);
        assert_eq!(large.len(), 1, "{large:?}");
        assert_eq!(
            (large[0].paths.clone(), large[0].needed, large[0].fits()),
            (vec![a.clone(), b.clone()], half * 2, false)
        );
        assert_eq!(large[0].shown_paths(), format!("{}, {}", a.display(), b.display()));
    }

    #[test]
    fn a_full_disk_is_told_through_context() {
        let full = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOSPC)).context("cannot restore `x`");
        assert!(super::is_full(&full));
        let quota = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EDQUOT));
        assert!(super::is_full(&quota));
        assert!(!super::is_full(&anyhow::Error::new(std::io::Error::from_raw_os_error(libc::EIO))));
    }
}
