//! The upgrade runbook: preflight, backup, fetch, switch, health gate, and on
//! any failure after the switch began, rollback of image and data. Each step
//! is journaled before it runs; every attempt ends `complete`, `rolled_back`
//! or `failed`, recorded and announced.
//!
//! What happens after a failure or a stop request depends only on the step
//! it happened in ([`after_failure`], [`after_stop_request`]): before the
//! switch nothing running was touched, so the attempt ends `failed`; from the
//! switch on, the previous version and its data are put back.
//!
//! What the app's own request may ask (force, backup, a quarantined image,
//! the operator's policy) is `app_request`'s.

mod app_request;
mod ending;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;

use crate::config::{shown, Config};
use crate::engine::announce::after_terminal;
use crate::engine::data::{self, DataSet, ServiceData};
use crate::engine::discover::{self, discover};
use crate::engine::gate::{finished_job, wait_healthy};
use crate::engine::halt::PendingStop;
use crate::engine::journal::Journal;
use crate::engine::preflight::{self, Problem};
use crate::engine::rollback::gate_spec;
use crate::engine::sidecar::{self, Sidecar, Sight};
use crate::engine::strategy::{self, Fetched, Strategy};
use crate::engine::transaction::{Begin, Transaction};
use crate::engine::{deployment_runner, recover, EngineGone, Outcome, Request, DRY_RUN_ID};
use crate::exit::usage;
use crate::ops::compose::Project;
use crate::ops::docker::Docker;
use crate::ops::hooks::{hook, HookContext};
use crate::ops::process::Runner;
use crate::states::{Status, Strategy as StrategyKind, Terminal};
use crate::store::backup;
use crate::store::db::{now_ms, DeploymentRecord, UpgradeRecord};
use crate::ui::{human_bytes, Ui};

/// The steps of the runbook, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Preflight,
    Backup,
    Fetch,
    /// What the switch needs, done while the old version serves (a moved tag, written pins).
    Prepare,
    Switch,
    Gate,
}

/// What the attempt does next when a step fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// End `failed`: the running version and its data were not touched.
    Fail,
    /// Put the previous version and its data back.
    RollBack,
}

/// A failed step before the switch changed nothing that runs; from the switch on, roll back.
pub(crate) fn after_failure(step: Step) -> Next {
    match step {
        Step::Preflight | Step::Backup | Step::Fetch | Step::Prepare => Next::Fail,
        Step::Switch | Step::Gate => Next::RollBack,
    }
}

/// A stop request (SIGTERM) abandons the attempt before the switch; once it
/// began, the gate or the rollback finishes first so the host is never left half-switched.
pub(crate) fn after_stop_request(step: Step) -> Option<Next> {
    match step {
        Step::Preflight | Step::Backup | Step::Fetch | Step::Prepare => Some(Next::Fail),
        Step::Switch | Step::Gate => None,
    }
}

/// Runs one upgrade attempt to its terminal state.
pub(crate) fn run(config: &Config, ui: &Ui, request: &Request) -> Result<Outcome> {
    let begin = Begin {
        command: format!("upgrade --to {}", request.target),
        dry_run: request.dry_run,
        upgrade_id: request.upgrade_id.clone(),
        to_version: request.target.as_str(),
    };
    // Holding the lock, any unfinished upgrade in the journal is an orphan: put it right first.
    let mut transaction = Transaction::begin(config, ui, begin, || recover::reconcile(config, ui, None).map(drop))?;
    let journal = &mut transaction.journal;
    let upgrade_id = journal.upgrade_id.clone();
    open_record(config, request, journal)?;
    journal.step(Status::Pending, &format!("Upgrade to {} initiated by {}", request.target, request.initiated_by))?;
    let attempt = Attempt {
        config,
        request,
        runner: runner_for(config, ui, request),
        journal,
        force: request.force,
        backup_wanted: request.backup,
        data: DataSet::default(),
        stopped: Vec::new(),
        stopping: Vec::new(),
        backup: None,
        from_version: None,
        leftovers: Vec::new(),
    };
    let outcome = match attempt.run() {
        Ok(outcome) => outcome,
        // Left unfinished on purpose: recovery finishes it once the engine is back.
        Err(err) if err.is::<EngineGone>() => return Err(err),
        Err(err) => {
            // Bad configuration found on the way (exit 2), or a failure of upgraderd's own
            // bookkeeping: recorded if the journal still can.
            let message = format!("{err:#}");
            journal.finish(Terminal::Failed, "Upgrade failed", Some(&message));
            if crate::exit::is_usage(&err) {
                return Err(err);
            }
            Outcome {
                upgrade_id: upgrade_id.clone(),
                terminal: Terminal::Failed,
                from_version: None,
                to_version: request.target.to_string(),
                error: Some(message),
                backup: None,
            }
        }
    };
    if !request.dry_run {
        after_terminal(config, ui, &outcome);
    }
    Ok(outcome)
}

