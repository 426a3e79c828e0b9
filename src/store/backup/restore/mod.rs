//! Restoring a backup: stage every member next to its target (on the same
//! filesystem), check every hash against the manifest, then swap the staged
//! data in, undoing the roots already swapped if one fails. An archive is
//! staged as it is read; a snapshot from its manifest and objects
//! ([`snapshot`]), cloned where the filesystem can.
//!
//! Everything below a target is reached through directory handles (see
//! `fsat`): a member is created relative to its parent's handle with
//! `O_NOFOLLOW`/`O_EXCL`, a directory is kept open once created, and the swap
//! renames names between handles. A name in the staging directory or the
//! target swapped for a symlink meanwhile can therefore never make the
//! restore write outside the target.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::FileType;

mod snapshot;
mod write;

use self::write::{is_root, set_owner, write_fifo, write_file, write_symlink};

use super::format::{show, FinalPass, Kind, Manifest, ManifestEntry, Meta, Root, OWN_PREFIX};
use super::members::Member;
use super::read::{check_against_manifest, read_archive, read_meta, Visit};
use super::{Destination, Pause, Progress, Restored};
use crate::store::disk::{self, Room};
use crate::store::files;
use crate::store::fsat::{self, Cursor};
use crate::units::human_bytes;

/// Restores an archive: stage next to each target, check every hash, then swap.
/// A failure before the swap leaves the targets untouched.
pub fn restore(archive: &Path, destination: &Destination, progress: &mut dyn FnMut(Progress)) -> Result<Restored> {
    restore_paused(archive, destination, progress, &mut |_| {})
}

