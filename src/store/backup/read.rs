//! Reading an archive back: its metadata alone (cheap, for `list`), or every
//! member in one pass, each checked by the member [`Rules`] and against the
//! manifest, which is what `verify` does and what `restore` stages from.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;

use super::format::{
    show, FinalPass, HashingReader, Kind, Manifest, ManifestEntry, Meta, FINAL_PASS_MEMBER, MANIFEST_MEMBER,
    META_MEMBER, SNAPSHOT_FORMAT,
};
use super::members::{Member, Rules};
use super::snapshot;
use super::sparse::read_full;
use super::Verified;

/// Opens a backup for reading as a tar stream (a snapshot's generated from
/// its objects; an archive or an export gzip- or zstd-compressed, told by
/// its first bytes), explaining a missing or unreadable file.
fn open_archive(path: &Path) -> Result<tar::Archive<Box<dyn Read>>> {
    if path.is_dir() {
        return Ok(tar::Archive::new(Box::new(snapshot::stream::open(path)?)));
    }
    let (compression, raw) = open_compressed(path)?;
    let stream = decompress(compression, raw).with_context(|| format!("cannot read backup {}", path.display()))?;
    Ok(tar::Archive::new(stream))
}

/// How a backup file (an archive or an export) is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Compression {
    Gzip,
    Zstd,
}

impl Compression {
    /// What an export named `output` is written in: `.zst` or `.tzst` (any
    /// case) is zstd, anything else gzip.
    pub(super) fn for_output(output: &Path) -> Compression {
        let extension = output.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
        match extension.as_deref() {
            Some("zst" | "tzst") => Compression::Zstd,
            _ => Compression::Gzip,
        }
    }
}

/// Opens a backup file: its compression, told by its first bytes, and a
/// reader of all of it from the start; a file that is neither gzip nor zstd
/// is refused naming what it begins with.
pub(super) fn open_compressed(path: &Path) -> Result<(Compression, Box<dyn Read>)> {
    let mut file = File::open(path).with_context(|| format!("cannot open backup {}", path.display()))?;
    let mut start = [0u8; 4];
    let got = read_full(&mut file, &mut start).with_context(|| format!("cannot read backup {}", path.display()))?;
    let compression = match &start[..got] {
        [] => bail!("{} is empty: not an upgraderd backup", path.display()),
        [0x28, 0xb5, 0x2f, 0xfd] => Compression::Zstd,
        [0x1f, 0x8b, ..] => Compression::Gzip,
        other => bail!(
            "{} is neither a gzip nor a zstd file (it begins with {}): not an upgraderd backup or export",
            path.display(),
            other.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
        ),
    };
    let whole = io::Cursor::new(start[..got].to_vec()).chain(io::BufReader::with_capacity(1 << 20, file));
    Ok((compression, Box::new(whole)))
}

/// The tar stream inside a compressed backup file.
pub(super) fn decompress(compression: Compression, raw: Box<dyn Read>) -> io::Result<Box<dyn Read>> {
    Ok(match compression {
        Compression::Gzip => Box::new(GzDecoder::new(raw)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(raw)?),
    })
}

/// Reads a backup's metadata: an archive's first member, without reading the
/// rest, or a snapshot's metadata file.
pub fn read_meta(path: &Path) -> Result<Meta> {
    let meta = match path.is_dir() {
        true => snapshot::read_meta(path)?,
        false => read_archive_meta(path)?,
    };
    if meta.format > SNAPSHOT_FORMAT {
        bail!(
            "{} has format {}, written by a newer upgraderd (this one reads up to {SNAPSHOT_FORMAT}); use that \
             version to read it",
            path.display(),
            meta.format
        );
    }
    Ok(meta)
}

fn read_archive_meta(path: &Path) -> Result<Meta> {
    let mut archive = open_archive(path)?;
    let mut entries = archive.entries().map_err(|e| damaged(path, None, e))?;
    let mut first = match entries.next() {
        Some(entry) => entry.map_err(|e| damaged(path, None, e))?,
        None => bail!("{} is empty: not an upgraderd backup", path.display()),
    };
    let name = first.path().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
    if name != META_MEMBER {
        bail!(
            "{} is not an upgraderd backup: it does not start with {META_MEMBER} (first member: {name})",
            path.display()
        );
    }
    let mut text = String::new();
    first.read_to_string(&mut text).map_err(|e| damaged(path, Some(META_MEMBER), e))?;
    serde_json::from_str(&text).with_context(|| format!("{} has an unreadable {META_MEMBER}", path.display()))
}