/// The runner of an attempt: child output streamed through the caller's `ui`
/// (so `-q` quiets it and `--json` makes it JSON lines), interruptible
/// children stopped on request, an engine that is briefly away waited for.
fn runner_for(config: &Config, ui: &Ui, request: &Request) -> Runner {
    let runner = deployment_runner(config, ui, request.dry_run);
    let ui = ui.clone();
    let runner = runner.with_sink(std::sync::Arc::new(move |source: &str, line: &str| ui.stream_line(source, line)));
    match &request.shutdown {
        Some(shutdown) => runner.with_stop_flag(shutdown.requested.clone()),
        None => runner,
    }
}

/// Inserts the history row, or reopens a request interrupted before its switch.
fn open_record(config: &Config, request: &Request, journal: &mut Journal) -> Result<()> {
    let upgrade_id = journal.upgrade_id.clone();
    match journal.db.get(&upgrade_id)? {
        None => journal.db.insert_upgrade(&UpgradeRecord {
            id: upgrade_id,
            to_version: Some(request.target.to_string()),
            deployment_method: "docker-compose".into(),
            status: Status::Pending,
            started_at: now_ms(),
            initiated_by: Some(request.initiated_by.clone()),
            strategy: request.strategy,
            pid: Some(std::process::id() as i64),
            container: config.container.clone(),
            ..UpgradeRecord::default()
        }),
        Some(existing) if existing.is_terminal() && !existing.switched => {
            // A request interrupted before its switch changed nothing: it runs again under its id.
            journal.db.reopen_upgrade(&upgrade_id, std::process::id() as i64)?;
            journal.log("Running again: the previous attempt was interrupted before the switch");
            Ok(())
        }
        Some(existing) => {
            Err(usage(format!("upgrade id {upgrade_id} was already used (status {}); use a new id", existing.status)))
        }
    }
}

struct Attempt<'a, 'j> {
    config: &'a Config,
    request: &'a Request,
    runner: Runner,
    journal: &'a mut Journal<'j>,
    /// `--force`, or the app's `force` where the operator allows it.
    force: bool,
    /// Unless `--no-backup`, or the app's `backup: false` where the operator allows it.
    backup_wanted: bool,
    /// What the backup covers, found in preflight.
    data: DataSet,
    /// Containers stopped for the backup's final pass, until they run again or the switch replaces them.
    stopped: Vec<crate::states::Halt>,
    /// Stops of `stopped` the engine may still be finishing (their processes ended
    /// before the final pass): they end after the switch, or before anything starts again.
    stopping: Vec<PendingStop>,
    backup: Option<PathBuf>,
    from_version: Option<String>,
    /// What could not be put back before the switch, named once at the attempt's end.
    leftovers: Vec<ending::Leftover>,
}

/// What preflight found: a strategy ready to run, or the problems that refuse the attempt.
enum Preflight {
    Passed(Box<dyn Strategy>),
    Refused(Vec<Problem>),
}

