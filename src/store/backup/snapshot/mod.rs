//! Snapshots: a backup as a directory in which each file's content is stored
//! once, and shared with the snapshot before it when the file did not change.
//!
//! `upgrade-backup-<id>.snap/` holds `upgraderd-backup.json` and
//! `manifest.json` (the same metadata and manifest as an archive's),
//! `fingerprints.json` (the state each file was read in, for the next
//! snapshot to know what is unchanged) and `objects/<ab>/<sha256>`, one
//! read-only file per content. A file unchanged since the previous snapshot
//! read it (same device, inode, size, times, mode, owner, link count) is not
//! read again: its object is a hard link to the previous snapshot's. So a
//! snapshot costs what changed, each holds all of its data by itself, and
//! deleting one (prune) frees exactly what no other shares.
//!
//! New content is cloned (`FICLONE`, a reflink) where the filesystem can and
//! the backup directory is on the data's filesystem, else copied with its
//! holes kept; a large file that is not cloned, and a SQLite database, is
//! stored in pieces shared with the snapshot before ([`pieces`]). It is
//! hashed from what was stored, so the manifest's sha256 is what the
//! snapshot holds even when the live file changed meanwhile.
//!
//! A snapshot is written as `<name>.partial`, synced and renamed. It is read
//! back (verify, restore, export) as the tar stream an archive would hold
//! ([`stream`]), through the same member rules and staging as an archive.

mod direct;
mod hasher;
mod objects;
mod pieces;
pub(super) mod stream;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::format::{
    bytes_from_json, bytes_to_json, FinalPass, Kind, Manifest, ManifestEntry, Meta, Root, MANIFEST_MEMBER, META_MEMBER,
};
use super::scan::Fingerprint;
use super::sink::{Content, Digest, Sink, Stored};
use crate::store::files;

pub(super) const SNAPSHOT_SUFFIX: &str = ".snap";
const FINGERPRINTS: &str = "fingerprints.json";
const OBJECTS: &str = "objects";

/// Writes a snapshot into its `.partial` directory.
pub(super) struct SnapshotSink {
    partial: PathBuf,
    /// The snapshot whose objects unchanged files are shared with.
    earlier: Option<PathBuf>,
    temporaries: u64,
    /// Hashes cloned contents apart; started with the first clone.
    hasher: Option<hasher::Hasher>,
}

impl SnapshotSink {
    /// Creates the `.partial` directory of a new snapshot.
    pub(super) fn create(partial: &Path, earlier: Option<PathBuf>) -> Result<SnapshotSink> {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(partial)
            .with_context(|| format!("cannot create {} (is the backup directory writable?)", partial.display()))?;
        fs::DirBuilder::new().mode(0o700).create(partial.join(OBJECTS))?;
        Ok(SnapshotSink { partial: partial.to_path_buf(), earlier, temporaries: 0, hasher: None })
    }

    /// Writes the metadata, manifest and fingerprints, syncs everything to
    /// disk and renames the snapshot into place.
    pub(super) fn seal(
        &mut self,
        meta: &Meta,
        manifest: &Manifest,
        fingerprints: Vec<(Vec<u8>, Fingerprint)>,
        final_path: &Path,
    ) -> Result<()> {
        let read = Fingerprints {
            entries: fingerprints
                .into_iter()
                .map(|(path, fingerprint)| FingerprintWire::new(&path, fingerprint))
                .collect(),
        };
        self.drop_unreferenced(manifest)?;
        write_json(&self.partial.join(FINGERPRINTS), &read)?;
        write_json(&self.partial.join(MANIFEST_MEMBER), manifest)?;
        write_json(&self.partial.join(META_MEMBER), meta)?;
        // One sync of the whole filesystem instead of one per object.
        let dir = File::open(&self.partial)?;
        rustix::fs::syncfs(&dir)?;
        files::rename_durable(&self.partial, final_path)?;
        Ok(())
    }

