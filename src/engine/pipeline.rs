//! The upgrade runbook: preflight, backup, fetch, switch, health gate, and on
//! any failure after the fetch, rollback of image and data. Each step is
//! journaled before it runs; every attempt ends `complete`, `rolled_back` or
//! `failed`, recorded and notified.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde_json::json;

use crate::config::{Config, Strategy as StrategyKind};
use crate::engine::gate::{wait_healthy, GateSpec};
use crate::engine::journal::Journal;
use crate::engine::recover;
use crate::engine::strategy::pull::Pull;
use crate::engine::strategy::rebuild::Rebuild;
use crate::engine::strategy::Strategy;
use crate::engine::{compare_versions, new_upgrade_id, validate_version, Outcome, Request, Terminal};
use crate::exit::usage;
use crate::ops::compose::{Compose, Project, ProjectOverrides};
use crate::ops::docker::{Container, Docker, ImageRef};
use crate::ops::git::Git;
use crate::ops::process::{Cmd, Runner};
use crate::ops::{disk, notify};
use crate::store::backup::{self, Destination, Progress};
use crate::store::db::{now_ms, Db, UpgradeRecord};
use crate::store::files;
use crate::store::lock::Lock;
use crate::ui::{human_bytes, Ui};

/// The running service as discovered from Docker.
pub struct Deployment {
    pub docker: Docker,
    pub compose: Compose,
    pub container: Container,
    pub project: Project,
}

/// Finds the container, its compose project and the compose tool.
pub fn discover(config: &Config, runner: &Runner) -> Result<Deployment> {
    let docker = Docker::new(&config.docker, runner.clone());
    let name =
        match (&config.container, &config.compose_project, &config.service) {
            (Some(name), _, _) => name.clone(),
            (None, Some(project), Some(service)) => docker
                .service_container(project, service)?
                .ok_or_else(|| anyhow!("no container for service {service} of compose project {project}"))?,
            _ => return Err(usage(
                "no service to upgrade: set UPGRADERD_CONTAINER (or UPGRADERD_COMPOSE_PROJECT and UPGRADERD_SERVICE)",
            )),
        };
    let container = docker.inspect_container(&name)?;
    let overrides = ProjectOverrides {
        name: config.compose_project.clone(),
        working_dir: config.compose_dir.clone(),
        files: config.compose_files.clone(),
        service: config.service.clone(),
    };
    let project = Project::discover(&container, &overrides)?;
    let compose = Compose::detect(config.compose_cmd.as_deref(), &config.docker, runner)?;
    Ok(Deployment { docker, compose, container, project })
}

/// The version the service runs: configured, else the image's label, else the
/// last complete upgrade, else the tag when it names a version.
pub(crate) fn current_version(config: &Config, deployment: &Deployment, db: Option<&Db>) -> Option<String> {
    if let Some(v) = &config.current_version {
        return Some(v.clone());
    }
    if let Ok(Some(label)) = deployment.docker.image_version_label(&deployment.container.image) {
        return Some(label);
    }
    if let Some(Ok(Some(last))) = db.map(|db| db.latest_with_status("complete")) {
        if let Some(v) = last.to_version {
            return Some(v);
        }
    }
    let tag = ImageRef::parse(&deployment.container.config.image).tag;
    tag.starts_with(|c: char| c.is_ascii_digit()).then_some(tag)
}

