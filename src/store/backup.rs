//! Backup archives: create, list, verify, restore, prune.
//!
//! An archive is a `.tar.gz` holding, in order: `upgraderd-backup.json` (what
//! was backed up, for `list` to read cheaply), `data/<i>/...` for each data
//! path `i`, and `manifest.json` (every member with its sha256, written last
//! because the hashes are computed while writing). SQLite databases go in as a
//! snapshot taken through SQLite's online backup API, never as raw bytes of a
//! live file. Archives are written as `.partial`, fsynced and renamed; restore
//! stages on the same filesystem, checks every hash and only then swaps.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::ops::disk;
use crate::store::files;
use crate::ui::human_bytes;

pub const META_MEMBER: &str = "upgraderd-backup.json";
pub const MANIFEST_MEMBER: &str = "manifest.json";
const ARCHIVE_PREFIX: &str = "upgrade-backup-";
const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Names upgraderd itself creates inside a data dir while restoring; never backed up.
const OWN_PREFIX: &str = ".upgraderd-";
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const FORMAT: u32 = 1;

/// One data path of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    pub index: usize,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// What a backup holds and why it was taken; the first member of the archive.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    pub upgrade_id: Option<String>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image_id: Option<String>,
    pub commit: Option<String>,
    pub roots: Vec<Root>,
    pub total_bytes: u64,
    pub file_count: u64,
}

/// Why a backup is taken, recorded in its metadata.
#[derive(Debug, Clone, Default)]
pub struct Reason {
    pub upgrade_id: Option<String>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image_id: Option<String>,
    pub commit: Option<String>,
}

/// One member in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sqlite_snapshot: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub entries: Vec<ManifestEntry>,
}

/// Progress of a long backup or restore step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A finished archive.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub path: PathBuf,
    pub meta: Meta,
    pub archive_bytes: u64,
    pub warnings: Vec<String>,
}

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

