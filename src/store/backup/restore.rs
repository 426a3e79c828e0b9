//! Restoring an archive: stage every member next to its target (on the same
//! filesystem), check every hash against the manifest, then swap the staged
//! data in, undoing the roots already swapped if one fails.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};

use super::format::{
    check_against_manifest, read_archive, read_meta, HashingReader, Kind, ManifestEntry, Meta, Root, OWN_PREFIX,
};
use super::{Destination, Progress, Restored};
use crate::ops::disk;
use crate::store::files;
use crate::units::human_bytes;

/// Restores an archive: stage next to each target, check every hash, then swap.
/// A failure before the swap leaves the targets untouched.
pub fn restore(archive: &Path, destination: &Destination, progress: &mut dyn FnMut(Progress)) -> Result<Restored> {
    let meta = read_meta(archive)?;
    let targets = targets_for(&meta, destination)?;
    let needed = meta.total_bytes;
    for target in &targets {
        let free = disk::free_bytes(target).unwrap_or(u64::MAX);
        if free < needed {
            bail!(
                "not enough space to restore into {}: {} needed, {} free",
                target.display(),
                human_bytes(needed),
                human_bytes(free)
            );
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    let result = stage_all(archive, &meta, &targets, &mut stages, progress);
    let outcome = result.and_then(|stats| {
        swap_all(&stages)?;
        Ok(stats)
    });
    for stage in &stages {
        stage.cleanup();
    }
    let (files, bytes) = outcome?;
    Ok(Restored { archive: archive.to_path_buf(), targets, files, bytes })
}

fn targets_for(meta: &Meta, destination: &Destination) -> Result<Vec<PathBuf>> {
    match destination {
        Destination::Original => Ok(meta.roots.iter().map(|r| r.path.clone()).collect()),
        Destination::Into(dir) if meta.roots.len() == 1 => Ok(vec![dir.clone()]),
        Destination::Into(dir) => Ok(meta
            .roots
            .iter()
            .map(|r| {
                let name =
                    r.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "root".into());
                dir.join(format!("{}-{name}", r.index))
            })
            .collect()),
    }
}

/// One root being restored: its staging place and final target.
struct Stage {
    root: Root,
    target: PathBuf,
    /// Dir roots: a directory inside the target; file roots: a sibling file.
    staging: PathBuf,
    /// Dir roots: where the old children wait until the swap has succeeded.
    old: PathBuf,
    root_entry: Option<ManifestEntry>,
    /// Directories' final mode and mtime, applied once their children are in place.
    dir_fixups: Vec<(PathBuf, u32, i64)>,
}

impl Stage {
    fn cleanup(&self) {
        let _ = files::remove_any(&self.staging);
        let _ = files::remove_any(&self.old);
    }
}

fn stage_all(
    archive: &Path,
    meta: &Meta,
    targets: &[PathBuf],
    stages: &mut Vec<Stage>,
    progress: &mut dyn FnMut(Progress),
) -> Result<(u64, u64)> {
    let tag = files::unique_suffix();
    for (root, target) in meta.roots.iter().zip(targets) {
        let (staging, old) = if root.is_dir {
            fs::create_dir_all(target).with_context(|| format!("cannot create restore target {}", target.display()))?;
            (target.join(format!("{OWN_PREFIX}staging-{tag}")), target.join(format!("{OWN_PREFIX}old-{tag}")))
        } else {
            let parent = target.parent().unwrap_or(Path::new("/"));
            fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
            (files::sibling(target, "upgraderd-staging"), PathBuf::new())
        };
        stages.push(Stage {
            root: root.clone(),
            target: target.clone(),
            staging,
            old,
            root_entry: None,
            dir_fixups: Vec::new(),
        });
    }

    let (mut files, mut bytes) = (0u64, 0u64);
    let mut last_report = Instant::now();
    let (_, manifest, seen) = read_archive(archive, &mut |name, header, data| {
        let (stage_index, relative) = locate(name, stages)?;
        let dest = staged_path(&stages[stage_index], &relative)?;
        let (kind, result) = match header.entry_type() {
            tar::EntryType::Regular => {
                let mut out = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(&dest)
                    .with_context(|| format!("cannot create {}", dest.display()))?;
                let mut hashing = HashingReader::new(data);
                let size = io::copy(&mut hashing, &mut out)?;
                out.sync_all()?;
                files += 1;
                bytes += size;
                (Kind::File, (hashing.hex(), size))
            }
            tar::EntryType::Directory => {
                fs::create_dir(&dest).with_context(|| format!("cannot create {}", dest.display()))?;
                (Kind::Dir, (String::new(), 0))
            }
            tar::EntryType::Symlink => {
                let link = header.link_name()?.ok_or_else(|| anyhow!("symlink member `{name}` has no target"))?;
                check_link_stays_inside(name, &relative, &link)?;
                std::os::unix::fs::symlink(&link, &dest)
                    .with_context(|| format!("cannot create link {}", dest.display()))?;
                (Kind::Symlink, (String::new(), 0))
            }
            other => bail!("member `{name}` has type {other:?}; refusing to restore it"),
        };
        apply_metadata(&dest, kind, header, &mut stages[stage_index])?;
        if last_report.elapsed() > Duration::from_millis(500) {
            progress(Progress { done: bytes, total: meta.total_bytes });
            last_report = Instant::now();
        }
        Ok(result)
    })?;
    check_against_manifest(archive, &seen, &manifest)?;
    for stage in stages.iter_mut() {
        let root_member = format!("data/{}", stage.root.index);
        stage.root_entry = manifest.entries.iter().find(|e| e.path == root_member).cloned();
        for (dir, mode, mtime) in stage.dir_fixups.iter().rev() {
            fs::set_permissions(dir, fs::Permissions::from_mode(*mode))?;
            set_mtime(dir, *mtime)?;
        }
    }
    progress(Progress { done: meta.total_bytes, total: meta.total_bytes });
    Ok((files, bytes))
}

/// Which root a member belongs to and its path below that root; refuses
/// absolute paths, `..` and anything outside `data/<i>`.
fn locate(name: &str, stages: &[Stage]) -> Result<(usize, PathBuf)> {
    let path = Path::new(name);
    let mut components = path.components();
    let hostile = || {
        anyhow!("member `{name}` has an absolute path, `..` or lies outside data/: refusing to restore this archive")
    };
    if path.components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(hostile());
    }
    if components.next() != Some(Component::Normal("data".as_ref())) {
        return Err(hostile());
    }
    let index: usize =
        components.next().and_then(|c| c.as_os_str().to_str()).and_then(|s| s.parse().ok()).ok_or_else(hostile)?;
    let stage = stages.iter().position(|s| s.root.index == index).ok_or_else(hostile)?;
    Ok((stage, components.as_path().to_path_buf()))
}

