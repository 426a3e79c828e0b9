//! The scan before a backup: what each data path holds (directories, regular
//! files, symlinks and FIFOs; sockets and device nodes are left out and named:
//! a socket is a runtime object, and upgraderd never creates a device node on
//! the host),
//! which files are SQLite databases, how many bytes to expect, and what
//! restoring each data path will allocate. The walk goes through directory
//! handles only; the copy that follows opens every entry again through handles
//! and trusts what it finds then, not this scan.
//!
//! What a restore allocates is what the data occupies on disk, not its
//! apparent size: a sparse file is stored and restored without its holes
//! (see `sparse`), and a hard link shares its file's blocks. So it is counted
//! from the blocks each entry holds, each inode once, and never more than its
//! size rounded up to a block (a restore writes nothing past the end). Preflight
//! and the restore's own check both use this count.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use std::time::SystemTime;

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{FileType, Stat, CWD};

use super::format::{Root, OWN_PREFIX};
use super::Source;
use crate::store::fsat::{self, Entry};

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Files SQLite keeps beside a database; the snapshot already holds every committed page.
const SQLITE_COMPANIONS: [&[u8]; 3] = [b"-wal", b"-shm", b"-journal"];

/// What a backup will contain, found before anything is written.
pub(super) struct Plan {
    /// Each with what restoring it allocates (`restore_bytes`).
    pub roots: Vec<Root>,
    pub items: Vec<Item>,
    /// The files' apparent size: what the copy reads, for its progress.
    pub total_bytes: u64,
    pub files: u64,
    /// Sockets and device nodes found: never opened, never stored, named in the warnings.
    pub left_out: Vec<LeftOut>,
}

/// A socket or device node the backup leaves out.
pub(super) struct LeftOut {
    pub root: usize,
    pub relative: Vec<u8>,
    pub kind: FileType,
}

impl LeftOut {
    /// The warning that names it.
    pub(super) fn warning(&self, roots: &[Root]) -> String {
        let path = roots[self.root].path.join(OsStr::from_bytes(&self.relative));
        let why = match self.kind {
            FileType::Socket => "a runtime object, not data",
            FileType::CharacterDevice | FileType::BlockDevice => "upgraderd never creates device nodes on the host",
            _ => "not a file, directory, link or FIFO",
        };
        format!("{}: left out: {} ({why})", path.display(), fsat::describe_special(self.kind))
    }
}

/// The block a restore allocates in: what a file's size is rounded up to.
const BLOCK: u64 = 4096;

/// What restoring an entry allocates: the blocks it holds, never more than its size rounded up to a block.
fn allocated(stat: &Stat) -> u64 {
    let blocks = u64::try_from(stat.st_blocks).unwrap_or(0).saturating_mul(512);
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    blocks.min(size.div_ceil(BLOCK).saturating_mul(BLOCK))
}

/// What identifies one state of a file: a later stat that matches it means
/// the content was not written since (checked together with [`Fingerprint::racy`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) struct Fingerprint {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, i64),
    ctime: (i64, i64),
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
}

impl Fingerprint {
    pub(super) fn of(stat: &Stat) -> Fingerprint {
        Fingerprint {
            dev: stat.st_dev,
            ino: stat.st_ino,
            size: stat.st_size,
            mtime: (stat.st_mtime, stat.st_mtime_nsec as i64),
            ctime: (stat.st_ctime, stat.st_ctime_nsec as i64),
            mode: stat.st_mode,
            uid: stat.st_uid,
            gid: stat.st_gid,
            nlink: stat.st_nlink,
        }
    }

    /// The inode it describes, to keep hard links together.
    pub(super) fn inode(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }

    pub(super) fn is_linked(&self) -> bool {
        self.nlink > 1
    }

    /// Whether a write right after `read_at` could leave this fingerprint
    /// unchanged: file times tick coarsely (a scheduler tick, a second or two
    /// on some file systems), so a change within a second of the read is
    /// never trusted to show. Such a file is copied again by the final pass.
    pub(super) fn racy(&self, read_at: SystemTime) -> bool {
        let changed = SystemTime::UNIX_EPOCH
            + std::time::Duration::new(self.ctime.0.max(0) as u64, self.ctime.1.clamp(0, 999_999_999) as u32);
        changed + std::time::Duration::from_secs(1) > read_at
    }
}

