//! The copy itself: the walk through the data paths by directory handles
//! (`Walk`), and the `Copier` that writes each member (regular, sparse,
//! linked, SQLite snapshot) and remembers how it found it, so the final pass
//! can tell what changed since the first.
//!
//! It stores what it finds at that moment: a file swapped for a symlink after
//! the scan goes in as that symlink, never as what it points to.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use rustix::fs::{Stat, CWD};

use super::format::{Kind, ManifestEntry, Tally, OWN_PREFIX};
use super::scan::{split_root_file, wal_of, Fingerprint, Item, Plan, Seen};
use super::sink::{Digest, Sink, Stored};
use super::sqlite::snapshot_at;
use crate::store::files;
use crate::store::fsat::{self, Cursor, Entry};

/// Where the copy is in the data: the current data path's handle, the open
/// directories below it, and the directories found replaced or gone.
#[derive(Default)]
pub(super) struct Walk {
    root: Option<OwnedFd>,
    /// Which data path `root` is.
    current: Option<usize>,
    cursor: Cursor,
    gone: Vec<Vec<u8>>,
}

impl Walk {
    /// Appends `item` as it is now; `None` when there is nothing left to store.
    pub(super) fn append(
        &mut self,
        copier: &mut Copier,
        sink: &mut dyn Sink,
        plan: &Plan,
        item: &Item,
        member: &[u8],
    ) -> Result<Option<ManifestEntry>> {
        let shown = item.shown(&plan.roots);
        if item.relative.is_empty() {
            return self.append_root(copier, sink, item, member, &shown);
        }
        if self.current != Some(item.root) {
            // The final pass copies what changed below a data path it does not copy again.
            self.enter(item, &plan.roots)?;
        }
        if self.gone.iter().any(|dir| is_below(&item.relative, dir)) {
            return Ok(None);
        }
        let components = fsat::components(&item.relative);
        let Some((name, parents)) = components.split_last() else { return Ok(None) };
        let Some(root) = self.root.as_ref() else { return Ok(None) };
        let parent = match self.cursor.open(root.as_fd(), parents) {
            Ok(parent) => parent,
            Err(e) if fsat::is_replaced_or_gone(&e) => {
                copier.warn(format!(
                    "{}: its directory was replaced or removed during the backup; skipped",
                    shown.display()
                ));
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot open the directory of {}", shown.display())),
        };
        if item.seen != Seen::Dir {
            return copier.append_found(sink, parent, name, item, member, &shown);
        }
        let read_at = SystemTime::now();
        match fsat::open_dir_at(parent, name) {
            Ok(handle) => {
                let stat = fsat::stat_of(&handle)?;
                let entry = store_empty(sink, member, Kind::Dir, &stat, None, &shown)?;
                copier.note(member, Seen::Dir, &stat, read_at, None);
                self.cursor.adopt(parents, name, handle);
                Ok(Some(entry))
            }
            Err(e) if fsat::is_replaced_or_gone(&e) => {
                self.gone.push(item.relative.clone());
                copier.append_found(sink, parent, name, item, member, &shown)
            }
            Err(e) => Err(e).with_context(|| format!("cannot open data directory {}", shown.display())),
        }
    }

    /// A data path: a directory becomes the base of the walk below it.
    fn append_root(
        &mut self,
        copier: &mut Copier,
        sink: &mut dyn Sink,
        item: &Item,
        member: &[u8],
        shown: &Path,
    ) -> Result<Option<ManifestEntry>> {
        self.cursor.reset();
        self.gone.clear();
        self.root = None;
        self.current = Some(item.root);
        if item.seen == Seen::Dir {
            let read_at = SystemTime::now();
            let handle = fsat::open_dir_at(CWD, shown.as_os_str().as_bytes())
                .with_context(|| format!("cannot open data directory {}", shown.display()))?;
            let stat = fsat::stat_of(&handle)?;
            let entry = store_empty(sink, member, Kind::Dir, &stat, None, shown)?;
            copier.note(member, Seen::Dir, &stat, read_at, None);
            self.root = Some(handle);
            return Ok(Some(entry));
        }
        let (parent, name) = split_root_file(shown)?;
        copier.append_found(sink, parent.as_fd(), name, item, member, shown)
    }

    /// Makes `item`'s data path the base of the walk without storing it again.
    fn enter(&mut self, item: &Item, roots: &[super::format::Root]) -> Result<()> {
        self.cursor.reset();
        self.gone.clear();
        self.current = Some(item.root);
        let path = &roots[item.root].path;
        let handle = fsat::open_dir_at(CWD, path.as_os_str().as_bytes())
            .with_context(|| format!("cannot open data directory {}", path.display()))?;
        self.root = Some(handle);
        Ok(())
    }
}

/// The data path a member belongs to (`data/<i>/...`).
pub(super) fn root_of(member: &[u8]) -> usize {
    let rest = member.strip_prefix(b"data/").unwrap_or(member);
    let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
    std::str::from_utf8(&rest[..end]).ok().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX)
}

