//! `upgraderd backup create | list | verify | restore | prune`.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::cli::{BackupCommand, BackupRef, PruneArgs, RestoreArgs};
use crate::cmd::Ctx;
use crate::engine::discover;
use crate::exit::{usage, Exit};
use crate::states::Status;
use crate::store::backup::{self, Destination, Progress};
use crate::store::db::Db;
use crate::store::lock::Lock;
use crate::ui::{human_bytes, Ui};

pub fn run(ctx: &Ctx, command: &BackupCommand) -> Result<Exit> {
    match command {
        BackupCommand::Create => create(ctx),
        BackupCommand::List => list(ctx),
        BackupCommand::Verify(reference) => verify(ctx, reference),
        BackupCommand::Restore(args) => restore(ctx, args),
        BackupCommand::Prune(args) => prune(ctx, args),
    }
}

/// The data paths to back up: the same discovery an upgrade uses.
pub fn data_paths(ctx: &Ctx) -> Result<Vec<PathBuf>> {
    if !ctx.config.data_dirs.is_empty() {
        return Ok(ctx.config.data_dirs.clone());
    }
    let container = discover::find_container(&ctx.config, &ctx.docker()).context(
        "no data paths: set UPGRADERD_DATA_DIR (comma separated), or the container whose writable mounts to back up",
    )?;
    let paths = discover::data_paths(&ctx.config, &container);
    if paths.is_empty() {
        return Err(usage(format!(
            "container `{}` has no writable volume or bind mount; set UPGRADERD_DATA_DIR to its data paths",
            container.name.trim_start_matches('/')
        )));
    }
    Ok(paths)
}

fn take_lock(ctx: &Ctx, what: &str) -> Result<Lock> {
    ctx.ensure_state_dir()?;
    Lock::acquire(&ctx.config.lock_path(), what)
}

/// A progress printer for long archive steps: `[ 40%] backing_up: 400.0 MiB of 1.0 GiB`.
pub fn progress_printer<'a>(ui: &'a Ui, phase: &'a str) -> impl FnMut(Progress) + 'a {
    move |p: Progress| {
        let percent = (p.done * 100).checked_div(p.total).map_or(100, |v| v.min(100) as u8);
        ui.step(percent, phase, &format!("{} of {}", human_bytes(p.done), human_bytes(p.total)));
    }
}

fn create(ctx: &Ctx) -> Result<Exit> {
    let _lock = take_lock(ctx, "backup create")?;
    let roots = data_paths(ctx)?;
    ctx.ui.info(format!(
        "backing up {} into {}",
        roots.iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
        ctx.config.backup_dir.display()
    ));
    let created = backup::create(
        &roots,
        &ctx.config.backup_dir,
        backup::Reason::default(),
        &mut progress_printer(ctx.ui, Status::BackingUp.as_str()),
    )?;
    for warning in &created.warnings {
        ctx.ui.warn(warning);
    }
    if ctx.ui.json() {
        ctx.ui.data(&created);
    } else {
        ctx.ui.print(format!(
            "created backup {} ({} files, {} data, {} archive)\n{}",
            created.meta.id,
            created.meta.file_count,
            human_bytes(created.meta.total_bytes),
            human_bytes(created.archive_bytes),
            created.path.display()
        ));
    }
    Ok(Exit::Success)
}