impl Attempt<'_, '_> {
    fn run(mut self) -> Result<Outcome> {
        self.journal.step(Status::Preflight, "Running pre-flight checks")?;
        if self.request.is_from_app() {
            self.bind_app_request();
        }
        let mut strategy = match self.preflight()? {
            Preflight::Passed(strategy) => strategy,
            Preflight::Refused(problems) => {
                return self.end(Terminal::Failed, "Pre-flight checks failed", Some(preflight::refusal(&problems)))
            }
        };
        if self.request.dry_run {
            return self.dry_run(strategy.as_mut());
        }
        if self.stop_requested_at(Step::Preflight) {
            return self.abandon("preflight");
        }
        if let Some(veto) = self.pre_upgrade_hook() {
            return self.end(Terminal::Failed, "Vetoed by UPGRADERD_PRE_UPGRADE_CMD", Some(veto));
        }
        self.journal.step(Status::Downloading, "Downloading new version")?;
        let fetched = match strategy.fetch(self.journal) {
            Ok(fetched) => fetched,
            Err(err) => {
                let put_back = self.put_back_fetch(strategy.as_mut());
                if self.stop_requested_at(Step::Fetch) && put_back {
                    return self.abandon("the download");
                }
                return self.failed(strategy.as_mut(), Step::Fetch, format!("{err:#}"));
            }
        };
        if self.stop_requested_at(Step::Fetch) {
            return match self.put_back_fetch(strategy.as_mut()) {
                true => self.abandon("the download"),
                false => self.stopped_before_switch(),
            };
        }
        if fetched.unchanged && self.request.target.is_latest() && !self.force {
            // `latest` pulled while `latest` runs: nothing to switch to, so nothing is stopped or backed up.
            let from = self.from_version.clone().unwrap_or_else(|| "latest".into());
            self.journal.set_versions(self.from_version.as_deref(), &from);
            let message = format!(
                "Already up to date: latest is the image that runs ({}); nothing was changed",
                fetched.image_id.as_deref().unwrap_or("?")
            );
            return self.end_after_fetch(strategy.as_mut(), Terminal::Complete, &message, None);
        }
        if let Some(refusal) = self.quarantined_image(&fetched) {
            let message = "Refused: this image was rolled back on this host";
            return self.end_after_fetch(strategy.as_mut(), Terminal::Failed, message, Some(refusal));
        }
        if let Some(refusal) = self.app_policy_refusal(&fetched) {
            let message = "Refused: the fetched version is beyond the operator's rules";
            return self.end_after_fetch(strategy.as_mut(), Terminal::Failed, message, Some(refusal));
        }
        if let Err(err) = strategy.prepare_switch(self.journal) {
            self.put_back_fetch(strategy.as_mut());
            return self.failed(strategy.as_mut(), Step::Prepare, format!("{err:#}"));
        }
        if self.stop_requested_at(Step::Prepare) {
            return match self.put_back_fetch(strategy.as_mut()) {
                true => self.abandon("the preparation of the switch"),
                false => self.stopped_before_switch(),
            };
        }
        if self.backup_wanted {
            // After the fetch: the old version serves while the new one downloads, and the
            // backup holds every write it commits until it is stopped for the switch.
            self.journal.step(Status::BackingUp, "Creating backup")?;
            let backed_up = self.back_up(strategy.as_mut());
            let interrupted = backed_up.is_ok() && self.stop_requested_at(Step::Backup);
            if backed_up.is_err() || interrupted {
                let started = self.start_stopped();
                let put_back = self.put_back_fetch(strategy.as_mut());
                if let Err(err) = backed_up {
                    return self.failed(strategy.as_mut(), Step::Backup, format!("{err:#}"));
                }
                if started && put_back {
                    return self.abandon("the backup");
                }
                return self.stopped_before_switch();
            }
        } else {
            self.journal.log("Backup skipped as requested; a rollback cannot restore data");
        }
        self.switch_and_gate(strategy.as_mut(), fetched)
    }

    /// From the switch on an interruption is finished (gate or rollback), never abandoned half-switched.
    fn switch_and_gate(&mut self, strategy: &mut dyn Strategy, fetched: Fetched) -> Result<Outcome> {
        let to_version = fetched
            .version
            .clone()
            .filter(|_| self.request.target.is_latest())
            .unwrap_or_else(|| self.request.target.to_string());
        // Without a version from the fetch, `latest` cannot be checked against the health body.
        let expect = (!self.request.target.is_latest() || fetched.version.is_some()).then(|| to_version.clone());
        self.journal.set_versions(self.from_version.as_deref(), &to_version);
        if let Err(err) = self.journal.switch_begins(&to_version) {
            // Not switched: as after a failed backup, what the final pass stopped runs again.
            self.start_stopped();
            self.put_back_fetch(strategy);
            return self.failed(strategy, Step::Prepare, format!("recording the switch failed: {err:#}"));
        }
        // The containers stopped for the final pass are the old version's, which the switch replaces.
        self.stopped.clear();
        let switched = Instant::now();
        let switch = strategy.switch(fetched, self.journal);
        if let Err(e) = self.finish_stops() {
            // The old containers were replaced (or are put back below): the stop's end no longer matters.
            self.journal.log(&format!("{e:#} (after the switch began; nothing to do)"));
        }
        if let Err(err) = switch {
            return self.failed(strategy, Step::Switch, format!("{err:#}"));
        }
        self.journal.report(Status::HealthCheck, "Running health checks");
        let project = strategy.project();
        let docker = Docker::new(&self.config.docker, self.runner.clone());
        let gate_began = Instant::now();
        match wait_healthy(&docker, project, &gate_spec(self.config, expect, strategy)) {
            Ok(passed) => {
                self.log_finished_jobs(&docker, project);
                let downtime = gate_began.duration_since(switched) + passed.healthy_after;
                self.journal.log(&format!(
                    "Healthy after {:.1}s; down {:.1}s from the switch to the first healthy look",
                    passed.took.as_secs_f64(),
                    downtime.as_secs_f64()
                ));
                if let Err(e) = self.journal.db.record_downtime(&self.journal.upgrade_id, downtime) {
                    self.journal.log(&format!("could not record the downtime: {e:#}"));
                }
                strategy.cleanup(self.journal, self.config.backup_keep);
                self.end(Terminal::Complete, "Upgrade complete", None)
            }
            Err(reason) => self.failed(strategy, Step::Gate, reason),
        }
    }