fn damaged(path: &Path, member: Option<&str>, err: io::Error) -> anyhow::Error {
    let what = describe_read_error(&err);
    match member {
        Some(member) => anyhow!("backup {} is damaged at member `{member}`: {what}", path.display()),
        None => anyhow!("backup {} is damaged: {what}", path.display()),
    }
}

fn describe_read_error(err: &io::Error) -> String {
    let text = err.to_string();
    if text.contains("invalid gzip header") {
        "not a gzip file".into()
    } else if err.kind() == io::ErrorKind::UnexpectedEof
        || text.contains("unexpected EOF")
        || text.contains("failed to fill whole buffer")
    {
        format!("the archive is truncated ({text})")
    } else if text.contains("corrupt deflate stream")
        || text.contains("invalid")
        || text.contains("CRC")
        || text.contains("checksum")
    {
        format!("the compressed data is corrupt ({text})")
    } else {
        text
    }
}

/// Reads the whole archive: the compression checksum (gzip CRC, zstd frame checksum), every member against the rules
/// restore applies, every member's sha256 against the manifest.
pub fn verify(path: &Path) -> Result<Verified> {
    let (meta, manifest, seen) = read_archive(path, &mut HashOnly)?;
    check_against_manifest(path, &seen, &manifest)?;
    let files = manifest.entries.iter().filter(|e| e.kind == Kind::File).count();
    let bytes = manifest.entries.iter().map(|e| e.size).sum();
    Ok(Verified { path: path.to_path_buf(), meta, members: seen.len(), files, bytes })
}

fn hash_to_sink(entry: &mut dyn Read) -> io::Result<(String, u64)> {
    let mut reader = HashingReader::new(entry);
    let size = io::copy(&mut reader, &mut io::sink())?;
    Ok((reader.hex(), size))
}

/// A data member as read from the archive.
#[derive(Debug)]
pub(super) struct SeenMember {
    member: Member,
    sha256: Option<String>,
    size: u64,
}

pub(super) fn check_against_manifest(path: &Path, seen: &[SeenMember], manifest: &Manifest) -> Result<()> {
    let expected: HashMap<&[u8], &ManifestEntry> = manifest.entries.iter().map(|e| (e.path.as_slice(), e)).collect();
    for SeenMember { member, sha256, size } in seen {
        let name = show(&member.name);
        let Some(entry) = expected.get(member.name.as_slice()) else {
            bail!("backup {} has member `{name}` that its manifest does not list", path.display());
        };
        if entry.kind != member.kind {
            bail!(
                "backup {}: member `{name}` is a {:?} but the manifest says {:?}",
                path.display(),
                member.kind,
                entry.kind
            );
        }
        if entry.kind == Kind::File && (entry.sha256 != *sha256 || entry.size != *size) {
            bail!(
                "backup {}: member `{name}` does not match its manifest (sha256 {} vs {}); the backup is corrupt",
                path.display(),
                sha256.as_deref().unwrap_or("-"),
                entry.sha256.as_deref().unwrap_or("-")
            );
        }
        // Format 1 manifests list no link targets; format 2 ones must match the archive.
        if entry.target.is_some() && entry.target != member.link {
            bail!(
                "backup {}: link member `{name}` points at `{}` but the manifest says `{}`; the backup is corrupt",
                path.display(),
                show(member.link.as_deref().unwrap_or_default()),
                show(entry.target.as_deref().unwrap_or_default())
            );
        }
    }
    let present: HashSet<&[u8]> = seen.iter().map(|m| m.member.name.as_slice()).collect();
    if let Some(missing) = manifest.entries.iter().find(|e| !present.contains(e.path.as_slice())) {
        bail!("backup {}: member `{}` listed in the manifest is missing", path.display(), show(&missing.path));
    }
    Ok(())
}

/// What reads an archive's data members as [`read_archive`] hands them over.
pub(super) trait Visit {
    /// One data member that passed the rules: returns the sha256 and size of a file's content.
    fn member(&mut self, member: &Member, header: &tar::Header, data: &mut dyn Read) -> Result<(String, u64)>;