/// Runs one upgrade attempt to its terminal state.
pub fn run(config: &Config, ui: &Ui, request: &Request) -> Result<Outcome> {
    validate_version(&request.target).map_err(usage)?;
    files::ensure_private_dir(&config.state_dir)
        .with_context(|| format!("cannot create the state directory {}", config.state_dir.display()))?;
    let mut lock = Lock::acquire(&config.lock_path(), &format!("upgrade --to {}", request.target))?;
    let upgrade_id = request.upgrade_id.clone().unwrap_or_else(new_upgrade_id);
    if !request.dry_run {
        lock.set_upgrade(&upgrade_id)?;
    }
    let mut runner = Runner::new(request.dry_run).with_sink({
        let json = ui.json();
        std::sync::Arc::new(move |source: &str, line: &str| Ui::new(json, 0).stream_line(source, line))
    });
    if let Some(shutdown) = &request.shutdown {
        runner = runner.with_stop_flag(shutdown.requested.clone());
    }
    if !request.dry_run {
        // Holding the lock, any unfinished upgrade in the journal is an orphan: put it right first.
        recover::reconcile(config, ui, None)?;
    }
    let db_path = if request.dry_run { scratch_db()? } else { config.db_path() };
    let db = Db::open(&db_path)?;
    let status_file = config.trigger_dir.as_ref().filter(|_| !request.dry_run).map(|d| d.join(&config.status_file));
    let mut journal = Journal::new(db, &upgrade_id, ui, status_file, &request.target);
    match journal.db.get(&upgrade_id)? {
        None => journal.db.insert_upgrade(&UpgradeRecord {
            id: upgrade_id.clone(),
            to_version: Some(request.target.clone()),
            deployment_method: "docker-compose".into(),
            status: "pending".into(),
            started_at: now_ms(),
            initiated_by: Some(request.initiated_by.clone()),
            strategy: request.strategy.as_str().into(),
            pid: Some(std::process::id() as i64),
            container: config.container.clone(),
            ..UpgradeRecord::default()
        })?,
        Some(existing) if existing.is_terminal() && !existing.switched => {
            // A request interrupted before its switch changed nothing: it runs again under its id.
            journal.db.reopen_upgrade(&upgrade_id, std::process::id() as i64)?;
            journal.log("Running again: the previous attempt was interrupted before the switch");
        }
        Some(existing) => {
            return Err(usage(format!(
                "upgrade id {upgrade_id} was already used (status {}); use a new id",
                existing.status
            )))
        }
    }
    journal.step("pending", 0, &format!("Upgrade to {} initiated by {}", request.target, request.initiated_by))?;
    let outcome =
        Attempt { config, request, runner, journal: &mut journal, data: Vec::new(), backup: None, from_version: None }
            .run();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(err) => {
            // A failure of upgraderd's own bookkeeping: record it if the journal still can.
            let message = format!("{err:#}");
            let _ = journal.finish("failed", "Upgrade failed", Some(&message));
            Outcome {
                upgrade_id: upgrade_id.clone(),
                terminal: Terminal::Failed,
                from_version: None,
                to_version: request.target.clone(),
                error: Some(message),
                backup: None,
            }
        }
    };
    if !request.dry_run {
        after_terminal(config, ui, &outcome);
    } else {
        let _ = std::fs::remove_file(&db_path);
    }
    Ok(outcome)
}

fn scratch_db() -> Result<PathBuf> {
    Ok(std::env::temp_dir().join(format!("upgraderd-dry-run-{}.db", files::unique_suffix())))
}

/// The strategy preflight built (none when discovery failed) and every problem it found.
type Checked = (Option<Box<dyn Strategy>>, Vec<String>);

struct Attempt<'a, 'j> {
    config: &'a Config,
    request: &'a Request,
    runner: Runner,
    journal: &'a mut Journal<'j>,
    /// The data paths backed up before the switch.
    data: Vec<PathBuf>,
    backup: Option<PathBuf>,
    from_version: Option<String>,
}