    /// A one-shot service (a migration job) that ran with the new version: its output goes into the upgrade's log.
    fn log_finished_jobs(&mut self, docker: &Docker, project: &Project) {
        for service in project.services.iter().filter(|s| **s != project.service) {
            let Ok(Some(id)) = docker.service_container(&project.name, service) else { continue };
            let Ok(container) = docker.inspect_container(&id) else { continue };
            if finished_job(&container) {
                let output = docker.logs_tail(&id, 20);
                self.journal.log(&format!("{service} ran to completion (exit 0); its output:\n{output}"));
            }
        }
    }

    /// Finds the deployment, runs every check, and builds the strategy; the problems when any check fails.
    fn preflight(&mut self) -> Result<Preflight> {
        if let Some(missing) = sidecar::missing_socket() {
            return Ok(Preflight::Refused(vec![Problem::new("sidecar", missing)]));
        }
        let deployment = match discover(self.config, &self.runner) {
            Ok(d) => d,
            Err(err) if crate::exit::is_usage(&err) => return Err(err),
            Err(err) => return Ok(Preflight::Refused(vec![Problem::from_error("deployment", &err)])),
        };
        let mut problems = Vec::new();
        let sidecar = Sidecar::find(&deployment.docker);
        if let Some(sidecar) = &sidecar {
            self.journal.log(&format!(
                "upgraderd runs in container {}: it never stops, moves or backs up itself",
                sidecar.name()
            ));
            let rebuild = self.request.strategy == StrategyKind::Rebuild;
            problems.extend(sidecar.problems(&deployment.project, rebuild));
        }
        match deployment.docker.root_dir() {
            Ok(root) if sidecar.as_ref().is_some_and(|s| s.sight(&root) != Sight::Same) => self.journal.log(&format!(
                "Docker's root dir {} is not mounted in this container: its free space is not checked",
                root.display()
            )),
            Ok(root) => problems.extend(preflight::free_space(&root, self.config.min_free, "Docker's root dir")),
            Err(e) => problems.push(Problem::from_error("free-space", &e)),
        }
        let mut current =
            discover::current_version(self.config, &deployment.docker, &deployment.container, Some(&self.journal.db));
        if self.request.strategy == StrategyKind::Rebuild && current.is_none() {
            current = discover::git_for(self.config, &deployment.project, &self.runner).describe();
        }
        let target = self.request.target.as_str();
        problems.extend(preflight::version_direction(
            target,
            current.as_deref(),
            self.force,
            self.config.allow_downgrade,
        ));
        problems.extend(self.app_policy_problems(current.as_deref()));
        if self.backup_wanted {
            match data::data_set(self.config, &deployment.docker, &deployment.project) {
                Ok(set) => {
                    problems.extend(preflight::backup_target(self.config, &set.sources()));
                    if let Some(sidecar) = &sidecar {
                        let paths: Vec<PathBuf> = set.sources().iter().map(|s| s.path.clone()).collect();
                        problems.extend(sidecar.data_problems(&paths));
                    }
                    self.data = set;
                }
                Err(err) if crate::exit::is_usage(&err) => return Err(err),
                Err(err) => problems.push(Problem::from_error("backup", &err)),
            }
            let (config, docker, project) = (self.config, &deployment.docker, &deployment.project);
            problems.extend(crate::engine::data::placement::placement_problems(config, docker, project, true));
        }
        self.from_version = current.clone();
        self.journal.set_versions(current.as_deref(), target);
        let container = deployment.container.name.trim_start_matches('/').to_string();
        let upgrade_id = self.journal.upgrade_id.clone();
        let mut strategy =
            strategy::for_upgrade(self.config, self.request.strategy, deployment, &upgrade_id, &self.runner)?;
        problems.extend(strategy.preflight(&self.request.target, self.force));
        let project = strategy.project();
        self.journal.log(&format!("Services that move together: {}", project.services.join(", ")));
        for line in strategy.describe_moves() {
            self.journal.log(&format!("  {line}"));
        }
        self.journal.db.record_deployment(
            &self.journal.upgrade_id,
            &DeploymentRecord {
                from_version: current,
                container: Some(container),
                service: Some(project.service.clone()),
                services: project.services.clone(),
                compose_project: Some(project.name.clone()),
                strategy: strategy.kind(),
            },
        )?;
        Ok(if problems.is_empty() { Preflight::Passed(strategy) } else { Preflight::Refused(problems) })
    }