/// Hashes what passes through; in `exact` mode yields exactly `size` bytes,
/// padding with zeros if the source shrank under us.
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    remaining: Option<u64>,
    short: bool,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), remaining: None, short: false }
    }

    fn exact(inner: R, size: u64) -> Self {
        HashingReader { remaining: Some(size), ..HashingReader::new(inner) }
    }

    fn hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = match self.remaining {
            Some(0) => return Ok(0),
            Some(left) => buf.len().min(left.min(usize::MAX as u64) as usize),
            None => buf.len(),
        };
        let mut n = self.inner.read(&mut buf[..limit])?;
        if n == 0 && self.remaining.is_some() {
            self.short = true;
            buf[..limit].fill(0);
            n = limit;
        }
        if let Some(left) = &mut self.remaining {
            *left -= n as u64;
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn new_backup_id() -> String {
    let now = chrono::Utc::now();
    let mut hasher = Sha256::new();
    hasher.update(files::unique_suffix().as_bytes());
    hasher.update(now.timestamp_nanos_opt().unwrap_or(0).to_le_bytes());
    format!("{}-{}", now.format("%Y%m%d_%H%M%S"), &hex(&hasher.finalize())[..6])
}

/// Opens an archive for reading, explaining a missing or unreadable file.
fn open_archive(path: &Path) -> Result<tar::Archive<GzDecoder<io::BufReader<File>>>> {
    let file = File::open(path).with_context(|| format!("cannot open backup {}", path.display()))?;
    Ok(tar::Archive::new(GzDecoder::new(io::BufReader::with_capacity(1 << 20, file))))
}

/// Reads an archive's first member, its metadata, without reading the rest.
pub fn read_meta(path: &Path) -> Result<Meta> {
    let mut archive = open_archive(path)?;
    let mut entries = archive.entries().map_err(|e| damaged(path, None, e))?;
    let mut first = match entries.next() {
        Some(entry) => entry.map_err(|e| damaged(path, None, e))?,
        None => bail!("{} is empty: not an upgraderd backup", path.display()),
    };
    let name = first.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if name != META_MEMBER {
        bail!(
            "{} is not an upgraderd backup: it does not start with {META_MEMBER} (first member: {name})",
            path.display()
        );
    }
    let mut text = String::new();
    first.read_to_string(&mut text).map_err(|e| damaged(path, Some(META_MEMBER), e))?;
    serde_json::from_str(&text).with_context(|| format!("{} has an unreadable {META_MEMBER}", path.display()))
}

fn damaged(path: &Path, member: Option<&str>, err: io::Error) -> anyhow::Error {
    let what = describe_read_error(&err);
    match member {
        Some(member) => anyhow!("backup {} is damaged at member `{member}`: {what}", path.display()),
        None => anyhow!("backup {} is damaged: {what}", path.display()),
    }
}

fn describe_read_error(err: &io::Error) -> String {
    let text = err.to_string();
    if text.contains("invalid gzip header") {
        "not a gzip file".into()
    } else if err.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("unexpected EOF")
        || text.contains("failed to fill whole buffer")
    {
        format!("the archive is truncated ({text})")
    } else if text.contains("corrupt deflate stream")
        || text.contains("invalid")
        || text.contains("CRC")
        || text.contains("checksum")
    {
        format!("the compressed data is corrupt ({text})")
    } else {
        text
    }
}

/// What `verify` found in a good archive.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub path: PathBuf,
    pub meta: Meta,
    pub members: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Reads the whole archive: the gzip CRC, every member's sha256 against the manifest.
pub fn verify(path: &Path) -> Result<Verified> {
    let (meta, manifest, seen) = read_archive(path, &mut |_, _, data| Ok(hash_to_sink(data)?))?;
    check_against_manifest(path, &seen, &manifest)?;
    let files = manifest.entries.iter().filter(|e| e.kind == Kind::File).count();
    let bytes = manifest.entries.iter().map(|e| e.size).sum();
    Ok(Verified { path: path.to_path_buf(), meta, members: seen.len(), files, bytes })
}

fn hash_to_sink(entry: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut reader = HashingReader::new(entry);
    let size = io::copy(&mut reader, &mut io::sink())?;
    Ok((reader.hex(), size))
}

/// A data member as read from the archive.
#[derive(Debug)]
struct SeenMember {
    path: String,
    kind: Kind,
    sha256: Option<String>,
    size: u64,
}

fn check_against_manifest(path: &Path, seen: &[SeenMember], manifest: &Manifest) -> Result<()> {
    let expected: HashMap<&str, &ManifestEntry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for member in seen {
        let Some(entry) = expected.get(member.path.as_str()) else {
            bail!("backup {} has member `{}` that its manifest does not list", path.display(), member.path);
        };
        if entry.kind != member.kind {
            bail!(
                "backup {}: member `{}` is a {:?} but the manifest says {:?}",
                path.display(),
                member.path,
                member.kind,
                entry.kind
            );
        }
        if entry.kind == Kind::File && (entry.sha256 != member.sha256 || entry.size != member.size) {
            bail!(
                "backup {}: member `{}` does not match its manifest (sha256 {} vs {}); the archive is corrupt",
                path.display(),
                member.path,
                member.sha256.as_deref().unwrap_or("-"),
                entry.sha256.as_deref().unwrap_or("-")
            );
        }
    }
    let present: HashSet<&str> = seen.iter().map(|m| m.path.as_str()).collect();
    if let Some(missing) = manifest.entries.iter().find(|e| !present.contains(e.path.as_str())) {
        bail!("backup {}: member `{}` listed in the manifest is missing", path.display(), missing.path);
    }
    Ok(())
}

type MemberHandler<'h> = dyn FnMut(&str, &tar::Header, &mut dyn Read) -> Result<(String, u64)> + 'h;

/// Reads an archive once, in order: its metadata, each data member (handed to
/// `on_member`, which returns the sha256 and size of a file's content), the
/// manifest, and the gzip trailer so its CRC is checked.
fn read_archive(path: &Path, on_member: &mut MemberHandler<'_>) -> Result<(Meta, Manifest, Vec<SeenMember>)> {
    let meta = read_meta(path)?;
    let mut archive = open_archive(path)?;
    let mut manifest: Option<Manifest> = None;
    let mut seen = Vec::new();
    {
        let entries = archive.entries().map_err(|e| damaged(path, None, e))?;
        let mut last_name = String::new();
        for (position, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| damaged(path, after(&last_name), e))?;
            let name = entry.path().map_err(|e| damaged(path, after(&last_name), e))?.to_string_lossy().into_owned();
            last_name = name.clone();
            if position == 0 {
                continue; // The metadata, already read.
            }
            if name == MANIFEST_MEMBER {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| damaged(path, Some(&name), e))?;
                manifest = Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("backup {} has an unreadable manifest", path.display()))?,
                );
                continue;
            }
            if manifest.is_some() {
                bail!("backup {} has member `{name}` after its manifest", path.display());
            }
            let header = entry.header().clone();
            let kind = match header.entry_type() {
                tar::EntryType::Regular => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                other => bail!(
                    "backup {} has member `{name}` of type {other:?}, which upgraderd never writes",
                    path.display()
                ),
            };
            let (sha256, size) =
                on_member(&name, &header, &mut entry).map_err(|e| match e.downcast::<io::Error>() {
                    Ok(io_err) => damaged(path, Some(&name), io_err),
                    Err(other) => other,
                })?;
            let sha256 = (kind == Kind::File).then_some(sha256);
            seen.push(SeenMember { path: name, kind, sha256, size });
        }
    }
    let Some(manifest) = manifest else {
        bail!("backup {} has no {MANIFEST_MEMBER}: it is incomplete or not an upgraderd backup", path.display());
    };
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| damaged(path, Some("(gzip trailer)"), e))?;
    Ok((meta, manifest, seen))
}

