//! The backups in the backup directory (archives and snapshots): list them
//! newest first, find one by path or id, prune old ones, and find `.partial`
//! leftovers of killed writers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::format::{ARCHIVE_PREFIX, ARCHIVE_SUFFIX, OWN_PREFIX};
use super::read::read_meta;
use super::snapshot::{self, SNAPSHOT_SUFFIX};
use super::{Form, Listed, Pruned};

/// Archives left `.partial` by a writer that was killed.
pub(crate) fn partial_archives(dir: &Path) -> Vec<PathBuf> {
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

/// Removes a backup left `.partial` by a killed writer (or remover): an
/// archive's file or a snapshot's directory.
pub(crate) fn remove_partial(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path)?.is_dir() {
        true => fs::remove_dir_all(path),
        false => fs::remove_file(path),
    }
}

/// Deletes a backup. A snapshot is first renamed to a `.partial` name, so
/// that one cut off half-way is a leftover the next prune or recovery
/// removes, never a snapshot with some of its objects gone; the objects it
/// shares stay with the snapshots that share them.
fn delete(listed: &Listed) -> io::Result<()> {
    if listed.kind == Form::Archive {
        return fs::remove_file(&listed.path);
    }
    let mut aside = listed.path.as_os_str().to_owned();
    aside.push(".partial");
    fs::rename(&listed.path, &aside)?;
    remove_partial(Path::new(&aside))
}

/// The backups in `dir`, newest first, with their metadata and the disk each takes.
pub(crate) fn list(dir: &Path) -> Result<Vec<Listed>> {
    let mut found = Vec::new();
    for (id, kind, path) in newest_first(dir)? {
        let (bytes, shared_bytes) = match kind {
            Form::Snapshot => snapshot::usage(&path),
            Form::Archive => (fs::metadata(&path).map(|m| m.len()).unwrap_or(0), 0),
        };
        let (meta, problem) = match read_meta(&path) {
            Ok(meta) => (Some(meta), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        found.push(Listed { id, path, kind, bytes, shared_bytes, meta, problem });
    }
    Ok(found)
}

/// The backups in `dir` by id, kind and path, newest first, read from their names alone.
pub(super) fn newest_first(dir: &Path) -> Result<Vec<(String, Form, PathBuf)>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read the backup directory {}", dir.display())),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some((id, kind)) = backup_id(&name) else { continue };
        if is_of_its_kind(&entry.path(), kind) {
            found.push((id.to_string(), kind, entry.path()));
        }
    }
    // Ids hold the second they were taken in, then a random suffix: two taken
    // in the same second are told apart by when each was put in place.
    found.sort_by_cached_key(|(id, _, path)| {
        std::cmp::Reverse((id.get(..15).unwrap_or(id).to_string(), put_in_place(path)))
    });
    Ok(found)
}

/// When a backup was renamed into place (a snapshot directory's last change is its metadata file's creation).
fn put_in_place(path: &Path) -> Option<std::time::SystemTime> {
    fs::symlink_metadata(path).and_then(|m| m.modified()).ok()
}

/// A backup's id and kind from its name in the backup directory.
fn backup_id(file_name: &str) -> Option<(&str, Form)> {
    let rest = file_name.strip_prefix(ARCHIVE_PREFIX)?;
    if let Some(id) = rest.strip_suffix(ARCHIVE_SUFFIX) {
        return Some((id, Form::Archive));
    }
    rest.strip_suffix(SNAPSHOT_SUFFIX).map(|id| (id, Form::Snapshot))
}

/// A snapshot is a directory and an archive a file: a name of the one on the other (or a link) is not a backup.
fn is_of_its_kind(path: &Path, kind: Form) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| match kind {
        Form::Snapshot => m.is_dir(),
        Form::Archive => m.is_file(),
    })
}

/// Finds a backup by path (an archive file or a snapshot directory) or by
/// backup id in `dir`.
pub(crate) fn find(dir: &Path, reference: &str) -> Option<PathBuf> {
    let as_path = Path::new(reference);
    if as_path.is_file() || (as_path.is_dir() && reference.trim_end_matches('/').ends_with(SNAPSHOT_SUFFIX)) {
        return Some(as_path.to_path_buf());
    }
    if reference.contains('/') {
        return None;
    }
    [(ARCHIVE_SUFFIX, Form::Archive), (SNAPSHOT_SUFFIX, Form::Snapshot)]
        .into_iter()
        .map(|(suffix, kind)| (dir.join(format!("{ARCHIVE_PREFIX}{reference}{suffix}")), kind))
        .find(|(candidate, kind)| is_of_its_kind(candidate, *kind))
        .map(|(candidate, _)| candidate)
}

/// Keeps the newest `keep` readable backups and `protected`; deletes the
/// other readable ones, and `.partial`/snapshot files left by an interrupted
/// backup. One it cannot read is neither counted as kept nor deleted: it is
/// left for the operator (`backup list` says what is wrong with it). The
/// caller holds the upgrade lock, so no backup is being written.
pub(crate) fn prune(dir: &Path, keep: usize, protected: &[&Path]) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    let mut readable = 0;
    for listed in list(dir)? {
        if listed.problem.is_some() {
            pruned.unreadable.push(listed.path);
            continue;
        }
        readable += 1;
        let is_protected = protected.contains(&listed.path.as_path());
        if readable <= keep || is_protected {
            pruned.kept.push(listed.path);
        } else {
            delete(&listed).with_context(|| format!("cannot delete {}", listed.path.display()))?;
            pruned.freed_bytes += listed.bytes;
            pruned.deleted.push(listed.path);
        }
    }
    if let Ok(entries) = fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let leftover = (name.starts_with(ARCHIVE_PREFIX) && name.ends_with(".partial"))
                || (name.starts_with(OWN_PREFIX) && name.contains("snapshot-"));
            if !leftover {
                continue;
            }
            if remove_partial(&entry.path()).is_ok() {
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
    fn archive_ids_come_from_file_names() {
        assert_eq!(
            backup_id("upgrade-backup-20250107_143022-abc123.tar.gz"),
            Some(("20250107_143022-abc123", Form::Archive))
        );
        assert_eq!(
            backup_id("upgrade-backup-20250107_143022-abc123.snap"),
            Some(("20250107_143022-abc123", Form::Snapshot))
        );
        assert_eq!(backup_id("upgrade-backup-x.tar.gz.partial"), None);
        assert_eq!(backup_id("upgrade-backup-x.snap.partial"), None);
        assert_eq!(backup_id("other.tar.gz"), None);
    }
}