/// What the scan saw at a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Seen {
    Dir,
    File,
    Symlink,
    /// Stored as a FIFO (its mode, owner and time); never opened.
    Fifo,
}

/// One entry to back up, in walk order (a directory before what it holds).
pub(super) struct Item {
    /// Which data path it belongs to.
    pub root: usize,
    /// Its path below that data path, `/`-separated bytes; empty for the data path itself.
    pub relative: Vec<u8>,
    pub seen: Seen,
    pub size: u64,
    pub sqlite: bool,
    /// Its state when scanned.
    pub fingerprint: Fingerprint,
    /// A SQLite database's write-ahead log, whose changes are the database's.
    pub wal: Option<Fingerprint>,
    /// What restoring it allocates.
    pub allocated: u64,
}

impl Item {
    /// Its member name in the archive: `data/<root>[/<relative>]`.
    pub(super) fn member(&self) -> Vec<u8> {
        Item::member_of(self.root, &self.relative)
    }

    /// The member name of `relative` below data path `root`.
    pub(super) fn member_of(root: usize, relative: &[u8]) -> Vec<u8> {
        let mut member = format!("data/{root}").into_bytes();
        if !relative.is_empty() {
            member.push(b'/');
            member.extend_from_slice(relative);
        }
        member
    }

    /// Where it is on disk, for messages.
    pub(super) fn shown(&self, roots: &[Root]) -> PathBuf {
        let root = &roots[self.root].path;
        if self.relative.is_empty() {
            root.clone()
        } else {
            root.join(OsStr::from_bytes(&self.relative))
        }
    }
}

/// Scans every data path.
pub(super) fn scan(sources: &[Source]) -> Result<Plan> {
    let mut plan = Plan { roots: Vec::new(), items: Vec::new(), total_bytes: 0, files: 0, left_out: Vec::new() };
    for (index, source) in sources.iter().enumerate() {
        scan_root(index, source, &mut plan)?;
    }
    drop_sqlite_companions(&mut plan);
    for item in plan.items.iter().filter(|item| item.seen == Seen::File) {
        plan.total_bytes += item.size;
        plan.files += 1;
    }
    // A restore links every other name of a file to its first: its blocks count once.
    let mut counted = HashSet::new();
    for item in &plan.items {
        let linked = item.seen == Seen::File && item.fingerprint.is_linked();
        if !linked || counted.insert((item.root, item.fingerprint.inode())) {
            let root = &mut plan.roots[item.root];
            root.restore_bytes = Some(root.restore_bytes.unwrap_or(0) + item.allocated);
        }
    }
    Ok(plan)
}

/// What a backup of some data takes, known from one walk before it is written.
pub(crate) struct Footprint {
    /// Each data path with what restoring it would allocate, counted as a
    /// backup of it records it for the restore's check.
    pub restore: Vec<(PathBuf, u64)>,
    /// The most the new backup writes into the backup directory: all of the
    /// data for an archive; for a snapshot, only the files the previous
    /// snapshot cannot share (new, changed, databases).
    pub backup: u64,
}

/// Walks the data once to say what backing it up into `dir` as `form` takes.
pub(crate) fn footprint(sources: &[Source], dir: &std::path::Path, form: super::Form) -> Result<Footprint> {
    let plan = scan(sources)?;
    let restore: Vec<(PathBuf, u64)> =
        plan.roots.iter().map(|root| (root.path.clone(), root.restore_bytes.unwrap_or(0))).collect();
    let all = restore.iter().map(|(_, bytes)| *bytes).fold(0u64, u64::saturating_add);
    let earlier = match form {
        super::Form::Snapshot => super::snapshot::earlier(dir, &plan.roots).map(|(_, files)| files),
        super::Form::Archive => None,
    };
    let Some(earlier) = earlier else { return Ok(Footprint { restore, backup: all }) };
    let unshared = plan
        .items
        .iter()
        .filter(|item| {
            item.sqlite || earlier.get(&item.member()).is_none_or(|(fingerprint, _)| *fingerprint != item.fingerprint)
        })
        .map(|item| item.allocated)
        .fold(0u64, u64::saturating_add);
    let backup = unshared.min(all);
    Ok(Footprint { restore, backup })
}

