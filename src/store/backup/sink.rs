//! Where the copy puts what it reads: a [`Sink`] takes one member at a time,
//! described by its manifest entry (kind, mode, owner, time, link target) and,
//! for a file, its content.
//!
//! Two sinks: [`ArchiveSink`] writes GNU tar members (a `.tar.gz` backup, an
//! export, and the stream a snapshot is read back through); a snapshot's sink
//! (`snapshot::SnapshotSink`) stores each content once as a file of its own,
//! and can share one an earlier snapshot holds without reading it again.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

use super::format::{FinalPass, HashingReader, Kind, ManifestEntry, FINAL_PASS_MEMBER};
use super::sparse;

/// How a file's content came to be in the backup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stored {
    /// Read and written.
    Copied,
    /// Cloned (a reflink): the filesystem shares the blocks until either side changes.
    Cloned,
    /// Read and stored in pieces, of which `written` bytes were new (the
    /// others shared with an earlier snapshot or another file).
    Pieced { written: u64 },
    /// Unchanged since an earlier snapshot, which holds it: not read again.
    Shared,
}

/// A file's content as a sink stored it.
pub(super) struct Content {
    pub digest: Digest,
    /// The file shrank while it was read: its copy is padded with zeros.
    pub short: bool,
    pub stored: Stored,
}

/// A stored content's sha256: known, or still being computed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Digest {
    Known(String),
    /// Being computed apart; [`Sink::digests`] gives it under this ticket.
    Later(u64),
}

/// What the copy writes into.
pub(super) trait Sink {
    /// Stores `entry`; for a file, `content` holds `entry.size` bytes to store.
    fn put(&mut self, entry: &ManifestEntry, content: Option<File>, shown: &Path) -> Result<Option<Content>>;

    /// Stores a file whose content an earlier backup holds under `entry.sha256`,
    /// without reading it; `false` when this sink cannot (then it is read).
    fn share(&mut self, _entry: &ManifestEntry) -> Result<bool> {
        Ok(false)
    }

    /// Waits for every digest `put` left for later ([`Digest::Later`]) and
    /// gives them by ticket: a pass is only over once each content it stored is named.
    fn digests(&mut self) -> Result<Vec<(u64, String)>> {
        Ok(Vec::new())
    }

    /// The final pass begins: `pass` names the first pass's members it retires.
    fn final_pass(&mut self, pass: &FinalPass) -> Result<()>;
}

/// Writes GNU tar members.
pub(super) struct ArchiveSink<W: Write> {
    pub(super) builder: tar::Builder<W>,
}

