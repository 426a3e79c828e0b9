//! The directory upgraderd shares with the app (the trigger directory), held
//! by a handle. The app is less trusted than upgraderd, which runs as root:
//! every look, read, write, rename and removal there is relative to the
//! handle with `O_NOFOLLOW`, so a name the app swaps for a symlink is never
//! followed, and the directory itself swapped for a symlink is refused.
//!
//! The path is resolved once, when the handle is opened, with every
//! component opened `O_NOFOLLOW` from the root. Before each use,
//! [`SharedDir::check`] makes sure the configured path still names the
//! directory the handle holds (device and inode); when it was removed and made
//! again, the new one is opened the same way and must have the same owner.

use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::FileType;

use crate::store::files::unique_suffix;
use crate::store::fsat;

/// Why a guarded read refused a file.
#[derive(Debug)]
pub(crate) enum ReadRefusal {
    Missing,
    Symlink,
    NotRegular,
    TooLarge(u64),
    Io(io::Error),
}

/// What a name in the directory is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    Missing,
    /// A regular file, last modified this long ago.
    File {
        age: std::time::Duration,
    },
    /// A symlink, FIFO, directory, socket or device.
    Other,
}

/// The shared directory, held open.
#[derive(Debug)]
pub(crate) struct SharedDir {
    path: PathBuf,
    held: Mutex<Held>,
}

#[derive(Debug)]
struct Held {
    fd: OwnedFd,
    dev: u64,
    ino: u64,
    uid: u32,
}

impl SharedDir {
    /// Opens `path` without following a symlink in any of its components.
    pub(crate) fn open(path: &Path) -> io::Result<SharedDir> {
        let path = std::path::absolute(path)?;
        let held = open_held(&path)?;
        Ok(SharedDir { path, held: Mutex::new(held) })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the configured path still names the held directory; reopens a
    /// directory that was removed and made again (same owner only). An error
    /// says what changed: nothing may be done in the directory until it is put right.
    pub(crate) fn check(&self) -> io::Result<()> {
        let mut held = self.lock();
        match fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.is_dir() && (meta.dev(), meta.ino()) == (held.dev, held.ino) => Ok(()),
            Ok(meta) if meta.file_type().is_symlink() => Err(refused(&self.path, "was replaced by a symlink")),
            Ok(_) | Err(_) => {
                let fresh = open_held(&self.path)?;
                if fresh.uid != held.uid {
                    return Err(refused(
                        &self.path,
                        &format!("was made again with owner {} instead of {}", fresh.uid, held.uid),
                    ));
                }
                *held = fresh;
                Ok(())
            }
        }
    }

