//! Reconciles upgrades the journal shows unfinished while nobody holds the
//! lock: their upgrader was killed. Before the switch nothing running was
//! changed, so the row is marked `failed` and partial files are removed.
//! After the switch the previous image (or commit) and the backup are put
//! back and gated, ending `rolled_back`, or `failed` when even that fails.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use crate::config::Config;
use crate::engine::journal::Journal;
use crate::engine::pipeline::{self, after_terminal, restore_previous};
use crate::engine::{Outcome, Terminal};
use crate::ops::process::Runner;
use crate::store::backup;
use crate::store::db::{now_ms, Db, UpgradeRecord};
use crate::store::lock::Lock;
use crate::ui::Ui;

/// Takes the lock (when free) and reconciles the unfinished upgrades last
/// touched more than `stale_after` ago; `None` when another upgrader holds it.
pub fn reconcile_if_unlocked(config: &Config, ui: &Ui, stale_after: Option<Duration>) -> Result<Option<Vec<Outcome>>> {
    if !config.db_path().exists() {
        return Ok(Some(Vec::new()));
    }
    let Ok(_lock) = Lock::acquire(&config.lock_path(), "recover") else { return Ok(None) };
    reconcile(config, ui, stale_after).map(Some)
}

/// Reconciles every unfinished upgrade; the caller holds the lock, so each is an orphan.
pub fn reconcile(config: &Config, ui: &Ui, stale_after: Option<Duration>) -> Result<Vec<Outcome>> {
    let db = Db::open(&config.db_path())?;
    let cutoff = stale_after.map(|age| now_ms() - age.as_millis() as i64);
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
    let status_file = config.trigger_dir.as_ref().map(|d| d.join(&config.status_file));
    let to_version = record.to_version.clone().unwrap_or_else(|| "latest".into());
    let mut journal = Journal::new(Db::open(&config.db_path())?, &record.id, ui, status_file, &to_version);
    journal.set_versions(record.from_version.as_deref(), &to_version);
    let backup_path = record.backup_path.as_ref().map(PathBuf::from);
    let (terminal, message, error) = if !record.switched {
        remove_partial_backups(config, &mut journal);
        let reason = format!("upgraderd stopped during {} before the new version was started", record.status);
        match undo_fetch(config, record, &mut journal) {
            Ok(()) => (
                Terminal::Failed,
                "Interrupted before the switch; nothing was changed",
                format!("{reason}; the running version and its data were not touched"),
            ),
            Err(e) => (
                Terminal::Failed,
                "Interrupted before the switch; undoing the download failed",
                format!("{reason}; the running version was not touched, but {e:#}"),
            ),
        }
    } else {
        journal.step("rolling_back", 90, "Recovering an interrupted upgrade: putting the previous version back")?;
        let reason = format!("upgraderd stopped during {} after the switch", record.status);
        let runner = Runner::new(false);
        match pipeline::resume_strategy(config, &runner, record) {
            Ok(mut strategy) => restore_previous(
                config,
                &runner,
                &mut journal,
                strategy.as_mut(),
                backup_path.as_deref(),
                record.from_version.clone(),
                reason,
            ),
            Err(e) => (
                Terminal::Failed,
                "Recovery failed",
                format!(
                    "{reason}\nrecovery failed: {e:#}; the backup {} is intact: run `upgraderd rollback {}`",
                    backup_path.as_ref().map(|p| p.display().to_string()).unwrap_or_else(|| "(none)".into()),
                    record.id
                ),
            ),
        }
    };
    journal.finish(terminal.as_str(), message, Some(&error))?;
    Ok(Outcome {
        upgrade_id: record.id.clone(),
        terminal,
        from_version: record.from_version.clone(),
        to_version,
        error: Some(error),
        backup: backup_path,
    })
}

/// A rebuild may have moved its checkout before it was killed: move it back.
fn undo_fetch(config: &Config, record: &UpgradeRecord, journal: &mut Journal) -> Result<()> {
    if record.previous_commit.is_none() {
        // Nothing but images was fetched (pull), or the fetch never began.
        return Ok(());
    }
    let runner = Runner::new(false);
    let mut strategy = pipeline::resume_strategy(config, &runner, record)?;
    strategy.undo_fetch(journal)
}

/// A backup cut off mid-write is never used; remove it so it does not fill the disk.
fn remove_partial_backups(config: &Config, journal: &mut Journal) {
    for path in backup::partial_archives(&config.backup_dir) {
        match std::fs::remove_file(&path) {
            Ok(()) => journal.log(&format!("Removed the unfinished backup {}", path.display())),
            Err(e) => journal.log(&format!("Could not remove the unfinished backup {}: {e}", path.display())),
        }
    }
}