/// Whether `path` lies below the directory `dir` (both relative, in bytes).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// What the copy keeps besides the archive: warnings, SQLite snapshots to
/// delete, the first member of each multiply-linked inode, and the state in
/// which each member was copied, for the final pass to compare against.
pub(super) struct Copier {
    pub(super) dir: PathBuf,
    pub(super) warnings: Vec<String>,
    snapshots: Vec<PathBuf>,
    /// (data path, device, inode) -> member that holds the content.
    linked: HashMap<(usize, u64, u64), Vec<u8>>,
    /// Each member stored, with what it was when it was read.
    copied: HashMap<Vec<u8>, Copied>,
    /// The members in the order they were stored.
    pub(super) order: Vec<Vec<u8>>,
    /// The sockets and device nodes already named in the warnings (their member names).
    left_out: HashSet<Vec<u8>>,
    /// What an earlier snapshot read of each file: its state then and its content's sha256.
    earlier: super::snapshot::Shareable,
    /// How each member's content was stored, the last time it was.
    stored: HashMap<Vec<u8>, (Stored, u64)>,
    /// The members whose sha256 the sink gives later, by ticket.
    hashing: HashMap<u64, Vec<u8>>,
}

/// A member as it was when the copy read it.
struct Copied {
    seen: Seen,
    fingerprint: Fingerprint,
    wal: Option<Fingerprint>,
    /// Changed so close to the read that a later write might not show: always copied again.
    racy: bool,
}

/// What the final pass does: retire these members of the first pass, copy these items of the new scan.
pub(super) struct Changes {
    pub(super) stale: HashSet<Vec<u8>>,
    pub(super) copy: Vec<usize>,
}

impl Copier {
    pub(super) fn new(dir: &Path) -> Copier {
        Copier {
            dir: dir.to_path_buf(),
            warnings: Vec::new(),
            snapshots: Vec::new(),
            linked: HashMap::new(),
            copied: HashMap::new(),
            order: Vec::new(),
            left_out: HashSet::new(),
            earlier: HashMap::new(),
            stored: HashMap::new(),
            hashing: HashMap::new(),
        }
    }

    /// The member a digest given later ([`Digest::Later`]) is for.
    pub(super) fn hashed(&mut self, ticket: u64) -> Option<Vec<u8>> {
        self.hashing.remove(&ticket)
    }

    /// Files an earlier snapshot read, by member: one still in that state is shared, not read.
    pub(super) fn share_from(&mut self, earlier: super::snapshot::Shareable) {
        self.earlier = earlier;
    }

