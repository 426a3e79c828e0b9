//! The archives in the backup directory: list them newest first, find one by
//! path or id, prune old ones, and find `.partial` leftovers of killed writers.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::format::{ARCHIVE_PREFIX, ARCHIVE_SUFFIX, OWN_PREFIX};
use super::read::read_meta;
use super::{Listed, Pruned};

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

/// The archives in `dir`, newest first.
pub(crate) fn list(dir: &Path) -> Result<Vec<Listed>> {
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
pub(crate) fn find(dir: &Path, reference: &str) -> Option<PathBuf> {
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

/// Keeps the newest `keep` archives and `protected`; deletes the other
/// archives, and `.partial`/snapshot files left by an interrupted backup.
/// The caller holds the upgrade lock, so no backup is being written.
pub(crate) fn prune(dir: &Path, keep: usize, protected: &[&Path]) -> Result<Pruned> {
    let mut pruned = Pruned::default();
    for (rank, listed) in list(dir)?.into_iter().enumerate() {
        let is_protected = protected.contains(&listed.path.as_path());
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
    fn archive_ids_come_from_file_names() {
        assert_eq!(archive_id("upgrade-backup-20250107_143022-abc123.tar.gz"), Some("20250107_143022-abc123"));
        assert_eq!(archive_id("upgrade-backup-x.tar.gz.partial"), None);
        assert_eq!(archive_id("other.tar.gz"), None);
    }
}