    /// Looks at `name` without opening or following it.
    pub(crate) fn entry(&self, name: &str) -> io::Result<Entry> {
        let held = self.lock();
        let stat = match fsat::lstat_at(held.fd.as_fd(), plain(name)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Entry::Missing),
            other => other?,
        };
        if fsat::file_type(&stat) != FileType::RegularFile {
            return Ok(Entry::Other);
        }
        let modified = std::time::UNIX_EPOCH
            + std::time::Duration::new(stat.st_mtime.max(0) as u64, stat.st_mtime_nsec.clamp(0, 999_999_999) as u32);
        Ok(Entry::File { age: modified.elapsed().unwrap_or_default() })
    }

    /// The names in the directory, as bytes, in byte order.
    pub(crate) fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let held = self.lock();
        fsat::read_names(held.fd.as_fd())
    }

    /// Removes a name given as bytes (one the app made that upgraderd cannot otherwise handle).
    pub(crate) fn remove_bytes(&self, name: &[u8]) -> io::Result<()> {
        let held = self.lock();
        if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a plain file name"));
        }
        fsat::remove_tree_at(held.fd.as_fd(), name)?;
        fsat::sync(held.fd.as_fd())
    }

    /// Renames `from` to `to` inside the directory (a symlink is moved as a link, never followed).
    pub(crate) fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let held = self.lock();
        let dir = held.fd.as_fd();
        fsat::rename_at(dir, plain(from)?, dir, plain(to)?)?;
        fsat::sync(dir)
    }

    /// Removes `name` (a file, a link, or a directory tree the app put there); missing is fine.
    pub(crate) fn remove(&self, name: &str) -> io::Result<()> {
        let held = self.lock();
        fsat::remove_tree_at(held.fd.as_fd(), plain(name)?)?;
        fsat::sync(held.fd.as_fd())
    }

    /// Reads a regular file of at most `max` bytes, never through a symlink, never opening a FIFO or device.
    pub(crate) fn read(&self, name: &str, max: u64) -> Result<Vec<u8>, ReadRefusal> {
        let held = self.lock();
        let entry = fsat::open_entry_at(held.fd.as_fd(), plain(name).map_err(ReadRefusal::Io)?).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                ReadRefusal::Missing
            } else {
                ReadRefusal::Io(e)
            }
        })?;
        let (file, stat) = match entry {
            fsat::Entry::File(file, stat) => (file, stat),
            fsat::Entry::Symlink(..) => return Err(ReadRefusal::Symlink),
            fsat::Entry::Dir | fsat::Entry::Fifo(_) | fsat::Entry::Special(_) | fsat::Entry::Other => {
                return Err(ReadRefusal::NotRegular)
            }
        };
        let size = stat.st_size.max(0) as u64;
        if size > max {
            return Err(ReadRefusal::TooLarge(size));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        file.take(max + 1).read_to_end(&mut bytes).map_err(ReadRefusal::Io)?;
        if bytes.len() as u64 > max {
            return Err(ReadRefusal::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Replaces `name` atomically: a fresh temp file (`O_EXCL|O_NOFOLLOW`), fsync,
    /// rename over `name`, fsync of the directory. Whatever the app planted at
    /// `name`, a symlink or a hard link to a host file included, is replaced, never written through.
    pub(crate) fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_via_temp(name, bytes, mode, |dir, tmp, target| fsat::rename_at(dir, tmp, dir, target))
    }

    /// Like [`SharedDir::write_atomic`], but fails with `AlreadyExists` rather than replace anything at `name`.
    pub(crate) fn write_atomic_new(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_via_temp(name, bytes, mode, |dir, tmp, target| {
            fsat::hard_link_at(dir, tmp, dir, target)?;
            fsat::remove_tree_at(dir, tmp)
        })
    }

    fn write_via_temp(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        place: impl Fn(BorrowedFd<'_>, &[u8], &[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        let held = self.lock();
        let dir = held.fd.as_fd();
        let target = plain(name)?;
        let tmp_name = format!(".{name}.{}.tmp", unique_suffix());
        let tmp = plain(&tmp_name)?;
        let mut file = fsat::create_file_at(dir, tmp)?;
        let written = (|| {
            file.write_all(bytes)?;
            fsat::set_mode(&file, mode)?;
            file.sync_all()?;
            place(dir, tmp, target)?;
            fsat::sync(dir)
        })();
        if written.is_err() {
            let _ = fsat::remove_tree_at(dir, tmp);
        }
        written
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn refused(path: &Path, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        format!(
            "the shared directory {} {what}; upgraderd does nothing there until it is a real directory again",
            path.display()
        ),
    )
}

/// Opens every component of `path` from `/` without following a symlink.
fn open_held(path: &Path) -> io::Result<Held> {
    let mut fd = fsat::open_trusted_dir(Path::new("/"))?;
    for component in path.components() {
        let name = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => name,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} has `..` in it", path.display())))
            }
        };
        fd = fsat::open_dir_at(fd.as_fd(), name.as_bytes()).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(path, "has a symlink or a non-directory in its path"),
            _ => io::Error::new(e.kind(), format!("cannot open the shared directory {}: {e}", path.display())),
        })?;
    }
    let stat = fsat::stat_of(&fd)?;
    Ok(Held { fd, dev: stat.st_dev, ino: stat.st_ino, uid: stat.st_uid })
}

