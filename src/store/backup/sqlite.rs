//! Consistent copies of live SQLite databases, through SQLite's online backup
//! API, and the handle-relative way to open a database inside the app's data.
//!
//! SQLite opens files by path and resolves every symlink in that path itself,
//! so a directory swapped for a link between our check and its open would make
//! it read a host database. [`snapshot_at`] therefore hands SQLite the path
//! `/proc/self/fd/<dir>/<name>` through a VFS that uses the name verbatim: the
//! kernel resolves `/proc/self/fd/<dir>` to the directory handle we hold (no
//! path lookup in the data), and SQLite opens the database, its `-wal` and its
//! `-shm` inside it with `O_NOFOLLOW`.

use std::ffi::{c_char, c_int, CStr, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use rusqlite::backup::{Backup, StepResult};
use rusqlite::{ffi, Connection, OpenFlags};

/// The name of the VFS that takes database paths verbatim.
const HANDLE_VFS: &CStr = c"upgraderd-verbatim";

/// Copies the SQLite database `name` inside the directory held by `dir` page by
/// page under one read transaction, so the copy holds exactly what was
/// committed when the copy started.
pub(super) fn snapshot_at(dir: BorrowedFd<'_>, name: &[u8], target: &Path) -> Result<()> {
    if !Path::new("/proc/self/fd").is_dir() {
        bail!("/proc is not mounted: SQLite databases cannot be opened through a directory handle");
    }
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let path = PathBuf::from(OsStr::from_bytes(&path));
    let vfs = verbatim_vfs()?;
    let src = Connection::open_with_flags_and_vfs(&path, read_only(), vfs)?;
    copy_database(src, target)
}

fn read_only() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
}

fn copy_database(src: Connection, target: &Path) -> Result<()> {
    src.busy_timeout(Duration::from_secs(30))?;
    let mut dst = Connection::open(target)?;
    {
        let backup = Backup::new(&src, &mut dst)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            // -1: all pages in one step, so a concurrent writer cannot force a restart.
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::More => {}
                StepResult::Busy | StepResult::Locked if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                _ => bail!("the database stayed locked by another process for two minutes"),
            }
        }
    }
    dst.close().map_err(|(_, e)| e)?;
    Ok(())
}

/// Registers (once) a copy of SQLite's `unix` VFS whose full-pathname step
/// returns the name unchanged instead of resolving symlinks textually.
fn verbatim_vfs() -> Result<&'static str> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED.get_or_init(register_verbatim_vfs).clone().map_err(|e| anyhow!(e))?;
    HANDLE_VFS.to_str().map_err(|e| anyhow!(e))
}

fn register_verbatim_vfs() -> Result<(), String> {
    // SAFETY: sqlite3_vfs_find returns SQLite's static `unix` VFS or null. The
    // copy is leaked, so it lives as long as SQLite may use it; only its name,
    // list link and full-pathname method differ from the original's.
    unsafe {
        let unix = ffi::sqlite3_vfs_find(c"unix".as_ptr());
        if unix.is_null() {
            return Err("SQLite has no `unix` VFS".into());
        }
        let mut vfs: ffi::sqlite3_vfs = *unix;
        vfs.zName = HANDLE_VFS.as_ptr();
        vfs.pNext = std::ptr::null_mut();
        vfs.xFullPathname = Some(verbatim_full_pathname);
        let rc = ffi::sqlite3_vfs_register(Box::leak(Box::new(vfs)), 0);
        if rc != ffi::SQLITE_OK {
            return Err(format!("cannot register a SQLite VFS (code {rc})"));
        }
    }
    Ok(())
}

/// `xFullPathname` that copies the name as given.
unsafe extern "C" fn verbatim_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    out_len: c_int,
    out: *mut c_char,
) -> c_int {
    // SAFETY: SQLite passes a NUL-terminated name and an output buffer of out_len bytes.
    unsafe {
        let len = CStr::from_ptr(name).to_bytes_with_nul().len();
        if len > usize::try_from(out_len).unwrap_or(0) {
            return ffi::SQLITE_CANTOPEN;
        }
        std::ptr::copy_nonoverlapping(name, out, len);
    }
    ffi::SQLITE_OK
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    use crate::store::fsat;

    fn database(path: &Path, value: &str) {
        let db = Connection::open(path).unwrap();
        db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT)").unwrap();
        db.execute("INSERT INTO t VALUES (?1)", [value]).unwrap();
    }

    fn value(path: &Path) -> String {
        Connection::open(path).unwrap().query_row("SELECT v FROM t", [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn a_snapshot_reads_the_database_in_the_held_directory_even_after_a_swap() {
        let data = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(data.path().join("db")).unwrap();
        database(&data.path().join("db/app.db"), "app");
        database(&host.path().join("app.db"), "host secret");
        let root = fsat::open_trusted_dir(data.path()).unwrap();
        let held = fsat::open_dir_at(root.as_fd(), b"db").unwrap();
        std::fs::rename(data.path().join("db"), data.path().join("db.moved")).unwrap();
        symlink(host.path(), data.path().join("db")).unwrap();

        let copy = data.path().join("copy.db");
        snapshot_at(held.as_fd(), b"app.db", &copy).unwrap();
        assert_eq!(value(&copy), "app");
    }

    #[test]
    fn a_database_name_that_is_a_symlink_is_not_opened() {
        let data = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        database(&host.path().join("app.db"), "host secret");
        symlink(host.path().join("app.db"), data.path().join("app.db")).unwrap();
        let root = fsat::open_trusted_dir(data.path()).unwrap();
        assert!(snapshot_at(root.as_fd(), b"app.db", &data.path().join("copy.db")).is_err());
    }
}
