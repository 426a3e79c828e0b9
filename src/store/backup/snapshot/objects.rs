//! A snapshot's objects: one read-only file per content, named by its
//! sha256 (`objects/<first two hex digits>/<sha256>`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::super::format::HashingReader;
use super::super::sink::{Content, Stored};
use super::super::sparse;

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

/// Stores `size` bytes of `source` as an object: cloned where the
/// filesystem can, else copied with its holes kept; hashed from what was
/// stored. Content already held is stored once.
pub(super) fn store(objects: &Path, n: u64, source: &File, size: u64) -> io::Result<Content> {
    let temporary = objects.join(format!("incoming-{n}"));
    let object = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&temporary)?;
    let stored = match rustix::fs::ioctl_ficlone(&object, source) {
        Ok(()) => Stored::Cloned,
        // Another filesystem, or one without reflinks: the bytes are copied.
        Err(_) => Stored::Copied,
    };
    let result = match stored {
        Stored::Cloned => hash_clone(&object, size),
        _ => copy_keeping_holes(source, &object, size),
    };
    let (sha256, short) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = fs::remove_file(&temporary);
            return Err(e);
        }
    };
    object.set_permissions(fs::Permissions::from_mode(0o400))?;
    drop(object);
    let target = path(objects, &sha256);
    make_shard(&target)?;
    if target.exists() {
        fs::remove_file(&temporary)?; // The same content, already stored for another file.
    } else {
        fs::rename(&temporary, &target)?;
    }
    Ok(Content { sha256, short, stored })
}

/// Hashes a clone, made `size` bytes long if the file changed size since its status was read.
fn hash_clone(object: &File, size: u64) -> io::Result<(String, bool)> {
    let cloned = object.metadata()?.len();
    if cloned != size {
        object.set_len(size)?;
    }
    let mut copy = object.try_clone()?;
    let hex = match sparse::data_segments(object, size)? {
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
    };
    Ok((hex, cloned < size))
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

/// Makes `sha256`'s object of the snapshot at `from` one of the snapshot at
/// `to` too, as a hard link: `false` when `from` no longer holds it as a
/// read-only regular file of `size` bytes, or the filesystem refuses another
/// link (then the file is read and stored anew). A same-size change of the
/// object's bytes is not seen here: `backup verify` reads and checks them.
pub(super) fn link(from: &Path, to: &Path, sha256: &str, size: u64) -> io::Result<bool> {
    if !is_sha256(sha256) {
        return Ok(false);
    }
    let source = path(from, sha256);
    let target = path(to, sha256);
    let intact = fs::symlink_metadata(&source)
        .is_ok_and(|m| m.is_file() && m.len() == size && m.permissions().mode() & 0o777 == 0o400);
    if !intact {
        return Ok(false);
    }
    make_shard(&target)?;
    match fs::hard_link(&source, &target) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::EMLINK) => Ok(false),
        Err(e) => Err(e),
    }
}