    /// The state each stored file was read in, for a later snapshot to share
    /// what stays unchanged: files only, and none read so soon after a change
    /// that a later write might keep the same times.
    pub(super) fn fingerprints(&self, entries: &[ManifestEntry]) -> Vec<(Vec<u8>, Fingerprint)> {
        entries
            .iter()
            .filter(|e| e.kind == Kind::File && !e.sqlite_snapshot)
            .filter_map(|e| {
                let copied = self.copied.get(&e.path)?;
                (copied.seen == Seen::File && !copied.racy).then(|| (e.path.clone(), copied.fingerprint))
            })
            .collect()
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Names once, in the warnings, each socket and device node the scan left out.
    pub(super) fn leave_out(&mut self, plan: &Plan) {
        for left_out in &plan.left_out {
            let member = Item::member_of(left_out.root, &left_out.relative);
            if self.left_out.insert(member) {
                self.warnings.push(left_out.warning(&plan.roots));
            }
        }
    }

    /// Records the state `member` was stored in (its status taken before it was read, at `read_at`).
    fn note(&mut self, member: &[u8], seen: Seen, stat: &Stat, read_at: SystemTime, wal: Option<Fingerprint>) {
        let fingerprint = Fingerprint::of(stat);
        let racy = fingerprint.racy(read_at) || wal.is_some_and(|w| w.racy(read_at));
        if !self.copied.contains_key(member) {
            self.order.push(member.to_vec());
        }
        self.copied.insert(member.to_vec(), Copied { seen, fingerprint, wal, racy });
    }

    /// Compares a new scan with what the first pass stored. A file, link or
    /// database whose state differs (or was racy) is retired and copied again,
    /// with every other name of its inode; a directory whose mode, owner or
    /// time changed is named again; what is new is copied; what is gone is retired.
    pub(super) fn changes_since_first_pass(&self, plan: &Plan, entries: &[ManifestEntry]) -> Changes {
        let stored: HashSet<&[u8]> = entries.iter().map(|e| e.path.as_slice()).collect();
        let mut stale: HashSet<Vec<u8>> = HashSet::new();
        let mut copy = Vec::new();
        let mut present = HashSet::new();
        for (index, item) in plan.items.iter().enumerate() {
            let member = item.member();
            present.insert(member.clone());
            match self.copied.get(&member).filter(|_| stored.contains(member.as_slice())) {
                Some(was) if was.seen == Seen::Dir && item.seen == Seen::Dir => {
                    // Named again (its mode, owner and time), never retired: what it holds is judged one by one.
                    if was.racy || was.fingerprint != item.fingerprint {
                        copy.push(index);
                    }
                }
                Some(was)
                    if was.seen == item.seen
                        && !was.racy
                        && was.fingerprint == item.fingerprint
                        && was.wal == item.wal => {}
                Some(_) => {
                    stale.insert(member);
                    copy.push(index);
                }
                None => copy.push(index),
            }
        }
        for name in &self.order {
            if stored.contains(name.as_slice()) && !present.contains(name) {
                stale.insert(name.clone());
            }
        }
        self.with_whole_inodes(plan, &mut stale, &mut copy);
        copy.sort_unstable();
        copy.dedup();
        Changes { stale, copy }
    }

    /// Hard links share one content: when one name of an inode is retired, every name of it is.
    fn with_whole_inodes(&self, plan: &Plan, stale: &mut HashSet<Vec<u8>>, copy: &mut Vec<usize>) {
        let inodes: HashSet<(usize, (u64, u64))> = stale
            .iter()
            .filter_map(|name| self.copied.get(name).map(|c| (name, c)))
            .filter(|(_, c)| c.fingerprint.is_linked())
            .map(|(name, c)| (root_of(name), c.fingerprint.inode()))
            .collect();
        if inodes.is_empty() {
            return;
        }
        for name in &self.order {
            let Some(copied) = self.copied.get(name) else { continue };
            if copied.seen == Seen::File && inodes.contains(&(root_of(name), copied.fingerprint.inode())) {
                stale.insert(name.clone());
            }
        }
        for (index, item) in plan.items.iter().enumerate() {
            if stale.contains(&item.member()) {
                copy.push(index);
            }
        }
    }

    /// Forgets the retired members, so that a hard link is never made to one of them.
    pub(super) fn forget(&mut self, stale: &HashSet<Vec<u8>>) {
        self.linked.retain(|_, first| !stale.contains(first));
    }

    pub(super) fn remove_snapshots(&mut self) {
        for snapshot in self.snapshots.drain(..) {
            let _ = fs::remove_file(snapshot);
        }
    }

    /// Appends whatever `name` in `parent` is now, which a race may have changed since the scan.
    fn append_found(
        &mut self,
        sink: &mut dyn Sink,
        parent: BorrowedFd<'_>,
        name: &[u8],
        item: &Item,
        member: &[u8],
        shown: &Path,
    ) -> Result<Option<ManifestEntry>> {
        let read_at = SystemTime::now();
        let wal = if item.sqlite { wal_of(parent, name) } else { None };
        let found = match fsat::open_entry_at(parent, name) {
            Ok(found) => found,
            // Live data: a log rotated or a temp file deleted since the scan is not worth an abort.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!("{} disappeared during the backup; it is not in the archive", shown.display()));
                return Ok(None);
            }
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", shown.display())),
        };
        match found {
            Entry::File(file, stat) if item.sqlite => {
                drop(file);
                self.note(member, Seen::File, &stat, read_at, wal);
                let snapshot = self.snapshot(parent, name, shown)?;
                // The database's owner, mode and time; the snapshot's size.
                let mut stat = stat;
                stat.st_size = fsat::stat_of(&snapshot)?.st_size;
                Ok(Some(self.append_file(sink, member, Some(snapshot), &stat, true, shown)?))
            }
            Entry::File(file, stat) if stat.st_nlink > 1 => {
                self.note(member, Seen::File, &stat, read_at, None);
                let key = (item.root, stat.st_dev, stat.st_ino);
                if let Some(first) = self.linked.get(&key) {
                    return Ok(Some(store_empty(sink, member, Kind::Hardlink, &stat, Some(first.clone()), shown)?));
                }
                self.linked.insert(key, member.to_vec());
                Ok(Some(self.append_file(sink, member, Some(file), &stat, false, shown)?))
            }
            Entry::File(file, stat) => {
                self.note(member, Seen::File, &stat, read_at, None);
                Ok(Some(self.append_file(sink, member, Some(file), &stat, false, shown)?))
            }
            Entry::Symlink(target, stat) => {
                self.note(member, Seen::Symlink, &stat, read_at, None);
                if item.seen != Seen::Symlink {
                    self.warn(format!(
                        "{} was replaced by a symlink during the backup; the link is stored, not followed",
                        shown.display()
                    ));
                }
                Ok(Some(store_empty(sink, member, Kind::Symlink, &stat, Some(target), shown)?))
            }
            Entry::Fifo(stat) => {
                // Never opened: only its status is stored.
                self.note(member, Seen::Fifo, &stat, read_at, None);
                Ok(Some(store_empty(sink, member, Kind::Fifo, &stat, None, shown)?))
            }
            Entry::Special(kind) => {
                if self.left_out.insert(member.to_vec()) {
                    self.warn(format!(
                        "{}: left out: {} (it replaced what was scanned; never opened)",
                        shown.display(),
                        fsat::describe_special(kind)
                    ));
                }
                Ok(None)
            }
            Entry::Dir => {
                self.warn(format!("{} became a directory during the backup; skipped", shown.display()));
                Ok(None)
            }
            Entry::Other => {
                self.warn(format!("{} is no longer a regular file or link; skipped", shown.display()));
                Ok(None)
            }
        }
    }