    /// Backs up the project's data so that it holds every write committed
    /// until the switch (see [`data::back_up`]). The moved services stay
    /// stopped: the switch starts their new version.
    fn back_up(&mut self, strategy: &mut dyn Strategy) -> Result<()> {
        let project = strategy.project().clone();
        let docker = Docker::new(&self.config.docker, self.runner.clone());
        let target = data::Target {
            dir: &self.config.backup_dir,
            form: self.config.backup_format,
            reason: backup::Reason {
                upgrade_id: Some(self.journal.upgrade_id.clone()),
                from_version: self.from_version.clone(),
                to_version: Some(self.request.target.to_string()),
                ..backup::Reason::default()
            },
            start_timeout: self.config.start_timeout,
        };
        let moved: Vec<ServiceData> = self.data.of_services(&project.services).cloned().collect();
        let mut observer = Upgrading { journal: &mut *self.journal, strategy };
        let data::BackedUp { created, stopping } =
            data::back_up(&docker, &self.data, &moved, &target, &mut self.stopped, &mut observer)?;
        // Kept first: an error below starts the stopped containers again, each once its stop has ended.
        self.stopping = stopping;
        self.journal.db.record_backup(&self.journal.upgrade_id, &created.path)?;
        self.journal.log(&format!(
            "Backup created: {} ({})",
            created.path.display(),
            human_bytes(created.archive_bytes)
        ));
        // The final pass began as the moved services' processes ended, and the lines above were
        // recorded while the engine tore their containers down; the switch's compose stops them
        // too (it waits for the same teardown), so the gate need not wait for these stops.
        self.backup = Some(created.path);
        Ok(())
    }

    /// Starts again what the backup stopped; whether all of it runs (what does
    /// not is a leftover the attempt's end names).
    fn start_stopped(&mut self) -> bool {
        // A container starts again only once its stop has ended.
        if let Err(e) = self.finish_stops() {
            self.journal.log(&format!("{e:#}"));
        }
        if self.stopped.is_empty() {
            return true;
        }
        let docker = Docker::new(&self.config.docker, self.runner.clone());
        let ids = std::mem::take(&mut self.stopped);
        let journal = &mut *self.journal;
        let started = data::start_containers(&docker, &ids, &self.data.services, self.config.start_timeout, &mut |l| {
            journal.log(l)
        });
        // What could not be started stays recorded: recovery starts it when this attempt is left interrupted.
        if started.is_ok() {
            let _ = self.journal.db.record_held(&self.journal.upgrade_id, &[]);
        }
        match started {
            Ok(()) => true,
            Err(e) => {
                self.leftovers.push(ending::Leftover::NotStartedAgain(format!("{e:#}")));
                false
            }
        }
    }

    /// Waits for the stops the engine was still finishing; the first failure.
    fn finish_stops(&mut self) -> Result<()> {
        std::mem::take(&mut self.stopping).into_iter().try_for_each(PendingStop::finish)
    }

    /// Whether a stop request abandons the attempt at this step.
    fn stop_requested_at(&self, step: Step) -> bool {
        after_stop_request(step).is_some() && self.request.shutdown.as_ref().is_some_and(|s| s.is_requested())
    }