/// A name inside the directory: one component, never `.`, `..` or a path.
fn plain(name: &str) -> io::Result<&[u8]> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    Ok(name.as_bytes())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_planted_symlink_is_replaced_never_written_through_or_read() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let secret = root.path().join("secret");
        std::fs::write(&secret, "host secret").unwrap();
        symlink(&secret, shared.join("status.json")).unwrap();
        symlink(&secret, shared.join("trigger")).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        assert!(matches!(dir.read("trigger", 1024), Err(ReadRefusal::Symlink)));
        dir.write_atomic("status.json", b"{}", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
        assert_eq!(std::fs::read_to_string(shared.join("status.json")).unwrap(), "{}");
        assert_eq!(dir.entry("trigger").unwrap(), Entry::Other);
        dir.remove("trigger").unwrap();
        assert!(secret.exists(), "removing a link never removes its target");
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_refused_and_nothing_happens_in_the_target() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        let host = root.path().join("host");
        std::fs::create_dir(&shared).unwrap();
        std::fs::create_dir(&host).unwrap();
        std::fs::write(host.join("trigger"), "x").unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        dir.check().unwrap();
        std::fs::rename(&shared, root.path().join("moved")).unwrap();
        symlink(&host, &shared).unwrap();
        let err = dir.check().unwrap_err().to_string();
        assert!(err.contains("was replaced by a symlink"), "{err}");
        assert!(SharedDir::open(&shared).is_err(), "a symlinked path is never opened");
        assert!(host.join("trigger").exists());
    }

    #[test]
    fn a_directory_made_again_is_reopened_and_a_symlinked_parent_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        std::fs::remove_dir(&shared).unwrap();
        std::fs::create_dir(&shared).unwrap();
        dir.check().unwrap();
        dir.write_atomic("a", b"1", 0o600).unwrap();
        assert_eq!(std::fs::read(shared.join("a")).unwrap(), b"1");
        std::fs::create_dir(root.path().join("real")).unwrap();
        symlink(root.path().join("real"), root.path().join("via")).unwrap();
        let err = SharedDir::open(&root.path().join("via")).unwrap_err().to_string();
        assert!(err.contains("symlink"), "{err}");
    }

    #[test]
    fn a_hard_link_to_a_host_file_at_a_written_name_is_replaced_never_written_into() {
        let root = tempfile::tempdir().unwrap();
        let shared = root.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        let host = root.path().join("host-file");
        std::fs::write(&host, "host content").unwrap();
        std::fs::hard_link(&host, shared.join("status.json")).unwrap();
        let dir = SharedDir::open(&shared).unwrap();
        dir.write_atomic("status.json", b"{}", 0o644).unwrap();
        assert_eq!(std::fs::read_to_string(&host).unwrap(), "host content");
        assert_eq!(std::fs::read(shared.join("status.json")).unwrap(), b"{}");
    }

    #[test]
    fn reads_refuse_links_fifos_and_large_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = SharedDir::open(root.path()).unwrap();
        std::fs::write(root.path().join("real"), "x").unwrap();
        symlink(root.path().join("real"), root.path().join("link")).unwrap();
        assert!(matches!(dir.read("link", 10), Err(ReadRefusal::Symlink)));
        assert!(matches!(dir.read("nope", 10), Err(ReadRefusal::Missing)));
        std::fs::write(root.path().join("big"), vec![b'a'; 100]).unwrap();
        assert!(matches!(dir.read("big", 10), Err(ReadRefusal::TooLarge(100))));
        let fifo = std::ffi::CString::new(root.path().join("fifo").to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
        assert!(matches!(dir.read("fifo", 10), Err(ReadRefusal::NotRegular)));
        assert_eq!(dir.read("real", 10).unwrap(), b"x");
    }

    #[test]
    fn write_new_never_replaces_and_names_stay_inside() {
        let root = tempfile::tempdir().unwrap();
        let dir = SharedDir::open(root.path()).unwrap();
        dir.write_atomic_new("t", b"first", 0o644).unwrap();
        let err = dir.write_atomic_new("t", b"second", 0o644).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(root.path().join("t")).unwrap(), b"first");
        assert!(dir.write_atomic("../escape", b"x", 0o644).is_err());
        assert!(dir.rename("t", "a/b").is_err());
    }
}