    /// Removes the objects no member of the final manifest names: the
    /// content of files the final pass stored again, or that went away
    /// (and the pieces only their lists named).
    fn drop_unreferenced(&self, manifest: &Manifest) -> Result<()> {
        let objects = self.partial.join(OBJECTS);
        let named: HashSet<&str> = manifest.entries.iter().filter_map(|e| e.sha256.as_deref()).collect();
        let mut listed_pieces: HashSet<String> = HashSet::new();
        for entry in manifest.entries.iter().filter(|e| e.kind == Kind::File && e.size >= pieces::PIECED_FROM) {
            let Some(sha256) = entry.sha256.as_deref().filter(|s| objects::is_sha256(s)) else { continue };
            // A list this snapshot holds but cannot read would lose its pieces here: the snapshot fails instead.
            let listed = pieces::read_list(&objects, sha256, entry.size).map_err(|e| {
                anyhow::anyhow!(
                    "snapshot {}: member `{}`: {e}",
                    self.partial.display(),
                    super::format::show(&entry.path)
                )
            })?;
            if let Some(pieces) = listed {
                listed_pieces.extend(pieces.stored().map(|(piece, _)| piece.to_string()));
            }
        }
        for object in walk(&objects) {
            let name = object.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let keep = match pieces::listed_content(&name) {
                Some(content) => named.contains(content),
                None => named.contains(name.as_str()) || listed_pieces.contains(&name),
            };
            if !keep {
                fs::remove_file(&object).with_context(|| format!("cannot remove {}", object.display()))?;
            }
        }
        Ok(())
    }
}

impl Sink for SnapshotSink {
    fn put(&mut self, entry: &ManifestEntry, content: Option<File>, shown: &Path) -> Result<Option<Content>> {
        if entry.kind != Kind::File {
            return Ok(None); // The manifest entry is all a snapshot keeps of it.
        }
        let Some(file) = content else { bail!("{}: a file member without content", shown.display()) };
        self.temporaries += 1;
        let objects = self.partial.join(OBJECTS);
        let earlier = self.earlier.as_ref().map(|dir| dir.join(OBJECTS));
        let put =
            objects::store(&objects, earlier.as_deref(), self.temporaries, &file, entry.size, entry.sqlite_snapshot)
                .with_context(|| format!("cannot back up {}", shown.display()))?;
        match put {
            objects::Put::Stored(content) => Ok(Some(content)),
            objects::Put::Cloned { incoming, short } => {
                let ticket = self.temporaries;
                let started = match self.hasher.take() {
                    Some(hasher) => hasher,
                    None => hasher::Hasher::start().context("cannot start the threads that hash the backup")?,
                };
                self.hasher
                    .insert(started)
                    .submit(ticket, incoming, shown.to_path_buf())
                    .with_context(|| format!("cannot back up {}", shown.display()))?;
                Ok(Some(Content { digest: Digest::Later(ticket), short, stored: Stored::Cloned }))
            }
        }
    }

    fn digests(&mut self) -> Result<Vec<(u64, String)>> {
        match &mut self.hasher {
            Some(hasher) => hasher.finish(),
            None => Ok(Vec::new()),
        }
    }

    fn share(&mut self, entry: &ManifestEntry) -> Result<bool> {
        let (Some(earlier), Some(sha256)) = (&self.earlier, &entry.sha256) else { return Ok(false) };
        Ok(objects::link(&earlier.join(OBJECTS), &self.partial.join(OBJECTS), sha256, entry.size)?)
    }

    fn final_pass(&mut self, _: &FinalPass) -> Result<()> {
        Ok(()) // The manifest holds only the final state; objects it no longer names go when it is sealed.
    }
}

/// The files a snapshot read, by member: the state each was in, and its content's sha256.
pub(super) type Shareable = HashMap<Vec<u8>, (Fingerprint, String)>;

/// The newest snapshot in `dir` of the same data paths, and the state it
/// read each file in: what a new snapshot may share with it.
pub(super) fn earlier(dir: &Path, roots: &[Root]) -> Option<(PathBuf, Shareable)> {
    let same_paths = |meta: &Meta| {
        meta.roots.len() == roots.len()
            && meta.roots.iter().zip(roots).all(|(a, b)| a.path == b.path && a.is_dir == b.is_dir)
    };
    let newest = super::catalog::newest_first(dir)
        .ok()?
        .into_iter()
        .filter(|(_, kind, _)| *kind == super::Form::Snapshot)
        .map(|(_, _, path)| path)
        .find(|path| read_meta(path).is_ok_and(|meta| same_paths(&meta)))?;
    let read: Fingerprints = read_json(&newest.join(FINGERPRINTS)).ok()?;
    let manifest: Manifest = read_json(&newest.join(MANIFEST_MEMBER)).ok()?;
    let hashes: HashMap<&[u8], &str> = manifest
        .entries
        .iter()
        .filter(|e| e.kind == Kind::File && !e.sqlite_snapshot)
        .filter_map(|e| Some((e.path.as_slice(), e.sha256.as_deref()?)))
        .collect();
    let mut shareable = HashMap::new();
    for wire in read.entries {
        let Ok(path) = bytes_from_json(wire.path, wire.path_hex) else { continue };
        if let Some(sha256) = hashes.get(path.as_slice()) {
            shareable.insert(path, (wire.fingerprint, (*sha256).to_string()));
        }
    }
    Some((newest, shareable))
}