    /// Before the switch: everything the fetch changed goes back (a moved tag, a
    /// rebuild's checkout), and this upgrade's rollback tags go. Whether it all
    /// went back (what did not is a leftover the attempt's end names).
    fn put_back_fetch(&mut self, strategy: &mut dyn Strategy) -> bool {
        let undone = strategy.undo_fetch(self.journal);
        strategy.discard(self.journal);
        match undone {
            Ok(()) => true,
            Err(e) => {
                self.leftovers.push(ending::Leftover::FetchNotUndone(format!("{e:#}")));
                false
            }
        }
    }

    /// The operator's veto: a non-zero exit of `UPGRADERD_PRE_UPGRADE_CMD` refuses the upgrade.
    fn pre_upgrade_hook(&mut self) -> Option<String> {
        let command = self.config.pre_upgrade_cmd.as_ref()?;
        self.journal
            .log(&format!("Running UPGRADERD_PRE_UPGRADE_CMD: {}", shown("UPGRADERD_PRE_UPGRADE_CMD", command)));
        let context = HookContext {
            upgrade_id: &self.journal.upgrade_id,
            from_version: self.from_version.as_deref(),
            to_version: self.request.target.as_str(),
            status: Status::Pending.as_str(),
        };
        let result = self.runner.run(&hook(command, context));
        result.err().map(|e| format!("the pre-upgrade command refused the upgrade: {e}"))
    }

    fn dry_run(&mut self, strategy: &mut dyn Strategy) -> Result<Outcome> {
        self.journal.ui.info(format!(
            "dry run: pre-flight checks passed; these commands would run ({DRY_RUN_ID} stands for the id the upgrade gets):"
        ));
        // In the order they would run: the fetch and the switch's preparation, the backup, the switch.
        let fetched = strategy.fetch(self.journal)?;
        strategy.prepare_switch(self.journal)?;
        let prepared = self.runner.planned().len();
        for line in self.runner.planned() {
            self.journal.ui.plan(line);
        }
        if self.backup_wanted {
            self.journal.ui.plan(format!(
                "# back up {} into {}: a first pass while serving, a final pass with the moved and stop-mode \
                 services stopped",
                self.data.paths().iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
                self.config.backup_dir.display()
            ));
        }
        strategy.switch(fetched, self.journal)?;
        for line in self.runner.planned().into_iter().skip(prepared) {
            self.journal.ui.plan(line);
        }
        self.journal.ui.plan(format!(
            "# wait until {} is healthy for {}s",
            shown("UPGRADERD_HEALTH_URL", &self.config.health_url),
            self.config.health_stable.as_secs()
        ));
        self.end(Terminal::Complete, "Dry run: nothing was changed", None)
    }
}

/// The journal as an upgrade's backup observer: it also starts what the
/// switch can start ahead, while the app serves.
struct Upgrading<'s, 'j> {
    journal: &'s mut Journal<'j>,
    strategy: &'s mut dyn Strategy,
}

impl data::Observer for Upgrading<'_, '_> {
    fn log(&mut self, line: &str) {
        self.journal.log(line);
    }

    fn stopped(&mut self, held: &[crate::states::Halt]) -> Result<()> {
        data::Observer::stopped(self.journal, held)
    }

    fn progress(&mut self, progress: backup::Progress) {
        data::Observer::progress(self.journal, progress);
    }

    fn first_pass_begins(&mut self) {
        self.strategy.start_switch_early(self.journal);
    }

    fn final_stop_begins(&mut self) {
        self.strategy.ready_switch_early(self.journal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_rolled_back_before_the_switch_and_everything_after() {
        assert_eq!(after_failure(Step::Preflight), Next::Fail);
        assert_eq!(after_failure(Step::Backup), Next::Fail);
        assert_eq!(after_failure(Step::Fetch), Next::Fail);
        assert_eq!(after_failure(Step::Prepare), Next::Fail);
        assert_eq!(after_failure(Step::Switch), Next::RollBack);
        assert_eq!(after_failure(Step::Gate), Next::RollBack);
    }

    #[test]
    fn a_stop_request_abandons_only_before_the_switch() {
        assert_eq!(after_stop_request(Step::Backup), Some(Next::Fail));
        assert_eq!(after_stop_request(Step::Fetch), Some(Next::Fail));
        assert_eq!(after_stop_request(Step::Prepare), Some(Next::Fail));
        assert_eq!(after_stop_request(Step::Switch), None);
        assert_eq!(after_stop_request(Step::Gate), None);
    }
}
