//! The archive format: its constants, metadata and manifest, the hashing
//! reader that computes a member's sha256 as it streams, and how names (bytes)
//! are shown in messages.

use std::ffi::OsString;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) const META_MEMBER: &str = "upgraderd-backup.json";
pub(crate) const MANIFEST_MEMBER: &str = "manifest.json";
/// Between the first pass and the final pass: the first-pass members the final pass replaces or removes.
pub(super) const FINAL_PASS_MEMBER: &str = "final-pass.json";
pub(super) const ARCHIVE_PREFIX: &str = "upgrade-backup-";
pub(super) const ARCHIVE_SUFFIX: &str = ".tar.gz";
/// Names upgraderd itself creates inside a data dir while restoring; never backed up.
pub(super) const OWN_PREFIX: &str = ".upgraderd-";

/// 1: the first format. 2: names as bytes (`pathHex`), link targets in the
/// manifest, hard links and GNU sparse members. 3: the service and mount each
/// data path came from, and an optional final pass after `final-pass.json`
/// (later also what restoring each data path allocates, an optional field,
/// and FIFO members, kind `fifo`, which older readers refuse by name).
/// Archives are still written in format 3.
pub(super) const FORMAT: u32 = 3;
/// 4: a snapshot, a directory rather than an archive (see `snapshot`); its
/// metadata and manifest are those of format 3, with how each data path's
/// files were stored. 5: a snapshot whose large files may be stored in
/// pieces (an object list in place of the object), which a reader of 4
/// could not open. Readers take formats 1 to 5.
pub(super) const SNAPSHOT_FORMAT: u32 = 5;

/// One data path of a backup.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "RootWire", into = "RootWire")]
pub struct Root {
    pub index: usize,
    pub path: PathBuf,
    pub is_dir: bool,
    /// The compose service whose mount this is, when known.
    pub service: Option<String>,
    /// Where that service mounts it.
    pub mount: Option<String>,
    /// What restoring it allocates on its filesystem (holes not written, a
    /// hard-linked file once); `None` in archives written before it was recorded.
    pub restore_bytes: Option<u64>,
    /// How its files were stored (snapshots; `None` in archives).
    pub stored: Option<Tally>,
}

/// How the files of one data path went into a snapshot: read and copied,
/// cloned by the filesystem, read and stored in pieces (large files the
/// filesystem could not clone, and SQLite databases), or shared with an
/// earlier snapshot unread.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default)]
pub struct Tally {
    pub copied: u64,
    pub copied_bytes: u64,
    pub cloned: u64,
    pub cloned_bytes: u64,
    pub pieced: u64,
    pub pieced_bytes: u64,
    /// What of `pieced_bytes` was stored anew: the pieces no earlier snapshot held.
    pub pieced_new_bytes: u64,
    pub shared: u64,
    pub shared_bytes: u64,
}

impl Tally {
    /// In words, for the log and `backup list`: "12 copied (3.0 MiB), 4000 shared (9.9 GiB)".
    pub fn describe(&self) -> String {
        let human = crate::units::human_bytes;
        let parts: Vec<String> = [
            ("copied", self.copied, self.copied_bytes, None),
            ("cloned", self.cloned, self.cloned_bytes, None),
            ("pieced", self.pieced, self.pieced_bytes, Some(self.pieced_new_bytes)),
            ("shared", self.shared, self.shared_bytes, None),
        ]
        .into_iter()
        .filter(|(_, files, _, _)| *files > 0)
        .map(|(how, files, bytes, new)| match new {
            Some(new) => format!("{files} {how} ({}, {} of it new)", human(bytes), human(new)),
            None => format!("{files} {how} ({})", human(bytes)),
        })
        .collect();
        if parts.is_empty() {
            "no files".into()
        } else {
            parts.join(", ")
        }
    }
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
    /// The files' apparent size.
    pub total_bytes: u64,
    pub file_count: u64,
}

impl Meta {
    /// What restoring every data path allocates, when the archive records it.
    pub fn restore_bytes(&self) -> Option<u64> {
        self.roots.iter().map(|root| root.restore_bytes).sum()
    }
}