    /// The final pass begins: the members it retires are to be forgotten.
    fn final_pass(&mut self, _final_pass: &FinalPass) -> Result<()> {
        Ok(())
    }
}

/// `verify`'s reader: hashes every member, keeps nothing.
struct HashOnly;

impl Visit for HashOnly {
    fn member(&mut self, _: &Member, _: &tar::Header, data: &mut dyn Read) -> Result<(String, u64)> {
        Ok(hash_to_sink(data)?)
    }
}

/// Reads an archive once, in order: its metadata, each data member (checked
/// by the [`Rules`], then handed to `visit`, which returns the sha256 and
/// size of a file's content), the final pass's preamble if there is one
/// (handed to `visit` before the members that follow it), the
/// manifest, and the gzip trailer so its CRC is checked. The members returned
/// are those that hold the final state: none the final pass retired.
pub(super) fn read_archive(path: &Path, visit: &mut dyn Visit) -> Result<(Meta, Manifest, Vec<SeenMember>)> {
    let meta = read_meta(path)?;
    let mut archive = open_archive(path)?;
    let mut rules = Rules::new(path, &meta.roots);
    let mut manifest: Option<Manifest> = None;
    let mut seen = Vec::new();
    {
        let entries = archive.entries().map_err(|e| damaged(path, None, e))?;
        let mut last_name = String::new();
        for (position, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| damaged(path, after(&last_name), e))?;
            let raw_name = entry.path_bytes().into_owned();
            last_name = show(&raw_name);
            if position == 0 {
                continue; // The metadata, already read.
            }
            if raw_name == MANIFEST_MEMBER.as_bytes() {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| damaged(path, Some(&last_name), e))?;
                manifest = Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("backup {} has an unreadable manifest", path.display()))?,
                );
                continue;
            }
            if manifest.is_some() {
                bail!("backup {} has member `{last_name}` after its manifest", path.display());
            }
            if raw_name == FINAL_PASS_MEMBER.as_bytes() {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| damaged(path, Some(&last_name), e))?;
                let final_pass: FinalPass = serde_json::from_str(&text)
                    .with_context(|| format!("backup {} has an unreadable {FINAL_PASS_MEMBER}", path.display()))?;
                rules.begin_final_pass(&final_pass.stale)?;
                let stale: HashSet<&[u8]> = final_pass.stale.iter().map(Vec::as_slice).collect();
                seen.retain(|m: &SeenMember| !stale.contains(m.member.name.as_slice()));
                visit.final_pass(&final_pass)?;
                continue;
            }
            let header = entry.header().clone();
            let link = entry.link_name_bytes().map(|l| l.into_owned());
            let member = rules.check(&raw_name, header.entry_type(), link.as_deref())?;
            let mut data = ArchiveData { entry: &mut entry, failed: false };
            let visited = visit.member(&member, &header, &mut data);
            let archive_failed = data.failed;
            let (sha256, size) = visited.map_err(|e| match archive_failed {
                // Only a failure to read the archive says anything about the archive.
                true => match e.downcast::<io::Error>() {
                    Ok(io_err) => damaged(path, Some(&last_name), io_err),
                    Err(other) => other,
                },
                // The visitor's own (a full disk it writes to): it says what failed.
                false => e,
            })?;
            let sha256 = (member.kind == Kind::File).then_some(sha256);
            if member.again {
                seen.retain(|m: &SeenMember| m.member.name != member.name);
            }
            seen.push(SeenMember { member, sha256, size });
        }
    }
    let Some(manifest) = manifest else {
        bail!("backup {} has no {MANIFEST_MEMBER}: it is incomplete or not an upgraderd backup", path.display());
    };
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| damaged(path, Some("(the compressed file's end)"), e))?;
    Ok((meta, manifest, seen))
}

/// A member's data as a visitor reads it, remembering whether reading the
/// archive failed: only that makes the archive damaged.
struct ArchiveData<'e> {
    entry: &'e mut dyn Read,
    failed: bool,
}

impl Read for ArchiveData<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // An interrupted read is retried by the reader, and is no failure of the archive.
        self.entry.read(buf).inspect_err(|e| self.failed |= e.kind() != io::ErrorKind::Interrupted)
    }
}

fn after(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}