fn list(ctx: &Ctx) -> Result<Exit> {
    let listed = backup::list(&ctx.config.backup_dir)?;
    if ctx.ui.json() {
        ctx.ui.data(&json!({"backups": listed, "count": listed.len()}));
        return Ok(Exit::Success);
    }
    if listed.is_empty() {
        ctx.ui.info(format!("no backups in {}", ctx.config.backup_dir.display()));
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = listed
        .iter()
        .map(|b| match &b.meta {
            Some(meta) => vec![
                b.id.clone(),
                meta.created_at.clone(),
                human_bytes(b.bytes),
                meta.upgrade_id.clone().unwrap_or_else(|| "-".into()),
                match (&meta.from_version, &meta.to_version) {
                    (Some(f), Some(t)) => format!("{f} -> {t}"),
                    (Some(f), None) => f.clone(),
                    _ => "-".into(),
                },
                meta.roots.iter().map(|r| r.path.display().to_string()).collect::<Vec<_>>().join(","),
            ],
            None => vec![
                b.id.clone(),
                "-".into(),
                human_bytes(b.bytes),
                "-".into(),
                "-".into(),
                format!("UNREADABLE: {}", b.problem.as_deref().unwrap_or("?")),
            ],
        })
        .collect();
    ctx.ui.table(&["ID", "CREATED", "SIZE", "UPGRADE", "VERSIONS", "DATA"], &rows);
    Ok(Exit::Success)
}

/// Finds an archive by path, backup id or the id of the upgrade that took it.
fn resolve(ctx: &Ctx, reference: &BackupRef) -> Result<PathBuf> {
    if let Some(path) = backup::find(&ctx.config.backup_dir, &reference.backup) {
        return Ok(path);
    }
    if let Some(db) = Db::open_read_only(&ctx.config.db_path())? {
        if let Some(path) = db.get(&reference.backup)?.and_then(|r| r.backup_path) {
            return Ok(PathBuf::from(path));
        }
    }
    Err(anyhow!(
        "no backup `{}`: not a file, not a backup id in {}, not an upgrade with a backup (`upgraderd backup list` shows them)",
        reference.backup,
        ctx.config.backup_dir.display()
    ))
}

fn verify(ctx: &Ctx, reference: &BackupRef) -> Result<Exit> {
    let path = resolve(ctx, reference)?;
    ctx.ui.info(format!("verifying {}", path.display()));
    let verified = backup::verify(&path)?;
    if ctx.ui.json() {
        ctx.ui.data(&verified);
    } else {
        ctx.ui.print(format!(
            "ok: {} members, {} files, {}; gzip CRC and every sha256 match the manifest",
            verified.members,
            verified.files,
            human_bytes(verified.bytes)
        ));
    }
    Ok(Exit::Success)
}

fn restore(ctx: &Ctx, args: &RestoreArgs) -> Result<Exit> {
    let _lock = take_lock(ctx, "backup restore")?;
    let path = resolve(ctx, &args.backup)?;
    let destination = match &args.to {
        Some(dir) => Destination::Into(dir.clone()),
        None => Destination::Original,
    };
    ctx.ui.info(format!("restoring {}", path.display()));
    let restored = backup::restore(&path, &destination, &mut progress_printer(ctx.ui, "restoring"))
        .with_context(|| format!("restore of {} failed; the data was left as it was", path.display()))?;
    if ctx.ui.json() {
        ctx.ui.data(&restored);
    } else {
        ctx.ui.print(format!(
            "restored {} files ({}) into {}",
            restored.files,
            human_bytes(restored.bytes),
            restored.targets.iter().map(|t| t.display().to_string()).collect::<Vec<_>>().join(", ")
        ));
    }
    Ok(Exit::Success)
}

fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<Exit> {
    let _lock = take_lock(ctx, "backup prune")?;
    let keep = args.keep.unwrap_or(ctx.config.backup_keep);
    let protected = match Db::open_read_only(&ctx.config.db_path())? {
        Some(db) => db.protected_backup()?.map(PathBuf::from),
        None => None,
    };
    let pruned = backup::prune(&ctx.config.backup_dir, keep, protected.as_deref())?;
    if ctx.ui.json() {
        ctx.ui.data(&pruned);
    } else {
        for path in &pruned.deleted {
            ctx.ui.print(format!("deleted {}", path.display()));
        }
        for path in &pruned.leftovers {
            ctx.ui.print(format!("removed leftover {}", path.display()));
        }
        ctx.ui.print(format!("kept {} backups, deleted {}", pruned.kept.len(), pruned.deleted.len()));
    }
    Ok(Exit::Success)
}
