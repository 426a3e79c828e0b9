//! Putting the previous version back, in one place: the rollback after a
//! failed gate, the recovery of an upgrade whose upgrader was killed after
//! the switch, and the operator's `rollback [ID]` all run
//! [`restore_previous`]: stop the new version, restore the backup, start the
//! previous version, gate it.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Result};

use crate::config::Config;
use crate::engine::announce::after_terminal;
use crate::engine::data;
use crate::engine::gate::{wait_healthy, GateSpec};
use crate::engine::journal::Journal;
use crate::engine::strategy::{self, Strategy};
use crate::engine::transaction::{Begin, Transaction};
use crate::engine::Outcome;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::Docker;
use crate::ops::process::Runner;
use crate::ops::swarm::{without_digest, Swarm};
use crate::states::Initiator;
use crate::states::{Status, Terminal};
use crate::store::db::{now_ms, UpgradeRecord};
use crate::ui::Ui;

/// How putting the previous version back ended: the terminal state, the
/// message the status shows, and the reason the record keeps (which says
/// what runs now whenever it is not the previous version).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RollbackEnd {
    pub terminal: Terminal,
    pub message: &'static str,
    pub error: String,
}

impl RollbackEnd {
    /// The previous version is back and healthy; `reason` says why it had to be.
    pub(crate) fn rolled_back(reason: String) -> RollbackEnd {
        RollbackEnd { terminal: Terminal::RolledBack, message: "Rolled back to the previous version", error: reason }
    }

    pub(crate) fn failed(message: &'static str, error: String) -> RollbackEnd {
        RollbackEnd { terminal: Terminal::Failed, message, error }
    }
}

/// Stops the new version, restores the backup, starts the previous version and
/// gates it. `rolled_back` when the previous version is healthy again.
pub(crate) fn restore_previous(
    config: &Config,
    runner: &Runner,
    journal: &mut Journal,
    strategy: &mut dyn Strategy,
    backup: Option<&Path>,
    from_version: Option<String>,
    reason: String,
) -> RollbackEnd {
    if backup.is_none() {
        // Stopping exists so that restored data is not written over by a running version:
        // with nothing to restore it would only add downtime.
        journal.log("No data to restore: switching straight back to the previous version");
    } else if let Err(e) = strategy.stop(journal) {
        // Data is never restored under a version that still runs: it would keep writing over it.
        // What the stop halted before it failed runs again, and the record says what runs.
        if let Err(again) = strategy.start_again(journal) {
            journal.log(&format!("Starting again what the failed stop halted failed too: {again:#}"));
        }
        let runs = what_runs(config, runner, strategy.project());
        let error = format!(
            "{reason}\nrollback failed: stopping the new version failed: {e:#}; nothing was restored; now {runs}{}",
            backup.map(|b| format!("; the backup {} is intact", b.display())).unwrap_or_default()
        );
        return RollbackEnd::failed("Rollback failed", error);
    }
    if let Some(archive) = backup {
        journal.log(&format!("Restoring data from {}", archive.display()));
        if let Err(e) = restore_with_owners_stopped(config, runner, journal, strategy.project(), archive) {
            // A restore verifies and stages before it swaps anything in: a failed one leaves the
            // data as the new version wrote it, which the new version can run on again; the other
            // services whose data it is were started again on it already.
            if let Err(again) = strategy.start_again(journal) {
                journal.log(&format!("Starting the new version again failed too: {again:#}"));
            }
            let runs = what_runs(config, runner, strategy.project());
            let error = format!(
                "{reason}\nrollback failed: restoring data from {}: {e:#}; the data was left as the new version \
                 wrote it; now {runs}",
                archive.display()
            );
            return RollbackEnd::failed("Rollback failed", error);
        }
    }
    if let Err(e) = strategy.revert(journal) {
        // The previous version cannot be put back: the new one runs again rather than nothing
        // (on the restored data, as it first ran on it at the switch).
        if let Err(again) = strategy.start_again(journal) {
            journal.log(&format!("Starting the new version again failed too: {again:#}"));
        }
        let runs = what_runs(config, runner, strategy.project());
        return RollbackEnd::failed("Rollback failed", format!("{reason}\nrollback failed: {e:#}; now {runs}"));
    }
    let project = strategy.project();
    let docker = Docker::new(&config.docker, runner.clone());
    match wait_healthy(&docker, project, &gate_spec(config, from_version, strategy)) {
        Ok(_) => RollbackEnd::rolled_back(reason),
        Err(why) => RollbackEnd::failed(
            "Rollback failed",
            format!("{reason}\nrollback failed: the previous version is not healthy either: {why}"),
        ),
    }
}