fn scan_root(index: usize, source: &Source, plan: &mut Plan) -> Result<()> {
    let root = source.path.as_path();
    let meta = fs::symlink_metadata(root).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => anyhow!(
            "data path {} does not exist; fix UPGRADERD_DATA_DIR (or the container's mounts) before backing up",
            root.display()
        ),
        _ => anyhow!("data path {} cannot be read: {e}", root.display()),
    })?;
    if meta.file_type().is_symlink() {
        let points_to = fs::read_link(root).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into());
        bail!(
            "data path {} is a symbolic link (to {points_to}), which is not backed up through: leave it out with \
             UPGRADERD_BACKUP_EXCLUDE={}, or bind the real path into the container",
            root.display(),
            root.display()
        );
    }
    let is_dir = meta.is_dir();
    let stat = fsat::lstat_at(CWD, root.as_os_str().as_bytes())
        .with_context(|| format!("cannot stat data path {}", root.display()))?;
    plan.roots.push(Root {
        index,
        path: root.to_path_buf(),
        is_dir,
        service: source.service.clone(),
        mount: source.mount.clone(),
        restore_bytes: Some(0),
        stored: None,
    });
    let seen = if is_dir {
        Seen::Dir
    } else if meta.file_type().is_symlink() {
        Seen::Symlink
    } else if meta.file_type().is_fifo() {
        Seen::Fifo
    } else {
        Seen::File
    };
    let fingerprint = Fingerprint::of(&stat);
    let mut item = Item {
        root: index,
        relative: Vec::new(),
        seen,
        size: meta.len(),
        sqlite: false,
        fingerprint,
        wal: None,
        allocated: allocated(&stat),
    };
    if is_dir {
        plan.items.push(item);
        let handle = fsat::open_dir_at(CWD, root.as_os_str().as_bytes())
            .with_context(|| format!("cannot open data directory {}", root.display()))?;
        return scan_dir(handle.as_fd(), index, &[], plan);
    }
    if seen == Seen::File {
        let (parent, name) = split_root_file(root)?;
        item.sqlite = is_sqlite(parent.as_fd(), name, item.size);
        item.wal = item.sqlite.then(|| wal_of(parent.as_fd(), name)).flatten();
    }
    plan.items.push(item);
    Ok(())
}

/// A data path that is a file, as its directory's handle and its name.
pub(super) fn split_root_file(root: &Path) -> Result<(std::os::fd::OwnedFd, &[u8])> {
    let (Some(parent), Some(name)) = (root.parent(), root.file_name()) else {
        return Err(anyhow!("data path {} is not a file name", root.display()));
    };
    let parent = if parent.as_os_str().is_empty() { Path::new(".") } else { parent };
    let handle =
        fsat::open_trusted_dir(parent).with_context(|| format!("cannot open the directory of {}", root.display()))?;
    Ok((handle, name.as_bytes()))
}

