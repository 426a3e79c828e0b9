//! The archive format: its constants, metadata and manifest, the hashing
//! reader that computes a member's sha256 as it streams, and how names (bytes)
//! are shown in messages.

use std::io::{self, Read};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
/// A name for messages: its UTF-8 text, with bytes that are not UTF-8 shown as `\xNN`.
pub(super) fn show(name: &[u8]) -> String {
    let mut text = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        text.push_str(chunk.valid());
        for byte in chunk.invalid() {
            text.push_str(&format!("\\x{byte:02x}"));
        }
    }
    text
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

    #[test]
    fn names_that_are_not_utf8_are_shown_escaped() {
        assert_eq!(show(b"caf\xc3\xa9/\xff"), "caf\u{e9}/\\xff");
    }
}
