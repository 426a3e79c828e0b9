//! Safe file handling for upgraderd's own files: atomic writes (temp file,
//! fsync, rename, fsync of the directory) that never follow a symlink. The
//! directory shared with the less trusted app goes through `shared_dir`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Writes `bytes` to `path` atomically: a fresh temp file created with
/// `O_EXCL|O_NOFOLLOW` in the same directory, fsync, rename over `path`, fsync
/// of the directory. A symlink planted at `path` is replaced, never followed.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    write_via_temp(path, bytes, mode, None, |tmp, path| fs::rename(tmp, path))
}

/// Like [`write_atomic`], the new file given `mode` and the owner `uid:gid`
/// (an operator's file that upgraderd edits keeps both).
pub(crate) fn write_atomic_owned(path: &Path, bytes: &[u8], mode: u32, uid: u32, gid: u32) -> io::Result<()> {
    write_via_temp(path, bytes, mode, Some((uid, gid)), |tmp, path| fs::rename(tmp, path))
}

fn write_via_temp(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    owner: Option<(u32, u32)>,
    place: impl Fn(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = parent_dir(path);
    let name = path.file_name().ok_or_else(|| io::Error::other("path has no file name"))?;
    for attempt in 0..16u32 {
        let tmp = dir.join(format!(".{}.{}.{attempt}.tmp", name.to_string_lossy(), std::process::id()));
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)
        {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        };
        let result = (|| {
            file.write_all(bytes)?;
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::fchown(&file, Some(uid), Some(gid))?;
            }
            file.set_permissions(fs::Permissions::from_mode(mode))?;
            file.sync_all()?;
            place(&tmp, path)?;
            sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        return result;
    }
    Err(io::Error::other(format!("could not create a temporary file in {}", dir.display())))
}

/// Renames `from` to `to` and makes the rename durable.
pub(crate) fn rename_durable(from: &Path, to: &Path) -> io::Result<()> {
    fs::rename(from, to)?;
    sync_dir(parent_dir(to))
}

/// fsyncs a directory so that renames and creations in it survive a crash.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The directory `path` is in (`.` for a bare name).
pub(crate) fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Creates `dir` (and parents) and gives it mode 0700 when upgraderd created it.
pub(crate) fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// A short suffix unlikely to repeat: pid and nanoseconds.
pub(crate) fn unique_suffix() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn atomic_write_replaces_a_planted_symlink_without_touching_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep").unwrap();
        let status = dir.path().join("status.json");
        symlink(&target, &status).unwrap();
        write_atomic(&status, b"{}", 0o644).unwrap();
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(!fs::symlink_metadata(&status).unwrap().file_type().is_symlink());
        assert_eq!(fs::read_to_string(&status).unwrap(), "{}");
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