/// [`restore`], calling `pause` at each [`Pause`] point (tests use it to make races deterministic).
#[doc(hidden)]
pub fn restore_paused(
    archive: &Path,
    destination: &Destination,
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<Restored> {
    let meta = read_meta(archive)?;
    let targets = targets_for(&meta, destination);
    let rooms = check_space(&meta, &targets)?;
    let tag = files::unique_suffix();
    let mut stages: Vec<Stage> = Vec::new();
    let staged = open_stages(&meta, &targets, &tag, &mut stages).and_then(|()| match archive.is_dir() {
        true => snapshot::stage_snapshot(archive, &meta, &rooms, &mut stages, progress, pause),
        false => stage_archive(archive, &meta, &rooms, &mut stages, progress, pause),
    });
    let outcome = staged.and_then(|stats| {
        pause(Pause::Swapping);
        swap_all(&stages)?;
        Ok(stats)
    });
    for stage in &stages {
        stage.cleanup();
    }
    let (files, bytes) = outcome?;
    for stage in &stages {
        stage
            .finish()
            .with_context(|| format!("{} was restored, but its time could not be set", stage.target.display()))?;
    }
    Ok(Restored { archive: archive.to_path_buf(), targets, files, bytes })
}

fn targets_for(meta: &Meta, destination: &Destination) -> Vec<PathBuf> {
    match destination {
        Destination::Original => meta.roots.iter().map(|r| r.path.clone()).collect(),
        Destination::Into(dir) if meta.roots.len() == 1 => vec![dir.clone()],
        Destination::Into(dir) => meta
            .roots
            .iter()
            .map(|r| {
                let mut name = OsString::from(format!("{}-", r.index));
                name.push(r.path.file_name().unwrap_or(OsStr::new("root")));
                dir.join(name)
            })
            .collect(),
    }
}

/// Refuses a restore that cannot fit before anything is written: what the
/// archive records that restoring each data path allocates (holes are not
/// written), added up per filesystem, against its free space; the same count
/// as upgrade preflight's. An archive that does not record it is checked
/// against its files' apparent size, as it was written to be. Returns the
/// rooms, to explain a disk that fills all the same.
fn check_space(meta: &Meta, targets: &[PathBuf]) -> Result<Vec<Room>> {
    let recorded: Option<Vec<u64>> = meta.roots.iter().map(|root| root.restore_bytes).collect();
    let (rooms, counted) = match recorded {
        Some(bytes) => (disk::rooms(&targets.iter().cloned().zip(bytes).collect::<Vec<_>>()), "holes not counted"),
        None => (
            targets.iter().flat_map(|target| disk::rooms(&[(target.clone(), meta.total_bytes)])).collect(),
            "the files' apparent size: this backup does not record what restoring it allocates",
        ),
    };
    if let Some(short) = rooms.iter().find(|room| !room.fits()) {
        bail!(
            "not enough space to restore into {}: {} needed ({counted}), {} free; free some space there, or \
             restore the backup elsewhere with `upgraderd backup restore ARCHIVE --to DIR`",
            short.shown_paths(),
            human_bytes(short.needed),
            human_bytes(short.free)
        );
    }
    Ok(rooms)
}

/// A disk that filled while a member was being staged, in plain words: which
/// filesystem, how much the restore needed there and had when it began.
fn disk_full(err: anyhow::Error, room: &Room, member: &[u8]) -> anyhow::Error {
    let free = match room.free {
        u64::MAX => String::new(),
        free => format!(", {} free when the restore began", human_bytes(free)),
    };
    err.context(format!(
        "the disk is full: no space left while restoring into {} (at member `{}`): {} needed there{free}; \
         what was staged is removed and the data left as it was; free some space on that filesystem and \
         restore again",
        room.shown_paths(),
        show(member),
        human_bytes(room.needed)
    ))
}
fn open_stages(meta: &Meta, targets: &[PathBuf], tag: &str, stages: &mut Vec<Stage>) -> Result<()> {
    for (root, target) in meta.roots.iter().zip(targets) {
        stages.push(Stage::open(root, target, tag)?);
    }
    Ok(())
}

/// One root being restored: its staging place and final target, all held by handles.
struct Stage {
    root: Root,
    target: PathBuf,
    /// Dir roots: the target directory; file roots: the directory holding the target.
    dir: OwnedFd,
    /// File roots: the target's name in `dir`.
    target_name: Vec<u8>,
    /// Dir roots: the staging directory in `dir`; file roots: the staged file beside the target.
    staging_name: Vec<u8>,
    /// Dir roots: where the target's old children wait in `dir` until the swap has succeeded.
    old_name: Vec<u8>,
    /// Dir roots: the staging directory, once the archive's root member created it.
    staging: Option<OwnedFd>,
    /// The directories open below `staging`.
    cursor: Cursor,
    root_entry: Option<ManifestEntry>,
    /// Directories' final mode and mtime, applied once their children are in place.
    dir_fixups: Vec<(Vec<u8>, u32, i64)>,
}

/// Opens a directory the restore replaces the contents of. Its parent is the
/// operator's path; the directory itself may sit where the app can write, so a
/// symlink put there (to a host directory) is refused, never followed.
fn open_target_dir(target: &Path) -> Result<OwnedFd> {
    let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
        return fsat::open_trusted_dir(target)
            .with_context(|| format!("cannot open restore target {}", target.display()));
    };
    let parent = fsat::open_trusted_dir(parent).with_context(|| format!("cannot open {}", parent.display()))?;
    fsat::open_dir_at(parent.as_fd(), name.as_bytes()).map_err(|e| match e.raw_os_error() {
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => anyhow!(
            "restore target {} is not a directory but a symlink or a file (was it replaced?); nothing was restored",
            target.display()
        ),
        _ => anyhow::Error::new(e).context(format!("cannot open restore target {}", target.display())),
    })
}

impl Stage {
    fn open(root: &Root, target: &Path, tag: &str) -> Result<Stage> {
        let (dir, target_name, staging_name, old_name) = if root.is_dir {
            std::fs::create_dir_all(target)
                .with_context(|| format!("cannot create restore target {}", target.display()))?;
            let dir = open_target_dir(target)?;
            let staging = format!("{OWN_PREFIX}staging-{tag}").into_bytes();
            (dir, Vec::new(), staging, format!("{OWN_PREFIX}old-{tag}").into_bytes())
        } else {
            let (Some(parent), Some(name)) = (target.parent(), target.file_name()) else {
                bail!("cannot restore a file to {}: it has no file name", target.display());
            };
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            let dir = fsat::open_trusted_dir(parent).with_context(|| format!("cannot open {}", parent.display()))?;
            let mut staging = b".".to_vec();
            staging.extend_from_slice(name.as_bytes());
            staging.extend_from_slice(format!(".upgraderd-staging.{tag}").as_bytes());
            (dir, name.as_bytes().to_vec(), staging, Vec::new())
        };
        Ok(Stage {
            root: root.clone(),
            target: target.to_path_buf(),
            dir,
            target_name,
            staging_name,
            old_name,
            staging: None,
            cursor: Cursor::default(),
            root_entry: None,
            dir_fixups: Vec::new(),
        })
    }