impl Attempt<'_, '_> {
    fn run(mut self) -> Result<Outcome> {
        self.journal.step("preflight", 5, "Running pre-flight checks")?;
        let (mut strategy, problems) = self.preflight()?;
        let Some(strategy) = strategy.as_mut().filter(|_| problems.is_empty()) else {
            let message = format!("refused in preflight, nothing was changed:\n- {}", problems.join("\n- "));
            return self.end(Terminal::Failed, "Pre-flight checks failed", Some(message));
        };
        if self.request.dry_run {
            return self.dry_run(strategy.as_mut());
        }
        if self.interrupted() {
            return self.abandon("preflight");
        }
        if let Some(veto) = self.pre_upgrade_hook()? {
            return self.end(Terminal::Failed, "Vetoed by UPGRADERD_PRE_UPGRADE_CMD", Some(veto));
        }
        if self.request.backup {
            self.journal.step("backing_up", 20, "Creating backup")?;
            if let Err(err) = self.back_up() {
                return self.end(Terminal::Failed, "Backup failed; nothing was changed", Some(format!("{err:#}")));
            }
        } else {
            self.journal.log("Backup skipped as requested; a rollback cannot restore data");
        }
        if self.interrupted() {
            return self.abandon("the backup");
        }
        self.journal.step("downloading", 40, "Downloading new version")?;
        if let Err(err) = strategy.fetch(self.journal) {
            if self.interrupted() {
                return self.abandon("the download");
            }
            return self.end(
                Terminal::Failed,
                "Download failed; the running version was not touched",
                Some(format!("{err:#}")),
            );
        }
        let to_version = strategy
            .fetched_version()
            .filter(|_| self.request.target == "latest")
            .unwrap_or_else(|| self.request.target.clone());
        if self.interrupted() {
            if let Err(e) = strategy.undo_fetch(self.journal) {
                let error =
                    format!("upgraderd was asked to stop before the switch, but undoing the download failed: {e:#}");
                return self.end(Terminal::Failed, "Interrupted before the switch", Some(error));
            }
            return self.abandon("the download");
        }
        self.journal.set_versions(self.from_version.as_deref(), &to_version);
        // From here on an interruption is finished (gate or rollback), never abandoned half-switched.
        self.journal.db.set_fields(
            &self.journal.upgrade_id.clone(),
            &[("toVersion", to_version.clone().into()), ("switched", true.into())],
        )?;
        self.journal.step("restarting", 60, "Restarting services")?;
        let switched = strategy.switch(self.journal).map_err(|e| format!("{e:#}"));
        let health = switched.and_then(|()| {
            self.journal.step("health_check", 80, "Running health checks").map_err(|e| format!("{e:#}"))?;
            let expect =
                (self.request.target != "latest" || strategy.fetched_version().is_some()).then_some(to_version.clone());
            let (project, service) = strategy.project_and_service();
            wait_healthy(&Docker::new(&self.config.docker, self.runner.clone()), project, service, &self.gate(expect))
        });
        match health {
            Ok(took) => {
                self.journal.log(&format!("Healthy after {:.1}s", took.as_secs_f64()));
                strategy.cleanup(self.journal, self.config.backup_keep);
                self.prune_backups();
                self.end(Terminal::Complete, "Upgrade complete", None)
            }
            Err(reason) => self.roll_back(strategy.as_mut(), reason),
        }
    }

