//! Handle-relative access to data the app can write. Every lookup is one name
//! relative to an open directory handle, made with `O_NOFOLLOW`; what was
//! opened is judged by `fstat` on the handle, never by a second lookup of the
//! path. A name swapped for a symlink between two steps therefore cannot lead
//! a backup to read, or a restore to write, anything outside the data.
//!
//! Names are bytes (`&[u8]`, one path component, no `/`): the file system
//! does not promise UTF-8, so neither does this module.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat, Timespec, Timestamps, CWD, UTIME_OMIT};
use rustix::io::Errno;

/// What a name in a directory is when it is opened.
pub(crate) enum Entry {
    /// A regular file, opened for reading.
    File(File, Stat),
    /// A symbolic link: its target, verbatim, and its own status.
    Symlink(Vec<u8>, Stat),
    /// A directory (callers that expect one open it with [`open_dir_at`]).
    Dir,
    /// A FIFO, never opened (opening one blocks until a peer comes): its status only.
    Fifo(Stat),
    /// A socket or a device node (or a type this module does not know): never opened.
    Special(FileType),
    /// A regular file that was replaced between its lookup and its opening.
    Other,
}

/// What a socket or device node is, in words for a message ("a socket").
pub(crate) fn describe_special(kind: FileType) -> &'static str {
    match kind {
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device node",
        FileType::BlockDevice => "a block device node",
        FileType::Fifo => "a FIFO",
        _ => "a file of an unknown type",
    }
}

/// The type of what `stat` describes.
pub(crate) fn file_type(stat: &Stat) -> FileType {
    FileType::from_raw_mode(stat.st_mode)
}

/// Opens a directory the operator named (a data path or a restore target).
/// Its own path is trusted; what lies below it is not.
pub(crate) fn open_trusted_dir(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(CWD, path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?)
}

/// Opens the directory `name` inside `dir`; a symlink there is refused (`ELOOP`), a non-directory too (`ENOTDIR`).
pub(crate) fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(rustix::fs::openat(dir, name, flags, Mode::empty())?)
}

/// The status of `name` inside `dir`, not following a symlink.
pub(crate) fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Stat> {
    Ok(rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The status of an open handle.
pub(crate) fn stat_of(fd: impl AsFd) -> io::Result<Stat> {
    Ok(rustix::fs::fstat(fd)?)
}

/// Opens `name` inside `dir` without following it and says what it is. A
/// regular file comes back open for reading; nothing else is ever opened for
/// reading, so a FIFO or device planted in its place is never read or blocked on.
pub(crate) fn open_entry_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Entry> {
    let handle = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    let stat = rustix::fs::fstat(&handle)?;
    Ok(match file_type(&stat) {
        FileType::RegularFile => match reopen_for_reading(&handle, dir, name, &stat)? {
            Some(file) => Entry::File(file, stat),
            None => Entry::Other,
        },
        FileType::Symlink => {
            let target = rustix::fs::readlinkat(&handle, c"", Vec::new())?;
            Entry::Symlink(target.into_bytes(), stat)
        }
        FileType::Directory => Entry::Dir,
        FileType::Fifo => Entry::Fifo(stat),
        other => Entry::Special(other),
    })
}

/// Turns a path-only handle on a regular file into a readable one. Through
/// `/proc/self/fd` the kernel reopens the very inode held, with no lookup in
/// the data directory; without `/proc`, the name is opened again and kept only
/// if it is still the same inode (`None` if it changed in between).
fn reopen_for_reading(handle: &OwnedFd, dir: BorrowedFd<'_>, name: &[u8], stat: &Stat) -> io::Result<Option<File>> {
    let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY;
    let magic = format!("/proc/self/fd/{}", handle.as_raw_fd());
    match rustix::fs::openat(CWD, magic.as_str(), flags, Mode::empty()) {
        Ok(fd) => return Ok(Some(File::from(fd))),
        Err(Errno::NOENT) => {}
        Err(err) => return Err(err.into()),
    }
    let fd = rustix::fs::openat(dir, name, flags | OFlags::NOFOLLOW | OFlags::NONBLOCK, Mode::empty())?;
    let now = rustix::fs::fstat(&fd)?;
    let same = now.st_dev == stat.st_dev && now.st_ino == stat.st_ino;
    Ok(same.then(|| File::from(fd)))
}

/// The names in a directory (without `.` and `..`), sorted bytewise.
pub(crate) fn read_names(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let name = entry?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Creates a new regular file `name` in `dir`; never opens an existing one or follows a link.
pub(crate) fn create_file_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<File> {
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    Ok(File::from(rustix::fs::openat(dir, name, flags, Mode::from_raw_mode(0o600))?))
}

/// Creates the directory `name` in `dir` (private until its real mode is set) and opens it.
pub(crate) fn create_dir_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<OwnedFd> {
    rustix::fs::mkdirat(dir, name, Mode::from_raw_mode(0o700))?;
    open_dir_at(dir, name)
}

/// Creates the FIFO `name` in `dir` (private until its real mode is set); it is never opened.
pub(crate) fn mkfifo_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::mknodat(dir, name, FileType::Fifo, Mode::from_raw_mode(0o600), 0)?)
}

/// Sets the permission bits of `name` in `dir` itself without opening it (a
/// FIFO would block) and without following it: the name is held by a path-only
/// handle, and the kernel changes the very inode held through `/proc/self/fd`.
/// A symlink there is refused (`ELOOP`).
pub(crate) fn set_mode_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let handle = rustix::fs::openat(dir, name, OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty())?;
    if file_type(&rustix::fs::fstat(&handle)?) == FileType::Symlink {
        return Err(io::Error::from_raw_os_error(libc::ELOOP));
    }
    let magic = format!("/proc/self/fd/{}", handle.as_raw_fd());
    let mode = Mode::from_raw_mode(mode & 0o7777);
    match rustix::fs::chmodat(CWD, magic.as_str(), mode, AtFlags::empty()) {
        Err(Errno::NOENT) => Ok(rustix::fs::chmodat(dir, name, mode, AtFlags::SYMLINK_NOFOLLOW)?),
        other => Ok(other?),
    }
}