/// The staging path for a member, refusing to write through anything but real directories.
fn staged_path(stage: &Stage, relative: &Path) -> Result<PathBuf> {
    if relative.as_os_str().is_empty() {
        return Ok(stage.staging.clone());
    }
    if !stage.root.is_dir {
        bail!("member under file root data/{} is not allowed", stage.root.index);
    }
    let mut dir = stage.staging.clone();
    let parents: Vec<_> = relative.parent().map(|p| p.components().collect()).unwrap_or_default();
    for part in parents {
        dir.push(part);
        let meta = fs::symlink_metadata(&dir)
            .with_context(|| format!("member's parent {} was not restored first", dir.display()))?;
        if !meta.is_dir() {
            bail!("refusing to write through {}, which is not a real directory", dir.display());
        }
    }
    Ok(stage.staging.join(relative))
}

/// A symlink in a backup may point anywhere inside its own root, nowhere else.
fn check_link_stays_inside(name: &str, relative: &Path, link: &Path) -> Result<()> {
    if link.is_absolute() {
        bail!("member `{name}` is a symlink to the absolute path {}: refusing to restore this archive", link.display());
    }
    let mut depth: i64 = relative.components().count() as i64 - 1;
    for component in link.components() {
        match component {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => depth = -1,
        }
        if depth < 0 {
            bail!(
                "member `{name}` is a symlink to {} that leaves its data directory: refusing to restore this archive",
                link.display()
            );
        }
    }
    Ok(())
}

