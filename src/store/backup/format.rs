//! The archive format: its metadata and manifest, member names, the hashing
//! reader, and reading an archive back (metadata alone, or every member
//! checked against the manifest, which is what `verify` does).

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use flate2::read::GzDecoder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::Verified;

pub const META_MEMBER: &str = "upgraderd-backup.json";
pub const MANIFEST_MEMBER: &str = "manifest.json";
pub(super) const ARCHIVE_PREFIX: &str = "upgrade-backup-";
pub(super) const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Names upgraderd itself creates inside a data dir while restoring; never backed up.
pub(super) const OWN_PREFIX: &str = ".upgraderd-";
pub(super) const FORMAT: u32 = 1;

/// One data path of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Root {
    pub index: usize,
    pub path: PathBuf,
    pub is_dir: bool,
}

/// What a backup holds and why it was taken; the first member of the archive.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Meta {
    pub format: u32,
    pub id: String,
    pub created_at: String,
    pub upgrade_id: Option<String>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image_id: Option<String>,
    pub commit: Option<String>,
    pub roots: Vec<Root>,
    pub total_bytes: u64,
    pub file_count: u64,
}

/// One member in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ManifestEntry {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sqlite_snapshot: bool,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub entries: Vec<ManifestEntry>,
}

/// Hashes what passes through; in `exact` mode yields exactly `size` bytes,
/// padding with zeros if the source shrank under us.
pub(super) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    remaining: Option<u64>,
    pub(super) short: bool,
}

impl<R: Read> HashingReader<R> {
    pub(super) fn new(inner: R) -> Self {
        HashingReader { inner, hasher: Sha256::new(), remaining: None, short: false }
    }

    pub(super) fn exact(inner: R, size: u64) -> Self {
        HashingReader { remaining: Some(size), ..HashingReader::new(inner) }
    }

    pub(super) fn hex(&self) -> String {
        hex(&self.hasher.clone().finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let limit = match self.remaining {
            Some(0) => return Ok(0),
            Some(left) => buf.len().min(left.min(usize::MAX as u64) as usize),
            None => buf.len(),
        };
        let mut n = self.inner.read(&mut buf[..limit])?;
        if n == 0 && self.remaining.is_some() {
            self.short = true;
            buf[..limit].fill(0);
            n = limit;
        }
        if let Some(left) = &mut self.remaining {
            *left -= n as u64;
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

pub(super) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
/// Opens an archive for reading, explaining a missing or unreadable file.
fn open_archive(path: &Path) -> Result<tar::Archive<GzDecoder<io::BufReader<File>>>> {
    let file = File::open(path).with_context(|| format!("cannot open backup {}", path.display()))?;
    Ok(tar::Archive::new(GzDecoder::new(io::BufReader::with_capacity(1 << 20, file))))
}

/// Reads an archive's first member, its metadata, without reading the rest.
pub fn read_meta(path: &Path) -> Result<Meta> {
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

/// Reads the whole archive: the gzip CRC, every member's sha256 against the manifest.
pub fn verify(path: &Path) -> Result<Verified> {
    let (meta, manifest, seen) = read_archive(path, &mut |_, _, data| Ok(hash_to_sink(data)?))?;
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
    path: String,
    kind: Kind,
    sha256: Option<String>,
    size: u64,
}

pub(super) fn check_against_manifest(path: &Path, seen: &[SeenMember], manifest: &Manifest) -> Result<()> {
    let expected: HashMap<&str, &ManifestEntry> = manifest.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    for member in seen {
        let Some(entry) = expected.get(member.path.as_str()) else {
            bail!("backup {} has member `{}` that its manifest does not list", path.display(), member.path);
        };
        if entry.kind != member.kind {
            bail!(
                "backup {}: member `{}` is a {:?} but the manifest says {:?}",
                path.display(),
                member.path,
                member.kind,
                entry.kind
            );
        }
        if entry.kind == Kind::File && (entry.sha256 != member.sha256 || entry.size != member.size) {
            bail!(
                "backup {}: member `{}` does not match its manifest (sha256 {} vs {}); the archive is corrupt",
                path.display(),
                member.path,
                member.sha256.as_deref().unwrap_or("-"),
                entry.sha256.as_deref().unwrap_or("-")
            );
        }
    }
    let present: HashSet<&str> = seen.iter().map(|m| m.path.as_str()).collect();
    if let Some(missing) = manifest.entries.iter().find(|e| !present.contains(e.path.as_str())) {
        bail!("backup {}: member `{}` listed in the manifest is missing", path.display(), missing.path);
    }
    Ok(())
}

type MemberHandler<'h> = dyn FnMut(&str, &tar::Header, &mut dyn Read) -> Result<(String, u64)> + 'h;

/// Reads an archive once, in order: its metadata, each data member (handed to
/// `on_member`, which returns the sha256 and size of a file's content), the
/// manifest, and the gzip trailer so its CRC is checked.
pub(super) fn read_archive(
    path: &Path,
    on_member: &mut MemberHandler<'_>,
) -> Result<(Meta, Manifest, Vec<SeenMember>)> {
    let meta = read_meta(path)?;
    let mut archive = open_archive(path)?;
    let mut manifest: Option<Manifest> = None;
    let mut seen = Vec::new();
    {
        let entries = archive.entries().map_err(|e| damaged(path, None, e))?;
        let mut last_name = String::new();
        for (position, entry) in entries.enumerate() {
            let mut entry = entry.map_err(|e| damaged(path, after(&last_name), e))?;
            let name = entry.path().map_err(|e| damaged(path, after(&last_name), e))?.to_string_lossy().into_owned();
            last_name = name.clone();
            if position == 0 {
                continue; // The metadata, already read.
            }
            if name == MANIFEST_MEMBER {
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(|e| damaged(path, Some(&name), e))?;
                manifest = Some(
                    serde_json::from_str(&text)
                        .with_context(|| format!("backup {} has an unreadable manifest", path.display()))?,
                );
                continue;
            }
            if manifest.is_some() {
                bail!("backup {} has member `{name}` after its manifest", path.display());
            }
            let header = entry.header().clone();
            let kind = match header.entry_type() {
                tar::EntryType::Regular => Kind::File,
                tar::EntryType::Directory => Kind::Dir,
                tar::EntryType::Symlink => Kind::Symlink,
                other => bail!(
                    "backup {} has member `{name}` of type {other:?}, which upgraderd never writes",
                    path.display()
                ),
            };
            let (sha256, size) =
                on_member(&name, &header, &mut entry).map_err(|e| match e.downcast::<io::Error>() {
                    Ok(io_err) => damaged(path, Some(&name), io_err),
                    Err(other) => other,
                })?;
            let sha256 = (kind == Kind::File).then_some(sha256);
            seen.push(SeenMember { path: name, kind, sha256, size });
        }
    }
    let Some(manifest) = manifest else {
        bail!("backup {} has no {MANIFEST_MEMBER}: it is incomplete or not an upgraderd backup", path.display());
    };
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(|e| damaged(path, Some("(gzip trailer)"), e))?;
    Ok((meta, manifest, seen))
}

fn after(name: &str) -> Option<&str> {
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_reader_pads_a_shrunk_source() {
        let mut reader = HashingReader::exact(&b"abc"[..], 5);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(reader.short);
    }
}
