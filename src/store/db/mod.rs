//! The state database: SQLite in the state dir, a rollback journal, a busy timeout, and a
//! schema versioned by `PRAGMA user_version` with forward-only migrations.
//!
//! `upgrade_history` keeps the reference columns plus what rollback needs;
//! `upgrade_events` is the journal, written before each side effect;
//! `requests` records every upgrade request before its trigger is removed.
//! A database that is locked, read-only or corrupt is reported, never
//! deleted or overwritten.

mod history;
mod requests;
mod schema;
pub(crate) mod unrecorded;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, TransactionBehavior};

pub use self::history::UpgradeRecord;
pub(crate) use self::history::{CommitsRecord, DeploymentRecord, Event};
pub(crate) use self::requests::QueuedRequest;
pub use self::schema::schema_version;
use self::schema::MIGRATIONS;
use crate::states::{Initiator, RequestState, Status, Strategy};

/// Milliseconds since the epoch, the unit of every timestamp column.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An open state database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database read-write and migrates it.
    pub fn open(path: &Path) -> Result<Db> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| explain(path, e))?;
        let mut db = Db { conn, path: path.to_path_buf() };
        db.configure(false)?;
        db.migrate()?;
        Ok(db)
    }

    /// A database that lives only as long as the value: what a dry run journals into, so it leaves nothing behind.
    pub(crate) fn in_memory() -> Result<Db> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| explain(&path, e))?;
        let mut db = Db { conn, path };
        db.migrate()?;
        Ok(db)
    }

    /// Opens an existing database for reading only; `None` when there is none yet.
    pub(crate) fn open_read_only(path: &Path) -> Result<Option<Db>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| explain(path, e))?;
        let mut db = Db { conn, path: path.to_path_buf() };
        db.configure(true)?;
        let version = match db.user_version_raw() {
            Ok(version) => version,
            // A writer killed mid-transaction left a hot journal: only a read-write
            // connection may roll it back before anything can be read.
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ReadOnly) => {
                drop(db);
                return Db::open(path).map(Some);
            }
            Err(e) => return Err(explain(path, e)),
        };
        if version > schema_version() {
            return Err(newer_schema(path, version));
        }
        if version < schema_version() {
            // An older schema is upgraded by the next command that writes; reading it
            // through today's queries would fail, so migrate now when we can write.
            drop(db);
            return Db::open(path).map(Some);
        }
        Ok(Some(db))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self, read_only: bool) -> Result<()> {
        self.conn.busy_timeout(Duration::from_secs(5)).map_err(|e| explain(&self.path, e))?;
        if !read_only {
            // A rollback journal, not WAL: WAL maps a shared-memory file, and touching that
            // mapping on a full or immutable state filesystem kills the process with SIGBUS
            // instead of returning an error the engine can act on.
            self.conn
                .query_row("PRAGMA journal_mode=DELETE", [], |r| r.get::<_, String>(0))
                .map_err(|e| explain(&self.path, e))?;
            self.conn
                .execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
                .map_err(|e| explain(&self.path, e))?;
        }
        Ok(())
    }

    fn user_version_raw(&self) -> rusqlite::Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0))
    }

    /// The schema version the file is at.
    pub fn user_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| explain(&self.path, e))
    }

    fn migrate(&mut self) -> Result<()> {
        if self.user_version()? == schema_version() {
            return Ok(());
        }
        // Under the write lock, and the version read again under it: two processes opening a
        // new or older database at once (an upgrader, and `history` polling it) would otherwise
        // both migrate from the version each read first, and the second fail on the first's tables.
        let path = self.path.clone();
        let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(|e| explain(&path, e))?;
        let current: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| explain(&path, e))?;
        if current > schema_version() {
            return Err(newer_schema(&path, current));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {version}")))
                .map_err(|e| explain(&path, e))
                .with_context(|| format!("migrating the state database to schema {version}"))?;
        }
        tx.commit().map_err(|e| explain(&path, e))
    }
}

/// The states are stored by their wire names.
macro_rules! stored_by_name {
    ($($state:ty),*) => {$(
        impl ToSql for $state {
            fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
                Ok(ToSqlOutput::from(self.as_str()))
            }
        }
        impl FromSql for $state {
            fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
                let text = value.as_str()?;
                <$state>::parse(text).ok_or_else(|| {
                    FromSqlError::Other(format!("unknown {} `{text}`", stringify!($state).to_lowercase()).into())
                })
            }
        }
    )*};
}