    fn preflight(&mut self) -> Result<Checked> {
        let mut problems = Vec::new();
        let deployment = match discover(self.config, &self.runner) {
            Ok(d) => d,
            Err(err) if err.chain().any(|c| c.is::<crate::exit::UsageError>()) => return Err(err),
            Err(err) => return Ok((None, vec![format!("{err:#}")])),
        };
        if let Err(e) =
            deployment.docker.root_dir().and_then(|root| check_free(&root, self.config.min_free, "Docker's root dir"))
        {
            problems.push(format!("{e:#}"));
        }
        let git = git_for(self.config, &deployment.project, &self.runner);
        let mut current = current_version(self.config, &deployment, Some(&self.journal.db));
        if self.request.strategy == StrategyKind::Rebuild && current.is_none() {
            current = git.describe();
        }
        self.from_version = current.clone();
        let target = &self.request.target;
        if let (Some(current), false) = (&current, self.request.force || self.config.allow_downgrade) {
            if compare_versions(target, current) == Some(std::cmp::Ordering::Less) {
                problems.push(format!(
                    "{target} is older than the running {current}; set UPGRADERD_ALLOW_DOWNGRADE=true or use --force"
                ));
            }
            if !self.request.force && compare_versions(target, current) == Some(std::cmp::Ordering::Equal) {
                problems.push(format!("the service already runs {current}; use --force to upgrade anyway"));
            }
        }
        if self.request.backup {
            self.check_backup_target(&deployment, &mut problems);
        }
        self.journal.set_versions(current.as_deref(), target);
        self.journal.db.set_fields(
            &self.journal.upgrade_id.clone(),
            &[
                ("fromVersion", current.clone().into()),
                ("container", deployment.container.name.trim_start_matches('/').to_string().into()),
                ("service", deployment.project.service.clone().into()),
                ("composeProject", deployment.project.name.clone().into()),
            ],
        )?;
        let upgrade_id = self.journal.upgrade_id.clone();
        let mut strategy: Box<dyn Strategy> = match self.request.strategy {
            StrategyKind::Pull => Box::new(Pull::new(
                deployment.docker,
                deployment.compose,
                deployment.project,
                &deployment.container,
                self.config.image.as_deref(),
                current,
                &upgrade_id,
            )),
            StrategyKind::Rebuild => Box::new(Rebuild::new(
                deployment.docker,
                deployment.compose,
                deployment.project,
                git,
                &self.config.git_remote,
                &self.config.git_branch,
                current,
                &upgrade_id,
            )),
        };
        strategy.preflight(target, self.request.force, &mut problems);
        Ok((Some(strategy), problems))
    }

    fn data_paths(&self, deployment_paths: Vec<PathBuf>) -> Vec<PathBuf> {
        if self.config.data_dirs.is_empty() {
            deployment_paths
        } else {
            self.config.data_dirs.clone()
        }
    }

    fn check_backup_target(&mut self, deployment: &Deployment, problems: &mut Vec<String>) {
        let paths = self.data_paths(deployment.container.data_paths());
        if paths.is_empty() {
            problems.push(
                "the container has no writable mounts to back up; set UPGRADERD_DATA_DIR or use --no-backup".into(),
            );
        }
        for path in &paths {
            if !path.exists() {
                problems.push(format!("data path {} does not exist", path.display()));
            } else if let Err(e) = check_free(path, self.config.min_free, "the data filesystem") {
                problems.push(format!("{e:#}"));
            }
        }
        let dir = &self.config.backup_dir;
        let writable = files::ensure_private_dir(dir).and_then(|()| {
            let probe = dir.join(format!(".upgraderd-probe-{}", files::unique_suffix()));
            std::fs::write(&probe, b"")?;
            std::fs::remove_file(&probe)
        });
        match writable {
            Err(e) => problems.push(format!("the backup directory {} is not writable: {e}", dir.display())),
            Ok(()) => {
                if let Err(e) = check_free(dir, self.config.min_free, "the backup directory") {
                    problems.push(format!("{e:#}"));
                }
            }
        }
        self.backup = None;
        self.data = paths;
    }

    fn back_up(&mut self) -> Result<()> {
        let reason = backup::Reason {
            upgrade_id: Some(self.journal.upgrade_id.clone()),
            from_version: self.from_version.clone(),
            to_version: Some(self.request.target.clone()),
            ..backup::Reason::default()
        };
        let ui = self.journal.ui;
        let mut progress = |p: Progress| {
            let share = (p.done * 100).checked_div(p.total).unwrap_or(100);
            ui.step(
                20 + (share / 5) as u8,
                "backing_up",
                &format!("{} of {}", human_bytes(p.done), human_bytes(p.total)),
            );
        };
        let created = backup::create(&self.data, &self.config.backup_dir, reason, &mut progress)?;
        for warning in &created.warnings {
            self.journal.log(warning);
        }
        self.journal.db.set_fields(
            &self.journal.upgrade_id.clone(),
            &[("backupPath", created.path.display().to_string().into()), ("rollbackAvailable", true.into())],
        )?;
        self.journal.log(&format!(
            "Backup created: {} ({})",
            created.path.display(),
            human_bytes(created.archive_bytes)
        ));
        self.backup = Some(created.path);
        Ok(())
    }

