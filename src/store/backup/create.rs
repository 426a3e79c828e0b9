//! Writing an archive: scan the data paths, then stream every member through
//! gzip into a `.partial` file (SQLite databases through the online backup
//! API), write the manifest last, fsync and rename.
//!
//! The copy reaches every entry through directory handles (see `fsat`) and
//! stores what it finds at that moment: a file swapped for a symlink after the
//! scan goes in as that symlink, never as what it points to.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use rustix::fs::{Stat, CWD};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::format::{
    hex, FinalPass, HashingReader, Kind, Manifest, ManifestEntry, Meta, ARCHIVE_PREFIX, ARCHIVE_SUFFIX,
    FINAL_PASS_MEMBER, FORMAT, MANIFEST_MEMBER, META_MEMBER, OWN_PREFIX,
};
use super::scan::{scan, split_root_file, wal_of, Fingerprint, Item, Plan, Seen};
use super::sparse;
use super::sqlite::snapshot_at;
use super::{Created, Pause, Progress, Reason, Source};
use crate::store::disk;
use crate::store::files;
use crate::store::fsat::{self, Cursor, Entry};
use crate::units::human_bytes;

/// Backs up `roots` into a new archive in `dir`, in one pass.
pub fn create(roots: &[PathBuf], dir: &Path, reason: Reason, progress: &mut dyn FnMut(Progress)) -> Result<Created> {
    create_paused(roots, dir, reason, progress, &mut |_| {})
}