fn after(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

/// Where `restore` puts the data.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Back over the paths the backup was taken from.
    Original,
    /// Into this directory (one root: the directory itself; several: `<i>-<name>` inside).
    Into(PathBuf),
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub archive: PathBuf,
    pub targets: Vec<PathBuf>,
    pub files: u64,
    pub bytes: u64,
}

/// Restores an archive: stage next to each target, check every hash, then swap.
/// A failure before the swap leaves the targets untouched.
pub fn restore(archive: &Path, destination: &Destination, progress: &mut dyn FnMut(Progress)) -> Result<Restored> {
    let meta = read_meta(archive)?;
    let targets = targets_for(&meta, destination)?;
    let needed = meta.total_bytes;
    for target in &targets {
        let free = disk::free_bytes(target).unwrap_or(u64::MAX);
        if free < needed {
            bail!(
                "not enough space to restore into {}: {} needed, {} free",
                target.display(),
                human_bytes(needed),
                human_bytes(free)
            );
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    let result = stage_all(archive, &meta, &targets, &mut stages, progress);
    let outcome = result.and_then(|stats| {
        swap_all(&stages)?;
        Ok(stats)
    });
    for stage in &stages {
        stage.cleanup();
    }
    let (files, bytes) = outcome?;
    Ok(Restored { archive: archive.to_path_buf(), targets, files, bytes })
}

fn targets_for(meta: &Meta, destination: &Destination) -> Result<Vec<PathBuf>> {
    match destination {
        Destination::Original => Ok(meta.roots.iter().map(|r| r.path.clone()).collect()),
        Destination::Into(dir) if meta.roots.len() == 1 => Ok(vec![dir.clone()]),
        Destination::Into(dir) => Ok(meta
            .roots
            .iter()
            .map(|r| {
                let name =
                    r.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
                dir.join(format!("{}-{name}", r.index))
            })
            .collect()),
    }
}

/// One root being restored: its staging place and final target.
struct Stage {
    root: Root,
    target: PathBuf,
    /// Dir roots: a directory inside the target; file roots: a sibling file.
    staging: PathBuf,
    /// Dir roots: where the old children wait until the swap has succeeded.
    old: PathBuf,
    root_entry: Option<ManifestEntry>,
    /// Directories' final mode and mtime, applied once their children are in place.
    dir_fixups: Vec<(PathBuf, u32, i64)>,
}

impl Stage {
    fn cleanup(&self) {
        let _ = files::remove_any(&self.staging);
        let _ = files::remove_any(&self.old);
    }
}

fn stage_all(
    archive: &Path,
    meta: &Meta,
    targets: &[PathBuf],
    stages: &mut Vec<Stage>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(u64, u64)> {
    let tag = files::unique_suffix();
    for (root, target) in meta.roots.iter().zip(targets) {
        let (staging, old) = if root.is_dir {
            fs::create_dir_all(target).with_context(|| format!("cannot create restore target {}", target.display()))?;
            (target.join(format!("{OWN_PREFIX}staging-{tag}")), target.join(format!("{OWN_PREFIX}old-{tag}")))
        } else {
            let parent = target.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            (files::sibling(target, "upgraderd-staging"), PathBuf::new())
        };
        stages.push(Stage {
            root: root.clone(),
            target: target.clone(),
            staging,
            old,
            root_entry: None,
            dir_fixups: Vec::new(),
        });
    }

    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let (_, manifest, seen) = read_archive(archive, &mut |name, header, data| {
        let (stage_index, relative) = locate(name, stages)?;
        let dest = staged_path(&stages[stage_index], &relative)?;
        let (kind, result) = match header.entry_type() {
            tar::EntryType::Regular => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let mut hashing = HashingReader::new(data);
                let size = io::copy(&mut hashing, &mut out)?;
                out.sync_all()?;
                files += 1;
                bytes += size;
                (Kind::File, (hashing.hex(), size))
            }
            tar::EntryType::Directory => {
                fs::create_dir(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
                (Kind::Dir, (String::new(), 0))
            }
            tar::EntryType::Symlink => {
                let link = header.link_name()?.ok_or_else(|| anyhow!("symlink member `{name}` has no target"))?;
                check_link_stays_inside(name, &relative, &link)?;
                std::os::unix::fs::symlink(&link, &dest)
                    .with_context(|| format!("cannot create link {}", dest.display()))?;
                (Kind::Symlink, (String::new(), 0))
            }
            other => bail!("member `{name}` has type {other:?}; refusing to restore it"),
        };
        apply_metadata(&dest, kind, header, &mut stages[stage_index])?;
        if last_report.elapsed() > Duration::from_millis(500) {
            progress(Progress { done: bytes, total: meta.total_bytes });
            last_report = Instant::now();
        }
        Ok(result)
    })?;
    check_against_manifest(archive, &seen, &manifest)?;
    for stage in stages.iter_mut() {
        let root_member = format!("data/{}", stage.root.index);
        stage.root_entry = manifest.entries.iter().find(|e| e.path == root_member).cloned();
        for (dir, mode, mtime) in stage.dir_fixups.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode))?;
            set_mtime(dir, *mtime)?;
        }
    }
    progress(Progress { done: meta.total_bytes, total: meta.total_bytes });
    Ok((files, bytes))
}

