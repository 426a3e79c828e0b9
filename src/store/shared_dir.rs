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

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use crate::store::files::unique_suffix;

/// Why a guarded read refused a file.
#[derive(Debug)]
pub enum ReadRefusal {
    Missing,
    Symlink,
    NotRegular,
    TooLarge(u64),
    Io(io::Error),
}

/// What a name in the directory is, looked at without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
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
pub struct SharedDir {
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
    pub fn open(path: &Path) -> io::Result<SharedDir> {
        let path = std::path::absolute(path)?;
        let held = open_held(&path)?;
        Ok(SharedDir { path, held: Mutex::new(held) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes sure the configured path still names the held directory; reopens a
    /// directory that was removed and made again (same owner only). An error
    /// says what changed: nothing may be done in the directory until it is put right.
    pub fn check(&self) -> io::Result<()> {
        let mut held = self.lock();
        match lstat(&self.path) {
            Ok(st) if is_dir(&st) && (st.st_dev, st.st_ino) == (held.dev, held.ino) => Ok(()),
            Ok(st) if is_link(&st) => Err(refused(&self.path, "was replaced by a symlink")),
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
    pub fn entry(&self, name: &str) -> io::Result<Entry> {
        let held = self.lock();
        match fstatat(&held.fd, name) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Entry::Missing),
            Err(e) => Err(e),
            Ok(st) if (st.st_mode & libc::S_IFMT) == libc::S_IFREG => {
                let modified = std::time::UNIX_EPOCH
                    + std::time::Duration::new(
                        st.st_mtime.max(0) as u64,
                        st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
                    );
                Ok(Entry::File { age: modified.elapsed().unwrap_or_default() })
            }
            Ok(_) => Ok(Entry::Other),
        }
    }

    /// The names in the directory, in byte order; names that are not UTF-8 are left out
    /// (no name upgraderd reads is).
    pub fn names(&self) -> io::Result<Vec<String>> {
        let held = self.lock();
        let mut names: Vec<String> = list(&held.fd)?.into_iter().filter_map(|name| name.into_string().ok()).collect();
        names.sort();
        Ok(names)
    }

    /// Renames `from` to `to` inside the directory (a symlink is moved as a link, never followed).
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let held = self.lock();
        let (from, to) = (c_name(from)?, c_name(to)?);
        let fd = held.fd.as_raw_fd();
        cvt(unsafe { libc::renameat(fd, from.as_ptr(), fd, to.as_ptr()) })?;
        fsync(&held.fd)
    }

    /// Removes `name` (a file, a link, or a directory tree the app put there); missing is fine.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let held = self.lock();
        remove_at(&held.fd, &c_name(name)?)?;
        fsync(&held.fd)
    }

    /// Reads a regular file of at most `max` bytes, never through a symlink, never blocking on a FIFO.
    pub fn read(&self, name: &str, max: u64) -> Result<Vec<u8>, ReadRefusal> {
        let held = self.lock();
        let flags = libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC;
        let fd = openat(&held.fd, name, flags, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => ReadRefusal::Symlink,
            _ if e.kind() == io::ErrorKind::NotFound => ReadRefusal::Missing,
            _ => ReadRefusal::Io(e),
        })?;
        let file = File::from(fd);
        let meta = file.metadata().map_err(ReadRefusal::Io)?;
        if !meta.file_type().is_file() {
            return Err(ReadRefusal::NotRegular);
        }
        if meta.len() > max {
            return Err(ReadRefusal::TooLarge(meta.len()));
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        file.take(max + 1).read_to_end(&mut bytes).map_err(ReadRefusal::Io)?;
        if bytes.len() as u64 > max {
            return Err(ReadRefusal::TooLarge(bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Replaces `name` atomically: a fresh temp file (`O_EXCL|O_NOFOLLOW`), fsync,
    /// rename over `name`, fsync of the directory. Whatever the app planted at
    /// `name`, a symlink included, is replaced, never written through.
    pub fn write_atomic(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_via_temp(name, bytes, mode, |dir, tmp, target| {
            cvt(unsafe { libc::renameat(dir, tmp.as_ptr(), dir, target.as_ptr()) }).map(drop)
        })
    }

    /// Like [`SharedDir::write_atomic`], but fails with `AlreadyExists` rather than replace anything at `name`.
    pub fn write_atomic_new(&self, name: &str, bytes: &[u8], mode: u32) -> io::Result<()> {
        self.write_via_temp(name, bytes, mode, |dir, tmp, target| {
            cvt(unsafe { libc::linkat(dir, tmp.as_ptr(), dir, target.as_ptr(), 0) })?;
            cvt(unsafe { libc::unlinkat(dir, tmp.as_ptr(), 0) }).map(drop)
        })
    }

    fn write_via_temp(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        place: impl Fn(libc::c_int, &CString, &CString) -> io::Result<()>,
    ) -> io::Result<()> {
        let held = self.lock();
        let target = c_name(name)?;
        let tmp_name = format!(".{name}.{}.tmp", unique_suffix());
        let tmp = c_name(&tmp_name)?;
        let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        let mut file = File::from(openat(&held.fd, &tmp_name, flags, mode)?);
        let written = (|| {
            file.write_all(bytes)?;
            cvt(unsafe { libc::fchmod(file.as_raw_fd(), mode) })?;
            file.sync_all()?;
            place(held.fd.as_raw_fd(), &tmp, &target)?;
            fsync(&held.fd)
        })();
        if written.is_err() {
            unsafe { libc::unlinkat(held.fd.as_raw_fd(), tmp.as_ptr(), 0) };
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

/// Opens every component of `path` from `/` with `O_NOFOLLOW|O_DIRECTORY`.
fn open_held(path: &Path) -> io::Result<Held> {
    if !path.is_absolute() {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not an absolute path", path.display())));
    }
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let mut fd = File::open("/")?.into();
    for component in path.components() {
        let name = match component {
            Component::RootDir | Component::CurDir => continue,
            Component::Normal(name) => name,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} has `..` in it", path.display())))
            }
        };
        fd = openat(&fd, name, flags, 0).map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => refused(path, "has a symlink or a non-directory in its path"),
            _ => io::Error::new(e.kind(), format!("cannot open the shared directory {}: {e}", path.display())),
        })?;
    }
    let st = fstat(&fd)?;
    Ok(Held { fd, dev: st.st_dev, ino: st.st_ino, uid: st.st_uid })
}

fn c_name(name: impl AsRef<OsStr>) -> io::Result<CString> {
    let name = name.as_ref();
    if name.as_bytes().contains(&b'/') || name.is_empty() || name == ".." || name == "." {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?} is not a plain file name")));
    }
    CString::new(name.as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a file name"))
}

fn openat(dir: &OwnedFd, name: impl AsRef<OsStr>, flags: libc::c_int, mode: u32) -> io::Result<OwnedFd> {
    let name = c_name(name)?;
    let fd = cvt(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags, mode as libc::c_uint) })?;
    // SAFETY: openat returned a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fstatat(dir: &OwnedFd, name: &str) -> io::Result<libc::stat> {
    let name = c_name(name)?;
    let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
    cvt(unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

fn lstat(path: &Path) -> io::Result<libc::stat> {
    let path = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::other("a NUL byte in a path"))?;
    let mut st = unsafe { std::mem::zeroed::<libc::stat>() };
    cvt(unsafe { libc::lstat(path.as_ptr(), &mut st) })?;
    Ok(st)
}

fn is_dir(st: &libc::stat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFDIR
}

fn is_link(st: &libc::stat) -> bool {
    (st.st_mode & libc::S_IFMT) == libc::S_IFLNK
}

fn fsync(fd: &OwnedFd) -> io::Result<()> {
    cvt(unsafe { libc::fsync(fd.as_raw_fd()) }).map(drop)
}

/// Removes a name, and a directory's contents first, never following a link.
fn remove_at(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    let raw = dir.as_raw_fd();
    if unsafe { libc::unlinkat(raw, name.as_ptr(), 0) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOENT) => Ok(()),
        Some(libc::EISDIR) | Some(libc::EPERM) => {
            let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
            let child = cvt(unsafe { libc::openat(raw, name.as_ptr(), flags) })?;
            // SAFETY: openat returned a fresh descriptor that nothing else owns.
            let child = unsafe { OwnedFd::from_raw_fd(child) };
            for entry in list(&child)? {
                remove_at(&child, &entry)?;
            }
            cvt(unsafe { libc::unlinkat(raw, name.as_ptr(), libc::AT_REMOVEDIR) }).map(drop)
        }
        _ => Err(err),
    }
}

/// The names in a directory held open (not `.` and `..`).
fn list(dir: &OwnedFd) -> io::Result<Vec<CString>> {
    // Read through /proc/self/fd so the listing is of the handle, not of a path that could change.
    let entries = std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))?;
    entries
        .map(|entry| {
            let entry = entry?;
            CString::new(entry.file_name().as_bytes()).map_err(|_| io::Error::other("a NUL byte in a file name"))
        })
        .collect()
}

fn cvt(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
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
    fn reads_refuse_links_fifos_and_large_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = SharedDir::open(root.path()).unwrap();
        std::fs::write(root.path().join("real"), "x").unwrap();
        symlink(root.path().join("real"), root.path().join("link")).unwrap();
        assert!(matches!(dir.read("link", 10), Err(ReadRefusal::Symlink)));
        assert!(matches!(dir.read("nope", 10), Err(ReadRefusal::Missing)));
        std::fs::write(root.path().join("big"), vec![b'a'; 100]).unwrap();
        assert!(matches!(dir.read("big", 10), Err(ReadRefusal::TooLarge(100))));
        let fifo = CString::new(root.path().join("fifo").to_str().unwrap()).unwrap();
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