stored_by_name!(Status, RequestState, Strategy);

impl ToSql for Initiator {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::from(self.to_string()))
    }
}

impl FromSql for Initiator {
    fn column_result(value: ValueRef<'_>) -> FromSqlResult<Self> {
        value.as_str().map(Initiator::parse)
    }
}
fn newer_schema(path: &Path, version: i64) -> anyhow::Error {
    anyhow!(
        "state database {} has schema {version}, newer than this upgraderd understands ({}); \
         run the upgraderd that wrote it, or a newer one",
        path.display(),
        schema_version()
    )
}

/// Turns SQLite's terse errors into ones that name the file and what to do.
fn explain(path: &Path, err: rusqlite::Error) -> anyhow::Error {
    use rusqlite::ErrorCode::*;
    let what = match err.sqlite_error_code() {
        Some(DatabaseBusy) | Some(DatabaseLocked) => {
            "is locked by another process; if no other upgraderd is running, check for a stuck `sqlite3` session on it"
        }
        Some(ReadOnly) => "is read-only; upgraderd needs to write it (check the filesystem and the file's permissions)",
        Some(NotADatabase) | Some(DatabaseCorrupt) => {
            "is not a valid SQLite database (corrupt?); it was left untouched: move it aside to start a fresh history, or restore it from a copy"
        }
        Some(CannotOpen) => "cannot be opened; check that the state directory exists and is writable",
        Some(PermissionDenied) => "cannot be accessed: permission denied",
        Some(DiskFull) => "cannot be written: the disk is full",
        _ => "",
    };
    if what.is_empty() {
        anyhow!("state database {}: {err}", path.display())
    } else {
        anyhow!("state database {} {what} ({err})", path.display())
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::Terminal;

    fn record(id: &str, started_at: i64) -> UpgradeRecord {
        UpgradeRecord {
            id: id.into(),
            from_version: Some("1.0.0".into()),
            to_version: Some("2.0.0".into()),
            deployment_method: "docker-compose".into(),
            status: Status::Pending,
            started_at,
            strategy: Strategy::Pull,
            ..UpgradeRecord::default()
        }
    }

    #[test]
    fn journal_transitions_update_the_row_and_logs() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        db.insert_upgrade(&record("u1", 1)).unwrap();
        db.transition("u1", Status::BackingUp, "Creating backup").unwrap();
        db.finish("u1", Terminal::Complete, "Upgrade complete", None).unwrap();
        let row = db.get("u1").unwrap().unwrap();
        assert_eq!(row.status, Status::Complete);
        assert_eq!(row.progress, 100);
        assert_eq!(row.logs, vec!["Creating backup", "Upgrade complete"]);
        assert!(row.completed_at.is_some());
        let events = db.events("u1").unwrap();
        assert_eq!(events.iter().map(|e| e.status).collect::<Vec<_>>(), vec![Status::BackingUp, Status::Complete]);
    }

    #[test]
    fn history_is_newest_first_and_unfinished_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        db.insert_upgrade(&record("old", 1)).unwrap();
        db.insert_upgrade(&record("new", 2)).unwrap();
        db.finish("old", Terminal::Complete, "done", None).unwrap();
        let ids: Vec<_> = db.history(10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["new", "old"]);
        assert_eq!(db.unfinished().unwrap().len(), 1);
        assert_eq!(db.latest_with_status(Status::Complete).unwrap().unwrap().id, "old");
    }

    #[test]
    fn reopening_is_idempotent_and_newer_schemas_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        drop(Db::open(&path).unwrap());
        drop(Db::open(&path).unwrap());
        Connection::open(&path).unwrap().execute_batch("PRAGMA user_version = 999").unwrap();
        let err = Db::open(&path).unwrap_err().to_string();
        assert!(err.contains("schema 999, newer than this upgraderd understands"), "{err}");
    }

    #[test]
    fn a_new_database_opened_by_many_at_once_is_migrated_once() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("s.db");
            let start = std::sync::Barrier::new(6);
            std::thread::scope(|scope| {
                let opened: Vec<_> = (0..6)
                    .map(|_| {
                        scope.spawn(|| {
                            start.wait();
                            Db::open(&path).map(|db| db.user_version().unwrap()).map_err(|e| format!("{e:#}"))
                        })
                    })
                    .collect();
                for opened in opened {
                    assert_eq!(opened.join().unwrap(), Ok(schema_version()));
                }
            });
        }
    }
}
