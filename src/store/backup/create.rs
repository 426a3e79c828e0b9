//! Writing an archive: scan the data paths, then stream every member through
//! gzip into a `.partial` file (SQLite databases through the online backup
//! API), write the manifest last, fsync and rename.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::format::{
    hex, HashingReader, Kind, Manifest, ManifestEntry, Meta, Root, ARCHIVE_PREFIX, ARCHIVE_SUFFIX, FORMAT,
    MANIFEST_MEMBER, META_MEMBER, OWN_PREFIX,
};
use super::{Created, Progress, Reason};
use crate::ops::disk;
use crate::store::files;
use crate::units::human_bytes;

const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

/// Backs up `roots` into a new archive in `dir`.
pub fn create(roots: &[PathBuf], dir: &Path, reason: Reason, progress: &mut dyn FnMut(Progress)) -> Result<Created> {
    if roots.is_empty() {
        bail!("no data paths to back up");
    }
    let plan = scan(roots)?;
    files::ensure_private_dir(dir).with_context(|| {
        format!("cannot create the backup directory {}; create it or set UPGRADERD_BACKUP_DIR", dir.display())
    })?;
    let id = new_backup_id();
    let final_path = dir.join(format!("{ARCHIVE_PREFIX}{id}{ARCHIVE_SUFFIX}"));
    let partial = dir.join(format!("{ARCHIVE_PREFIX}{id}{ARCHIVE_SUFFIX}.partial"));
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
    let mut writer = ArchiveWriter { dir, partial: &partial, warnings: Vec::new(), snapshots: Vec::new() };
    let result = writer.write(&plan, &meta, progress);
    for snapshot in &writer.snapshots {
        let _ = fs::remove_file(snapshot);
    }
    match result.and_then(|()| files::rename_durable(&partial, &final_path).map_err(Into::into)) {
        Ok(()) => {
            let archive_bytes = fs::metadata(&final_path).map(|m| m.len()).unwrap_or(0);
            Ok(Created { path: final_path, meta, archive_bytes, warnings: writer.warnings })
        }
        Err(err) => {
            let _ = fs::remove_file(&partial);
            Err(explain_write_error(err, dir, &partial, plan.total_bytes))
        }
    }
}

fn explain_write_error(err: anyhow::Error, dir: &Path, partial: &Path, needed: u64) -> anyhow::Error {
    let disk_full =
        err.chain().any(|c| c.downcast_ref::<io::Error>().and_then(|e| e.raw_os_error()) == Some(libc::ENOSPC));
    if disk_full {
        let free = disk::free_bytes(dir).map(human_bytes).unwrap_or_else(|_| "unknown".into());
        return anyhow!(
            "the disk holding {} is full: the backup needed up to {} (the data's uncompressed size) and {free} is free; \
             free some space or set UPGRADERD_BACKUP_DIR to a larger disk (the partial archive was removed)",
            dir.display(),
            human_bytes(needed)
        );
    }
    err.context(format!("writing backup {} failed; the partial archive was removed", partial.display()))
}

/// What a backup will contain, found before anything is written.
struct Plan {
    roots: Vec<Root>,
    items: Vec<Item>,
    total_bytes: u64,
    files: u64,
}

struct Item {
    /// Path on disk.
    source: PathBuf,
    /// Member name: `data/<root>/<relative>`.
    member: String,
    meta: fs::Metadata,
    sqlite: bool,
}

fn scan(roots: &[PathBuf]) -> Result<Plan> {
    let mut plan = Plan { roots: Vec::new(), items: Vec::new(), total_bytes: 0, files: 0 };
    for (index, root) in roots.iter().enumerate() {
        let meta = fs::symlink_metadata(root).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => anyhow!(
                "data path {} does not exist; fix UPGRADERD_DATA_DIR (or the container's mounts) before backing up",
                root.display()
            ),
            _ => anyhow!("data path {} cannot be read: {e}", root.display()),
        })?;
        let is_dir = meta.is_dir();
        plan.roots.push(Root { index, path: root.clone(), is_dir });
        let member = format!("data/{index}");
        plan.items.push(Item { source: root.clone(), member: member.clone(), sqlite: false, meta });
        if is_dir {
            walk(root, &member, true, &mut plan)?;
        }
    }
    mark_sqlite(&mut plan)?;
    for item in &plan.items {
        if item.meta.is_file() {
            plan.total_bytes += item.meta.len();
            plan.files += 1;
        }
    }
    Ok(plan)
}

fn walk(dir: &Path, member: &str, top: bool, plan: &mut Plan) -> Result<()> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .with_context(|| format!("cannot read data directory {}", dir.display()))?
        .collect::<io::Result<_>>()
        .with_context(|| format!("cannot read data directory {}", dir.display()))?;
    children.sort_by_key(|e| e.file_name());
    for child in children {
        let name = child.file_name();
        let name_text = name.to_string_lossy();
        if top && name_text.starts_with(OWN_PREFIX) {
            continue;
        }
        let source = child.path();
        let meta = fs::symlink_metadata(&source).with_context(|| format!("cannot stat {}", source.display()))?;
        let child_member = format!("{member}/{name_text}");
        let kind = meta.file_type();
        if !(kind.is_dir() || kind.is_file() || kind.is_symlink()) {
            // Sockets, FIFOs and devices are runtime objects, not data.
            continue;
        }
        plan.items.push(Item { source: source.clone(), member: child_member.clone(), meta, sqlite: false });
        if kind.is_dir() {
            walk(&source, &child_member, false, plan)?;
        }
    }
    Ok(())
}