    /// Stores a file: shared with an earlier snapshot when it is unchanged
    /// since that one read it, else read (`file`) and stored.
    fn append_file(
        &mut self,
        sink: &mut dyn Sink,
        member: &[u8],
        file: Option<File>,
        stat: &Stat,
        sqlite_snapshot: bool,
        shown: &Path,
    ) -> Result<ManifestEntry> {
        let mut entry = manifest_entry(member, Kind::File, stat);
        entry.size = u64::try_from(stat.st_size).unwrap_or(0);
        entry.sqlite_snapshot = sqlite_snapshot;
        if !sqlite_snapshot {
            if let Some(sha256) = self.unchanged_since_earlier(member, stat) {
                entry.sha256 = Some(sha256);
                if sink.share(&entry)? {
                    self.tally(member, Stored::Shared, entry.size);
                    return Ok(entry);
                }
                entry.sha256 = None;
            }
        }
        let content = sink.put(&entry, file, shown)?.context("a file member stored without its content")?;
        if content.short {
            self.warn(format!("{} shrank while it was backed up; its copy is padded", shown.display()));
        }
        self.tally(member, content.stored, entry.size);
        match content.digest {
            Digest::Known(sha256) => entry.sha256 = Some(sha256),
            Digest::Later(ticket) => {
                self.hashing.insert(ticket, member.to_vec());
            }
        }
        Ok(entry)
    }