    /// Whether `name` is this root's member or lies below it.
    fn holds(&self, name: &[u8]) -> bool {
        let root = format!("data/{}", self.root.index).into_bytes();
        name == root.as_slice() || (name.starts_with(&root) && name.get(root.len()) == Some(&b'/'))
    }

    /// Removes a member the first pass staged and the final pass retired.
    fn retire(&mut self, name: &[u8]) -> Result<()> {
        let root = format!("data/{}", self.root.index).into_bytes();
        let relative = name.get(root.len() + 1..).unwrap_or_default();
        if relative.is_empty() {
            // The data path itself: only a file root is ever retired (and written again).
            return Ok(fsat::remove_tree_at(self.dir.as_fd(), &self.staging_name)?);
        }
        let Some(staging) = self.staging.as_ref() else { bail!("nothing is staged for data/{}", self.root.index) };
        let components = fsat::components(relative);
        let Some((leaf, parents)) = components.split_last() else { return Ok(()) };
        let mut lookup = Cursor::default();
        let parent = lookup.open(staging.as_fd(), parents).map_err(|e| parent_refused(&show(name), &e))?;
        fsat::remove_tree_at(parent, leaf)?;
        self.dir_fixups.retain(|(dir, _, _)| dir.as_slice() != relative);
        Ok(())
    }

    /// Writes one member into the staging area; returns a file's sha256 and size.
    fn write(&mut self, member: &Member, header: &tar::Header, data: &mut dyn Read) -> Result<(String, u64)> {
        let name = show(&member.name);
        if member.again {
            // A directory the final pass names again: the staged one gets its final mode, owner and
            // time (the data path's own come from the manifest).
            if member.relative.is_empty() {
                return Ok((String::new(), 0));
            }
            let (mode, mtime) = (header.mode()? & 0o7777, header.mtime()? as i64);
            match self.dir_fixups.iter_mut().find(|(dir, _, _)| *dir == member.relative) {
                Some(fixup) => *fixup = (member.relative.clone(), mode, mtime),
                None => bail!("member `{name}` names again a directory that was not staged"),
            }
            let Some(staging) = self.staging.as_ref() else { bail!("member `{name}` has no staged directory") };
            let components = fsat::components(&member.relative);
            let Some((leaf, parents)) = components.split_last() else { bail!("member `{name}` has no name") };
            let parent = self.cursor.open(staging.as_fd(), parents).map_err(|e| parent_refused(&name, &e))?;
            set_owner(&fsat::open_dir_at(parent, leaf)?, header)?;
            return Ok((String::new(), 0));
        }
        if member.relative.is_empty() {
            return self.write_root(member, &name, header, data);
        }
        let Some(staging) = self.staging.as_ref() else {
            bail!("member `{name}` comes before its directory data/{}", self.root.index);
        };
        let components = fsat::components(&member.relative);
        let Some((leaf, parents)) = components.split_last() else { bail!("member `{name}` has no name") };
        let parent = self.cursor.open(staging.as_fd(), parents).map_err(|e| parent_refused(&name, &e))?;
        match (member.kind, &member.link) {
            (Kind::File, _) => {
                let file = fsat::create_file_at(parent, leaf).with_context(|| format!("cannot create `{name}`"))?;
                write_file(file, header, data).with_context(|| format!("cannot restore `{name}`"))
            }
            (Kind::Dir, _) => {
                let handle = fsat::create_dir_at(parent, leaf).with_context(|| format!("cannot create `{name}`"))?;
                let (mode, mtime) = (header.mode()? & 0o7777, header.mtime()? as i64);
                set_owner(&handle, header)?;
                // Writable until its children are in; the real mode comes last.
                fsat::set_mode(&handle, mode | 0o700)?;
                self.dir_fixups.push((member.relative.clone(), mode, mtime));
                self.cursor.adopt(parents, leaf, handle);
                Ok((String::new(), 0))
            }
            (Kind::Symlink, Some(target)) => {
                write_symlink(target, parent, leaf, header).with_context(|| format!("cannot create link `{name}`"))
            }
            (Kind::Fifo, _) => write_fifo(parent, leaf, header).with_context(|| format!("cannot create FIFO `{name}`")),
            (Kind::Hardlink, Some(first)) => {
                // The rules made `first` an earlier file of this data path: same prefix, `data/<i>/`.
                let first_relative = &first[member.name.len() - member.relative.len()..];
                let first_components = fsat::components(first_relative);
                let Some((first_leaf, first_parents)) = first_components.split_last() else {
                    bail!("hard link `{name}` names no file");
                };
                let mut lookup = Cursor::default();
                let first_parent =
                    lookup.open(staging.as_fd(), first_parents).map_err(|e| parent_refused(&show(first), &e))?;
                fsat::hard_link_at(first_parent, first_leaf, parent, leaf)
                    .with_context(|| format!("cannot link `{name}` to `{}`", show(first)))?;
                Ok((String::new(), 0))
            }
            (kind, _) => bail!("member `{name}` is a {kind:?} without what it needs; refusing to restore it"),
        }
    }

