//! `backup export`: one compressed tar file from a backup, for a copy off
//! the host: `.tar.zst` when the file's name ends in `.zst` or `.tzst`, else
//! `.tar.gz`. A snapshot is written as the archive its stream is (readable by
//! `tar` and by any upgraderd); an archive is copied as it is to a `.tar.gz`,
//! and recompressed to a `.tar.zst`. Written as `.partial`, synced, renamed,
//! then read back whole by `verify` before it is reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;

use super::read::{read_meta, verify};
use super::snapshot::stream;
use super::{Progress, Verified};
use crate::store::files;

/// How an export is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compressor {
    Gzip,
    Zstd,
}

impl Compressor {
    /// Told by the output's name: `.zst` or `.tzst` is zstd, anything else gzip.
    fn for_output(output: &Path) -> Compressor {
        match output.extension().and_then(|e| e.to_str()) {
            Some("zst" | "tzst") => Compressor::Zstd,
            _ => Compressor::Gzip,
        }
    }
}

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
    let compressor = Compressor::for_output(output);
    let written =
        write(backup, file, compressor, &mut counted).and_then(|()| Ok(files::rename_durable(&partial, output)?));
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

fn write(backup: &Path, file: File, compressor: Compressor, counted: &mut Counted<'_>) -> Result<()> {
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let open_backup = || File::open(backup).with_context(|| format!("cannot open backup {}", backup.display()));
    if !backup.is_dir() && compressor == Compressor::Gzip {
        copy(&mut open_backup()?, &mut out, counted)?;
    } else {
        let mut tar: Box<dyn io::Read> = match backup.is_dir() {
            true => Box::new(stream::open(backup)?),
            false => Box::new(GzDecoder::new(io::BufReader::with_capacity(1 << 20, open_backup()?))),
        };
        compress(&mut tar, &mut out, compressor, counted)
            .with_context(|| format!("cannot read backup {}", backup.display()))?;
    }
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
    compressor: Compressor,
    counted: &mut Counted<'_>,
) -> Result<()> {
    match compressor {
        Compressor::Gzip => {
            let mut encoder = GzEncoder::new(out, Compression::default());
            copy(tar, &mut encoder, counted)?;
            encoder.finish()?;
        }
        Compressor::Zstd => {
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