/// What runs now of the moved services, read from the engine: `app runs
/// REPO:2.0.1 (running)`, or for a stack `web: REPO:2.0.1, 2 replicas`.
pub(crate) fn what_runs(config: &Config, runner: &Runner, project: &Project) -> String {
    let docker = Docker::new(&config.docker, runner.clone());
    let described: Result<Vec<String>> = match project.orchestrator {
        Orchestrator::Compose => docker.project_containers(&project.name).map(|containers| {
            containers
                .iter()
                .filter_map(|c| Some((project.service_of(c)?, c)))
                .filter(|(service, _)| project.services.contains(service))
                .map(|(service, c)| format!("{service} runs {} ({})", c.config.image, c.state.status))
                .collect()
        }),
        Orchestrator::Swarm => {
            let swarm = Swarm::new(docker.clone());
            project
                .services
                .iter()
                .map(|service| {
                    let name = project.swarm_service(service);
                    Ok(match swarm.service(&name)? {
                        Some(s) => format!(
                            "{name} runs {} with {} replicas",
                            without_digest(s.image()),
                            s.replicas().map_or("global".to_string(), |r| r.to_string())
                        ),
                        None => format!("{name} does not exist"),
                    })
                })
                .collect()
        }
    };
    match described {
        Ok(lines) if lines.is_empty() => "none of the moved services has a container".into(),
        Ok(lines) => lines.join(", "),
        Err(e) => format!("what runs could not be read from the engine ({e:#})"),
    }
}

/// Restores `archive` with every service whose data it replaces stopped
/// (the moved services already are), then starts them again, with what an
/// interrupted earlier attempt of this upgrade recorded as stopped.
fn restore_with_owners_stopped(
    config: &Config,
    runner: &Runner,
    journal: &mut Journal,
    project: &Project,
    archive: &Path,
) -> Result<()> {
    let docker = Docker::new(&config.docker, runner.clone());
    let left_stopped = journal.db.get(&journal.upgrade_id)?.map(|r| r.held).unwrap_or_default();
    data::restore_with_owners_stopped(config, &docker, project, archive, &project.services, &left_stopped, journal)
        .map(drop)
}

/// The health gate for this deployment, expecting `version` when a version
/// pointer is configured, and judging what `strategy` switched to.
pub(crate) fn gate_spec(config: &Config, version: Option<String>, strategy: &dyn Strategy) -> GateSpec {
    GateSpec {
        url: config.health_url.clone(),
        timeout: config.health_timeout,
        stable: config.health_stable,
        expect_version: config.health_version_pointer.clone().zip(version),
        tasks_before: strategy.tasks_before_switch(),
    }
}

/// What the operator's `rollback` of a recorded upgrade would put back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManualPlan {
    /// The backup to restore, when data is restored.
    pub backup: Option<PathBuf>,
}

/// Decides whether a recorded upgrade can be rolled back, and with which data.
pub(crate) fn manual_plan(record: &UpgradeRecord, restore_data: bool) -> Result<ManualPlan> {
    if let Some(undone) = record.rollback_of() {
        return Err(anyhow!(
            "upgrade {} is the rollback of upgrade {undone}, and a rollback is not rolled back; to run {} again, \
             upgrade to it: `upgraderd upgrade --to {}`",
            record.id,
            record.from_version.as_deref().unwrap_or("the newer version"),
            record.from_version.as_deref().unwrap_or("VERSION"),
        ));
    }
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
    Ok(ManualPlan { backup })
}