/// [`create`], calling `pause` at each [`Pause`] point (tests use it to make races deterministic).
#[doc(hidden)]
pub fn create_paused(
    roots: &[PathBuf],
    dir: &Path,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<Created> {
    let sources: Vec<Source> = roots.iter().map(Source::path).collect();
    begin_paused(&sources, dir, reason, progress, pause)?.finish()
}

/// Takes the first pass of a backup of `sources` into a new archive in `dir`,
/// while the services keep running; [`FirstPass::finish_after_final_pass`]
/// adds what changed until they were stopped.
pub fn begin(sources: &[Source], dir: &Path, reason: Reason, progress: &mut dyn FnMut(Progress)) -> Result<FirstPass> {
    begin_paused(sources, dir, reason, progress, &mut |_| {})
}

fn begin_paused(
    sources: &[Source],
    dir: &Path,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<FirstPass> {
    if sources.is_empty() {
        bail!("no data paths to back up");
    }
    let plan = scan(sources)?;
    pause(Pause::Scanned);
    files::ensure_private_dir(dir).with_context(|| {
        format!("cannot create the backup directory {}; create it or set UPGRADERD_BACKUP_DIR", dir.display())
    })?;
    let id = new_backup_id();
    let meta = Meta {
        format: FORMAT,
        id: id.clone(),
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        upgrade_id: reason.upgrade_id,
        from_version: reason.from_version,
        to_version: reason.to_version,
        image_id: reason.image_id,
        commit: reason.commit,
        roots: plan.roots.clone(),
        total_bytes: plan.total_bytes,
        file_count: plan.files,
    };
    let mut pass = FirstPass {
        final_path: dir.join(format!("{ARCHIVE_PREFIX}{id}{ARCHIVE_SUFFIX}")),
        partial: dir.join(format!("{ARCHIVE_PREFIX}{id}{ARCHIVE_SUFFIX}.partial")),
        builder: None,
        copier: Copier::new(dir),
        entries: Vec::new(),
        positions: HashMap::new(),
        sources: sources.to_vec(),
        meta,
        finished: false,
    };
    pass.copier.leave_out(&plan);
    let written = pass.open().and_then(|()| pass.write_first_pass(&plan, progress, pause));
    match written {
        Ok(()) => Ok(pass),
        Err(err) => {
            let needed = pass.uncompressed_bytes();
            Err(pass.explain(err, needed))
        }
    }
}

/// An archive whose first pass is written and whose manifest is not: what
/// changed since can still be added. Dropped unfinished, it leaves nothing.
pub struct FirstPass {
    final_path: PathBuf,
    partial: PathBuf,
    builder: Option<tar::Builder<GzEncoder<BufWriter<File>>>>,
    copier: Copier,
    /// The manifest so far, in archive order.
    entries: Vec<ManifestEntry>,
    /// Where each member is in `entries`: a member is found in constant time, not by a scan of them all.
    positions: HashMap<Vec<u8>, usize>,
    sources: Vec<Source>,
    meta: Meta,
    finished: bool,
}

impl FirstPass {
    /// What the first pass noticed (files that vanished, changed type, shrank).
    pub(crate) fn warnings(&self) -> &[String] {
        &self.copier.warnings
    }

    /// Writes the manifest and puts the archive in place, without a final pass.
    pub(crate) fn finish(mut self) -> Result<Created> {
        self.seal()
    }

    /// The final pass, with the services stopped: scans the data again and
    /// adds everything that changed since the first pass (by inode, size,
    /// times and owner; SQLite databases again through their backup API),
    /// retiring what changed or went away, then finishes the archive. Unchanged
    /// files are not read again, so this pass is as short as the changes are.
    pub fn finish_after_final_pass(mut self, progress: &mut dyn FnMut(Progress)) -> Result<Created> {
        let total = self.uncompressed_bytes();
        match self.write_final_pass(progress) {
            Ok(()) => self.seal(),
            Err(err) => Err(self.explain(err, total)),
        }
    }

    /// The most the archive can take before compression: the data without
    /// its holes, which a sparse member does not store.
    fn uncompressed_bytes(&self) -> u64 {
        self.meta.restore_bytes().unwrap_or(self.meta.total_bytes)
    }

    fn open(&mut self) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.partial)
            .with_context(|| format!("cannot create {} (is the backup directory writable?)", self.partial.display()))?;
        // Level 1: backups sit on the upgrade's critical path; speed beats a few percent of size.
        let encoder = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Complete);
        append_json(&mut builder, META_MEMBER, &self.meta)?;
        self.builder = Some(builder);
        Ok(())
    }

    fn builder(&mut self) -> Result<&mut tar::Builder<GzEncoder<BufWriter<File>>>> {
        self.builder.as_mut().ok_or_else(|| anyhow!("the archive {} is already closed", self.partial.display()))
    }

    fn write_first_pass(
        &mut self,
        plan: &Plan,
        progress: &mut dyn FnMut(Progress),
        pause: &mut dyn FnMut(Pause<'_>),
    ) -> Result<()> {
        let items: Vec<&Item> = plan.items.iter().collect();
        self.append_items(plan, &items, progress, pause)
    }

    /// Appends `items` as they are now, in walk order, reporting bytes done.
    fn append_items(
        &mut self,
        plan: &Plan,
        items: &[&Item],
        progress: &mut dyn FnMut(Progress),
        pause: &mut dyn FnMut(Pause<'_>),
    ) -> Result<()> {
        let total: u64 = items.iter().filter(|i| i.seen == Seen::File).map(|i| i.size).sum();
        let mut walk = Walk::default();
        let mut done = 0u64;
        let mut last_report = Instant::now();
        let mut builder = self.builder.take().ok_or_else(|| anyhow!("the archive is already closed"))?;
        let result = (|| -> Result<()> {
            for item in items {
                let member = item.member();
                pause(Pause::Copying(&member));
                if let Some(entry) = walk.append(&mut self.copier, &mut builder, plan, item, &member)? {
                    done += entry.size;
                    match self.positions.get(&entry.path) {
                        // A directory named again by the final pass.
                        Some(&at) => self.entries[at] = entry,
                        None => {
                            self.positions.insert(entry.path.clone(), self.entries.len());
                            self.entries.push(entry);
                        }
                    }
                }
                if last_report.elapsed() > Duration::from_millis(500) {
                    progress(Progress { done, total });
                    last_report = Instant::now();
                }
            }
            Ok(())
        })();
        self.builder = Some(builder);
        result?;
        progress(Progress { done: total, total });
        Ok(())
    }

    fn write_final_pass(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let plan = scan(&self.sources)?;
        if let Some((was, now)) = self.meta.roots.iter().zip(&plan.roots).find(|(was, now)| was.is_dir != now.is_dir) {
            bail!(
                "data path {} changed from a {} to a {} while its services were stopped",
                now.path.display(),
                if was.is_dir { "directory" } else { "file" },
                if now.is_dir { "directory" } else { "file" }
            );
        }
        self.copier.leave_out(&plan);
        let changes = self.copier.changes_since_first_pass(&plan, &self.entries);
        self.entries.retain(|e| !changes.stale.contains(&e.path));
        self.positions = self.entries.iter().enumerate().map(|(at, e)| (e.path.clone(), at)).collect();
        self.copier.forget(&changes.stale);
        let stale = FinalPass { stale: self.entries_order(&changes.stale) };
        append_json(self.builder()?, FINAL_PASS_MEMBER, &stale)?;
        let items: Vec<&Item> = changes.copy.iter().map(|i| &plan.items[*i]).collect();
        self.append_items(&plan, &items, progress, &mut |_| {})
    }

    /// The retired members in the order the first pass wrote them.
    fn entries_order(&self, stale: &HashSet<Vec<u8>>) -> Vec<Vec<u8>> {
        self.copier.order.iter().filter(|name| stale.contains(*name)).cloned().collect()
    }

    /// Writes the manifest, finishes the gzip stream, fsyncs and renames into place.
    fn seal(&mut self) -> Result<Created> {
        let total = self.uncompressed_bytes();
        self.positions.clear();
        let manifest = Manifest { format: FORMAT, entries: std::mem::take(&mut self.entries) };
        let closed = (|| -> Result<()> {
            let mut builder = self.builder.take().ok_or_else(|| anyhow!("the archive is already closed"))?;
            append_json(&mut builder, MANIFEST_MEMBER, &manifest)?;
            let encoder = builder.into_inner()?;
            let buffered = encoder.finish()?;
            let file = buffered.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            files::rename_durable(&self.partial, &self.final_path)?;
            Ok(())
        })();
        if let Err(err) = closed {
            return Err(self.explain(err, total));
        }
        self.finished = true;
        self.copier.remove_snapshots();
        let archive_bytes = fs::metadata(&self.final_path).map(|m| m.len()).unwrap_or(0);
        Ok(Created {
            path: self.final_path.clone(),
            meta: self.meta.clone(),
            archive_bytes,
            warnings: std::mem::take(&mut self.copier.warnings),
        })
    }

    /// Removes the partial archive and says why it failed (a full disk in plain words).
    fn explain(&mut self, err: anyhow::Error, needed: u64) -> anyhow::Error {
        self.discard();
        explain_write_error(err, &self.copier.dir, &self.partial, needed)
    }

    fn discard(&mut self) {
        self.builder = None;
        self.copier.remove_snapshots();
        let _ = fs::remove_file(&self.partial);
    }
}

impl Drop for FirstPass {
    fn drop(&mut self) {
        if !self.finished {
            self.discard();
        }
    }
}

fn explain_write_error(err: anyhow::Error, dir: &Path, partial: &Path, needed: u64) -> anyhow::Error {
    if disk::is_full(&err) {
        let free = disk::free_bytes(dir).map(human_bytes).unwrap_or_else(|_| "unknown".into());
        return anyhow!(
            "the disk holding {} is full: the backup needed up to {} (the data's size uncompressed, holes not \
             counted) and {free} is free; \
             free some space or set UPGRADERD_BACKUP_DIR to a larger disk (the partial archive was removed)",
            dir.display(),
            human_bytes(needed)
        );
    }
    err.context(format!("writing backup {} failed; the partial archive was removed", partial.display()))
}

/// Where the copy is in the data: the current data path's handle, the open
/// directories below it, and the directories found replaced or gone.
#[derive(Default)]
struct Walk {
    root: Option<OwnedFd>,
    /// Which data path `root` is.
    current: Option<usize>,
    cursor: Cursor,
    gone: Vec<Vec<u8>>,
}

impl Walk {
    /// Appends `item` as it is now; `None` when there is nothing left to store.
    fn append<W: Write>(
        &mut self,
        copier: &mut Copier,
        builder: &mut tar::Builder<W>,
        plan: &Plan,
        item: &Item,
        member: &[u8],
    ) -> Result<Option<ManifestEntry>> {
        let shown = item.shown(&plan.roots);
        if item.relative.is_empty() {
            return self.append_root(copier, builder, item, member, &shown);
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
            return copier.append_found(builder, parent, name, item, member, &shown);
        }
        let read_at = SystemTime::now();
        match fsat::open_dir_at(parent, name) {
            Ok(handle) => {
                let stat = fsat::stat_of(&handle)?;
                let entry = append_dir(builder, member, &stat)?;
                copier.note(member, Seen::Dir, &stat, read_at, None);
                self.cursor.adopt(parents, name, handle);
                Ok(Some(entry))
            }
            Err(e) if fsat::is_replaced_or_gone(&e) => {
                self.gone.push(item.relative.clone());
                copier.append_found(builder, parent, name, item, member, &shown)
            }
            Err(e) => Err(e).with_context(|| format!("cannot open data directory {}", shown.display())),
        }
    }

    /// A data path: a directory becomes the base of the walk below it.
    fn append_root<W: Write>(
        &mut self,
        copier: &mut Copier,
        builder: &mut tar::Builder<W>,
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
            let entry = append_dir(builder, member, &stat)?;
            copier.note(member, Seen::Dir, &stat, read_at, None);
            self.root = Some(handle);
            return Ok(Some(entry));
        }
        let (parent, name) = split_root_file(shown)?;
        copier.append_found(builder, parent.as_fd(), name, item, member, shown)
    }
}

