//! Writing a backup: scan the data paths, then store every member (SQLite
//! databases through the online backup API) into a `.partial` snapshot
//! directory or gzip archive, write the manifest last, sync and rename.
//!
//! Here: the backup's life ([`FirstPass`]: open, first pass, final pass of
//! what changed, manifest, seal, or discard on failure). How each entry is
//! found is `copy`'s; how it is stored, the [`Sink`]'s.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use sha2::{Digest, Sha256};

use super::copy::{Copier, Walk};
use super::format::{
    hex, FinalPass, Manifest, ManifestEntry, Meta, ARCHIVE_PREFIX, ARCHIVE_SUFFIX, FORMAT, MANIFEST_MEMBER,
    META_MEMBER, SNAPSHOT_FORMAT,
};
use super::scan::{scan, Item, Plan, Seen};
use super::sink::{ArchiveSink, Sink};
use super::snapshot::{self, SnapshotSink, SNAPSHOT_SUFFIX};
use super::{Created, Form, Pause, Progress, Reason, Source};
use crate::store::disk;
use crate::store::files;
use crate::units::human_bytes;

/// Backs up `roots` into a new archive in `dir`, in one pass.
pub fn create(roots: &[PathBuf], dir: &Path, reason: Reason, progress: &mut dyn FnMut(Progress)) -> Result<Created> {
    create_paused(roots, dir, Form::Archive, reason, progress, &mut |_| {})
}

/// Backs up `roots` into a new backup of `form` in `dir`, in one pass.
pub fn create_as(
    roots: &[PathBuf],
    dir: &Path,
    form: Form,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
) -> Result<Created> {
    create_paused(roots, dir, form, reason, progress, &mut |_| {})
}