/// Undoes a recorded upgrade: stop the new version, restore the upgrade's
/// backup, put back the image (or commit and images) it replaced, recreate,
/// health-check. Recorded as an upgrade of its own (initiated by `rollback`).
pub(crate) fn manual_rollback(
    config: &Config,
    ui: &Ui,
    record: &UpgradeRecord,
    restore_data: bool,
    dry_run: bool,
) -> Result<Outcome> {
    let ManualPlan { backup } = manual_plan(record, restore_data)?;
    let to_version = record.from_version.clone().unwrap_or_else(|| "previous".into());
    let begin =
        Begin { command: format!("rollback {}", record.id), dry_run, upgrade_id: None, to_version: &to_version };
    let mut transaction = Transaction::begin(config, ui, begin, || Ok(()))?;
    let journal = &mut transaction.journal;
    let upgrade_id = journal.upgrade_id.clone();
    let runner = crate::engine::deployment_runner(config, ui, dry_run);
    let mut strategy = strategy::resume(config, &runner, record)?;
    journal.db.insert_upgrade(&UpgradeRecord {
        id: upgrade_id.clone(),
        from_version: record.to_version.clone(),
        to_version: record.from_version.clone(),
        deployment_method: record.deployment_method.clone(),
        status: Status::Pending,
        started_at: now_ms(),
        initiated_by: Some(Initiator::RollbackOf(record.id.clone())),
        strategy: record.strategy,
        pid: Some(std::process::id() as i64),
        container: record.container.clone(),
        service: record.service.clone(),
        compose_project: record.compose_project.clone(),
        image_ref: record.image_ref.clone(),
        ..UpgradeRecord::default()
    })?;
    journal.db.record_rollback_point(&upgrade_id, record, backup.as_deref())?;
    journal.set_versions(record.to_version.as_deref(), &to_version);
    journal.step(Status::Restarting, &format!("Rolling back upgrade {}", record.id))?;
    let (terminal, error) = if dry_run {
        print_plan(ui, &runner, journal, strategy.as_mut(), backup.as_deref())?;
        (Terminal::Complete, None)
    } else {
        let reason = format!("rollback of upgrade {} asked for", record.id);
        let from = record.from_version.clone();
        match restore_previous(config, &runner, journal, strategy.as_mut(), backup.as_deref(), from, reason) {
            RollbackEnd { terminal: Terminal::RolledBack, .. } => (Terminal::Complete, None),
            end => (end.terminal, Some(end.error)),
        }
    };
    if runner.engine_gone() {
        return Err(journal.left_interrupted(error.as_deref().unwrap_or("the rollback")));
    }
    let message = match (&error, dry_run) {
        (None, true) => "Dry run: nothing was changed",
        (None, false) => "Rollback complete",
        (Some(_), _) => "Rollback failed",
    };
    journal.finish(terminal, message, error.as_deref());
    let outcome = Outcome { upgrade_id, terminal, from_version: record.to_version.clone(), to_version, error, backup };
    if !dry_run {
        after_terminal(config, ui, &outcome);
    }
    Ok(outcome)
}

/// `rollback --dry-run`: the commands the rollback would run, in order.
fn print_plan(
    ui: &Ui,
    runner: &Runner,
    journal: &mut Journal,
    strategy: &mut dyn Strategy,
    backup: Option<&Path>,
) -> Result<()> {
    strategy.stop(journal)?;
    if let Some(archive) = backup {
        runner.plan(format!(
            "# restore data from {}, with the services whose data it replaces stopped, then started again",
            archive.display()
        ));
    }
    strategy.revert(journal)?;
    for line in runner.planned() {
        ui.plan(line);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> UpgradeRecord {
        UpgradeRecord { id: "u1".into(), switched: true, backup_path: Some("/b/x.tar.gz".into()), ..Default::default() }
    }

    #[test]
    fn a_manual_rollback_restores_the_upgrades_backup_unless_told_not_to() {
        assert_eq!(manual_plan(&record(), true).unwrap().backup, Some(PathBuf::from("/b/x.tar.gz")));
        assert_eq!(manual_plan(&record(), false).unwrap().backup, None);
        let no_backup = UpgradeRecord { backup_path: None, ..record() };
        let err = manual_plan(&no_backup, true).unwrap_err().to_string();
        assert!(err.contains("--no-restore-data"), "{err}");
    }

    #[test]
    fn an_upgrade_that_never_switched_has_nothing_to_roll_back() {
        let unswitched = UpgradeRecord { switched: false, ..record() };
        assert!(manual_plan(&unswitched, true).unwrap_err().to_string().contains("never switched"));
        let fetched = UpgradeRecord { previous_image_id: Some("sha256:1".into()), ..unswitched };
        assert!(manual_plan(&fetched, true).is_ok());
    }

    #[test]
    fn a_rollback_is_not_rolled_back_and_the_message_says_how_to_go_forward() {
        let rollback = UpgradeRecord {
            id: "r1".into(),
            from_version: Some("2.0.0".into()),
            initiated_by: Some(Initiator::RollbackOf("u1".into())),
            ..record()
        };
        let err = manual_plan(&rollback, true).unwrap_err().to_string();
        assert!(err.contains("is the rollback of upgrade u1") && err.contains("upgrade --to 2.0.0"), "{err}");
    }
}