    /// Creates a file member as a clone of `object`, then its owner, mode and
    /// time; `false`, leaving nothing behind, where the filesystem cannot clone it.
    fn clone_file(&mut self, member: &Member, header: &tar::Header, object: &File) -> Result<bool> {
        let name = show(&member.name);
        let (dir, leaf) = if member.relative.is_empty() {
            (self.dir.as_fd(), self.staging_name.clone())
        } else {
            let Some(staging) = self.staging.as_ref() else {
                bail!("member `{name}` comes before its directory data/{}", self.root.index);
            };
            let components = fsat::components(&member.relative);
            let Some((leaf, parents)) = components.split_last() else { bail!("member `{name}` has no name") };
            let parent = self.cursor.open(staging.as_fd(), parents).map_err(|e| parent_refused(&name, &e))?;
            (parent, leaf.to_vec())
        };
        let file = fsat::create_file_at(dir, &leaf).with_context(|| format!("cannot create `{name}`"))?;
        if rustix::fs::ioctl_ficlone(&file, object).is_err() {
            drop(file);
            fsat::remove_tree_at(dir, &leaf).with_context(|| format!("cannot remove the empty `{name}`"))?;
            return Ok(false);
        }
        set_owner(&file, header)?;
        fsat::set_mode(&file, header.mode()?)?;
        fsat::set_mtime(&file, header.mtime()? as i64)?;
        file.sync_all()?;
        Ok(true)
    }

    /// The member `data/<i>` itself: the staging directory, or the staged file or link.
    fn write_root(
        &mut self,
        member: &Member,
        name: &str,
        header: &tar::Header,
        data: &mut dyn Read,
    ) -> Result<(String, u64)> {
        let dir = self.dir.as_fd();
        match (member.kind, &member.link) {
            (Kind::Dir, _) => {
                let staging = fsat::create_dir_at(dir, &self.staging_name)
                    .with_context(|| format!("cannot create a staging directory in {}", self.target.display()))?;
                self.staging = Some(staging);
                Ok((String::new(), 0))
            }
            (Kind::File, _) => {
                let file = fsat::create_file_at(dir, &self.staging_name)
                    .with_context(|| format!("cannot create a staging file beside {}", self.target.display()))?;
                write_file(file, header, data).with_context(|| format!("cannot restore `{name}`"))
            }
            (Kind::Symlink, Some(target)) => write_symlink(target, dir, &self.staging_name, header)
                .with_context(|| format!("cannot create link {}", self.target.display())),
            (Kind::Fifo, _) => write_fifo(dir, &self.staging_name, header)
                .with_context(|| format!("cannot create FIFO {}", self.target.display())),
            (kind, _) => bail!("member `{name}` is a {kind:?} without what it needs; refusing to restore it"),
        }
    }

