//! `backup export`: one `.tar.gz` from a backup, for a copy off the host. A
//! snapshot is written as the archive its stream is (readable by `tar` and by
//! any upgraderd); an archive is copied as it is. Written as `.partial`,
//! synced, renamed, then read back whole by `verify` before it is reported.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

use super::read::verify;
use super::snapshot::stream;
use super::Verified;
use crate::store::files;

/// Writes `backup` to `output` as one `.tar.gz` and verifies what was written.
pub fn export(backup: &Path, output: &Path) -> Result<Verified> {
    if fs::symlink_metadata(output).is_ok() {
        bail!("{} already exists; name a new file, or remove it first", output.display());
    }
    let mut partial = output.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    let written = write(backup, &partial).and_then(|()| Ok(files::rename_durable(&partial, output)?));
    if let Err(err) = written {
        let _ = fs::remove_file(&partial);
        return Err(err.context(format!(
            "exporting {} to {} failed; nothing was left behind",
            backup.display(),
            output.display()
        )));
    }
    verify(output).with_context(|| format!("the exported {} does not verify; do not rely on it", output.display()))
}

fn write(backup: &Path, partial: &Path) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    if backup.is_dir() {
        let mut encoder = GzEncoder::new(&mut out, Compression::default());
        io::copy(&mut stream::open(backup)?, &mut encoder)
            .with_context(|| format!("cannot read snapshot {}", backup.display()))?;
        encoder.finish()?;
    } else {
        let mut archive = File::open(backup).with_context(|| format!("cannot open backup {}", backup.display()))?;
        io::copy(&mut archive, &mut out)?;
    }
    out.flush()?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}