    fn gate(&self, expect: Option<String>) -> GateSpec {
        gate_spec(self.config, expect)
    }

    /// Puts the previous version and its data back; `failed` if even that does not come up healthy.
    fn roll_back(&mut self, strategy: &mut dyn Strategy, reason: String) -> Result<Outcome> {
        self.journal.step("rolling_back", 90, &format!("Rolling back: {}", first_line(&reason)))?;
        let backup = self.backup.clone();
        let (terminal, message, error) = restore_previous(
            self.config,
            &self.runner,
            self.journal,
            strategy,
            backup.as_deref(),
            self.from_version.clone(),
            reason,
        );
        self.end(terminal, message, Some(error))
    }

    /// Whether a stop was asked for; before the switch that abandons the upgrade.
    fn interrupted(&self) -> bool {
        self.request.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }

    fn abandon(&mut self, during: &str) -> Result<Outcome> {
        let error = format!(
            "upgraderd was asked to stop during {during}, before the switch; the running version and its data were not touched"
        );
        self.end(Terminal::Failed, "Interrupted before the switch; nothing was changed", Some(error))
    }

    fn pre_upgrade_hook(&mut self) -> Result<Option<String>> {
        let Some(command) = &self.config.pre_upgrade_cmd else { return Ok(None) };
        self.journal.log(&format!("Running UPGRADERD_PRE_UPGRADE_CMD: {command}"));
        let cmd =
            hook(command, &self.journal.upgrade_id, self.from_version.as_deref(), &self.request.target, "pending");
        match self.runner.run(&cmd) {
            Ok(_) => Ok(None),
            Err(e) => Ok(Some(format!("the pre-upgrade command refused the upgrade: {e}"))),
        }
    }

    fn dry_run(&mut self, strategy: &mut dyn Strategy) -> Result<Outcome> {
        self.journal.ui.info("dry run: pre-flight checks passed; these commands would run:");
        if self.request.backup {
            self.journal.ui.print(format!(
                "# back up {} into {}",
                self.data.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                self.config.backup_dir.display()
            ));
        }
        strategy.fetch(self.journal)?;
        strategy.switch(self.journal)?;
        for line in self.runner.planned() {
            self.journal.ui.print(line);
        }
        self.journal.ui.print(format!(
            "# wait until {} is healthy for {}s",
            self.config.health_url,
            self.config.health_stable.as_secs()
        ));
        self.end(Terminal::Complete, "Dry run: nothing was changed", None)
    }

    fn prune_backups(&mut self) {
        let keep = self.config.backup_keep;
        match backup::prune(&self.config.backup_dir, keep, self.backup.as_deref()) {
            Ok(pruned) => {
                for path in pruned.deleted {
                    self.journal.log(&format!("Pruned old backup {}", path.display()));
                }
            }
            Err(e) => self.journal.log(&format!("Pruning backups failed: {e:#}")),
        }
    }

    fn end(&mut self, terminal: Terminal, message: &str, error: Option<String>) -> Result<Outcome> {
        self.journal.finish(terminal.as_str(), message, error.as_deref())?;
        Ok(Outcome {
            upgrade_id: self.journal.upgrade_id.clone(),
            terminal,
            from_version: self.from_version.clone(),
            to_version: self.request.target.clone(),
            error,
            backup: self.backup.clone(),
        })
    }
}