/// [`create_as`], calling `pause` at each [`Pause`] point (tests use it to make races deterministic).
#[doc(hidden)]
pub fn create_paused(
    roots: &[PathBuf],
    dir: &Path,
    form: Form,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<Created> {
    let sources: Vec<Source> = roots.iter().map(Source::path).collect();
    begin_paused(&sources, dir, form, reason, progress, pause)?.finish()
}

/// Takes the first pass of a backup of `sources` into a new backup in `dir`,
/// while the services keep running; [`FirstPass::finish_after_final_pass`]
/// adds what changed until they were stopped.
pub fn begin(
    sources: &[Source],
    dir: &Path,
    form: Form,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
) -> Result<FirstPass> {
    begin_paused(sources, dir, form, reason, progress, &mut |_| {})
}

fn begin_paused(
    sources: &[Source],
    dir: &Path,
    form: Form,
    reason: Reason,
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<FirstPass> {
    if sources.is_empty() {
        bail!("no data paths to back up");
    }
    write_back(sources);
    let plan = scan(sources)?;
    pause(Pause::Scanned);
    files::ensure_private_dir(dir).with_context(|| {
        format!("cannot create the backup directory {}; create it or set UPGRADERD_BACKUP_DIR", dir.display())
    })?;
    let id = new_backup_id();
    let meta = Meta {
        format: match form {
            Form::Archive => FORMAT,
            Form::Snapshot => SNAPSHOT_FORMAT,
        },
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
    let suffix = match form {
        Form::Archive => ARCHIVE_SUFFIX,
        Form::Snapshot => SNAPSHOT_SUFFIX,
    };
    let mut copier = Copier::new(dir);
    let earlier = match form {
        Form::Snapshot => snapshot::earlier(dir, &plan.roots).map(|(path, files)| {
            copier.share_from(files);
            path
        }),
        Form::Archive => None,
    };
    let mut pass = FirstPass {
        final_path: dir.join(format!("{ARCHIVE_PREFIX}{id}{suffix}")),
        partial: dir.join(format!("{ARCHIVE_PREFIX}{id}{suffix}.partial")),
        form,
        earlier,
        out: None,
        copier,
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

/// A backup whose first pass is written and whose manifest is not: what
/// changed since can still be added. Dropped unfinished, it leaves nothing.
pub struct FirstPass {
    final_path: PathBuf,
    partial: PathBuf,
    form: Form,
    /// The snapshot unchanged files are shared with.
    earlier: Option<PathBuf>,
    out: Option<Output>,
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
        if self.form == Form::Snapshot {
            self.out = Some(Output::Snapshot(SnapshotSink::create(&self.partial, self.earlier.clone())?));
            return Ok(());
        }
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&self.partial)
            .with_context(|| format!("cannot create {} (is the backup directory writable?)", self.partial.display()))?;
        // Level 1: backups sit on the upgrade's critical path; speed beats a few percent of size.
        let encoder = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::fast());
        let mut sink = ArchiveSink::new(encoder);
        sink.json(META_MEMBER, &self.meta)?;
        self.out = Some(Output::Archive(sink));
        Ok(())
    }

    fn sink(&mut self) -> Result<&mut dyn Sink> {
        match self.out.as_mut() {
            Some(out) => Ok(out.sink()),
            None => Err(anyhow!("the backup {} is already closed", self.partial.display())),
        }
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
        let mut out = self.out.take().ok_or_else(|| anyhow!("the backup is already closed"))?;
        let result = (|| -> Result<()> {
            for item in items {
                let member = item.member();
                pause(Pause::Copying(&member));
                if let Some(entry) = walk.append(&mut self.copier, out.sink(), plan, item, &member)? {
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
        let named = result.and_then(|()| out.sink().digests());
        self.out = Some(out);
        for (ticket, sha256) in named? {
            let at = self.copier.hashed(ticket).and_then(|member| self.positions.get(&member).copied());
            // Without its sha256 an entry's object would be dropped as unreferenced when the backup is sealed.
            let at = at.ok_or_else(|| anyhow!("a stored file's sha256 came back for no member of the backup"))?;
            self.entries[at].sha256 = Some(sha256);
        }
        progress(Progress { done: total, total });
        Ok(())
    }

    fn write_final_pass(&mut self, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        write_back(&self.sources);
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
        self.sink()?.final_pass(&stale)?;
        let items: Vec<&Item> = changes.copy.iter().map(|i| &plan.items[*i]).collect();
        self.append_items(&plan, &items, progress, &mut |_| {})
    }

    /// The retired members in the order the first pass wrote them.
    fn entries_order(&self, stale: &HashSet<Vec<u8>>) -> Vec<Vec<u8>> {
        self.copier.order.iter().filter(|name| stale.contains(*name)).cloned().collect()
    }

    /// Writes the manifest, syncs the backup and renames it into place.
    fn seal(&mut self) -> Result<Created> {
        let total = self.uncompressed_bytes();
        self.positions.clear();
        if self.form == Form::Snapshot {
            for (index, tally) in self.copier.tallies(&self.entries) {
                if let Some(root) = self.meta.roots.get_mut(index) {
                    root.stored = Some(tally);
                }
            }
        }
        let format = self.meta.format;
        let manifest = Manifest { format, entries: std::mem::take(&mut self.entries) };
        let closed = match self.out.take() {
            Some(Output::Archive(sink)) => seal_archive(sink, &manifest, &self.partial, &self.final_path),
            Some(Output::Snapshot(mut sink)) => {
                let fingerprints = self.copier.fingerprints(&manifest.entries);
                sink.seal(&self.meta, &manifest, fingerprints, &self.final_path)
            }
            None => Err(anyhow!("the backup is already closed")),
        };
        if let Err(err) = closed {
            return Err(self.explain(err, total));
        }
        self.finished = true;
        self.copier.remove_snapshots();
        let archive_bytes = match self.form {
            Form::Archive => fs::metadata(&self.final_path).map(|m| m.len()).unwrap_or(0),
            Form::Snapshot => snapshot::usage(&self.final_path).0,
        };
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
        self.out = None;
        self.copier.remove_snapshots();
        let _ = super::catalog::remove_partial(&self.partial);
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

/// What a backup is being written into.
enum Output {
    Archive(ArchiveSink<GzEncoder<BufWriter<File>>>),
    Snapshot(SnapshotSink),
}

impl Output {
    fn sink(&mut self) -> &mut dyn Sink {
        match self {
            Output::Archive(sink) => sink,
            Output::Snapshot(sink) => sink,
        }
    }
}

/// Appends the manifest, finishes the gzip stream, fsyncs and renames into place.
fn seal_archive(
    mut sink: ArchiveSink<GzEncoder<BufWriter<File>>>,
    manifest: &Manifest,
    partial: &Path,
    final_path: &Path,
) -> Result<()> {
    sink.json(MANIFEST_MEMBER, manifest)?;
    let encoder = sink.builder.into_inner()?;
    let mut buffered = encoder.finish()?;
    buffered.flush()?;
    let file = buffered.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    files::rename_durable(partial, final_path)?;
    Ok(())
}

/// Writes back the data's filesystems before a pass looks at them. A write
/// through a shared memory map changes a file's times only when it dirties
/// a page that was written back: without this, a page written through a
/// map before the pass and again after it would change the file's content
/// and not its times, and the next pass (or snapshot) would take it for
/// unchanged. Writing back makes every page clean, so the next such write is
/// seen. Best effort: a filesystem that cannot be synced is skipped (tmpfs
/// never writes back; a map written there is not seen by its times).
fn write_back(sources: &[Source]) {
    let mut synced = HashSet::new();
    for source in sources {
        // Never blocks on a FIFO, never follows a link.
        let opened = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(&source.path);
        let Ok(handle) = opened else { continue };
        let Ok(meta) = handle.metadata() else { continue };
        if synced.insert(std::os::unix::fs::MetadataExt::dev(&meta)) {
            let _ = rustix::fs::syncfs(&handle);
        }
    }
}

fn new_backup_id() -> String {
    let now = chrono::Utc::now();
    let mut hasher = Sha256::new();
    hasher.update(files::unique_suffix().as_bytes());
    hasher.update(now.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
    format!("{}-{}", now.format("%Y%m%d_%H%M%S"), &hex(&hasher.finalize())[..6])
}
