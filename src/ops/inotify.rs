//! Watches the trigger directory with inotify: which events concern the
//! trigger's name (and one other name the caller asks about), and whether the
//! watch must fall back to a rescan (queue overflow, the directory itself
//! removed or moved).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// What a batch of events says about the trigger.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seen {
    /// The trigger was renamed into place or closed after writing: complete.
    pub complete: bool,
    /// The trigger's name was created or changed without being closed yet.
    pub touched: bool,
    /// Events were lost or the directory went away: look again from scratch.
    pub rescan: bool,
    /// The watch ended (directory removed or moved); a new one is needed.
    pub watch_gone: bool,
    /// Something was created, written or moved in under the other name asked about.
    pub other: bool,
}

pub(crate) struct DirWatch {
    fd: OwnedFd,
    /// Watch descriptors of spool directories, where any new file counts.
    spools: Vec<i32>,
}

const MASK: u32 = libc::IN_CLOSE_WRITE
    | libc::IN_MOVED_TO
    | libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW;

impl DirWatch {
    pub(crate) fn new(dir: &Path) -> io::Result<DirWatch> {
        // SAFETY: inotify_init1 returns a new descriptor or -1.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), path.as_ptr(), MASK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(DirWatch { fd, spools: Vec::new() })
    }

    /// Also watches `dir`, a spool where every new file counts (not only `name`).
    pub(crate) fn add_spool(&mut self, dir: &Path) -> io::Result<()> {
        let path = CString::new(dir.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: `path` is a valid NUL-terminated string for the call's duration.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), path.as_ptr(), MASK) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        self.spools.push(wd);
        Ok(())
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Reads every pending event and sums up what they say about `name` and `other`.
    pub(crate) fn read(&self, name: &str, other: &str) -> io::Result<Seen> {
        let mut seen = Seen::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: reads into a buffer we own, of the length given.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(seen),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(err),
                };
            }
            if n == 0 {
                return Ok(seen);
            }
            summarize(&buf[..n as usize], (name, other), &self.spools, &mut seen);
        }
    }
}

fn summarize(mut bytes: &[u8], (name, other): (&str, &str), spools: &[i32], seen: &mut Seen) {
    const HEADER: usize = std::mem::size_of::<libc::inotify_event>();
    while bytes.len() >= HEADER {
        // SAFETY: the kernel writes whole events; the header is read unaligned from the buffer.
        let event: libc::inotify_event = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        let len = event.len as usize;
        let raw_name = &bytes[HEADER..(HEADER + len).min(bytes.len())];
        let event_name = raw_name.split(|b| *b == 0).next().unwrap_or_default();
        let mask = event.mask;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            seen.rescan = true;
        }
        let in_spool = spools.contains(&event.wd);
        if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0 {
            seen.rescan = true;
            seen.watch_gone |= !in_spool;
        }
        let spool_made = event_name.strip_suffix(b".d") == Some(name.as_bytes());
        if in_spool || spool_made {
            seen.complete |= mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_CREATE) != 0;
        } else if event_name == name.as_bytes() {
            if mask & (libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO) != 0 {
                seen.complete = true;
            } else {
                seen.touched = true;
            }
        } else if event_name == other.as_bytes() {
            seen.other |= mask & (libc::IN_CREATE | libc::IN_CLOSE_WRITE | libc::IN_MOVED_TO | libc::IN_MODIFY) != 0;
        }
        bytes = &bytes[(HEADER + len).min(bytes.len())..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sees_an_atomic_rename_and_a_plain_write() {
        let dir = tempfile::tempdir().unwrap();
        let watch = DirWatch::new(dir.path()).unwrap();
        let read = || watch.read(".upgrade-trigger", "request").unwrap();
        assert_eq!(read(), Seen::default());
        std::fs::write(dir.path().join("tmp"), "{}").unwrap();
        std::fs::rename(dir.path().join("tmp"), dir.path().join(".upgrade-trigger")).unwrap();
        let seen = read();
        assert!(seen.complete && !seen.rescan && !seen.other, "{seen:?}");
        std::fs::write(dir.path().join("unrelated"), "x").unwrap();
        assert_eq!(read(), Seen::default(), "other names are ignored");
        std::fs::write(dir.path().join("request"), "1736000000000").unwrap();
        assert_eq!(read(), Seen { other: true, ..Seen::default() }, "the other name asked about");
        std::os::unix::fs::symlink("/", dir.path().join("link")).unwrap();
        std::fs::rename(dir.path().join("link"), dir.path().join("request")).unwrap();
        assert_eq!(read(), Seen { other: true, ..Seen::default() }, "a link moved in counts too");
        for name in [".upgrade-trigger", "unrelated", "request"] {
            std::fs::remove_file(dir.path().join(name)).unwrap();
        }
        std::fs::remove_file(dir.path().join("tmp")).ok();
        std::fs::remove_dir(dir.path()).unwrap();
        assert!(read().watch_gone);
    }
}
