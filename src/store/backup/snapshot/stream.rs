//! A snapshot read back as the tar stream an archive of the same data holds:
//! its metadata, a member for each manifest entry (a file's content from its
//! object, holes kept as sparse members), the manifest. `verify` and
//! `restore` read it through the same rules as an archive, and `backup
//! export` compresses it into one: a `.tar.gz` any upgraderd (and `tar`)
//! reads.

use std::io::{self, BufWriter, PipeReader, PipeWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

use super::super::format::{show, Kind, Manifest, Meta, FORMAT, MANIFEST_MEMBER, META_MEMBER};
use super::super::sink::{ArchiveSink, Sink};
use super::Object;

/// The tar stream of a snapshot, written by a thread as it is read.
pub(in super::super) struct Stream {
    pipe: PipeReader,
    writer: Option<JoinHandle<Result<()>>>,
}

/// Opens the tar stream of the snapshot in `dir`.
pub(in super::super) fn open(dir: &Path) -> Result<Stream> {
    let mut meta = super::read_meta(dir)?;
    let mut manifest = super::read_manifest(dir)?;
    // What the stream holds is an archive: readers that know only archives take it.
    meta.format = FORMAT;
    manifest.format = FORMAT;
    let (pipe, out) = io::pipe().context("cannot open a pipe to read the snapshot")?;
    let dir = dir.to_path_buf();
    let writer = std::thread::Builder::new()
        .name("snapshot-stream".into())
        .spawn(move || write(&dir, &meta, &manifest, out))
        .context("cannot start the snapshot reader")?;
    Ok(Stream { pipe, writer: Some(writer) })
}

fn write(dir: &Path, meta: &Meta, manifest: &Manifest, out: PipeWriter) -> Result<()> {
    let closed = Arc::new(AtomicBool::new(false));
    let gate = Gate { out, closed: closed.clone() };
    let mut sink = ArchiveSink::new(BufWriter::with_capacity(1 << 20, gate));
    let written = write_members(dir, meta, manifest, &mut sink);
    if written.is_err() {
        // Dropped, the tar writer would end the stream as a complete archive:
        // the reader must instead meet its end early, and then this error.
        closed.store(true, Ordering::SeqCst);
        return written;
    }
    sink.builder.into_inner()?.flush()?;
    Ok(())
}

fn write_members(dir: &Path, meta: &Meta, manifest: &Manifest, sink: &mut ArchiveSink<BufWriter<Gate>>) -> Result<()> {
    sink.json(META_MEMBER, meta)?;
    for entry in &manifest.entries {
        let shown = PathBuf::from(show(&entry.path));
        match entry.kind {
            Kind::File => match super::open_object(dir, entry)? {
                Object::Whole(file) => sink.put(entry, Some(file), &shown).map(drop)?,
                Object::Pieced(pieced) => {
                    let segments = pieced.segments();
                    sink.content(entry, pieced, segments, &shown).map(drop)?
                }
            },
            _ => sink.put(entry, None, &shown).map(drop)?,
        }
    }
    sink.json(MANIFEST_MEMBER, manifest)
}

/// The pipe, closed to further writes once the stream has failed.
struct Gate {
    out: PipeWriter,
    closed: Arc<AtomicBool>,
}

impl Write for Gate {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.pipe.read(buf)?;
        if n == 0 && !buf.is_empty() {
            // The end of the stream: the writer's own failure, if any, is what went wrong.
            if let Some(writer) = self.writer.take() {
                match writer.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(io::Error::other(format!("{e:#}"))),
                    Err(_) => return Err(io::Error::other("the snapshot reader stopped unexpectedly")),
                }
            }
        }
        Ok(n)
    }
}