    /// The content an earlier snapshot recorded for `member`, when the file
    /// is still the one it read then: same inode on the same device, same
    /// size, times, mode, owner and link count. A write since changes the
    /// change time, which no one can set back, so an edit that kept the size
    /// and put the modification time back is still seen.
    fn unchanged_since_earlier(&self, member: &[u8], stat: &Stat) -> Option<String> {
        let (fingerprint, sha256) = self.earlier.get(member)?;
        (*fingerprint == Fingerprint::of(stat)).then(|| sha256.clone())
    }

    fn tally(&mut self, member: &[u8], stored: Stored, bytes: u64) {
        self.stored.insert(member.to_vec(), (stored, bytes));
    }

    /// How the files of each data path in `entries` (the final manifest) were stored.
    pub(super) fn tallies(&self, entries: &[ManifestEntry]) -> BTreeMap<usize, Tally> {
        let mut tallies: BTreeMap<usize, Tally> = BTreeMap::new();
        for entry in entries.iter().filter(|e| e.kind == Kind::File) {
            let Some((stored, bytes)) = self.stored.get(&entry.path) else { continue };
            let tally = tallies.entry(root_of(&entry.path)).or_default();
            let (files, total) = match stored {
                Stored::Copied => (&mut tally.copied, &mut tally.copied_bytes),
                Stored::Cloned => (&mut tally.cloned, &mut tally.cloned_bytes),
                Stored::Pieced { written } => {
                    tally.pieced_new_bytes += written;
                    (&mut tally.pieced, &mut tally.pieced_bytes)
                }
                Stored::Shared => (&mut tally.shared, &mut tally.shared_bytes),
            };
            *files += 1;
            *total += bytes;
        }
        tallies
    }

    /// A consistent copy of a live SQLite database, through the online backup API.
    fn snapshot(&mut self, parent: BorrowedFd<'_>, name: &[u8], shown: &Path) -> Result<File> {
        let target = self.dir.join(format!("{OWN_PREFIX}snapshot-{}.db", files::unique_suffix()));
        self.snapshots.push(target.clone());
        snapshot_at(parent, name, &target)
            .with_context(|| format!("cannot snapshot SQLite database {}", shown.display()))?;
        Ok(File::open(&target)?)
    }
}

/// Stores a member without content (a directory, FIFO or link) as `stat` describes it.
fn store_empty(
    sink: &mut dyn Sink,
    member: &[u8],
    kind: Kind,
    stat: &Stat,
    target: Option<Vec<u8>>,
    shown: &Path,
) -> Result<ManifestEntry> {
    let mut entry = manifest_entry(member, kind, stat);
    entry.target = target;
    sink.put(&entry, None, shown)?;
    Ok(entry)
}

fn manifest_entry(member: &[u8], kind: Kind, stat: &Stat) -> ManifestEntry {
    ManifestEntry {
        path: member.to_vec(),
        kind,
        size: 0,
        sha256: None,
        mode: stat.st_mode & 0o7777,
        uid: u64::from(stat.st_uid),
        gid: u64::from(stat.st_gid),
        mtime: stat.st_mtime,
        sqlite_snapshot: false,
        target: None,
    }
}
