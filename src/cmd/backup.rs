//! `upgraderd backup create | list | verify | restore | export | prune`.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::cli::{BackupCommand, BackupRef, ExportArgs, PruneArgs, RestoreArgs};
use crate::cmd::Ctx;
use crate::engine::data::{self, DataSet};
use crate::engine::{discover, halt};
use crate::exit::{usage, Exit};
use crate::ops::docker::Docker;
use crate::ops::process::Runner;
use crate::states::Status;
use crate::store::backup::{self, Destination, Progress};
use crate::store::db::Db;
use crate::store::lock::Lock;
use crate::ui::{human_bytes, Ui};

pub(super) fn run(ctx: &Ctx, command: &BackupCommand) -> Result<Exit> {
    match command {
        BackupCommand::Create => create(ctx),
        BackupCommand::List => list(ctx),
        BackupCommand::Verify(reference) => verify(ctx, reference),
        BackupCommand::Restore(args) => restore(ctx, args),
        BackupCommand::Export(args) => export(ctx, args),
        BackupCommand::Prune(args) => prune(ctx, args),
    }
}

/// What to back up: the same discovery an upgrade uses (every service's data
/// when the deployment is found), else `UPGRADERD_DATA_DIR` alone.
pub(super) fn data_set(ctx: &Ctx) -> Result<(Option<Docker>, DataSet)> {
    if !discover::deployment_configured(&ctx.config) {
        if ctx.config.data_dirs.is_empty() {
            return Err(usage(
                "no data to back up: set UPGRADERD_DATA_DIR (comma separated), or UPGRADERD_CONTAINER to back up \
                 every service's data",
            ));
        }
        let unowned = ctx.config.data_dirs.iter().map(backup::Source::path).collect();
        return Ok((None, DataSet { unowned, ..DataSet::default() }));
    }
    let runner = Runner::new(false);
    let deployment = discover::discover(&ctx.config, &runner)?;
    let problems =
        crate::engine::data::placement::placement_problems(&ctx.config, &deployment.docker, &deployment.project, false);
    if !problems.is_empty() {
        let lines: Vec<String> = problems.iter().map(|p| format!("- {p}")).collect();
        return Err(anyhow!(
            "the data of stack {} cannot be backed up whole from this node:\n{}",
            deployment.project.name,
            lines.join("\n")
        ));
    }
    let set = data::data_set(&ctx.config, &deployment.docker, &deployment.project)?;
    if set.sources().is_empty() {
        return Err(usage(format!(
            "compose project {} has no writable volume or bind mount to back up; set UPGRADERD_DATA_DIR to its data paths",
            deployment.project.name
        )));
    }
    Ok((Some(deployment.docker), set))
}

fn take_lock(ctx: &Ctx, what: &str) -> Result<Lock> {
    ctx.ensure_state_dir()?;
    Lock::acquire(&ctx.config.lock_path(), what)
}

/// A progress printer for long archive steps: `[ 40%] backing_up: 400.0 MiB of 1.0 GiB`.
pub(super) fn progress_printer<'a>(ui: &'a Ui, phase: &'a str) -> impl FnMut(Progress) + 'a {
    move |p: Progress| {
        let percent = (p.done * 100).checked_div(p.total).map_or(100, |v| v.min(100) as u8);
        ui.step(percent, phase, &format!("{} of {}", human_bytes(p.done), human_bytes(p.total)));
    }
}

fn create(ctx: &Ctx) -> Result<Exit> {
    let _lock = take_lock(ctx, "backup create")?;
    let (docker, set) = data_set(ctx)?;
    ctx.ui.info(format!(
        "backing up {} into {}",
        set.paths().iter().map(|r| r.display().to_string()).collect::<Vec<_>>().join(", "),
        ctx.config.backup_dir.display()
    ));
    // With a deployment, `back_up` logs how each data path was stored; alone, it is said here.
    let said_how_stored = docker.is_some();
    let created = match docker {
        Some(docker) => {
            let target = data::Target {
                dir: &ctx.config.backup_dir,
                form: ctx.config.backup_format,
                reason: backup::Reason::default(),
                start_timeout: ctx.config.start_timeout,
            };
            let mut stopped = Vec::new();
            let mut report = Report { ui: ctx.ui, progress: progress_printer(ctx.ui, Status::BackingUp.as_str()) };
            // Nothing is kept stopped here: every stop has ended when it returns.
            let created = data::back_up(&docker, &set, &[], &target, &mut stopped, &mut report).map(|b| b.created);
            if !stopped.is_empty() {
                // Only after a failure: what it stopped runs again.
                let started =
                    data::start_containers(&docker, &stopped, &set.services, ctx.config.start_timeout, &mut |l| {
                        ctx.ui.info(l)
                    });
                if let Err(e) = started {
                    ctx.ui.warn(format!("{e:#}; start them with {}", halt::start_commands(&stopped)));
                }
            }
            created?
        }
        None => backup::create_as(
            &set.paths(),
            &ctx.config.backup_dir,
            ctx.config.backup_format,
            backup::Reason::default(),
            &mut progress_printer(ctx.ui, Status::BackingUp.as_str()),
        )?,
    };
    for warning in &created.warnings {
        ctx.ui.warn(warning);
    }
    for line in backup::stored_lines(&created.meta).into_iter().filter(|_| !said_how_stored) {
        ctx.ui.info(line);
    }
    if ctx.ui.json() {
        ctx.ui.data(&created);
    } else {
        ctx.ui.print(format!(
            "created backup {} ({} files, {} data, {} {} on disk)\n{}",
            created.meta.id,
            created.meta.file_count,
            human_bytes(created.meta.total_bytes),
            human_bytes(created.archive_bytes),
            if created.path.is_dir() { "new" } else { "archive" },
            created.path.display()
        ));
    }
    Ok(Exit::Success)
}

