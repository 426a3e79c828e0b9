//! A snapshot's objects: one read-only file per content, named by its
//! sha256 (`objects/<first two hex digits>/<sha256>`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::super::format::HashingReader;
use super::super::sink::{Content, Digest, Stored};
use super::super::sparse;
use super::{direct, pieces};

/// Where the object of `sha256` is (checked with [`is_sha256`] first when it comes from a manifest).
pub(super) fn path(objects: &Path, sha256: &str) -> PathBuf {
    objects.join(&sha256[..2.min(sha256.len())]).join(sha256)
}

/// Creates the directory an object goes in (`objects/<ab>/`), private, if it is not there yet.
fn make_shard(object: &Path) -> io::Result<()> {
    let Some(shard) = object.parent() else { return Ok(()) };
    match fs::DirBuilder::new().mode(0o700).create(shard) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Whether `text` is a sha256 as upgraderd writes it: 64 lowercase hex digits, so never a path.
pub(super) fn is_sha256(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// A content stored under a temporary name, to be named by its sha256.
pub(super) struct Incoming {
    temporary: PathBuf,
    object: File,
    size: u64,
}

impl Incoming {
    /// A new, empty temporary object, `incoming-<label>`, for `size` bytes.
    pub(super) fn create(objects: &Path, label: &str, size: u64) -> io::Result<Incoming> {
        let temporary = objects.join(format!("incoming-{label}"));
        let object = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&temporary)?;
        Ok(Incoming { temporary, object, size })
    }

    /// Writes all of `bytes` from the start; the temporary is removed if it cannot.
    pub(super) fn write_all(&self, bytes: &[u8]) -> io::Result<()> {
        let written = self.object.write_all_at(bytes, 0);
        if written.is_err() {
            let _ = fs::remove_file(&self.temporary);
        }
        written
    }
}

#[cfg(test)]
impl Incoming {
    /// A content already written under `temporary`, as a clone leaves it.
    pub(super) fn written(temporary: PathBuf, size: u64) -> io::Result<Incoming> {
        let object = OpenOptions::new().read(true).write(true).open(&temporary)?;
        Ok(Incoming { temporary, object, size })
    }
}

/// How [`store`] stored a content.
pub(super) enum Put {
    /// Copied, and hashed as it was read.
    Stored(Content),
    /// Cloned: not read yet. [`name`] hashes and names it.
    Cloned { incoming: Incoming, short: bool },
}

/// Stores `size` bytes of `source` as an object: cloned where the
/// filesystem can (read later, by [`name`], to hash it), else copied with
/// its holes kept and hashed from what was written; a large file that is not
/// cloned, and a SQLite database (`fresh`: a file just written, which a clone
/// would only move), is stored in pieces shared with the snapshot before
/// (`earlier`, its objects). Either way the sha256 is that of the stored
/// bytes, whatever the live file does meanwhile.
pub(super) fn store(
    objects: &Path,
    earlier: Option<&Path>,
    n: u64,
    source: &File,
    size: u64,
    fresh: bool,
) -> io::Result<Put> {
    let pieced = size >= pieces::PIECED_FROM;
    if pieced && fresh {
        return pieces::store(objects, earlier, n, source, size).map(Put::Stored);
    }
    let incoming = Incoming::create(objects, &n.to_string(), size)?;
    let temporary = incoming.temporary.clone();
    // Another filesystem, or one without reflinks: the bytes are copied.
    let cloned = rustix::fs::ioctl_ficlone(&incoming.object, source).is_ok();
    if pieced && !cloned {
        fs::remove_file(&temporary)?;
        return pieces::store(objects, earlier, n, source, size).map(Put::Stored);
    }
    let put = match cloned {
        true => fit_clone(&incoming).map(|short| Put::Cloned { incoming, short }),
        false => copy_keeping_holes(source, &incoming.object, size).and_then(|(sha256, short)| {
            name_hashed(incoming, &sha256)?;
            Ok(Put::Stored(Content { digest: Digest::Known(sha256), short, stored: Stored::Copied }))
        }),
    };
    if put.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    put
}

/// Makes a clone `size` bytes long if the file changed size since its
/// status was read; whether it came out short (then it is padded with zeros).
fn fit_clone(incoming: &Incoming) -> io::Result<bool> {
    let cloned = incoming.object.metadata()?.len();
    if cloned != incoming.size {
        incoming.object.set_len(incoming.size)?;
    }
    Ok(cloned < incoming.size)
}

/// Hashes a stored content and names its object by the sha256: the object
/// is made read-only and, when the same content is already held, dropped.
pub(super) fn name(incoming: Incoming) -> io::Result<String> {
    let temporary = incoming.temporary.clone();
    let named =
        hash(&incoming.object, incoming.size).and_then(|sha256| name_hashed(incoming, &sha256).map(|()| sha256));
    if named.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    named
}

/// Names a hashed object: read-only, and dropped when the same content is already held.
pub(super) fn name_hashed(incoming: Incoming, sha256: &str) -> io::Result<()> {
    let target = path(incoming.temporary.parent().unwrap_or(Path::new(".")), sha256);
    name_as(incoming, &target)
}

/// Makes a stored object read-only and renames it to `target`, or drops it when `target` is there already.
pub(super) fn name_as(incoming: Incoming, target: &Path) -> io::Result<()> {
    incoming.object.set_permissions(fs::Permissions::from_mode(0o400))?;
    drop(incoming.object);
    make_shard(target)?;
    if target.exists() {
        fs::remove_file(&incoming.temporary)?; // The same content, already stored for another file.
    } else {
        fs::rename(&incoming.temporary, target)?;
    }
    Ok(())
}

/// The sha256 of a stored object's `size` bytes, reading only its data segments.
///
/// A clone shares the source's blocks but not its cached pages: hashing it
/// through the cache would read it from the disk into the cache once more,
/// so it is read past the cache where the filesystem allows it and the file
/// is not too large for it ([`direct::LARGEST`]), else read ahead far. Either
/// way its pages are dropped after: the snapshot is never read again, and a
/// backup must not push the app's own data out of the cache (on a large
/// data set it would).
fn hash(object: &File, size: u64) -> io::Result<String> {
    let hex = match direct::hash(object, size)? {
        Some(hex) => hex,
        None => {
            // Advice only: a filesystem that takes none reads the same bytes.
            let _ = rustix::fs::fadvise(object, 0, None, rustix::fs::Advice::Sequential);
            hash_segments(object, size)?
        }
    };
    // Direct reads too may have gone through the cache: btrfs reads compressed extents so.
    let _ = rustix::fs::fadvise(object, 0, None, rustix::fs::Advice::DontNeed);
    Ok(hex)
}

fn hash_segments(object: &File, size: u64) -> io::Result<String> {
    let mut copy = object.try_clone()?;
    Ok(match sparse::data_segments(object, size)? {
        Some(segments) => {
            let mut reader = sparse::SparseReader::new(copy, segments, size);
            read_to_end(&mut reader)?;
            reader.hex()
        }
        None => {
            let mut reader = HashingReader::exact(&mut copy, size);
            read_to_end(&mut reader)?;
            reader.hex()
        }
    })
}

/// Reads everything in 1 MiB steps (`io::copy` to a sink reads 8 KiB at a time).
fn read_to_end(reader: &mut dyn Read) -> io::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        match reader.read(&mut buffer) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Copies `size` bytes of `source` into `object`, reading only the data
/// segments of a file with holes and leaving holes where it had them.
fn copy_keeping_holes(source: &File, object: &File, size: u64) -> io::Result<(String, bool)> {
    let mut buffer = vec![0u8; 1 << 20];
    let (hex, short) = match sparse::data_segments(source, size)? {
        Some(segments) => {
            let mut reader = sparse::SparseReader::new(source.try_clone()?, segments, size);
            loop {
                let at = reader.offset();
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                object.write_all_at(&buffer[..n], at)?;
            }
            (reader.hex(), reader.short)
        }
        None => {
            let mut reader = HashingReader::exact(source, size);
            let mut at = 0;
            loop {
                let n = reader.read(&mut buffer)?;
                if n == 0 {
                    break;
                }
                object.write_all_at(&buffer[..n], at)?;
                at += n as u64;
            }
            (reader.hex(), reader.short)
        }
    };
    object.set_len(size)?;
    Ok((hex, short))
}

/// Makes `sha256`'s content of the snapshot whose objects are at `from`
/// one of the snapshot at `to` too, as hard links: its object, or its pieces
/// and their list. `false` when `from` no longer holds it intact, or the
/// filesystem refuses another link (then the file is read and stored anew).
/// A same-size change of an object's bytes is not seen here: `backup verify`
/// reads and checks them.
pub(super) fn link(from: &Path, to: &Path, sha256: &str, size: u64) -> io::Result<bool> {
    if !is_sha256(sha256) {
        return Ok(false);
    }
    Ok(link_object(from, to, sha256, size)? || pieces::link(from, to, sha256, size)?)
}

/// Opens a stored file to read it: never through a link, and without
/// waiting on a FIFO put in its place (refused once its type is checked).
pub(super) fn open_regular(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)
}

