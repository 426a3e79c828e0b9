//! The operator's files that an upgrade edits (a compose file, an env file):
//! read without following a link, checked for being editable, and replaced
//! atomically with new bytes while keeping their mode and owner. Nothing here
//! knows what the bytes mean.

use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use crate::store::files;

/// One file an upgrade edits: its bytes before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EditedFile {
    pub path: std::path::PathBuf,
    pub original: Vec<u8>,
    pub edited: Vec<u8>,
}

/// The largest file upgraderd edits: compose and env files are a few KiB.
pub(crate) const MAX_EDITED_BYTES: u64 = 1 << 20;

/// The bytes of `path`, which must be a regular file (not a link) of at most [`MAX_EDITED_BYTES`].
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            io::Error::other("it is a symbolic link; upgraderd edits the file itself, never through a link")
        } else {
            e
        }
    })?;
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(io::Error::other("it is not a regular file"));
    }
    if meta.len() > MAX_EDITED_BYTES {
        return Err(io::Error::other(format!("it is larger than {MAX_EDITED_BYTES} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Why `path` cannot be replaced by [`replace`], if it cannot: a link, not a
/// regular file, read-only by its mode, on a read-only filesystem, or in a
/// directory upgraderd may not write.
pub(crate) fn not_editable(path: &Path) -> Option<String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("cannot be read: {e}")),
    };
    if meta.file_type().is_symlink() {
        return Some("is a symbolic link; upgraderd edits the file itself, never through a link".into());
    }
    if !meta.is_file() {
        return Some("is not a regular file".into());
    }
    if meta.permissions().mode() & 0o222 == 0 {
        return Some(format!(
            "is read-only (mode {:04o}); make it writable (chmod u+w) if upgraderd may change the version written there",
            meta.permissions().mode() & 0o7777
        ));
    }
    let dir = files::parent_dir(path);
    if crate::store::disk::is_read_only(dir) {
        return Some(format!("is on a read-only filesystem ({})", dir.display()));
    }
    if let Err(e) = rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        return Some(format!("cannot be replaced: its directory {} is not writable ({e})", dir.display()));
    }
    None
}

/// Replaces `path` with `bytes` atomically: a fresh temp file in the same
/// directory (`O_EXCL|O_NOFOLLOW`) given the old file's mode and owner,
/// fsync, rename, fsync of the directory. `path` itself is never opened for writing.
pub(crate) fn replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let meta = fs::symlink_metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::other("it is no longer a regular file"));
    }
    files::write_atomic_owned(path, bytes, meta.permissions().mode() & 0o7777, meta.uid(), meta.gid())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_only_its_bytes_change() {
        let dir = tempfile::tempdir().unwrap();
        let env = dir.path().join(".env");
        fs::write(&env, "TAG=v1\r\n").unwrap();
        fs::set_permissions(&env, fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(not_editable(&env), None);
        replace(&env, b"TAG=v2\r\n").unwrap();
        assert_eq!(read(&env).unwrap(), b"TAG=v2\r\n");
        assert_eq!(fs::metadata(&env).unwrap().permissions().mode() & 0o7777, 0o640);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from(".env")], "no temp file left");
    }

    #[test]
    fn links_and_read_only_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.env");
        fs::write(&real, "TAG=v1\n").unwrap();
        let link = dir.path().join(".env");
        symlink(&real, &link).unwrap();
        assert!(not_editable(&link).unwrap().contains("symbolic link"));
        assert!(read(&link).unwrap_err().to_string().contains("symbolic link"));
        fs::set_permissions(&real, fs::Permissions::from_mode(0o444)).unwrap();
        assert!(not_editable(&real).unwrap().contains("read-only (mode 0444)"));
    }
}
