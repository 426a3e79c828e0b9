//! Staging a snapshot: each manifest entry passes the member rules an
//! archive's members pass, and lands in the same staging area. A file is
//! cloned from its object where the filesystem can (the backup directory on
//! the data's XFS or btrfs): nothing is copied, and the object, read-only
//! since it was stored and hashed, is checked by its size (`backup verify`
//! reads and checks every byte). Elsewhere the object is copied and checked
//! against its sha256 as it is written, as an archive's member is.

use std::io;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Result};

use super::super::format::{show, Kind, ManifestEntry, Meta};
use super::super::members::Rules;
use super::super::sink::header_of;
use super::super::{snapshot, sparse};
use super::{Pause, Progress, Room, Stage, Stager, Visit};

pub(super) fn stage_snapshot(
    dir: &Path,
    meta: &Meta,
    rooms: &[Room],
    stages: &mut [Stage],
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<(u64, u64)> {
    let manifest = snapshot::read_manifest(dir)?;
    let mut rules = Rules::new(dir, &meta.roots);
    let mut stager = Stager { stages, meta, rooms, progress, pause, files: 0, bytes: 0, last_report: Instant::now() };
    for entry in &manifest.entries {
        let member = rules.check(&entry.path, entry_type(entry.kind), entry.target.as_deref())?;
        if entry.kind != Kind::File {
            let header = header_of(entry, entry_type(entry.kind));
            stager.member(&member, &header, &mut io::empty())?;
            continue;
        }
        let object = snapshot::open_object(dir, entry)?;
        (stager.pause)(Pause::Staging(&member.name));
        let (sha256, size) = match object {
            snapshot::Object::Whole(mut object) => {
                let sparse = sparse::data_segments(&object, entry.size)?.is_some();
                let header = file_header(entry, sparse);
                if stager.stages[member.root].clone_file(&member, &header, &object)? {
                    stager.files += 1;
                    stager.bytes += entry.size;
                    stager.report();
                    continue;
                }
                stager.member(&member, &header, &mut object)?
            }
            // Pieces are copied: a clone of each would need a range of its own.
            snapshot::Object::Pieced(mut pieced) => {
                let header = file_header(entry, pieced.segments().is_some());
                stager.member(&member, &header, &mut pieced)?
            }
        };
        if Some(sha256.as_str()) != entry.sha256.as_deref() || size != entry.size {
            bail!(
                "backup {}: member `{}` does not match its manifest (sha256 {sha256} vs {}); the snapshot is corrupt",
                dir.display(),
                show(&entry.path),
                entry.sha256.as_deref().unwrap_or("-")
            );
        }
    }
    stager.finish(&manifest)
}

/// The header of a file member of `entry`'s size, sparse when its content has holes.
fn file_header(entry: &ManifestEntry, sparse: bool) -> tar::Header {
    let mut header = header_of(entry, if sparse { tar::EntryType::GNUSparse } else { tar::EntryType::Regular });
    header.set_size(entry.size);
    header
}

fn entry_type(kind: Kind) -> tar::EntryType {
    match kind {
        Kind::File => tar::EntryType::Regular,
        Kind::Dir => tar::EntryType::Directory,
        Kind::Symlink => tar::EntryType::Symlink,
        Kind::Hardlink => tar::EntryType::Link,
        Kind::Fifo => tar::EntryType::Fifo,
    }
}