/// Which root a member belongs to and its path below that root; refuses
/// absolute paths, `..` and anything outside `data/<i>`.
fn locate(name: &str, stages: &[Stage]) -> Result<(usize, PathBuf)> {
    let path = Path::new(name);
    let mut components = path.components();
    let hostile = || {
        anyhow!("member `{name}` has an absolute path, `..` or lies outside data/: refusing to restore this archive")
    };
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(hostile());
    }
    if components.next() != Some(Component::Normal("data".as_ref())) {
        return Err(hostile());
    }
    let index: usize =
        components.next().and_then(|c| c.as_os_str().to_str()).and_then(|s| s.parse().ok()).ok_or_else(hostile)?;
    let stage = stages.iter().position(|s| s.root.index == index).ok_or_else(hostile)?;
    Ok((stage, components.as_path().to_path_buf()))
}

/// The staging path for a member, refusing to write through anything but real directories.
fn staged_path(stage: &Stage, relative: &Path) -> Result<PathBuf> {
    if relative.as_os_str().is_empty() {
        return Ok(stage.staging.clone());
    }
    if !stage.root.is_dir {
        bail!("member under file root data/{} is not allowed", stage.root.index);
    }
    let mut dir = stage.staging.clone();
    let parents: Vec<_> = relative.parent().map(|p| p.components().collect()).unwrap_or_default();
    for part in parents {
        dir.push(part);
        let meta = fs::symlink_metadata(&dir)
            .with_context(|| format!("member's parent {} was not restored first", dir.display()))?;
        if !meta.is_dir() {
            bail!("refusing to write through {}, which is not a real directory", dir.display());
        }
    }
    Ok(stage.staging.join(relative))
}