/// `backup create`'s report: its lines and progress on the terminal.
struct Report<'a, P: FnMut(Progress)> {
    ui: &'a Ui,
    progress: P,
}

impl<P: FnMut(Progress)> data::Observer for Report<'_, P> {
    fn log(&mut self, line: &str) {
        self.ui.info(line);
    }

    fn stopped(&mut self, _held: &[crate::states::Halt]) -> Result<()> {
        Ok(())
    }

    fn progress(&mut self, progress: Progress) {
        (self.progress)(progress);
    }
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
                b.kind.as_str().to_string(),
                human_bytes(b.bytes),
                human_bytes(b.shared_bytes),
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
                b.kind.as_str().to_string(),
                human_bytes(b.bytes),
                human_bytes(b.shared_bytes),
                "-".into(),
                "-".into(),
                format!("UNREADABLE: {}", b.problem.as_deref().unwrap_or("?")),
            ],
        })
        .collect();
    ctx.ui.table(&["ID", "CREATED", "KIND", "ALONE", "SHARED", "UPGRADE", "VERSIONS", "DATA"], &rows);
    let alone: u64 = listed.iter().map(|b| b.bytes).sum();
    // A shared object is counted by every snapshot that holds it: the disk they take together is less.
    let together = alone + backup::shared_on_disk(&listed);
    ctx.ui.info(format!(
        "{} backups take {} together; ALONE is what deleting one frees, SHARED what it holds with others",
        listed.len(),
        human_bytes(together)
    ));
    Ok(Exit::Success)
}

fn export(ctx: &Ctx, args: &ExportArgs) -> Result<Exit> {
    let path = resolve(ctx, &args.backup)?;
    ctx.ui.info(format!("exporting {} to {}", path.display(), args.output.display()));
    let verified = backup::export(&path, &args.output, &mut progress_printer(ctx.ui, "exporting"))?;
    if ctx.ui.json() {
        ctx.ui.data(&verified);
    } else {
        let size = std::fs::metadata(&args.output).map(|m| m.len()).unwrap_or(0);
        ctx.ui.print(format!(
            "exported {} files ({}) to {} ({}), read back and verified",
            verified.files,
            human_bytes(verified.bytes),
            args.output.display(),
            human_bytes(size)
        ));
    }
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
        let checked = match path.is_dir() {
            true => "every file's content matches its sha256 in the manifest",
            false => "the compression's checksum and every sha256 match the manifest",
        };
        ctx.ui.print(format!(
            "ok: {} members, {} files, {}; {checked}",
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
    let owners = data::services_in(&path)?;
    let restored = if matches!(destination, Destination::Original) && !owners.is_empty() {
        restore_in_place(ctx, &path, &owners)
    } else {
        backup::restore(&path, &destination, &mut progress_printer(ctx.ui, "restoring"))
    }
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

/// A restore over the data of compose services: they are stopped around it.
fn restore_in_place(ctx: &Ctx, archive: &Path, owners: &[String]) -> Result<backup::Restored> {
    if !discover::deployment_configured(&ctx.config) {
        return Err(usage(format!(
            "{} holds the data of services {}, which must be stopped while it is restored: set UPGRADERD_CONTAINER \
             (or UPGRADERD_COMPOSE_PROJECT and UPGRADERD_SERVICE), or restore elsewhere with --to DIR",
            archive.display(),
            owners.join(", ")
        )));
    }
    let deployment = discover::discover(&ctx.config, &Runner::new(false))?;
    let mut report = Report { ui: ctx.ui, progress: |_| {} };
    data::restore_with_owners_stopped(
        &ctx.config,
        &deployment.docker,
        &deployment.project,
        archive,
        &[],
        &[],
        &mut report,
    )
}

fn prune(ctx: &Ctx, args: &PruneArgs) -> Result<Exit> {
    let _lock = take_lock(ctx, "backup prune")?;
    let keep = args.keep.unwrap_or(ctx.config.backup_keep);
    let protected = match Db::open_read_only(&ctx.config.db_path())? {
        Some(db) => db.protected_backup()?.map(PathBuf::from),
        None => None,
    };
    let pruned = backup::prune(&ctx.config.backup_dir, keep, protected.as_deref().as_slice())?;
    if ctx.ui.json() {
        ctx.ui.data(&pruned);
    } else {
        for path in &pruned.deleted {
            ctx.ui.print(format!("deleted {}", path.display()));
        }
        for path in &pruned.leftovers {
            ctx.ui.print(format!("removed leftover {}", path.display()));
        }
        for path in &pruned.unreadable {
            ctx.ui.warn(format!(
                "left alone, unreadable: {} (`upgraderd backup list` says why; delete it yourself once looked at)",
                path.display()
            ));
        }
        ctx.ui.print(format!(
            "kept {} backups, deleted {} (freed at least {})",
            pruned.kept.len(),
            pruned.deleted.len(),
            human_bytes(pruned.freed_bytes)
        ));
    }
    Ok(Exit::Success)
}