/// Creates the symlink `name` in `dir` pointing at `target`, verbatim.
pub(crate) fn symlink_at(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::symlinkat(target, dir, name)?)
}

/// Makes `to_dir/to` another name for the inode at `from_dir/from` (a symlink there is linked, not followed).
pub(crate) fn hard_link_at(from_dir: BorrowedFd<'_>, from: &[u8], to_dir: BorrowedFd<'_>, to: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::linkat(from_dir, from, to_dir, to, AtFlags::empty())?)
}

/// Renames `from_dir/from` to `to_dir/to`; a symlink is moved, never followed.
pub(crate) fn rename_at(from_dir: BorrowedFd<'_>, from: &[u8], to_dir: BorrowedFd<'_>, to: &[u8]) -> io::Result<()> {
    Ok(rustix::fs::renameat(from_dir, from, to_dir, to)?)
}

/// Sets the owner of an open file or directory.
pub(crate) fn set_owner(fd: impl AsFd, uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::fchown(fd, Some(uid), Some(gid))?)
}

/// Sets the owner of `name` in `dir` itself, not of what it may point to.
pub(crate) fn set_owner_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let (uid, gid) = (rustix::fs::Uid::from_raw(uid), rustix::fs::Gid::from_raw(gid));
    Ok(rustix::fs::chownat(dir, name, Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW)?)
}

/// Sets the permission bits of an open file or directory.
pub(crate) fn set_mode(fd: impl AsFd, mode: u32) -> io::Result<()> {
    Ok(rustix::fs::fchmod(fd, Mode::from_raw_mode(mode & 0o7777))?)
}

/// Sets the modification time of an open file or directory (the access time is left alone).
pub(crate) fn set_mtime(fd: impl AsFd, seconds: i64) -> io::Result<()> {
    Ok(rustix::fs::futimens(fd, &mtime_only(seconds))?)
}

/// Sets the modification time of `name` in `dir` itself, not of what it may point to.
pub(crate) fn set_mtime_at(dir: BorrowedFd<'_>, name: &[u8], seconds: i64) -> io::Result<()> {
    Ok(rustix::fs::utimensat(dir, name, &mtime_only(seconds), AtFlags::SYMLINK_NOFOLLOW)?)
}

fn mtime_only(seconds: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec { tv_sec: 0, tv_nsec: UTIME_OMIT },
        last_modification: Timespec { tv_sec: seconds, tv_nsec: 0 },
    }
}

/// fsyncs an open directory so that the entries created or renamed in it survive a crash.
pub(crate) fn sync(fd: impl AsFd) -> io::Result<()> {
    Ok(rustix::fs::fsync(fd)?)
}

/// How deep a tree upgraderd walks. Each level holds a handle and a stack
/// frame, and the app controls the depth of its data: a deeper tree is an
/// error naming the limit, never a crash.
pub(crate) const MAX_DEPTH: usize = 1024;

/// The error for a tree nested deeper than [`MAX_DEPTH`].
pub(crate) fn too_deep() -> io::Error {
    io::Error::other(format!("the tree is nested deeper than {MAX_DEPTH} directories"))
}

/// Removes `name` from `dir`: a file or link is unlinked, a directory emptied
/// depth first through handles and removed. Missing is fine; nothing is followed.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    remove_tree_within(dir, name, MAX_DEPTH)
}

