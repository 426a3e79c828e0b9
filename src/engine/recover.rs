//! Reconciles upgrades the journal shows unfinished while nobody holds the
//! lock: their upgrader was killed. Before the switch nothing running was
//! changed, so the row is marked `failed`, partial files are removed and a
//! moved checkout is moved back. After the switch the previous image (or
//! commit) and the backup are put back and gated, ending `rolled_back`, or
//! `failed` when even that fails. The plan is a pure function of the row.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::engine::announce::after_terminal;
use crate::engine::journal::Journal;
use crate::engine::rollback::{restore_previous, RollbackEnd};
use crate::engine::transaction::Transaction;
use crate::engine::{data, halt, pin};
use crate::engine::{deployment_runner, strategy, Outcome};
use crate::ops::docker::Docker;
use crate::ops::process::left_running::{self, LeftRunning};
use crate::ops::process::Runner;
use crate::states::{Halt, RequestState, Status, Terminal};
use crate::store::backup;
use crate::store::db::{now_ms, unrecorded, Db, UpgradeRecord};
use crate::store::lock::Lock;
use crate::ui::Ui;

/// How long what a killed upgrader left running gets to wind down before it is killed.
const LEFT_RUNNING_PATIENCE: Duration = Duration::from_secs(10);

/// What to do about one interrupted upgrade.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Interrupted before the switch: nothing running changed for good. Mark
    /// it failed, after starting again what the backup's final pass stopped
    /// and undoing the fetch when it began: a rebuild's checkout moved back,
    /// the rollback tags it made removed.
    MarkFailed { undo_fetch: bool, start_again: Vec<Halt> },
    /// Interrupted after the switch: put the previous version and its data
    /// back, and gate it, expecting `version`. An operator's `rollback` that
    /// was interrupted is finished the same way (its row holds what it puts back).
    PutBack { backup: Option<PathBuf>, version: Option<String>, finishes_rollback: bool },
}

/// The recovery of an interrupted upgrade, from its journal row alone.
pub(crate) fn plan(record: &UpgradeRecord) -> Plan {
    if record.switched {
        let finishes_rollback = record.rollback_of().is_some();
        // A rollback's row runs from the newer version to the one it puts back.
        let version = if finishes_rollback { &record.to_version } else { &record.from_version };
        Plan::PutBack {
            backup: record.backup_path.as_ref().map(PathBuf::from),
            version: version.clone(),
            finishes_rollback,
        }
    } else {
        // What a fetch records before it tags or moves anything: its rollback point.
        Plan::MarkFailed {
            undo_fetch: record.previous_commit.is_some() || record.rollback_tag.is_some(),
            start_again: record.held.clone(),
        }
    }
}

/// Takes the lock (when free) and reconciles the unfinished upgrades last
/// touched more than `stale_after` ago; `None` when another upgrader holds it.
pub(crate) fn reconcile_if_unlocked(
    config: &Config,
    ui: &Ui,
    stale_after: Option<Duration>,
) -> Result<Option<Vec<Outcome>>> {
    if !config.db_path().exists() {
        return Ok(Some(Vec::new()));
    }
    let Ok(_lock) = Lock::acquire(&config.lock_path(), "recover") else { return Ok(None) };
    reconcile(config, ui, stale_after).map(Some)
}

/// The last update time (ms since the epoch) of an upgrade idle for at least `age` at `now`.
/// Saturates: `UPGRADERD_STALE_AFTER` may be any duration the parser accepts (up to
/// `u64::MAX` ms), and a huge one means "never stale", not an overflow or a wrap to "always".
fn stale_cutoff(now: i64, age: Duration) -> i64 {
    now.saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX))
}