impl Walk {
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

/// Whether `path` lies below the directory `dir` (both relative, in bytes).
fn is_below(path: &[u8], dir: &[u8]) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
}

/// What the copy keeps besides the archive: warnings, SQLite snapshots to
/// delete, the first member of each multiply-linked inode, and the state in
/// which each member was copied, for the final pass to compare against.
struct Copier {
    dir: PathBuf,
    warnings: Vec<String>,
    snapshots: Vec<PathBuf>,
    /// (data path, device, inode) -> member that holds the content.
    linked: HashMap<(usize, u64, u64), Vec<u8>>,
    /// Each member stored, with what it was when it was read.
    copied: HashMap<Vec<u8>, Copied>,
    /// The members in the order they were stored.
    order: Vec<Vec<u8>>,
    /// The sockets and device nodes already named in the warnings (their member names).
    left_out: HashSet<Vec<u8>>,
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
struct Changes {
    stale: HashSet<Vec<u8>>,
    copy: Vec<usize>,
}

impl Copier {
    fn new(dir: &Path) -> Copier {
        Copier {
            dir: dir.to_path_buf(),
            warnings: Vec::new(),
            snapshots: Vec::new(),
            linked: HashMap::new(),
            copied: HashMap::new(),
            order: Vec::new(),
            left_out: HashSet::new(),
        }
    }