/// Stops the new version, restores the backup, starts the previous version and
/// gates it. Shared by an attempt's rollback and the recovery of an interrupted one.
pub(crate) fn restore_previous(
    config: &Config,
    runner: &Runner,
    journal: &mut Journal,
    strategy: &mut dyn Strategy,
    backup: Option<&Path>,
    from_version: Option<String>,
    reason: String,
) -> (Terminal, &'static str, String) {
    if let Err(e) = strategy.stop(journal) {
        journal.log(&format!("Stopping the new version failed: {e:#}"));
    }
    if let Some(archive) = backup {
        journal.log(&format!("Restoring data from {}", archive.display()));
        if let Err(e) = backup::restore(archive, &Destination::Original, &mut |_| {}) {
            let error = format!(
                "{reason}\nrollback failed: restoring data from {}: {e:#}; the data was left as the new version wrote it",
                archive.display()
            );
            return (Terminal::Failed, "Rollback failed", error);
        }
    }
    if let Err(e) = strategy.revert(journal) {
        return (Terminal::Failed, "Rollback failed", format!("{reason}\nrollback failed: {e:#}"));
    }
    let (project, service) = strategy.project_and_service();
    let docker = Docker::new(&config.docker, runner.clone());
    let spec = gate_spec(config, from_version);
    match wait_healthy(&docker, project, service, &spec) {
        Ok(_) => (Terminal::RolledBack, "Rolled back to the previous version", reason),
        Err(why) => (
            Terminal::Failed,
            "Rollback failed",
            format!("{reason}\nrollback failed: the previous version is not healthy either: {why}"),
        ),
    }
}

/// git in the app's checkout: `UPGRADERD_GIT_DIR`, else the compose working dir.
pub(crate) fn git_for(config: &Config, project: &Project, runner: &Runner) -> Git {
    let dir = config.git_dir.clone().unwrap_or_else(|| project.working_dir.clone());
    Git::new(&config.git, &dir, runner.clone())
}

/// The strategy of a recorded upgrade, rebuilt from its row to put the previous version back.
pub(crate) fn resume_strategy(config: &Config, runner: &Runner, record: &UpgradeRecord) -> Result<Box<dyn Strategy>> {
    let deployment = discover(config, runner)?;
    Ok(match record.strategy.as_str() {
        "rebuild" => {
            let git = git_for(config, &deployment.project, runner);
            Box::new(Rebuild::resume(deployment.docker, deployment.compose, deployment.project, git, record)?)
        }
        _ => Box::new(Pull::resume(deployment.docker, deployment.compose, deployment.project, record)?),
    })
}

/// The health gate for this deployment, expecting `version` when a version pointer is configured.
pub(crate) fn gate_spec(config: &Config, version: Option<String>) -> GateSpec {
    GateSpec {
        url: config.health_url.clone(),
        timeout: config.health_timeout,
        stable: config.health_stable,
        expect_version: config.health_version_pointer.clone().zip(version),
    }
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or(text)
}

fn check_free(path: &Path, needed: u64, what: &str) -> Result<()> {
    let free = disk::free_bytes(path).with_context(|| format!("cannot read free space of {}", path.display()))?;
    if free < needed {
        return Err(anyhow!(
            "{what} ({}) has {} free, less than UPGRADERD_MIN_FREE={}",
            path.display(),
            human_bytes(free),
            human_bytes(needed)
        ));
    }
    Ok(())
}

/// A host hook: the operator's command line, run by `sh -c`, with the upgrade passed as environment.
fn hook(command: &str, upgrade_id: &str, from: Option<&str>, to: &str, status: &str) -> Cmd {
    Cmd::new("/bin/sh")
        .arg("-c")
        .arg(command)
        .env("UPGRADERD_UPGRADE_ID", upgrade_id)
        .env("UPGRADERD_FROM_VERSION", from.unwrap_or(""))
        .env("UPGRADERD_TO_VERSION", to)
        .env("UPGRADERD_STATUS", status)
        .timeout(Duration::from_secs(300))
}