fn apply_metadata(dest: &Path, kind: Kind, header: &tar::Header, stage: &mut Stage) -> Result<()> {
    let mode = header.mode()? & 0o7777;
    let mtime = header.mtime()? as i64;
    if unsafe { libc::geteuid() } == 0 {
        let (uid, gid) = (header.uid()? as u32, header.gid()? as u32);
        std::os::unix::fs::lchown(dest, Some(uid), Some(gid))
            .with_context(|| format!("cannot chown {}", dest.display()))?;
    }
    match kind {
        Kind::Symlink => {}
        Kind::File => {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
            set_mtime(dest, mtime)?;
        }
        Kind::Dir => {
            fs::set_permissions(dest, fs::Permissions::from_mode(mode | 0o700))?;
            // Writable until its children are in; the real mode comes last.
            stage.dir_fixups.push((dest.to_path_buf(), mode, mtime));
        }
    }
    Ok(())
}

fn set_mtime(path: &Path, mtime: i64) -> Result<()> {
    let time = UNIX_EPOCH + Duration::from_secs(mtime.max(0) as u64);
    let file = File::open(path).with_context(|| format!("cannot open {} to set its time", path.display()))?;
    file.set_modified(time).with_context(|| format!("cannot set the time of {}", path.display()))?;
    Ok(())
}

/// Swaps every staged root into place; undoes the roots already swapped if one fails.
fn swap_all(stages: &[Stage]) -> Result<()> {
    let mut done: Vec<(usize, Vec<Move>)> = Vec::new();
    for (index, stage) in stages.iter().enumerate() {
        match swap(stage) {
            Ok(moves) => done.push((index, moves)),
            Err(err) => {
                for (_, moves) in done.iter().rev() {
                    undo(moves);
                }
                return Err(
                    err.context(format!("restoring {} failed; the data was left as it was", stage.target.display()))
                );
            }
        }
    }
    for (index, _) in done {
        let _ = files::sync_dir(&stages[index].target);
    }
    Ok(())
}

struct Move {
    from: PathBuf,
    to: PathBuf,
}

fn undo(moves: &[Move]) {
    for m in moves.iter().rev() {
        let _ = fs::rename(&m.to, &m.from);
    }
}

/// Dir roots swap children (the target itself may be a mountpoint or a
/// volume bound into a container, so it is kept); file roots rename over.
fn swap(stage: &Stage) -> Result<Vec<Move>> {
    let mut moves = Vec::new();
    if !stage.root.is_dir {
        if stage.target.is_dir() {
            bail!("{} is a directory but the backup holds a file there", stage.target.display());
        }
        files::rename_durable(&stage.staging, &stage.target)?;
        return Ok(moves);
    }
    let result = (|| -> Result<()> {
        fs::create_dir(&stage.old)?;
        for child in fs::read_dir(&stage.target)? {
            let child = child?.path();
            if child == stage.staging || child == stage.old {
                continue;
            }
            let to = stage.old.join(child.file_name().expect("dir entries have names"));
            fs::rename(&child, &to)?;
            moves.push(Move { from: child, to });
        }
        for child in fs::read_dir(&stage.staging)? {
            let child = child?.path();
            let to = stage.target.join(child.file_name().expect("dir entries have names"));
            fs::rename(&child, &to)?;
            moves.push(Move { from: child, to });
        }
        if let Some(entry) = &stage.root_entry {
            if unsafe { libc::geteuid() } == 0 {
                std::os::unix::fs::chown(&stage.target, Some(entry.uid as u32), Some(entry.gid as u32))?;
            }
            fs::set_permissions(&stage.target, fs::Permissions::from_mode(entry.mode))?;
            set_mtime(&stage.target, entry.mtime)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(moves),
        Err(err) => {
            undo(&moves);
            Err(err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_must_stay_inside_their_root() {
        assert!(check_link_stays_inside("m", Path::new("a/b"), Path::new("../c")).is_ok());
        assert!(check_link_stays_inside("m", Path::new("a/b"), Path::new("../../c")).is_err());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("./x/../y")).is_ok());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("/etc/passwd")).is_err());
        assert!(check_link_stays_inside("m", Path::new("a"), Path::new("..")).is_err());
    }
}
