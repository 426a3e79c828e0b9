//! The shell every attempt runs in, set up in one place: the state
//! directory, the lock (a dry run takes none and only waits on one held), the
//! attempt's id, the state database (in memory for a dry run), the room kept
//! in reserve so an outcome can be recorded on a full disk, the status file
//! the app reads, and the journal over them. The upgrade, the operator's
//! rollback and the recovery of an interrupted attempt all open one; how the
//! attempt ends (terminal, or left interrupted for recovery) is theirs.

use anyhow::{Context, Result};

use crate::config::Config;
use crate::engine::journal::{keep_room, Journal};
use crate::engine::{new_upgrade_id, status, DRY_RUN_ID};
use crate::store::db::Db;
use crate::store::files;
use crate::store::lock::Lock;
use crate::ui::Ui;

/// An attempt's set-up: hold it for as long as the attempt runs (it holds the lock).
pub(crate) struct Transaction<'ui> {
    pub journal: Journal<'ui>,
    /// Released when the transaction is dropped; `None` for a dry run, or where the caller holds it.
    _lock: Option<Lock>,
}

/// What an attempt is, for its set-up.
pub(crate) struct Begin<'a> {
    /// How the lock names its holder: `upgrade --to 2.0.0`, `rollback ID`.
    pub command: String,
    pub dry_run: bool,
    /// The id the attempt runs under: the app's, or a new one.
    pub upgrade_id: Option<String>,
    /// The version it goes to, as the status file says it first.
    pub to_version: &'a str,
}

impl<'ui> Transaction<'ui> {
    /// Opens a new attempt: a real one creates the state directory, takes the
    /// lock and, holding it, runs `while_locked` before anything is written
    /// for the attempt (the upgrade recovers orphans there).
    pub(crate) fn begin(
        config: &Config,
        ui: &'ui Ui,
        begin: Begin<'_>,
        while_locked: impl FnOnce() -> Result<()>,
    ) -> Result<Transaction<'ui>> {
        // A dry run leaves nothing behind and names no id: it creates neither the state
        // directory nor the lock file (without one no upgrade runs here), and its plan
        // says UPGRADE_ID where the real attempt's id will go.
        if begin.dry_run {
            let lock = Lock::acquire_if_present(&config.lock_path(), &format!("{} --dry-run", begin.command))?;
            let journal = Journal::new(Db::in_memory()?, DRY_RUN_ID, ui, None, begin.to_version);
            return Ok(Transaction { journal, _lock: lock });
        }
        files::ensure_private_dir(&config.state_dir)
            .with_context(|| format!("cannot create the state directory {}", config.state_dir.display()))?;
        let mut lock = Lock::acquire(&config.lock_path(), &begin.command)?;
        let upgrade_id = begin.upgrade_id.unwrap_or_else(new_upgrade_id);
        lock.set_upgrade(&upgrade_id)?;
        while_locked()?;
        let db = Db::open(&config.db_path())?;
        let journal = Journal::new(db, &upgrade_id, ui, status::open_status_file(config, ui), begin.to_version)
            .with_reserve(keep_room(config, ui));
        Ok(Transaction { journal, _lock: Some(lock) })
    }

    /// Takes up an interrupted attempt under its own id; the caller holds the lock.
    /// `tell_app`: whether its status file is written (not for a request that runs again).
    pub(crate) fn resume(
        config: &Config,
        ui: &'ui Ui,
        db: Db,
        upgrade_id: &str,
        to_version: &str,
        tell_app: bool,
    ) -> Transaction<'ui> {
        let status_file = if tell_app { status::open_status_file(config, ui) } else { None };
        let journal = Journal::new(db, upgrade_id, ui, status_file, to_version).with_reserve(keep_room(config, ui));
        Transaction { journal, _lock: None }
    }
}
