//! Backups: create, list, verify, restore, export, prune.
//!
//! A backup is a snapshot (a directory; see [`snapshot`]) or an archive. An
//! archive is a `.tar.gz` holding, in order: `upgraderd-backup.json` (what
//! was backed up, for `list` to read cheaply), `data/<i>/...` for each data
//! path `i`, and `manifest.json` (every member with its sha256, written last
//! because the hashes are computed while writing). SQLite databases go in as a
//! snapshot taken through SQLite's online backup API, never as raw bytes of a
//! live file. Archives are written as `.partial`, fsynced and renamed; restore
//! stages on the same filesystem, checks every hash and only then swaps.
//!
//! Restore gives back what was there: names as bytes (the manifest encodes
//! names that are not UTF-8 reversibly), symlinks verbatim wherever they point
//! (never followed), hard links as hard links, sparse files with their holes,
//! owners, modes and mtimes (to the second). The members are plain GNU tar
//! (`tar tzf` lists them). Data the app can write is only ever reached through
//! directory handles, so a name it swaps for a symlink mid-way cannot make a
//! backup read, or a restore write, outside the data.
//!
//! This module holds the public types and re-exports; the work is split by concern:
//! - [`format`]: metadata, manifest, hashing, names in messages;
//! - [`members`]: member names and the rules every member passes, the same for verify and restore;
//! - [`read`]: reading an archive back and verifying it;
//! - [`scan`] and [`crate::store::fsat`]: the walk through directory handles that backups and restores rely on;
//! - [`sqlite`]: consistent snapshots of live SQLite databases; [`sparse`]: files with holes;
//! - [`create`](mod@create): scanning the data and writing a backup, through a [`sink`] (an archive's or a snapshot's);
//! - [`snapshot`]: snapshots, their objects shared with the previous one, and their tar stream;
//! - [`export`](mod@export): one `.tar.gz` or `.tar.zst` from any backup;
//! - [`restore`](mod@restore): staging an archive next to its targets and swapping it in;
//! - [`catalog`]: the archives in the backup directory (list, find, prune, leftovers).

mod catalog;
mod copy;
mod create;
mod export;
mod format;
mod members;
mod read;
mod restore;
mod scan;
mod sink;
mod snapshot;
mod sparse;
mod sqlite;

use std::path::PathBuf;

use serde::Serialize;

pub(crate) use self::catalog::{find, list, partial_archives, prune, remove_partial};
pub use self::create::create_as;
pub use self::create::{begin, create, create_paused, FirstPass};
pub use self::export::export;
pub(crate) use self::format::Meta;
pub use self::read::{read_meta, verify};
pub use self::restore::{restore, restore_paused};
pub(crate) use self::scan::{footprint, Footprint};

/// Points inside [`create`] and [`restore`] where tests change the files, to
/// make a race deterministic instead of timing-based. Not a supported API.
#[doc(hidden)]
#[derive(Debug, Clone, Copy)]
pub enum Pause<'a> {
    /// `create` has scanned the data and is about to copy it.
    Scanned,
    /// `create` is about to copy this member.
    Copying(&'a [u8]),
    /// `restore` is about to write this member into its staging directory.
    Staging(&'a [u8]),
    /// `restore` has staged everything and is about to swap it in.
    Swapping,
}

/// How each data path's files went into a snapshot, a line each for the log:
/// "Stored /data: 12 copied (3.0 MiB), 4000 shared (9.9 GiB)". None for an archive.
pub(crate) fn stored_lines(meta: &Meta) -> Vec<String> {
    meta.roots
        .iter()
        .filter_map(|root| Some(format!("Stored {}: {}", root.path.display(), root.stored?.describe())))
        .collect()
}

/// The disk the objects that snapshots share take, each counted once.
pub(crate) fn shared_on_disk(listed: &[Listed]) -> u64 {
    let dirs: Vec<&std::path::Path> =
        listed.iter().filter(|b| b.kind == Form::Snapshot).map(|b| b.path.as_path()).collect();
    snapshot::shared_on_disk(&dirs)
}

/// The ids of the backups in `dir`, newest first (for tests and scripts that
/// need no more than that).
pub fn list_ids(dir: &std::path::Path) -> anyhow::Result<Vec<String>> {
    Ok(list(dir)?.into_iter().map(|b| b.id).collect())
}

/// Keeps the newest `keep` backups in `dir` and deletes the rest; returns what it deleted.
pub fn prune_keeping(dir: &std::path::Path, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    Ok(prune(dir, keep, &[])?.deleted)
}

/// What a backup is (and a new one is written as).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Form {
    /// A directory that stores each file's content once and shares what did
    /// not change with the snapshot before it (see `snapshot`).
    #[default]
    Snapshot,
    /// One `.tar.gz` file holding everything.
    Archive,
}

impl Form {
    pub fn as_str(self) -> &'static str {
        match self {
            Form::Snapshot => "snapshot",
            Form::Archive => "archive",
        }
    }
}

impl std::str::FromStr for Form {
    type Err = String;
    fn from_str(text: &str) -> Result<Form, String> {
        match text {
            "snapshot" => Ok(Form::Snapshot),
            "archive" => Ok(Form::Archive),
            other => Err(format!("`{other}` is not a backup format; use `snapshot` or `archive`")),
        }
    }
}

/// One data path to back up, and the service mount it came from when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub path: PathBuf,
    pub service: Option<String>,
    /// Where the service mounts it.
    pub mount: Option<String>,
}

impl Source {
    /// A data path no service is known to own.
    pub fn path(path: impl Into<PathBuf>) -> Source {
        Source { path: path.into(), service: None, mount: None }
    }
}

/// Why a backup is taken, recorded in its metadata.
#[derive(Debug, Clone, Default)]
pub struct Reason {
    pub upgrade_id: Option<String>,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub image_id: Option<String>,
    pub commit: Option<String>,
}

/// Progress of a long backup or restore step.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub done: u64,
    pub total: u64,
}

/// A finished archive.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    pub path: PathBuf,
    pub meta: Meta,
    pub archive_bytes: u64,
    pub warnings: Vec<String>,
}

/// What `verify` found in a good archive.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    pub path: PathBuf,
    pub meta: Meta,
    pub members: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Where `restore` puts the data.
#[derive(Debug, Clone)]
pub enum Destination {
    /// Back over the paths the backup was taken from.
    Original,
    /// Into this directory (one root: the directory itself; several: `<i>-<name>` inside).
    Into(PathBuf),
}

/// What `restore` did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Restored {
    pub archive: PathBuf,
    pub targets: Vec<PathBuf>,
    pub files: u64,
    pub bytes: u64,
}

/// One archive in the backup directory, as `list` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Listed {
    pub id: String,
    pub path: PathBuf,
    pub kind: Form,
    /// The disk it holds alone: what deleting it frees.
    pub bytes: u64,
    /// The disk it shares with other snapshots (0 for an archive).
    pub shared_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<Meta>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// What `prune` removed and kept.
#[derive(Debug, Clone, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Pruned {
    pub deleted: Vec<PathBuf>,
    /// The disk the deleted backups held alone: at least what deleting them freed.
    pub freed_bytes: u64,
    pub kept: Vec<PathBuf>,
    /// Backups that could not be read: left alone, not counted as kept.
    pub unreadable: Vec<PathBuf>,
    pub leftovers: Vec<PathBuf>,
}