/// Marks SQLite databases (by header) and drops their `-wal`, `-shm` and
/// `-journal` companions: the snapshot already holds every committed page.
fn mark_sqlite(plan: &mut Plan) -> Result<()> {
    let mut databases = HashSet::new();
    for item in &mut plan.items {
        if item.meta.is_file() && item.meta.len() >= 512 && has_sqlite_header(&item.source) {
            item.sqlite = true;
            databases.insert(item.source.clone());
        }
    }
    plan.items.retain(|item| {
        let name = item.source.to_string_lossy();
        !["-wal", "-shm", "-journal"]
            .iter()
            .any(|suffix| name.strip_suffix(suffix).is_some_and(|db| databases.contains(Path::new(db))))
    });
    Ok(())
}

fn has_sqlite_header(path: &Path) -> bool {
    let mut header = [0u8; 16];
    File::open(path).and_then(|mut f| f.read_exact(&mut header)).is_ok() && &header == SQLITE_MAGIC
}

struct ArchiveWriter<'a> {
    dir: &'a Path,
    partial: &'a Path,
    warnings: Vec<String>,
    snapshots: Vec<PathBuf>,
}

impl ArchiveWriter<'_> {
    fn write(&mut self, plan: &Plan, meta: &Meta, progress: &mut dyn FnMut(Progress)) -> Result<()> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.partial)
            .with_context(|| format!("cannot create {} (is the backup directory writable?)", self.partial.display()))?;
        // Level 1: backups sit on the upgrade's critical path; speed beats a few percent of size.
        let encoder = GzEncoder::new(BufWriter::with_capacity(1 << 20, file), Compression::fast());
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Complete);
        append_json(&mut builder, META_MEMBER, meta)?;

        let mut entries = Vec::with_capacity(plan.items.len());
        let mut done = 0u64;
        let mut last_report = Instant::now();
        for item in &plan.items {
            let entry = self.append_item(&mut builder, item)?;
            done += entry.size;
            entries.push(entry);
            if last_report.elapsed() > Duration::from_millis(500) {
                progress(Progress { done, total: plan.total_bytes });
                last_report = Instant::now();
            }
        }
        progress(Progress { done: plan.total_bytes, total: plan.total_bytes });
        append_json(&mut builder, MANIFEST_MEMBER, &Manifest { format: FORMAT, entries })?;
        let encoder = builder.into_inner()?;
        let buffered = encoder.finish()?;
        let file = buffered.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(())
    }

    fn append_item<W: Write>(&mut self, builder: &mut tar::Builder<W>, item: &Item) -> Result<ManifestEntry> {
        let meta = &item.meta;
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(meta.uid() as u64);
        header.set_gid(meta.gid() as u64);
        header.set_mtime(meta.mtime().max(0) as u64);
        let mut entry = ManifestEntry {
            path: item.member.clone(),
            kind: Kind::File,
            size: 0,
            sha256: None,
            mode: meta.mode() & 0o7777,
            uid: meta.uid() as u64,
            gid: meta.gid() as u64,
            mtime: meta.mtime(),
            sqlite_snapshot: false,
        };
        let kind = meta.file_type();
        if kind.is_dir() {
            entry.kind = Kind::Dir;
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, &item.member, io::empty())?;
        } else if kind.is_symlink() {
            entry.kind = Kind::Symlink;
            let target =
                fs::read_link(&item.source).with_context(|| format!("cannot read link {}", item.source.display()))?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, &item.member, &target)?;
        } else {
            let (file, sqlite_snapshot) = if item.sqlite {
                (self.snapshot(&item.source)?, true)
            } else {
                let file =
                    File::open(&item.source).with_context(|| format!("cannot read {}", item.source.display()))?;
                (file, false)
            };
            let size = file.metadata()?.len();
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(size);
            let mut reader = HashingReader::exact(file, size);
            builder
                .append_data(&mut header, &item.member, &mut reader)
                .with_context(|| format!("cannot back up {}", item.source.display()))?;
            if reader.short {
                self.warnings
                    .push(format!("{} shrank while it was backed up; its copy is padded", item.source.display()));
            }
            entry.size = size;
            entry.sha256 = Some(reader.hex());
            entry.sqlite_snapshot = sqlite_snapshot;
        }
        Ok(entry)
    }

    /// A consistent copy of a live SQLite database, through the online backup API.
    fn snapshot(&mut self, source: &Path) -> Result<File> {
        let target = self.dir.join(format!("{OWN_PREFIX}snapshot-{}.db", files::unique_suffix()));
        self.snapshots.push(target.clone());
        snapshot_sqlite(source, &target)
            .with_context(|| format!("cannot snapshot SQLite database {}", source.display()))?;
        Ok(File::open(&target)?)
    }
}

/// Copies a SQLite database page by page under one read transaction, so the
/// copy holds exactly what was committed when the copy started.
pub fn snapshot_sqlite(source: &Path, target: &Path) -> Result<()> {
    use rusqlite::backup::{Backup, StepResult};
    use rusqlite::{Connection, OpenFlags};
    let src = Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
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