/// Links `sha256`'s object of `from` into `to`: `false` when `from` does not
/// hold it as a read-only regular file of `size` bytes.
pub(super) fn link_object(from: &Path, to: &Path, sha256: &str, size: u64) -> io::Result<bool> {
    if !is_sha256(sha256) {
        return Ok(false);
    }
    let source = path(from, sha256);
    let intact = fs::symlink_metadata(&source)
        .is_ok_and(|m| m.is_file() && m.len() == size && m.permissions().mode() & 0o777 == 0o400);
    if !intact {
        return Ok(false);
    }
    link_file(&source, &path(to, sha256))
}

/// Hard-links `source` as `target`: `false` when `source` went away or has all the links it can.
pub(super) fn link_file(source: &Path, target: &Path) -> io::Result<bool> {
    make_shard(target)?;
    match fs::hard_link(source, target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EMLINK) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::format::hex;
    use super::*;
    use sha2::{Digest as _, Sha256};

    /// A clone too large to be read directly is read through the cache, holes and all.
    #[test]
    fn a_clone_over_the_direct_size_is_hashed_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let temporary = dir.path().join("incoming-1");
        let size = direct::LARGEST + 4097;
        let file = File::create(&temporary).unwrap();
        let mut content = vec![0u8; size as usize];
        for at in [10usize, (direct::LARGEST / 2) as usize, size as usize - 100] {
            file.write_all_at(b"upgraderd", at as u64).unwrap();
            content[at..at + 9].copy_from_slice(b"upgraderd");
        }
        file.set_len(size).unwrap();
        let expected = hex(&Sha256::digest(&content));
        let sha256 = name(Incoming::written(temporary, size).unwrap()).unwrap();
        assert_eq!(sha256, expected);
        assert!(path(dir.path(), &sha256).is_file(), "named by its sha256");
    }
}
