//! How much room a backup of the data needs, known before its first byte:
//! the bytes its files occupy on disk (a sparse file's holes are not stored,
//! and compression only makes an archive smaller). A plain walk that never
//! follows a link and only reads metadata: a name the app swaps meanwhile
//! makes the estimate a little off, never reads anything.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The bytes the regular files under `paths` occupy (each path counted once).
pub fn allocated_bytes(paths: &[PathBuf]) -> io::Result<u64> {
    let mut total = 0u64;
    let mut seen_roots: Vec<&Path> = Vec::new();
    for root in paths {
        if seen_roots.iter().any(|seen| root.starts_with(seen)) {
            continue;
        }
        seen_roots.push(root);
        let mut pending = vec![root.clone()];
        while let Some(path) = pending.pop() {
            let meta = match fs::symlink_metadata(&path) {
                Ok(meta) => meta,
                // Gone since it was listed: the app deleted it; nothing to count.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            };
            if meta.is_dir() {
                match fs::read_dir(&path) {
                    Ok(entries) => pending.extend(entries.flatten().map(|entry| entry.path())),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
                }
            } else if meta.is_file() {
                total = total.saturating_add(meta.blocks().saturating_mul(512));
            }
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_count_by_what_they_occupy_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), vec![7u8; 64 * 1024]).unwrap();
        let sparse = fs::File::create(dir.path().join("sparse")).unwrap();
        sparse.set_len(1 << 30).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/b"), vec![1u8; 4096]).unwrap();
        std::os::unix::fs::symlink("/usr", dir.path().join("usr")).unwrap();
        let bytes = allocated_bytes(&[dir.path().to_path_buf(), dir.path().join("sub")]).unwrap();
        assert!((68 * 1024..1 << 20).contains(&bytes), "{bytes}: the holes and /usr are not counted, sub/ once");
    }
}