/// Notification and post-upgrade hook, after the terminal state is recorded.
pub(crate) fn after_terminal(config: &Config, ui: &Ui, outcome: &Outcome) {
    if let Some(url) = &config.notify_url {
        let mut body = outcome.to_json();
        body["host"] =
            json!(std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default());
        if let Err(e) = notify::post_json(url, &body) {
            ui.warn(format!("{e:#}"));
        }
    }
    if let Some(command) = &config.post_upgrade_cmd {
        let cmd = hook(
            command,
            &outcome.upgrade_id,
            outcome.from_version.as_deref(),
            &outcome.to_version,
            outcome.terminal.as_str(),
        );
        if let Err(e) = Runner::new(false).run(&cmd) {
            ui.warn(format!("UPGRADERD_POST_UPGRADE_CMD failed: {e}"));
        }
    }
}

/// Undoes a recorded upgrade: stop the new version, restore the upgrade's
/// backup, put back the image (or commit and images) it replaced, recreate,
/// health-check. Recorded as an upgrade of its own (initiated by `rollback`).
pub fn manual_rollback(
    config: &Config,
    ui: &Ui,
    record: &UpgradeRecord,
    restore_data: bool,
    dry_run: bool,
) -> Result<Outcome> {
    if !record.switched && record.previous_image_id.is_none() && record.previous_commit.is_none() {
        return Err(anyhow!("upgrade {} never switched versions; there is nothing to roll back", record.id));
    }
    let backup = match (restore_data, &record.backup_path) {
        (true, Some(path)) => Some(PathBuf::from(path)),
        (true, None) => {
            return Err(anyhow!(
                "upgrade {} has no backup; use --no-restore-data to roll back the image only",
                record.id
            ))
        }
        (false, _) => None,
    };
    let mut lock = Lock::acquire(&config.lock_path(), &format!("rollback {}", record.id))?;
    let runner = Runner::new(dry_run);
    let mut strategy = resume_strategy(config, &runner, record)?;
    let db = if dry_run { Db::open(&scratch_db()?)? } else { Db::open(&config.db_path())? };
    let upgrade_id = new_upgrade_id();
    if !dry_run {
        lock.set_upgrade(&upgrade_id)?;
    }
    db.insert_upgrade(&UpgradeRecord {
        id: upgrade_id.clone(),
        from_version: record.to_version.clone(),
        to_version: record.from_version.clone(),
        deployment_method: "docker-compose".into(),
        status: "pending".into(),
        started_at: now_ms(),
        initiated_by: Some(format!("rollback of {}", record.id)),
        strategy: record.strategy.clone(),
        pid: Some(std::process::id() as i64),
        ..UpgradeRecord::default()
    })?;
    let status_file = config.trigger_dir.as_ref().filter(|_| !dry_run).map(|d| d.join(&config.status_file));
    let to_version = record.from_version.clone().unwrap_or_else(|| "previous".into());
    let mut journal = Journal::new(db, &upgrade_id, ui, status_file, &to_version);
    journal.set_versions(record.to_version.as_deref(), &to_version);
    journal.step("restarting", 30, &format!("Rolling back upgrade {}", record.id))?;
    let reason = format!("rollback of upgrade {} asked for", record.id);
    let (terminal, error) = if dry_run {
        strategy.stop(&mut journal)?;
        if let Some(archive) = &backup {
            runner.plan(format!("# restore data from {}", archive.display()));
        }
        strategy.revert(&mut journal)?;
        for line in runner.planned() {
            ui.print(line);
        }
        (Terminal::Complete, None)
    } else {
        match restore_previous(
            config,
            &runner,
            &mut journal,
            strategy.as_mut(),
            backup.as_deref(),
            record.from_version.clone(),
            reason,
        ) {
            (Terminal::RolledBack, _, _) => (Terminal::Complete, None),
            (terminal, _, error) => (terminal, Some(error)),
        }
    };
    journal.finish(
        terminal.as_str(),
        if error.is_none() { "Rollback complete" } else { "Rollback failed" },
        error.as_deref(),
    )?;
    let outcome = Outcome { upgrade_id, terminal, from_version: record.to_version.clone(), to_version, error, backup };
    if !dry_run {
        after_terminal(config, ui, &outcome);
    }
    Ok(outcome)
}