/// Reconciles every unfinished upgrade; the caller holds the lock, so each is an orphan.
pub(crate) fn reconcile(config: &Config, ui: &Ui, stale_after: Option<Duration>) -> Result<Vec<Outcome>> {
    let mut db = Db::open(&config.db_path())?;
    // Outcomes the database could not take when their upgrades ended: those upgrades are not interrupted.
    for kept in unrecorded::record_kept(&mut db)? {
        ui.info(format!(
            "recorded the outcome `{}` of upgrade {} kept while the database could not take it",
            kept.status, kept.upgrade_id
        ));
    }
    let cutoff = stale_after.map(|age| stale_cutoff(now_ms(), age));
    let orphans: Vec<UpgradeRecord> = db
        .unfinished()?
        .into_iter()
        .filter(|r| cutoff.is_none_or(|cutoff| r.updated_at.unwrap_or(r.started_at) <= cutoff))
        .collect();
    drop(db);
    let mut outcomes = Vec::new();
    for record in orphans {
        ui.warn(format!(
            "upgrade {} was interrupted during {} (upgrader pid {}); recovering it",
            record.id,
            record.status,
            record.pid.map(|p| p.to_string()).unwrap_or_else(|| "?".into())
        ));
        let outcome = recover_one(config, ui, &record)?;
        after_terminal(config, ui, &outcome);
        outcomes.push(outcome);
    }
    Ok(outcomes)
}

fn recover_one(config: &Config, ui: &Ui, record: &UpgradeRecord) -> Result<Outcome> {
    // The gate a killed upgrader held compose at (compose died with it): its socket is all that is left.
    if let Err(e) = crate::engine::strategy::pull::remove_leftover_gate(&config.state_dir) {
        ui.warn(format!("could not remove the gate's socket left in {}: {e}", config.state_dir.display()));
    }
    let db = Db::open(&config.db_path())?;
    // A request from the app interrupted before its switch runs again under its id: telling the
    // app `failed` in between would read as the end of its upgrade.
    let runs_again = !record.switched && db.request_state(&record.id)? == Some(RequestState::Running);
    let to_version = record.to_version.clone().unwrap_or_else(|| "latest".into());
    let mut transaction = Transaction::resume(config, ui, db, &record.id, &to_version, !runs_again);
    let journal = &mut transaction.journal;
    journal.set_versions(record.from_version.as_deref(), &to_version);
    if let Some(upgrader) = record.pid.and_then(|pid| i32::try_from(pid).ok()) {
        end_left_running(upgrader, journal);
    }
    let plan = plan(record);
    let runner = deployment_runner(config, ui, false);
    let RollbackEnd { terminal, message, error } = match &plan {
        Plan::MarkFailed { undo_fetch, start_again } => {
            mark_failed(config, &runner, record, *undo_fetch, start_again, journal)
        }
        Plan::PutBack { backup, version, finishes_rollback } => {
            let restored = put_back(config, &runner, record, backup.as_deref(), version.clone(), journal)?;
            match restored {
                RollbackEnd { terminal: Terminal::RolledBack, error, .. } if *finishes_rollback => RollbackEnd {
                    terminal: Terminal::Complete,
                    message: "Rollback finished after upgraderd was interrupted",
                    error,
                },
                other => other,
            }
        }
    };
    if runner.engine_gone() {
        // Still unfinished: the next recovery, once the engine answers, takes it up again.
        return Err(journal.left_interrupted(&error));
    }
    // A finished rollback is complete, as it would have been uninterrupted; the interruption is in its log.
    let error = if terminal == Terminal::Complete {
        journal.log(&error);
        None
    } else {
        Some(error)
    };
    journal.finish(terminal, message, error.as_deref());
    let backup = record.backup_path.as_ref().map(PathBuf::from);
    Ok(Outcome {
        upgrade_id: record.id.clone(),
        terminal,
        from_version: record.from_version.clone(),
        to_version,
        error,
        backup,
    })
}