fn remove_tree_within(dir: BorrowedFd<'_>, name: &[u8], levels_left: usize) -> io::Result<()> {
    let stat = match lstat_at(dir, name) {
        Ok(stat) => stat,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    if file_type(&stat) == FileType::Directory {
        let inner = open_dir_at(dir, name)?;
        for child in read_names(inner.as_fd())? {
            if levels_left == 0 {
                return Err(too_deep());
            }
            remove_tree_within(inner.as_fd(), &child, levels_left - 1)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// Whether an error says a name was not what the caller needed: gone, a
/// symlink where a directory was expected, or not a directory.
pub(crate) fn is_replaced_or_gone(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOENT | libc::ELOOP | libc::ENOTDIR))
}

/// The open directories along one path below a base handle, kept while
/// consecutive lookups share a prefix (walks and archives go depth first), so a
/// directory is looked up once and then always reached through its handle.
#[derive(Default)]
pub(crate) struct Cursor {
    names: Vec<Vec<u8>>,
    handles: Vec<OwnedFd>,
}

impl Cursor {
    /// Forgets every handle (for a new base).
    pub(crate) fn reset(&mut self) {
        self.names.clear();
        self.handles.clear();
    }

    /// The handle of `base/<parents...>`, opening (never following) what is not held yet.
    pub(crate) fn open<'a>(&'a mut self, base: BorrowedFd<'a>, parents: &[&[u8]]) -> io::Result<BorrowedFd<'a>> {
        let shared = self.names.iter().zip(parents).take_while(|(held, wanted)| held.as_slice() == **wanted).count();
        self.names.truncate(shared);
        self.handles.truncate(shared);
        for name in &parents[shared..] {
            let handle = match self.handles.last() {
                Some(last) => open_dir_at(last.as_fd(), name)?,
                None => open_dir_at(base, name)?,
            };
            self.names.push(name.to_vec());
            self.handles.push(handle);
        }
        Ok(self.handles.last().map_or(base, |h| h.as_fd()))
    }

    /// Keeps `handle`, just created or opened at `parents/name`, for the lookups that follow.
    pub(crate) fn adopt(&mut self, parents: &[&[u8]], name: &[u8], handle: OwnedFd) {
        if self.names.len() == parents.len() && self.names.iter().zip(parents).all(|(a, b)| a.as_slice() == *b) {
            self.names.push(name.to_vec());
            self.handles.push(handle);
        }
    }
}

/// Splits a relative path in bytes into its components.
pub(crate) fn components(relative: &[u8]) -> Vec<&[u8]> {
    relative.split(|b| *b == b'/').filter(|c| !c.is_empty()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn a_symlink_is_never_opened_as_a_directory_or_read_through() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), dir.path().join("sub")).unwrap();
        symlink(outside.path().join("secret"), dir.path().join("link")).unwrap();
        let base = open_trusted_dir(dir.path()).unwrap();
        let err = open_dir_at(base.as_fd(), b"sub").unwrap_err();
        assert!(is_replaced_or_gone(&err), "{err}");
        match open_entry_at(base.as_fd(), b"link").unwrap() {
            Entry::Symlink(target, _) => {
                assert_eq!(target, outside.path().join("secret").as_os_str().as_encoded_bytes())
            }
            _ => panic!("a symlink must be reported as one"),
        }
        let mut cursor = Cursor::default();
        assert!(cursor.open(base.as_fd(), &[b"sub"]).is_err());
    }

    #[test]
    fn a_directory_held_by_the_cursor_stays_reachable_when_its_name_is_swapped() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let base = open_trusted_dir(dir.path()).unwrap();
        let mut cursor = Cursor::default();
        cursor.open(base.as_fd(), &[b"sub"]).unwrap();
        std::fs::rename(dir.path().join("sub"), dir.path().join("moved")).unwrap();
        symlink("/", dir.path().join("sub")).unwrap();
        let held = cursor.open(base.as_fd(), &[b"sub"]).unwrap();
        create_file_at(held, b"f").unwrap();
        assert!(dir.path().join("moved/f").exists());
    }

    #[test]
    fn trees_are_removed_without_following_links() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("keep"), "k").unwrap();
        std::fs::create_dir_all(dir.path().join("t/a")).unwrap();
        symlink(outside.path(), dir.path().join("t/a/out")).unwrap();
        let base = open_trusted_dir(dir.path()).unwrap();
        remove_tree_at(base.as_fd(), b"t").unwrap();
        assert!(!dir.path().join("t").exists());
        assert!(outside.path().join("keep").exists());
        remove_tree_at(base.as_fd(), b"t").unwrap();
    }
}