/// One member in the manifest. Names and link targets are bytes: JSON holds
/// them as text when they are UTF-8, else as `pathHex`/`targetHex` beside a
/// readable `path`/`target` (manifests of format 1 have text only).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(try_from = "EntryWire", into = "EntryWire")]
pub(crate) struct ManifestEntry {
    pub path: Vec<u8>,
    pub kind: Kind,
    pub size: u64,
    pub sha256: Option<String>,
    pub mode: u32,
    pub uid: u64,
    pub gid: u64,
    pub mtime: i64,
    pub sqlite_snapshot: bool,
    /// A symlink's target, or the member a hard link shares its inode with.
    pub target: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Kind {
    File,
    Dir,
    Symlink,
    /// Another name for an earlier file member of the same data path.
    Hardlink,
    /// A named pipe: its mode, owner and time, no content.
    Fifo,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Manifest {
    pub format: u32,
    pub entries: Vec<ManifestEntry>,
}

/// The final pass's preamble: the first-pass members that changed or went
/// away while the services were being stopped. A restore drops them before it
/// reads the final pass's members, which hold what was there at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FinalPass {
    pub stale: Vec<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct FinalPassWire {
    stale: Vec<NameWire>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NameWire {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
}

impl Serialize for FinalPass {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let stale = self
            .stale
            .iter()
            .map(|name| {
                let (path, path_hex) = bytes_to_json(name);
                NameWire { path, path_hex }
            })
            .collect();
        FinalPassWire { stale }.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for FinalPass {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<FinalPass, D::Error> {
        let wire = FinalPassWire::deserialize(deserializer)?;
        let stale = wire
            .stale
            .into_iter()
            .map(|n| bytes_from_json(n.path, n.path_hex))
            .collect::<Result<_, _>>()
            .map_err(serde::de::Error::custom)?;
        Ok(FinalPass { stale })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RootWire {
    index: usize,
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    is_dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mount: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    restore_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    stored: Option<Tally>,
}

impl From<Root> for RootWire {
    fn from(root: Root) -> RootWire {
        let (path, path_hex) = bytes_to_json(root.path.as_os_str().as_bytes());
        RootWire {
            index: root.index,
            path,
            path_hex,
            is_dir: root.is_dir,
            service: root.service,
            mount: root.mount,
            restore_bytes: root.restore_bytes,
            stored: root.stored,
        }
    }
}

impl TryFrom<RootWire> for Root {
    type Error = String;
    fn try_from(wire: RootWire) -> Result<Root, String> {
        let path = PathBuf::from(OsString::from_vec(bytes_from_json(wire.path, wire.path_hex)?));
        Ok(Root {
            index: wire.index,
            path,
            is_dir: wire.is_dir,
            service: wire.service,
            mount: wire.mount,
            restore_bytes: wire.restore_bytes,
            stored: wire.stored,
        })
    }
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct EntryWire {
    path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_hex: Option<String>,
    kind: Kind,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: i64,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    sqlite_snapshot: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    target_hex: Option<String>,
}

impl From<ManifestEntry> for EntryWire {
    fn from(entry: ManifestEntry) -> EntryWire {
        let (path, path_hex) = bytes_to_json(&entry.path);
        let (target, target_hex) = match entry.target.as_deref().map(bytes_to_json) {
            Some((text, hex)) => (Some(text), hex),
            None => (None, None),
        };
        EntryWire {
            path,
            path_hex,
            kind: entry.kind,
            size: entry.size,
            sha256: entry.sha256,
            mode: entry.mode,
            uid: entry.uid,
            gid: entry.gid,
            mtime: entry.mtime,
            sqlite_snapshot: entry.sqlite_snapshot,
            target,
            target_hex,
        }
    }
}

impl TryFrom<EntryWire> for ManifestEntry {
    type Error = String;
    fn try_from(wire: EntryWire) -> Result<ManifestEntry, String> {
        let target = match (wire.target, wire.target_hex) {
            (None, None) => None,
            (text, hex) => Some(bytes_from_json(text.unwrap_or_default(), hex)?),
        };
        Ok(ManifestEntry {
            path: bytes_from_json(wire.path, wire.path_hex)?,
            kind: wire.kind,
            size: wire.size,
            sha256: wire.sha256,
            mode: wire.mode,
            uid: wire.uid,
            gid: wire.gid,
            mtime: wire.mtime,
            sqlite_snapshot: wire.sqlite_snapshot,
            target,
        })
    }
}

/// Bytes for JSON: the text itself when it is UTF-8; otherwise a readable
/// text (invalid bytes as `\xNN`) and the exact bytes in hex.
pub(super) fn bytes_to_json(bytes: &[u8]) -> (String, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_owned(), None),
        Err(_) => (show(bytes), Some(hex(bytes))),
    }
}

/// The bytes [`bytes_to_json`] encoded: the hex when present, else the text.
pub(super) fn bytes_from_json(text: String, hex: Option<String>) -> Result<Vec<u8>, String> {
    let Some(hex) = hex else { return Ok(text.into_bytes()) };
    let digits = hex.as_bytes();
    if digits.len() % 2 != 0 {
        return Err(format!("`{hex}` is not hex: odd length"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("`{hex}` is not hex"))
        })
        .collect()
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
    fn a_tally_says_how_many_files_went_each_way_and_what_of_the_pieced_ones_was_new() {
        let tally = Tally {
            copied: 1,
            copied_bytes: 2048,
            pieced: 1,
            pieced_bytes: 40 << 20,
            pieced_new_bytes: 3 << 20,
            ..Tally::default()
        };
        assert_eq!(tally.describe(), "1 copied (2.0 KiB), 1 pieced (40.0 MiB, 3.0 MiB of it new)");
        assert_eq!(Tally::default().describe(), "no files");
    }

    #[test]
    fn hashing_reader_pads_a_shrunk_source() {
        let mut reader = HashingReader::exact(&b"abc"[..], 5);
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"abc\0\0");
        assert!(reader.short);
    }

    #[test]
    fn what_a_restore_allocates_is_recorded_per_data_path_and_older_archives_read_without_it() {
        let root = |restore_bytes| Root {
            index: 0,
            path: PathBuf::from("/srv/data"),
            is_dir: true,
            service: None,
            mount: None,
            restore_bytes,
            stored: None,
        };
        let json = serde_json::to_string(&root(Some(4096))).unwrap();
        assert!(json.contains("\"restoreBytes\":4096"), "{json}");
        let older: Root = serde_json::from_str(r#"{"index":0,"path":"/srv/data","isDir":true}"#).unwrap();
        assert_eq!(older, root(None));
        let meta = |roots| Meta { roots, ..Meta::default() };
        assert_eq!(meta(vec![root(Some(4096)), root(Some(8192))]).restore_bytes(), Some(12288));
        assert_eq!(meta(vec![root(Some(4096)), root(None)]).restore_bytes(), None);
    }

    #[test]
    fn names_are_bytes_in_json_and_old_manifests_still_read() {
        let entry = ManifestEntry {
            path: b"data/0/\xff\xfe-caf\xc3\xa9".to_vec(),
            kind: Kind::Symlink,
            size: 0,
            sha256: None,
            mode: 0o777,
            uid: 0,
            gid: 0,
            mtime: 1,
            sqlite_snapshot: false,
            target: Some(b"../\x80".to_vec()),
        };
        let json = serde_json::to_string(&entry).unwrap();
        assert!(json.contains("\"pathHex\":\"646174612f302ffffe2d636166c3a9\""), "{json}");
        assert_eq!(serde_json::from_str::<ManifestEntry>(&json).unwrap(), entry);
        let old = r#"{"path":"data/0/a","kind":"file","size":1,"sha256":"x","mode":420,"uid":0,"gid":0,"mtime":5}"#;
        let read: ManifestEntry = serde_json::from_str(old).unwrap();
        assert_eq!((read.path.as_slice(), read.target), (&b"data/0/a"[..], None));
        let path = PathBuf::from(OsString::from_vec(b"/srv/\xff".to_vec()));
        let root = Root {
            index: 0,
            path,
            is_dir: true,
            service: Some("db".into()),
            mount: Some("/var/lib/db".into()),
            restore_bytes: None,
            stored: None,
        };
        let json = serde_json::to_string(&root).unwrap();
        assert_eq!(serde_json::from_str::<Root>(&json).unwrap(), root);
    }

    #[test]
    fn names_that_are_not_utf8_are_shown_escaped() {
        assert_eq!(show(b"caf\xc3\xa9/\xff"), "caf\u{e9}/\\xff");
    }
}