/// A symlink in a backup may point anywhere inside its own root, nowhere else.
fn check_link_stays_inside(name: &str, relative: &Path, link: &Path) -> Result<()> {
    if link.is_absolute() {
        bail!("member `{name}` is a symlink to the absolute path {}: refusing to restore this archive", link.display());
    }
    let mut depth: i64 = relative.components().count() as i64 - 1;
    for component in link.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => depth = -1,
        }
        if depth < 0 {
            bail!(
                "member `{name}` is a symlink to {} that leaves its data directory: refusing to restore this archive",
                link.display()
            );
        }
    }
    Ok(())
}

fn apply_metadata(dest: &Path, kind: Kind, header: &tar::Header, stage: &mut Stage) -> Result<()> {
    let mode = header.mode()? & 0o7777;
    let mtime = header.mtime()? as i64;
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", dest.display()))?;
    }
    match kind {
        Kind::Symlink => {}
        Kind::File => {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
            set_mtime(dest, mtime)?;
        }
        Kind::Dir => {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode | 0o700))?;
            // Writable until its children are in; the real mode comes last.
            stage.dir_fixups.push((dest.to_path_buf(), mode, mtime));
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    let file = File::open(path).with_context(|| format!("cannot open {} to set its time", path.display()))?;
    file.set_modified(time).with_context(|| format!("cannot set the time of {}", path.display()))?;
    Ok(())
}

/// Swaps every staged root into place; undoes the roots already swapped if one fails.
fn swap_all(stages: &[Stage]) -> Result<()> {
    let mut done: Vec<(usize, Vec<Move>)> = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        match swap(stage) {
            Ok(moves) => done.push((index, moves)),
            Err(err) => {
                for (_, moves) in done.iter().rev() {
                    undo(moves);
                }
                return Err(
                    err.context(format!("restoring {} failed; the data was left as it was", stage.target.display()))
                );
            }
        }
    }
    for (index, _) in done {
        let _ = files::sync_dir(&stages[index].target);
    }
    Ok(())
}

struct Move {
    from: PathBuf,
    to: PathBuf,
}

fn undo(moves: &[Move]) {
    for m in moves.iter().rev() {
        let _ = fs::rename(&m.to, &m.from);
    }
}

/// Dir roots swap children (the target itself may be a mountpoint or a
/// volume bound into a container, so it is kept); file roots rename over.
fn swap(stage: &Stage) -> Result<Vec<Move>> {
    let mut moves = Vec::new();
    if !stage.root.is_dir {
        if stage.target.is_dir() {
            bail!("{} is a directory but the backup holds a file there", stage.target.display());
        }
        files::rename_durable(&stage.staging, &stage.target)?;
        return Ok(moves);
    }
    let result = (|| -> Result<()> {
        fs::create_dir(&stage.old)?;
        for child in fs::read_dir(&stage.target)? {
            let child = child?.path();
            if child == stage.staging || child == stage.old {
                continue;
            }
            let to = stage.old.join(child.file_name().expect("dir entries have names"));
            fs::rename(&child, &to)?;
            moves.push(Move { from: child, to });
        }
        for child in fs::read_dir(&stage.staging)? {
            let child = child?.path();
            let to = stage.target.join(child.file_name().expect("dir entries have names"));
            fs::rename(&child, &to)?;
            moves.push(Move { from: child, to });
        }
        if let Some(entry) = &stage.root_entry {
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(&stage.target, Some(entry.uid as u32), Some(entry.gid as u32))?;
            }
            fs::set_permissions(&stage.target, fs::Permissions::from_mode(entry.mode))?;
            set_mtime(&stage.target, entry.mtime)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(moves),
        Err(err) => {
            undo(&moves);
            Err(err)
        }
    }
}

/// One archive in the backup directory, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Listed {
    pub id: String,
    pub path: PathBuf,
    pub bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// Archives left `.partial` by a writer that was killed.
pub fn partial_archives(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(ARCHIVE_PREFIX) && name.ends_with(".partial")
        })
        .collect()
}