impl<W: Write> ArchiveSink<W> {
    pub(super) fn new(out: W) -> ArchiveSink<W> {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Complete);
        ArchiveSink { builder }
    }

    /// Appends a member holding `value` as JSON (the metadata, the manifest).
    pub(super) fn json<T: serde::Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(value)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        header.set_mtime(now.map(|d| d.as_secs()).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Regular);
        self.builder.append_data(&mut header, name, bytes.as_slice())?;
        Ok(())
    }

    fn file(&mut self, entry: &ManifestEntry, file: File, shown: &Path) -> Result<Content> {
        let segments = sparse::data_segments(&file, entry.size)?;
        self.content(entry, file, segments, shown)
    }

    /// Appends a file member whose `entry.size` bytes `source` holds: only
    /// its data `segments` when it has holes, else all of it.
    pub(super) fn content<S: sparse::ReadAt + Read>(
        &mut self,
        entry: &ManifestEntry,
        source: S,
        segments: Option<Vec<sparse::Segment>>,
        shown: &Path,
    ) -> Result<Content> {
        let size = entry.size;
        if let Some(segments) = segments {
            return self.sparse(entry, source, segments, shown);
        }
        let mut header = header_of(entry, tar::EntryType::Regular);
        header.set_size(size);
        let mut reader = HashingReader::exact(source, size);
        self.builder
            .append_data(&mut header, member_path(&entry.path), &mut reader)
            .with_context(|| format!("cannot back up {}", shown.display()))?;
        Ok(Content { digest: Digest::Known(reader.hex()), short: reader.short, stored: Stored::Copied })
    }

    /// A file with holes: only its data segments are read and stored.
    fn sparse<S: sparse::ReadAt>(
        &mut self,
        entry: &ManifestEntry,
        source: S,
        segments: Vec<sparse::Segment>,
        shown: &Path,
    ) -> Result<Content> {
        let size = entry.size;
        let mut header = header_of(entry, tar::EntryType::GNUSparse);
        let extensions = sparse::describe(&mut header, &segments, size);
        let mut reader = sparse::SparseReader::new(source, segments, size);
        self.builder
            .append_data(&mut header, member_path(&entry.path), extensions.as_slice().chain(&mut reader))
            .with_context(|| format!("cannot back up {}", shown.display()))?;
        Ok(Content { digest: Digest::Known(reader.hex()), short: reader.short, stored: Stored::Copied })
    }

    /// A member with no content: a directory, a FIFO, a link.
    fn empty(&mut self, entry: &ManifestEntry, kind: tar::EntryType) -> Result<()> {
        let mut header = header_of(entry, kind);
        header.set_size(0);
        if let Some(target) = &entry.target {
            set_link_verbatim(&mut self.builder, &mut header, target)?;
        }
        self.builder.append_data(&mut header, member_path(&entry.path), io::empty())?;
        Ok(())
    }
}

impl<W: Write> Sink for ArchiveSink<W> {
    fn put(&mut self, entry: &ManifestEntry, content: Option<File>, shown: &Path) -> Result<Option<Content>> {
        match (entry.kind, content) {
            (Kind::File, Some(file)) => Ok(Some(self.file(entry, file, shown)?)),
            (Kind::File, None) => anyhow::bail!("{}: a file member without content", shown.display()),
            (Kind::Dir, _) => self.empty(entry, tar::EntryType::Directory).map(|()| None),
            (Kind::Fifo, _) => self.empty(entry, tar::EntryType::Fifo).map(|()| None),
            (Kind::Symlink, _) => self.empty(entry, tar::EntryType::Symlink).map(|()| None),
            (Kind::Hardlink, _) => self.empty(entry, tar::EntryType::Link).map(|()| None),
        }
    }

    fn final_pass(&mut self, pass: &FinalPass) -> Result<()> {
        self.json(FINAL_PASS_MEMBER, pass)
    }
}

/// Puts a link target in `header` byte for byte (the tar crate's own setter
/// would normalise `./a//b` to `a/b`); a target longer than the header's 100
/// bytes goes first in a GNU long-link entry, as GNU tar writes it.
fn set_link_verbatim<W: Write>(builder: &mut tar::Builder<W>, header: &mut tar::Header, target: &[u8]) -> Result<()> {
    const FIELD: usize = 100;
    if target.len() > FIELD {
        let mut long = tar::Header::new_gnu();
        if let Some(gnu) = long.as_gnu_mut() {
            gnu.name[..13].copy_from_slice(b"././@LongLink");
        }
        long.set_mode(0o644);
        long.set_uid(0);
        long.set_gid(0);
        long.set_mtime(0);
        long.set_size(target.len() as u64 + 1);
        long.set_entry_type(tar::EntryType::GNULongLink);
        long.set_cksum();
        builder.append(&long, target.chain(&[0u8][..]))?;
    }
    header.set_link_name_literal(&target[..target.len().min(FIELD)])?;
    Ok(())
}

/// A member name (bytes) as the tar writer takes it.
fn member_path(member: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(member))
}

pub(super) fn header_of(entry: &ManifestEntry, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(entry.mode);
    header.set_uid(entry.uid);
    header.set_gid(entry.gid);
    header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
    header
}
