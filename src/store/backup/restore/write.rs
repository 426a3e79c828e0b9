//! Writing one staged entry: a file's content (holes kept), a symlink
//! verbatim, a FIFO never opened; each with its owner (as root), mode and time.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::Result;

use super::super::format::HashingReader;
use super::super::sparse;
use crate::store::fsat;

/// Whether restored owners can be set (only root may give files away).
pub(super) fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

pub(super) fn set_owner(fd: impl AsFd, header: &tar::Header) -> Result<()> {
    if is_root() {
        fsat::set_owner(fd, header.uid()? as u32, header.gid()? as u32)?;
    }
    Ok(())
}

/// Creates a symlink with its target verbatim (never followed), then its owner and time.
pub(super) fn write_symlink(
    target: &[u8],
    dir: BorrowedFd<'_>,
    name: &[u8],
    header: &tar::Header,
) -> Result<(String, u64)> {
    fsat::symlink_at(target, dir, name)?;
    if is_root() {
        fsat::set_owner_at(dir, name, header.uid()? as u32, header.gid()? as u32)?;
    }
    fsat::set_mtime_at(dir, name, header.mtime()? as i64)?;
    Ok((String::new(), 0))
}

/// Creates a FIFO, then its owner, mode and time, all without ever opening it.
pub(super) fn write_fifo(dir: BorrowedFd<'_>, name: &[u8], header: &tar::Header) -> Result<(String, u64)> {
    fsat::mkfifo_at(dir, name)?;
    if is_root() {
        fsat::set_owner_at(dir, name, header.uid()? as u32, header.gid()? as u32)?;
    }
    fsat::set_mode_at(dir, name, header.mode()?)?;
    fsat::set_mtime_at(dir, name, header.mtime()? as i64)?;
    Ok((String::new(), 0))
}

/// Writes a regular file's content (a sparse member's holes as holes), then
/// its owner, mode and time; returns its sha256 and size.
pub(super) fn write_file(mut file: File, header: &tar::Header, data: &mut dyn Read) -> Result<(String, u64)> {
    let (sha256, size) = if header.entry_type() == tar::EntryType::GNUSparse {
        sparse::write_sparse(&file, data)?
    } else {
        let mut hashing = HashingReader::new(data);
        let size = io::copy(&mut hashing, &mut file)?;
        (hashing.hex(), size)
    };
    set_owner(&file, header)?;
    fsat::set_mode(&file, header.mode()?)?;
    fsat::set_mtime(&file, header.mtime()? as i64)?;
    file.sync_all()?;
    Ok((sha256, size))
}