/// Ends what the killed upgrader's commands left running before recovery runs
/// compose itself: the compose plugin under a killed `docker compose` winds
/// down on its own for a moment, still stopping and removing containers, and
/// two composes on one project take each other's containers away.
fn end_left_running(upgrader: i32, journal: &mut Journal) {
    let left = left_running::find(upgrader);
    if left.is_empty() {
        return;
    }
    journal.log(&format!(
        "Waiting up to {} s for what the interrupted upgrader left running to end: {}",
        LEFT_RUNNING_PATIENCE.as_secs(),
        described(&left)
    ));
    let killed = left_running::end(&left, LEFT_RUNNING_PATIENCE);
    if killed.is_empty() {
        journal.log("It ended by itself");
    } else {
        journal.log(&format!("Killed what was still running: {}", described(&killed)));
    }
}

/// `pid 12 (docker-compose), pid 13 (sleep)`.
fn described(processes: &[LeftRunning]) -> String {
    processes.iter().map(|p| format!("pid {} ({})", p.pid, p.program)).collect::<Vec<_>>().join(", ")
}

fn mark_failed(
    config: &Config,
    runner: &Runner,
    record: &UpgradeRecord,
    undo_fetch: bool,
    start_again: &[Halt],
    journal: &mut Journal,
) -> RollbackEnd {
    remove_partial_backups(config, journal);
    let reason = format!("upgraderd stopped during {} before the new version was started", record.status);
    // Each part is tried whatever the others do: a service that will not start must not
    // leave the new version written into the project's files for the next `up` to start.
    let started = start_held_again(config, runner, record, start_again, journal);
    let undone = undo_before_switch(config, runner, record, undo_fetch, journal);
    match (started, undone) {
        (Ok(()), Ok(())) => RollbackEnd::failed(
            "Interrupted before the switch; nothing was changed",
            format!("{reason}; the running version and its data were not touched"),
        ),
        (Err(e), undone) => RollbackEnd::failed(
            "Interrupted before the switch; starting the stopped services again failed",
            format!(
                "{reason}; {e:#}; start them with {}{}",
                halt::start_commands(start_again),
                undone.err().map(|u| format!("; also, {u:#}")).unwrap_or_default()
            ),
        ),
        (Ok(()), Err(e)) => RollbackEnd::failed(
            "Interrupted before the switch; undoing the download failed",
            format!("{reason}; the running version was not touched, but {e:#}"),
        ),
    }
}

/// Starts again what the backup's final pass stopped; what still does not
/// run stays on record for the next recovery.
fn start_held_again(
    config: &Config,
    runner: &Runner,
    record: &UpgradeRecord,
    held: &[Halt],
    journal: &mut Journal,
) -> Result<()> {
    if held.is_empty() {
        return Ok(());
    }
    journal.log("Starting again the services the backup had stopped");
    let docker = Docker::new(&config.docker, runner.clone());
    data::start_containers(&docker, held, &[], config.start_timeout, &mut |l| journal.log(l))?;
    let _ = journal.db.record_held(&record.id, &[]);
    Ok(())
}

/// Puts back what the attempt changed before its switch: the pins it wrote
/// (journaled before they were written, whatever the strategy), and what its
/// fetch did (a moved tag or checkout, its rollback tags), each tried even
/// when the other fails.
fn undo_before_switch(
    config: &Config,
    runner: &Runner,
    record: &UpgradeRecord,
    undo_fetch: bool,
    journal: &mut Journal,
) -> Result<()> {
    let pins = pin::restore(journal, runner, &record.id);
    let fetch = match undo_fetch {
        true => strategy::resume(config, runner, record).and_then(|mut strategy| {
            let undone = strategy.undo_fetch(journal);
            strategy.discard(journal);
            undone
        }),
        false => Ok(()),
    };
    super::joined([pins, fetch])
}

fn put_back(
    config: &Config,
    runner: &Runner,
    record: &UpgradeRecord,
    backup: Option<&std::path::Path>,
    version: Option<String>,
    journal: &mut Journal,
) -> Result<RollbackEnd> {
    journal.report(Status::RollingBack, "Recovering an interrupted upgrade: putting the previous version back");
    let reason = format!("upgraderd stopped during {} after the switch", record.status);
    Ok(match strategy::resume(config, runner, record) {
        Ok(mut strategy) => restore_previous(config, runner, journal, strategy.as_mut(), backup, version, reason),
        Err(e) => RollbackEnd::failed(
            "Recovery failed",
            format!(
                "{reason}\nrecovery failed: {e:#}; the backup {} is intact: run `upgraderd rollback {}`",
                backup.map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()),
                record.id
            ),
        ),
    })
}