    /// Gives every staged directory its real mode and time, deepest first.
    fn fix_directories(&mut self) -> Result<()> {
        let Some(staging) = self.staging.as_ref() else { return Ok(()) };
        let mut cursor = Cursor::default();
        for (relative, mode, mtime) in self.dir_fixups.iter().rev() {
            let components = fsat::components(relative);
            let Some((leaf, parents)) = components.split_last() else { continue };
            let parent = cursor.open(staging.as_fd(), parents)?;
            let handle = fsat::open_dir_at(parent, leaf)?;
            fsat::set_mode(&handle, *mode)?;
            fsat::set_mtime(&handle, *mtime)?;
        }
        Ok(())
    }

    /// Puts the staged data in place of the target's; see [`Swapped`].
    fn swap(&self) -> Result<Swapped> {
        if !self.root.is_dir {
            if let Ok(stat) = fsat::lstat_at(self.dir.as_fd(), &self.target_name) {
                if fsat::file_type(&stat) == FileType::Directory {
                    bail!("{} is a directory but the backup holds a file there", self.target.display());
                }
            }
            fsat::rename_at(self.dir.as_fd(), &self.staging_name, self.dir.as_fd(), &self.target_name)?;
            fsat::sync(&self.dir)?;
            return Ok(Swapped { old: None, moves: Vec::new() });
        }
        let Some(staging) = self.staging.as_ref() else {
            bail!("the backup holds no directory data/{}", self.root.index);
        };
        let old = fsat::create_dir_at(self.dir.as_fd(), &self.old_name)?;
        let mut swapped = Swapped { old: None, moves: Vec::new() };
        let result = self.move_children(staging, &old, &mut swapped.moves);
        swapped.old = Some(old);
        match result {
            Ok(()) => Ok(swapped),
            Err(err) => {
                self.undo(&swapped);
                Err(err)
            }
        }
    }

    /// Dir roots swap children (the target itself may be a mountpoint or a
    /// volume bound into a container, so it is kept).
    fn move_children(&self, staging: &OwnedFd, old: &OwnedFd, moves: &mut Vec<Move>) -> Result<()> {
        let dir = self.dir.as_fd();
        for name in fsat::read_names(dir)? {
            if name == self.staging_name || name == self.old_name {
                continue;
            }
            fsat::rename_at(dir, &name, old.as_fd(), &name)?;
            moves.push(Move::Aside(name));
        }
        for name in fsat::read_names(staging.as_fd())? {
            fsat::rename_at(staging.as_fd(), &name, dir, &name)?;
            moves.push(Move::In(name));
        }
        if let Some(entry) = &self.root_entry {
            if is_root() {
                fsat::set_owner(dir, entry.uid as u32, entry.gid as u32)?;
            }
            fsat::set_mode(dir, entry.mode)?;
        }
        Ok(())
    }

    fn undo(&self, swapped: &Swapped) {
        let (Some(old), Some(staging)) = (swapped.old.as_ref(), self.staging.as_ref()) else { return };
        for step in swapped.moves.iter().rev() {
            let _ = match step {
                Move::Aside(name) => fsat::rename_at(old.as_fd(), name, self.dir.as_fd(), name),
                Move::In(name) => fsat::rename_at(self.dir.as_fd(), name, staging.as_fd(), name),
            };
        }
    }

    fn cleanup(&self) {
        let _ = fsat::remove_tree_at(self.dir.as_fd(), &self.staging_name);
        if !self.old_name.is_empty() {
            let _ = fsat::remove_tree_at(self.dir.as_fd(), &self.old_name);
        }
    }

    /// After the cleanup (which changes the target's time): the target's own time, then fsync.
    fn finish(&self) -> Result<()> {
        if self.root.is_dir {
            if let Some(entry) = &self.root_entry {
                fsat::set_mtime(&self.dir, entry.mtime)?;
            }
        }
        fsat::sync(&self.dir)?;
        Ok(())
    }
}

/// What a swap moved, so that it can be undone.
struct Swapped {
    old: Option<OwnedFd>,
    moves: Vec<Move>,
}

enum Move {
    /// An old child of the target, moved into the old directory.
    Aside(Vec<u8>),
    /// A staged child, moved into the target.
    In(Vec<u8>),
}

