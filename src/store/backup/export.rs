//! `backup export`: one compressed tar file from a backup, for a copy off
//! the host: `.tar.zst` when the file's name ends in `.zst` or `.tzst`, else
//! `.tar.gz`. A snapshot is written as the archive its stream is (readable by
//! `tar` and by any upgraderd); a file (an archive, an earlier export) is
//! copied as it is when it is already compressed as asked, else recompressed.
//! Written as `.partial`, synced, renamed, then read back whole by `verify`
//! before it is reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;

use super::read::{decompress, open_compressed, read_meta, verify, Compression};
use super::snapshot::stream;
use super::{Progress, Verified};
use crate::store::files;

/// Writes `backup` to `output` as one compressed tar file and verifies what was written,
/// reporting the bytes written out of the data's.
pub fn export(backup: &Path, output: &Path, progress: &mut dyn FnMut(Progress)) -> Result<Verified> {
    if fs::symlink_metadata(output).is_ok() {
        bail!("{} already exists; name a new file, or remove it first", output.display());
    }
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let total = read_meta(backup)?.total_bytes;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&partial)
        .with_context(|| format!("cannot create {} (remove it if an earlier export left it)", partial.display()))?;
    // From here on the partial file is this export's own, to remove if it fails.
    let mut counted = Counted { done: 0, total, progress, last: std::time::Instant::now() };
    let compression = Compression::for_output(output);
    let written =
        write(backup, file, compression, &mut counted).and_then(|()| Ok(files::rename_durable(&partial, output)?));
    if let Err(err) = written {
        let _ = fs::remove_file(&partial);
        return Err(err.context(format!(
            "exporting {} to {} failed; nothing was left behind",
            backup.display(),
            output.display()
        )));
    }
    verify(output).map_err(|err| {
        let _ = fs::remove_file(output);
        err.context(format!(
            "the export of {} did not verify once written, so it was removed: the backup is damaged \
             (`upgraderd backup verify` names what)",
            backup.display()
        ))
    })
}

fn write(backup: &Path, file: File, compression: Compression, counted: &mut Counted<'_>) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut tar: Box<dyn io::Read> = if backup.is_dir() {
        Box::new(stream::open(backup)?)
    } else {
        let (found, mut raw) = open_compressed(backup)?;
        if found == compression {
            // Already what was asked for: copied as it is.
            copy(&mut raw, &mut out, counted).with_context(|| format!("cannot read backup {}", backup.display()))?;
            return finish(out);
        }
        decompress(found, raw).with_context(|| format!("cannot read backup {}", backup.display()))?
    };
    compress(&mut tar, &mut out, compression, counted)
        .with_context(|| format!("cannot read backup {}", backup.display()))?;
    finish(out)
}

/// Flushes and syncs what was written.
fn finish(mut out: BufWriter<File>) -> Result<()> {
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}

/// Compresses a tar stream: gzip at its default level, zstd at its own
/// (level 3, faster and smaller than gzip's) with a checksum of each frame.
fn compress(
    tar: &mut dyn io::Read,
    out: &mut dyn Write,
    compression: Compression,
    counted: &mut Counted<'_>,
) -> Result<()> {
    match compression {
        Compression::Gzip => {
            let mut encoder = GzEncoder::new(out, flate2::Compression::default());
            copy(tar, &mut encoder, counted)?;
            encoder.finish()?;
        }
        Compression::Zstd => {
            let mut encoder = zstd::stream::Encoder::new(out, zstd::DEFAULT_COMPRESSION_LEVEL)?;
            encoder.include_checksum(true)?;
            copy(tar, &mut encoder, counted)?;
            encoder.finish()?;
        }
    }
    Ok(())
}

/// Bytes written so far, reported twice a second at most.
struct Counted<'a> {
    done: u64,
    total: u64,
    progress: &'a mut dyn FnMut(Progress),
    last: std::time::Instant,
}

fn copy(from: &mut dyn io::Read, to: &mut dyn Write, counted: &mut Counted<'_>) -> io::Result<()> {
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        to.write_all(&buffer[..n])?;
        counted.done += n as u64;
        if counted.last.elapsed() > std::time::Duration::from_millis(500) {
            (counted.progress)(Progress { done: counted.done.min(counted.total), total: counted.total });
            counted.last = std::time::Instant::now();
        }
    }
    (counted.progress)(Progress { done: counted.total, total: counted.total });
    Ok(())
}