/// A backup cut off mid-write is never used; remove it so it does not fill the disk.
fn remove_partial_backups(config: &Config, journal: &mut Journal) {
    for path in backup::partial_archives(&config.backup_dir) {
        match backup::remove_partial(&path) {
            Ok(()) => journal.log(&format!("Removed the unfinished backup {}", path.display())),
            Err(e) => journal.log(&format!("Could not remove the unfinished backup {}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_huge_stale_after_never_makes_an_upgrade_stale_and_never_overflows() {
        let now = 1_800_000_000_000;
        assert_eq!(stale_cutoff(now, Duration::from_secs(60)), now - 60_000);
        for huge in [Duration::from_millis(1 << 63), Duration::from_millis(u64::MAX)] {
            let cutoff = stale_cutoff(now, huge);
            assert!(cutoff < 0, "{huge:?} gave {cutoff}: every upgrade would count as stale");
        }
    }

    #[test]
    fn before_the_switch_nothing_is_put_back_and_a_begun_fetch_is_undone() {
        let preflight = UpgradeRecord { status: Status::Preflight, ..Default::default() };
        assert_eq!(plan(&preflight), Plan::MarkFailed { undo_fetch: false, start_again: vec![] });
        let pull = UpgradeRecord {
            status: Status::Downloading,
            rollback_tag: Some("app:upgraderd-rollback-u".into()),
            ..Default::default()
        };
        assert_eq!(plan(&pull), Plan::MarkFailed { undo_fetch: true, start_again: vec![] });
        let rebuild =
            UpgradeRecord { status: Status::Downloading, previous_commit: Some("abc".into()), ..Default::default() };
        assert_eq!(plan(&rebuild), Plan::MarkFailed { undo_fetch: true, start_again: vec![] });
        let final_pass = UpgradeRecord {
            status: Status::BackingUp,
            rollback_tag: Some("app:upgraderd-rollback-u".into()),
            held: vec![Halt::Container("db-id".into()), Halt::Container("web-id".into())],
            ..Default::default()
        };
        assert_eq!(
            plan(&final_pass),
            Plan::MarkFailed {
                undo_fetch: true,
                start_again: vec![Halt::Container("db-id".into()), Halt::Container("web-id".into())]
            },
            "what the final pass stopped starts again"
        );
    }

    #[test]
    fn after_the_switch_the_previous_version_and_the_backup_go_back() {
        let switched = UpgradeRecord {
            status: Status::HealthCheck,
            switched: true,
            backup_path: Some("/b/u.tar.gz".into()),
            from_version: Some("1.0.0".into()),
            to_version: Some("2.0.0".into()),
            ..Default::default()
        };
        let put_back = |backup: Option<&str>, version: &str, finishes_rollback| Plan::PutBack {
            backup: backup.map(PathBuf::from),
            version: Some(version.into()),
            finishes_rollback,
        };
        assert_eq!(plan(&switched), put_back(Some("/b/u.tar.gz"), "1.0.0", false));
        let no_backup = UpgradeRecord { backup_path: None, ..switched.clone() };
        assert_eq!(plan(&no_backup), put_back(None, "1.0.0", false));
        // An operator's rollback from 2.0.0 to 1.0.0, killed half-way, is finished: 1.0.0 is what the gate expects.
        let rollback = UpgradeRecord {
            from_version: Some("2.0.0".into()),
            to_version: Some("1.0.0".into()),
            initiated_by: Some(crate::states::Initiator::RollbackOf("u0".into())),
            ..switched
        };
        assert_eq!(plan(&rollback), put_back(Some("/b/u.tar.gz"), "1.0.0", true));
    }
}