fn parent_refused(name: &str, err: &io::Error) -> anyhow::Error {
    match err.raw_os_error() {
        Some(libc::ENOENT) => anyhow!("member `{name}`: its parent directory was not restored first"),
        Some(libc::ELOOP | libc::ENOTDIR) => {
            anyhow!("member `{name}`: refusing to write through a parent that is not a real directory")
        }
        _ => anyhow!("member `{name}`: cannot open its parent directory: {err}"),
    }
}

fn stage_archive(
    archive: &Path,
    meta: &Meta,
    rooms: &[Room],
    stages: &mut [Stage],
    progress: &mut dyn FnMut(Progress),
    pause: &mut dyn FnMut(Pause<'_>),
) -> Result<(u64, u64)> {
    let mut stager = Stager { stages, meta, rooms, progress, pause, files: 0, bytes: 0, last_report: Instant::now() };
    let (_, manifest, seen) = read_archive(archive, &mut stager)?;
    check_against_manifest(archive, &seen, &manifest)?;
    stager.finish(&manifest)
}

/// Writes each member into its root's staging area as the archive is read.
struct Stager<'s, 'p> {
    stages: &'s mut [Stage],
    meta: &'s Meta,
    /// The targets' filesystems and their room, as the check before staging found them.
    rooms: &'s [Room],
    progress: &'p mut dyn FnMut(Progress),
    pause: &'p mut dyn FnMut(Pause<'_>),
    files: u64,
    bytes: u64,
    last_report: Instant,
}

impl Stager<'_, '_> {
    /// Everything is staged: each data path gets its own mode, owner and time
    /// from the manifest, and every staged directory its final mode; returns
    /// the files and bytes staged.
    fn finish(self, manifest: &Manifest) -> Result<(u64, u64)> {
        for stage in self.stages.iter_mut() {
            let root_member = format!("data/{}", stage.root.index).into_bytes();
            stage.root_entry = manifest.entries.iter().find(|e| e.path == root_member).cloned();
            stage.fix_directories()?;
        }
        (self.progress)(Progress { done: self.meta.total_bytes, total: self.meta.total_bytes });
        Ok((self.files, self.bytes))
    }

    /// Progress, at most twice a second.
    fn report(&mut self) {
        if self.last_report.elapsed() > Duration::from_millis(500) {
            (self.progress)(Progress { done: self.bytes, total: self.meta.total_bytes });
            self.last_report = Instant::now();
        }
    }
}

impl Visit for Stager<'_, '_> {
    fn member(&mut self, member: &Member, header: &tar::Header, data: &mut dyn Read) -> Result<(String, u64)> {
        (self.pause)(Pause::Staging(&member.name));
        let stage = &mut self.stages[member.root];
        let (sha256, size) = stage.write(member, header, data).map_err(|err| {
            match self.rooms.iter().find(|room| room.paths.contains(&stage.target)).filter(|_| disk::is_full(&err)) {
                Some(room) => disk_full(err, room, &member.name),
                None => err,
            }
        })?;
        if member.kind == Kind::File {
            self.files += 1;
            self.bytes += size;
        }
        self.report();
        Ok((sha256, size))
    }

    /// What the first pass staged and the final pass retires goes, deepest first.
    fn final_pass(&mut self, final_pass: &FinalPass) -> Result<()> {
        for stage in self.stages.iter_mut() {
            stage.cursor.reset();
        }
        for name in final_pass.stale.iter().rev() {
            let Some(stage) = self.stages.iter_mut().find(|s| s.holds(name)) else {
                bail!("the final pass retires `{}`, which no data path holds", show(name));
            };
            stage.retire(name).with_context(|| format!("cannot drop the first pass's `{}`", show(name)))?;
        }
        Ok(())
    }
}

/// Swaps every staged root into place; undoes the roots already swapped if one fails.
fn swap_all(stages: &[Stage]) -> Result<()> {
    let mut done: Vec<(usize, Swapped)> = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        match stage.swap() {
            Ok(swapped) => done.push((index, swapped)),
            Err(err) => {
                for (index, swapped) in done.iter().rev() {
                    stages[*index].undo(swapped);
                }
                return Err(
                    err.context(format!("restoring {} failed; the data was left as it was", stage.target.display()))
                );
            }
        }
    }
    Ok(())
}