fn scan_dir(dir: BorrowedFd<'_>, root: usize, relative: &[u8], plan: &mut Plan) -> Result<()> {
    let names = fsat::read_names(dir)
        .with_context(|| format!("cannot read data directory {}", plan_path(plan, root, relative).display()))?;
    for name in names {
        if relative.is_empty() && name.starts_with(OWN_PREFIX.as_bytes()) {
            continue;
        }
        let child = join(relative, &name);
        let stat = match fsat::lstat_at(dir, &name) {
            Ok(stat) => stat,
            // Gone since the directory was read: nothing to back up.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| format!("cannot stat {}", plan_path(plan, root, &child).display()))
            }
        };
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let seen = match fsat::file_type(&stat) {
            FileType::Directory => Seen::Dir,
            FileType::RegularFile => Seen::File,
            FileType::Symlink => Seen::Symlink,
            FileType::Fifo => Seen::Fifo,
            kind => {
                plan.left_out.push(LeftOut { root, relative: child, kind });
                continue;
            }
        };
        let sqlite = seen == Seen::File && is_sqlite(dir, &name, size);
        let wal = sqlite.then(|| wal_of(dir, &name)).flatten();
        let fingerprint = Fingerprint::of(&stat);
        let allocated = allocated(&stat);
        plan.items.push(Item { root, relative: child.clone(), seen, size, sqlite, fingerprint, wal, allocated });
        if seen == Seen::Dir && child.split(|b| *b == b'/').count() > fsat::MAX_DEPTH {
            return Err(fsat::too_deep())
                .with_context(|| format!("cannot back up {}", plan_path(plan, root, &child).display()));
        }
        if seen == Seen::Dir {
            match fsat::open_dir_at(dir, &name) {
                Ok(handle) => scan_dir(handle.as_fd(), root, &child, plan)?,
                // Replaced or gone since its stat: the copy finds out what it is now.
                Err(e) if fsat::is_replaced_or_gone(&e) => {}
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot read data directory {}", plan_path(plan, root, &child).display())
                    })
                }
            }
        }
    }
    Ok(())
}

fn plan_path(plan: &Plan, root: usize, relative: &[u8]) -> PathBuf {
    plan.roots[root].path.join(OsStr::from_bytes(relative))
}

/// `relative/name`, or `name` at the top.
pub(super) fn join(relative: &[u8], name: &[u8]) -> Vec<u8> {
    let mut joined = relative.to_vec();
    if !joined.is_empty() {
        joined.push(b'/');
    }
    joined.extend_from_slice(name);
    joined
}

fn is_sqlite(dir: BorrowedFd<'_>, name: &[u8], size: u64) -> bool {
    if size < 512 {
        return false;
    }
    let Ok(Entry::File(mut file, _)) = fsat::open_entry_at(dir, name) else { return false };
    let mut header = [0u8; 16];
    file.read_exact(&mut header).is_ok() && &header == SQLITE_MAGIC
}

/// The state of a database's write-ahead log, when it has one.
pub(super) fn wal_of(dir: BorrowedFd<'_>, database: &[u8]) -> Option<Fingerprint> {
    let mut name = database.to_vec();
    name.extend_from_slice(b"-wal");
    fsat::lstat_at(dir, &name).ok().map(|stat| Fingerprint::of(&stat))
}

/// Drops the `-wal`, `-shm` and `-journal` files of the databases found.
fn drop_sqlite_companions(plan: &mut Plan) {
    let databases: HashSet<(usize, Vec<u8>)> =
        plan.items.iter().filter(|item| item.sqlite).map(|item| (item.root, item.relative.clone())).collect();
    plan.items.retain(|item| {
        !SQLITE_COMPANIONS.iter().any(|suffix| {
            item.relative
                .strip_suffix(*suffix)
                .is_some_and(|database| databases.contains(&(item.root, database.to_vec())))
        })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn a_restore_is_counted_in_blocks_holes_left_out_and_a_linked_file_once() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir_all(&data).unwrap();
        let image = fs::File::create(data.join("disk.img")).unwrap();
        image.set_len(64 << 20).unwrap();
        image.write_all_at(b"boot", 0).unwrap();
        fs::write(data.join("blob"), vec![1u8; 100_000]).unwrap();
        fs::hard_link(data.join("blob"), data.join("blob-again")).unwrap();

        let footprint =
            footprint(&[Source::path(&data)], &dir.path().join("backups"), crate::store::backup::Form::Archive)
                .unwrap();
        assert_eq!(footprint.restore.len(), 1);
        assert_eq!(footprint.backup, footprint.restore[0].1, "an archive takes all of it");
        let (path, bytes) = &footprint.restore[0];
        assert_eq!(path, &data);
        assert!(*bytes >= 100_000, "the blob counts: {bytes}");
        assert!(*bytes < 200_000, "the hole and the blob's second name do not: {bytes}");

        let plan = scan(&[Source::path(&data)]).unwrap();
        assert_eq!(plan.total_bytes, (64 << 20) + 200_000, "the progress still counts what is read");
        assert_eq!(plan.roots[0].restore_bytes, Some(*bytes));
    }
}