/// The archives in `dir`, newest first.
pub fn list(dir: &Path) -> Result<Vec<Listed>> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(e).with_context(|| format!("cannot read the backup directory {}", dir.display())),
    };
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = archive_id(&name) else { continue };
        let path = entry.path();
        let bytes = entry.metadata().map(|m| m.len()).unwrap_or(0);
        let (meta, problem) = match read_meta(&path) {
            Ok(meta) => (Some(meta), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        found.push(Listed { id: id.to_string(), path, bytes, meta, problem });
    }
    found.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(found)
}

fn archive_id(file_name: &str) -> Option<&str> {
    file_name.strip_prefix(ARCHIVE_PREFIX)?.strip_suffix(ARCHIVE_SUFFIX)
}

/// Finds an archive by path or by backup id in `dir`.
pub fn find(dir: &Path, reference: &str) -> Option<PathBuf> {
    let as_path = Path::new(reference);
    if as_path.is_file() {
        return Some(as_path.to_path_buf());
    }
    if reference.contains('/') {
        return None;
    }
    let candidate = dir.join(format!("{ARCHIVE_PREFIX}{reference}{ARCHIVE_SUFFIX}"));
    candidate.is_file().then_some(candidate)
}

/// What `prune` removed and kept.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pruned {
    pub deleted: Vec<PathBuf>,
    pub kept: Vec<PathBuf>,
    pub leftovers: Vec<PathBuf>,
}

/// Keeps the newest `keep` archives and `protected`; deletes the other
/// archives, and `.partial`/snapshot files left by an interrupted backup.
/// The caller holds the upgrade lock, so no backup is being written.
pub fn prune(dir: &Path, keep: usize, protected: Option<&Path>) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    for (rank, listed) in list(dir)?.into_iter().enumerate() {
        let is_protected = protected.is_some_and(|p| p == listed.path);
        if rank < keep || is_protected {
            pruned.kept.push(listed.path);
        } else {
            fs::remove_file(&listed.path).with_context(|| format!("cannot delete {}", listed.path.display()))?;
            pruned.deleted.push(listed.path);
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = (name.starts_with(ARCHIVE_PREFIX) && name.ends_with(".partial"))
                || (name.starts_with(OWN_PREFIX) && name.contains("snapshot-"));
            if leftover && fs::remove_file(entry.path()).is_ok() {
                pruned.leftovers.push(entry.path());
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside_their_root() {
        assert!(check_link_stays_inside("m", Path::new("a/b"), Path::new("../c")).is_ok());
        assert!(check_link_stays_inside("m", Path::new("a/b"), Path::new("../../c")).is_err());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("./x/../y")).is_ok());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("/etc/passwd")).is_err());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("..")).is_err());
    }

    #[test]
    fn archive_ids_come_from_file_names() {
        assert_eq!(archive_id("upgrade-backup-20250107_143022-abc123.tar.gz"), Some("20250107_143022-abc123"));
        assert_eq!(archive_id("upgrade-backup-x.tar.gz.partial"), None);
        assert_eq!(archive_id("other.tar.gz"), None);
    }

    #[test]
    fn hashing_reader_pads_a_shrunk_source() {
        let mut reader = HashingReader::exact(&b"abc"[..], 5);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(reader.short);
    }
}