    fn warn(&mut self, warning: String) {
        self.warnings.push(warning);
    }

    /// Names once, in the warnings, each socket and device node the scan left out.
    fn leave_out(&mut self, plan: &Plan) {
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
    fn changes_since_first_pass(&self, plan: &Plan, entries: &[ManifestEntry]) -> Changes {
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
        let root_of = |name: &[u8]| -> usize {
            let rest = name.strip_prefix(b"data/").unwrap_or(name);
            let end = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            std::str::from_utf8(&rest[..end]).ok().and_then(|i| i.parse().ok()).unwrap_or(usize::MAX)
        };
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
    fn forget(&mut self, stale: &HashSet<Vec<u8>>) {
        self.linked.retain(|_, first| !stale.contains(first));
    }

    fn remove_snapshots(&mut self) {
        for snapshot in self.snapshots.drain(..) {
            let _ = fs::remove_file(snapshot);
        }
    }

    /// Appends whatever `name` in `parent` is now, which a race may have changed since the scan.
    fn append_found<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
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
                Ok(Some(self.append_file(builder, member, snapshot, &stat, true, shown)?))
            }
            Entry::File(file, stat) if stat.st_nlink > 1 => {
                self.note(member, Seen::File, &stat, read_at, None);
                let key = (item.root, stat.st_dev, stat.st_ino);
                if let Some(first) = self.linked.get(&key) {
                    return Ok(Some(append_link(builder, member, first, &stat, Kind::Hardlink)?));
                }
                self.linked.insert(key, member.to_vec());
                Ok(Some(self.append_file(builder, member, file, &stat, false, shown)?))
            }
            Entry::File(file, stat) => {
                self.note(member, Seen::File, &stat, read_at, None);
                Ok(Some(self.append_file(builder, member, file, &stat, false, shown)?))
            }
            Entry::Symlink(target, stat) => {
                self.note(member, Seen::Symlink, &stat, read_at, None);
                if item.seen != Seen::Symlink {
                    self.warn(format!(
                        "{} was replaced by a symlink during the backup; the link is stored, not followed",
                        shown.display()
                    ));
                }
                Ok(Some(append_link(builder, member, &target, &stat, Kind::Symlink)?))
            }
            Entry::Fifo(stat) => {
                // Never opened: only its status is stored.
                self.note(member, Seen::Fifo, &stat, read_at, None);
                Ok(Some(append_fifo(builder, member, &stat)?))
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

    fn append_file<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        member: &[u8],
        file: File,
        stat: &Stat,
        sqlite_snapshot: bool,
        shown: &Path,
    ) -> Result<ManifestEntry> {
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        if let Some(segments) = sparse::data_segments(&file, size)? {
            return self.append_sparse(builder, member, file, stat, segments, shown);
        }
        let mut header = header_from(stat, tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = HashingReader::exact(file, size);
        builder
            .append_data(&mut header, member_path(member), &mut reader)
            .with_context(|| format!("cannot back up {}", shown.display()))?;
        if reader.short {
            self.warn(format!("{} shrank while it was backed up; its copy is padded", shown.display()));
        }
        let mut entry = manifest_entry(member, Kind::File, stat);
        entry.size = size;
        entry.sha256 = Some(reader.hex());
        entry.sqlite_snapshot = sqlite_snapshot;
        Ok(entry)
    }

    /// A file with holes: only its data segments are read and stored.
    fn append_sparse<W: Write>(
        &mut self,
        builder: &mut tar::Builder<W>,
        member: &[u8],
        file: File,
        stat: &Stat,
        segments: Vec<sparse::Segment>,
        shown: &Path,
    ) -> Result<ManifestEntry> {
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        let mut header = header_from(stat, tar::EntryType::GNUSparse);
        let extensions = sparse::describe(&mut header, &segments, size);
        let mut reader = sparse::SparseReader::new(file, segments, size);
        builder
            .append_data(&mut header, member_path(member), extensions.as_slice().chain(&mut reader))
            .with_context(|| format!("cannot back up {}", shown.display()))?;
        if reader.short {
            self.warn(format!("{} shrank while it was backed up; its copy is padded", shown.display()));
        }
        let mut entry = manifest_entry(member, Kind::File, stat);
        entry.size = size;
        entry.sha256 = Some(reader.hex());
        Ok(entry)
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

fn append_dir<W: Write>(builder: &mut tar::Builder<W>, member: &[u8], stat: &Stat) -> Result<ManifestEntry> {
    let mut header = header_from(stat, tar::EntryType::Directory);
    header.set_size(0);
    builder.append_data(&mut header, member_path(member), io::empty())?;
    Ok(manifest_entry(member, Kind::Dir, stat))
}

/// A FIFO: its mode, owner and time; it has no content and is never opened.
fn append_fifo<W: Write>(builder: &mut tar::Builder<W>, member: &[u8], stat: &Stat) -> Result<ManifestEntry> {
    let mut header = header_from(stat, tar::EntryType::Fifo);
    header.set_size(0);
    builder.append_data(&mut header, member_path(member), io::empty())?;
    Ok(manifest_entry(member, Kind::Fifo, stat))
}

/// A member that is a name for something else: a symlink's target, or a hard link's first name.
fn append_link<W: Write>(
    builder: &mut tar::Builder<W>,
    member: &[u8],
    target: &[u8],
    stat: &Stat,
    kind: Kind,
) -> Result<ManifestEntry> {
    let entry_type = if kind == Kind::Hardlink { tar::EntryType::Link } else { tar::EntryType::Symlink };
    let mut header = header_from(stat, entry_type);
    header.set_size(0);
    set_link_verbatim(builder, &mut header, target)?;
    builder.append_data(&mut header, member_path(member), io::empty())?;
    let mut entry = manifest_entry(member, kind, stat);
    entry.target = Some(target.to_vec());
    Ok(entry)
}

/// Puts a link target in `header` byte for byte (the tar crate's own setter
/// would normalise `./a//b` to `a/b`); a target longer than the header's 100
/// bytes goes first in a GNU long-link entry, as GNU tar writes it.
fn set_link_verbatim<W: Write>(builder: &mut tar::Builder<W>, header: &mut tar::Header, target: &[u8]) -> Result<()> {
    const FIELD: usize = 100;
    if target.len() > FIELD {
        let mut long = tar::Header::new_gnu();
        if let Some(gnu) = long.as_gnu_mut() {
            gnu.name[..13].copy_from_slice(b"././@LongLink");
        }
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        long.set_size(target.len() as u64 + 1);
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_cksum();
        builder.append(&long, target.chain(&[0u8][..]))?;
    }
    header.set_link_name_literal(&target[..target.len().min(FIELD)])?;
    Ok(())
}

/// A member name (bytes) as the tar writer takes it.
fn member_path(member: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(member))
}

fn header_from(stat: &Stat, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(stat.st_mode & 0o7777);
    header.set_uid(u64::from(stat.st_uid));
    header.set_gid(u64::from(stat.st_gid));
    header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
    header
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

fn append_json<W: Write, T: Serialize>(builder: &mut tar::Builder<W>, name: &str, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value)?;
    let mut header = tar::Header::new_gnu();
    header.set_size(bytes.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0));
    header.set_entry_type(tar::EntryType::Regular);
    builder.append_data(&mut header, name, bytes.as_slice())?;
    Ok(())
}

fn new_backup_id() -> String {
    let now = chrono::Utc::now();
    let mut hasher = Sha256::new();
    hasher.update(files::unique_suffix().as_bytes());
    hasher.update(now.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
    format!("{}-{}", now.format("%Y%m%d_%H%M%S"), &hex(&hasher.finalize())[..6])
}