/// Reads a snapshot's metadata, once its manifest is there too (a snapshot
/// without one cannot be restored, and must not pass for a good one).
pub(super) fn read_meta(dir: &Path) -> Result<Meta> {
    let meta: Meta = read_json(&dir.join(META_MEMBER))
        .with_context(|| format!("{} is not a complete upgraderd snapshot", dir.display()))?;
    let manifest = dir.join(MANIFEST_MEMBER);
    match fs::symlink_metadata(&manifest) {
        Ok(m) if m.is_file() && m.len() > 0 => Ok(meta),
        _ => bail!("snapshot {} is damaged: it has no {MANIFEST_MEMBER}", dir.display()),
    }
}

/// Reads a snapshot's manifest.
pub(super) fn read_manifest(dir: &Path) -> Result<Manifest> {
    read_json(&dir.join(MANIFEST_MEMBER))
        .with_context(|| format!("snapshot {} has no readable manifest", dir.display()))
}

/// A file member's content in a snapshot.
pub(super) enum Object {
    /// One object.
    Whole(File),
    /// Pieces, read back in order.
    Pieced(pieces::Pieced),
}

/// Opens the object holding a file member's content: named by a sha256 (64
/// hex digits, never a path of its own), a regular file (a link is never
/// followed) of the size the manifest records, or the list of its pieces
/// ([`pieces`]). Anything else is a damaged or crafted snapshot, refused
/// naming the member.
pub(super) fn open_object(dir: &Path, entry: &ManifestEntry) -> Result<Object> {
    let member = super::format::show(&entry.path);
    let damaged = |what: String| anyhow::anyhow!("backup {} is damaged: member `{member}`: {what}", dir.display());
    let sha256 = entry.sha256.as_deref().ok_or_else(|| damaged("the manifest gives no sha256".into()))?;
    if !objects::is_sha256(sha256) {
        return Err(damaged(format!("`{sha256}` is not a sha256 (64 hex digits)")));
    }
    let objects_dir = dir.join(OBJECTS);
    let path = objects::path(&objects_dir, sha256);
    let object = match objects::open_regular(&path) {
        Ok(object) => object,
        Err(e) => {
            return match pieces::read_list(&objects_dir, sha256, entry.size).map_err(damaged)? {
                Some(pieces) => Ok(Object::Pieced(pieces::Pieced::new(objects_dir, pieces))),
                None => Err(damaged(format!("its content {} cannot be opened: {e}", path.display()))),
            }
        }
    };
    let meta = object.metadata()?;
    if !meta.is_file() {
        return Err(damaged(format!("its content {} is not a regular file", path.display())));
    }
    if meta.len() != entry.size {
        return Err(damaged(format!(
            "its content {} is {} bytes, the manifest says {}",
            path.display(),
            meta.len(),
            entry.size
        )));
    }
    Ok(Object::Whole(object))
}

/// The disk a snapshot holds alone (what deleting it frees) and what it
/// shares with other snapshots, in allocated bytes.
pub(super) fn usage(dir: &Path) -> (u64, u64) {
    let (mut alone, mut shared) = (0, 0);
    let mut visit = |meta: fs::Metadata| match meta.nlink() {
        1 => alone += meta.blocks() * 512,
        _ => shared += meta.blocks() * 512,
    };
    for entry in walk(dir) {
        if let Ok(meta) = fs::symlink_metadata(&entry) {
            if meta.is_file() {
                visit(meta);
            }
        }
    }
    (alone, shared)
}

/// The disk the objects shared between snapshots take, each counted once.
pub(super) fn shared_on_disk(dirs: &[&Path]) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    for file in dirs.iter().flat_map(|dir| walk(dir)) {
        if let Ok(meta) = fs::symlink_metadata(&file) {
            if meta.is_file() && meta.nlink() > 1 && seen.insert((meta.dev(), meta.ino())) {
                total += meta.blocks() * 512;
            }
        }
    }
    total
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = fs::read_dir(&next) else { continue };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(kind) if kind.is_dir() => pending.push(entry.path()),
                Ok(_) => found.push(entry.path()),
                Err(_) => {}
            }
        }
    }
    found
}

#[derive(Serialize, Deserialize)]
struct Fingerprints {
    entries: Vec<FingerprintWire>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FingerprintWire {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    fingerprint: Fingerprint,
}

impl FingerprintWire {
    fn new(path: &[u8], fingerprint: Fingerprint) -> FingerprintWire {
        let (path, path_hex) = bytes_to_json(path);
        FingerprintWire { path, path_hex, fingerprint }
    }
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    files::write_atomic(path, &bytes, 0o600)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not readable JSON", path.display()))
}
