//! The state database: SQLite in the state dir, WAL, a busy timeout, and a
//! schema versioned by `PRAGMA user_version` with forward-only migrations.
//!
//! `upgrade_history` keeps the reference columns plus what rollback needs;
//! `upgrade_events` is the journal, written before each side effect;
//! `requests` records every upgrade request before its trigger is removed.
//! A database that is locked, read-only or corrupt is reported, never
//! deleted or overwritten.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use rusqlite::types::{FromSql, FromSqlError, FromSqlResult, ToSql, ToSqlOutput, ValueRef};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row};
use serde::Serialize;

use crate::states::{RequestState, Status, Strategy, Terminal};

/// Forward-only migrations; index + 1 is the schema version they produce.
/// Never edit a released entry: add a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE upgrade_history (
        id                  TEXT PRIMARY KEY,
        fromVersion         TEXT,
        toVersion           TEXT,
        deploymentMethod    TEXT NOT NULL DEFAULT 'docker-compose',
        status              TEXT NOT NULL,
        progress            INTEGER NOT NULL DEFAULT 0,
        currentStep         TEXT,
        logs                TEXT NOT NULL DEFAULT '[]',
        backupPath          TEXT,
        startedAt           INTEGER NOT NULL,
        completedAt         INTEGER,
        initiatedBy         TEXT,
        errorMessage        TEXT,
        rollbackAvailable   INTEGER NOT NULL DEFAULT 0,
        strategy            TEXT NOT NULL DEFAULT 'pull',
        updatedAt           INTEGER,
        pid                 INTEGER,
        switched            INTEGER NOT NULL DEFAULT 0,
        container           TEXT,
        service             TEXT,
        composeProject      TEXT,
        imageRef            TEXT,
        previousImageId     TEXT,
        previousDigest      TEXT,
        rollbackTag         TEXT,
        newImageId          TEXT,
        newDigest           TEXT,
        previousCommit      TEXT,
        targetCommit        TEXT
    );
    CREATE INDEX upgrade_history_startedAt ON upgrade_history(startedAt);
    CREATE TABLE upgrade_events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        upgradeId   TEXT NOT NULL REFERENCES upgrade_history(id),
        at          INTEGER NOT NULL,
        status      TEXT NOT NULL,
        progress    INTEGER NOT NULL,
        message     TEXT NOT NULL
    );
    CREATE INDEX upgrade_events_upgrade ON upgrade_events(upgradeId, seq);
    CREATE TABLE requests (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        upgradeId   TEXT NOT NULL UNIQUE,
        version     TEXT NOT NULL,
        backup      INTEGER NOT NULL DEFAULT 1,
        force       INTEGER NOT NULL DEFAULT 0,
        source      TEXT NOT NULL,
        raw         TEXT,
        receivedAt  INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'queued',
        reason      TEXT
    );
    "#,
    // 2: rebuild upgrades: the images kept for rollback, and commit subjects for history.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN rollbackImages TEXT;
    ALTER TABLE upgrade_history ADD COLUMN previousSubject TEXT;
    ALTER TABLE upgrade_history ADD COLUMN targetSubject TEXT;
    "#,
];

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}

/// Milliseconds since the epoch, the unit of every timestamp column.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// An open state database.
#[derive(Debug)]
pub struct Db {
    conn: Connection,
    path: PathBuf,
}

/// One row of `requests`: what a trigger asked for, and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct QueuedRequest {
    pub upgrade_id: String,
    pub version: String,
    pub backup: bool,
    pub force: bool,
    /// `trigger`, `check-version`, …
    pub source: String,
    /// The trigger's text (capped), for the record.
    pub raw: Option<String>,
    pub received_at: i64,
    pub state: RequestState,
    pub reason: Option<String>,
}

impl QueuedRequest {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<QueuedRequest> {
        Ok(QueuedRequest {
            upgrade_id: row.get(0)?,
            version: row.get(1)?,
            backup: row.get(2)?,
            force: row.get(3)?,
            source: row.get(4)?,
            raw: row.get(5)?,
            received_at: row.get(6)?,
            state: row.get(7)?,
            reason: row.get(8)?,
        })
    }
}

/// One row of `upgrade_history`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct UpgradeRecord {
    #[serde(rename = "upgradeId")]
    pub id: String,
    pub from_version: Option<String>,
    pub to_version: Option<String>,
    pub deployment_method: String,
    pub status: Status,
    pub progress: i64,
    pub current_step: Option<String>,
    pub logs: Vec<String>,
    pub backup_path: Option<String>,
    pub started_at: i64,
    pub completed_at: Option<i64>,
    pub initiated_by: Option<String>,
    pub error_message: Option<String>,
    pub rollback_available: bool,
    pub strategy: Strategy,
    pub updated_at: Option<i64>,
    pub pid: Option<i64>,
    pub switched: bool,
    pub container: Option<String>,
    pub service: Option<String>,
    pub compose_project: Option<String>,
    pub image_ref: Option<String>,
    pub previous_image_id: Option<String>,
    pub previous_digest: Option<String>,
    pub rollback_tag: Option<String>,
    pub new_image_id: Option<String>,
    pub new_digest: Option<String>,
    pub previous_commit: Option<String>,
    pub target_commit: Option<String>,
    /// Rebuild: JSON list of `{name, id}`, the images the services ran before.
    pub rollback_images: Option<String>,
    pub previous_subject: Option<String>,
    pub target_subject: Option<String>,
}

const RECORD_COLUMNS: &str = "id, fromVersion, toVersion, deploymentMethod, status, progress, currentStep, logs, \
    backupPath, startedAt, completedAt, initiatedBy, errorMessage, rollbackAvailable, strategy, updatedAt, pid, \
    switched, container, service, composeProject, imageRef, previousImageId, previousDigest, rollbackTag, \
    newImageId, newDigest, previousCommit, targetCommit, rollbackImages, previousSubject, targetSubject";

impl UpgradeRecord {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<UpgradeRecord> {
        let logs: String = row.get(7)?;
        Ok(UpgradeRecord {
            id: row.get(0)?,
            from_version: row.get(1)?,
            to_version: row.get(2)?,
            deployment_method: row.get(3)?,
            status: row.get(4)?,
            progress: row.get(5)?,
            current_step: row.get(6)?,
            logs: serde_json::from_str(&logs).unwrap_or_else(|_| vec![logs]),
            backup_path: row.get(8)?,
            started_at: row.get(9)?,
            completed_at: row.get(10)?,
            initiated_by: row.get(11)?,
            error_message: row.get(12)?,
            rollback_available: row.get(13)?,
            strategy: row.get(14)?,
            updated_at: row.get(15)?,
            pid: row.get(16)?,
            switched: row.get(17)?,
            container: row.get(18)?,
            service: row.get(19)?,
            compose_project: row.get(20)?,
            image_ref: row.get(21)?,
            previous_image_id: row.get(22)?,
            previous_digest: row.get(23)?,
            rollback_tag: row.get(24)?,
            new_image_id: row.get(25)?,
            new_digest: row.get(26)?,
            previous_commit: row.get(27)?,
            target_commit: row.get(28)?,
            rollback_images: row.get(29)?,
            previous_subject: row.get(30)?,
            target_subject: row.get(31)?,
        })
    }

    /// Whether the upgrade reached one of the three terminal states.
    pub fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }
}

/// One journal entry.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub seq: i64,
    pub at: i64,
    pub status: Status,
    pub progress: i64,
    pub message: String,
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
    pub fn in_memory() -> Result<Db> {
        let path = PathBuf::from(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| explain(&path, e))?;
        let mut db = Db { conn, path };
        db.migrate()?;
        Ok(db)
    }

    /// Opens an existing database for reading only; `None` when there is none yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Db>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
                .map_err(|e| explain(path, e))?;
        let db = Db { conn, path: path.to_path_buf() };
        let version = db.user_version()?;
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

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn configure(&mut self, read_only: bool) -> Result<()> {
        self.conn.busy_timeout(Duration::from_secs(5)).map_err(|e| explain(&self.path, e))?;
        if !read_only {
            self.conn
                .query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))
                .map_err(|e| explain(&self.path, e))?;
            self.conn
                .execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;")
                .map_err(|e| explain(&self.path, e))?;
        }
        Ok(())
    }

    /// The schema version the file is at.
    pub fn user_version(&self) -> Result<i64> {
        self.conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(|e| explain(&self.path, e))
    }

    fn migrate(&mut self) -> Result<()> {
        let current = self.user_version()?;
        if current > schema_version() {
            return Err(newer_schema(&self.path, current));
        }
        for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
            let version = index as i64 + 1;
            let tx = self.conn.transaction().map_err(|e| explain(&self.path, e))?;
            tx.execute_batch(sql)
                .and_then(|_| tx.execute_batch(&format!("PRAGMA user_version = {version}")))
                .and_then(|_| tx.commit())
                .map_err(|e| explain(&self.path, e))
                .with_context(|| format!("migrating the state database to schema {version}"))?;
        }
        Ok(())
    }

    /// Upgrades, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<UpgradeRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM upgrade_history ORDER BY startedAt DESC, rowid DESC LIMIT ?1");
        self.query_records(&sql, params![limit as i64])
    }

    pub fn get(&self, id: &str) -> Result<Option<UpgradeRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE id = ?1");
        Ok(self.query_records(&sql, params![id])?.pop())
    }

    /// The newest upgrade with this status.
    pub fn latest_with_status(&self, status: Status) -> Result<Option<UpgradeRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE status = ?1 ORDER BY startedAt DESC, rowid DESC LIMIT 1"
        );
        Ok(self.query_records(&sql, params![status])?.pop())
    }

    /// Upgrades not in a terminal state (interrupted or still running).
    pub fn unfinished(&self) -> Result<Vec<UpgradeRecord>> {
        let sql =
            format!("SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE status NOT IN (?1, ?2, ?3) ORDER BY startedAt");
        self.query_records(&sql, params![Status::Complete, Status::RolledBack, Status::Failed])
    }

    /// Versions rolled back on this host with no complete upgrade to them since
    /// (a leading `v` dropped): an automatic upgrade skips them.
    pub fn quarantined_versions(&self) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT r.toVersion FROM upgrade_history r WHERE r.status = ?1 AND r.toVersion IS NOT NULL \
                 AND NOT EXISTS (SELECT 1 FROM upgrade_history c WHERE c.status = ?2 AND c.toVersion = r.toVersion \
                 AND c.startedAt > r.startedAt)",
            )
            .map_err(|e| explain(&self.path, e))?;
        let versions = stmt
            .query_map(params![Status::RolledBack, Status::Complete], |r| r.get::<_, String>(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| explain(&self.path, e))?;
        Ok(versions.into_iter().map(|v| v.strip_prefix('v').unwrap_or(&v).to_string()).collect())
    }

    fn query_records(&self, sql: &str, params: impl rusqlite::Params) -> Result<Vec<UpgradeRecord>> {
        let mut stmt = self.conn.prepare(sql).map_err(|e| explain(&self.path, e))?;
        let rows = stmt.query_map(params, UpgradeRecord::from_row).map_err(|e| explain(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| explain(&self.path, e))
    }

    /// The journal of one upgrade, oldest first.
    pub fn events(&self, upgrade_id: &str) -> Result<Vec<Event>> {
        let mut stmt = self
            .conn
            .prepare("SELECT seq, at, status, progress, message FROM upgrade_events WHERE upgradeId = ?1 ORDER BY seq")
            .map_err(|e| explain(&self.path, e))?;
        let rows = stmt
            .query_map(params![upgrade_id], |r| {
                Ok(Event { seq: r.get(0)?, at: r.get(1)?, status: r.get(2)?, progress: r.get(3)?, message: r.get(4)? })
            })
            .map_err(|e| explain(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| explain(&self.path, e))
    }

    /// Inserts a new upgrade row.
    pub fn insert_upgrade(&self, record: &UpgradeRecord) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO upgrade_history (id, fromVersion, toVersion, deploymentMethod, status, progress, currentStep, \
                 logs, startedAt, initiatedBy, strategy, updatedAt, pid, container, service, composeProject, imageRef) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?9, ?12, ?13, ?14, ?15, ?16)",
                params![
                    record.id,
                    record.from_version,
                    record.to_version,
                    record.deployment_method,
                    record.status,
                    record.progress,
                    record.current_step,
                    serde_json::to_string(&record.logs)?,
                    record.started_at,
                    record.initiated_by,
                    record.strategy,
                    record.pid,
                    record.container,
                    record.service,
                    record.compose_project,
                    record.image_ref,
                ],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(())
    }

    /// Reopens an upgrade that was interrupted before its switch, to run it again
    /// under the same id (its events keep the interruption).
    pub fn reopen_upgrade(&self, upgrade_id: &str, pid: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE upgrade_history SET status = ?4, progress = 0, completedAt = NULL, errorMessage = NULL, \
                 pid = ?2, updatedAt = ?3 WHERE id = ?1 AND switched = 0",
                params![upgrade_id, pid, now_ms(), Status::Pending],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(())
    }

    /// Journals a transition: the event and the row's status, in one transaction.
    pub fn transition(&mut self, upgrade_id: &str, status: Status, message: &str) -> Result<()> {
        let now = now_ms();
        let progress = status.progress();
        let tx = self.conn.transaction().map_err(|e| explain(&self.path, e))?;
        tx.execute(
            "INSERT INTO upgrade_events (upgradeId, at, status, progress, message) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![upgrade_id, now, status, progress, message],
        )
        .and_then(|_| {
            tx.execute(
                "UPDATE upgrade_history SET status = ?2, progress = ?3, currentStep = ?4, updatedAt = ?5, \
                 logs = json_insert(logs, '$[#]', ?4) WHERE id = ?1",
                params![upgrade_id, status, progress, message, now],
            )
        })
        .and_then(|_| tx.commit())
        .map_err(|e| explain(&self.path, e))
    }

    /// What preflight found: the running version and where it runs.
    pub fn record_deployment(&self, upgrade_id: &str, deployment: &DeploymentRecord) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[
                ("fromVersion", deployment.from_version.clone().into()),
                ("container", deployment.container.clone().into()),
                ("service", deployment.service.clone().into()),
                ("composeProject", deployment.compose_project.clone().into()),
            ],
        )
    }

    /// The backup a rollback restores.
    pub fn record_backup(&self, upgrade_id: &str, path: &Path) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[("backupPath", path.display().to_string().into()), ("rollbackAvailable", true.into())],
        )
    }

    /// Pull: the image the service ran, kept under the rollback tag, and the reference that moves.
    pub fn record_previous_image(
        &self,
        upgrade_id: &str,
        image_id: &str,
        rollback_tag: &str,
        image_ref: &str,
    ) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[
                ("previousImageId", image_id.to_string().into()),
                ("rollbackTag", rollback_tag.to_string().into()),
                ("imageRef", image_ref.to_string().into()),
            ],
        )
    }

    /// Pull: the image the upgrade fetched.
    pub fn record_new_image(&self, upgrade_id: &str, image_id: &str, digest: Option<&str>) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[("newImageId", image_id.to_string().into()), ("newDigest", digest.map(str::to_string).into())],
        )
    }

    /// Rebuild: the commits moved between and the images kept for a rollback.
    pub fn record_commits(&self, upgrade_id: &str, commits: &CommitsRecord) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[
                ("previousCommit", commits.previous.clone().into()),
                ("targetCommit", commits.target.clone().into()),
                ("previousSubject", commits.previous_subject.clone().into()),
                ("targetSubject", commits.target_subject.clone().into()),
                ("rollbackImages", commits.rollback_images_json.clone().into()),
            ],
        )
    }

    /// Written before the switch: from here on an interruption is rolled back, never abandoned.
    pub fn mark_switched(&self, upgrade_id: &str, to_version: &str) -> Result<()> {
        self.set_fields(upgrade_id, &[("toVersion", to_version.to_string().into()), ("switched", true.into())])
    }

    /// A log line that is not a transition.
    pub fn append_log(&self, upgrade_id: &str, message: &str) -> Result<()> {
        self.conn
            .execute(
                "UPDATE upgrade_history SET logs = json_insert(logs, '$[#]', ?2), updatedAt = ?3 WHERE id = ?1",
                params![upgrade_id, message, now_ms()],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(())
    }

    /// Sets named columns of an upgrade row (names come from code, never from input).
    fn set_fields(&self, upgrade_id: &str, fields: &[(&'static str, rusqlite::types::Value)]) -> Result<()> {
        for (column, _) in fields {
            debug_assert!(RECORD_COLUMNS.split(", ").any(|c| c.trim() == *column), "unknown column {column}");
        }
        let assignments: Vec<String> =
            fields.iter().enumerate().map(|(i, (c, _))| format!("{c} = ?{}", i + 2)).collect();
        let sql = format!("UPDATE upgrade_history SET {} WHERE id = ?1", assignments.join(", "));
        let mut values: Vec<rusqlite::types::Value> = vec![upgrade_id.to_string().into()];
        values.extend(fields.iter().map(|(_, v)| v.clone()));
        self.conn.execute(&sql, rusqlite::params_from_iter(values)).map_err(|e| explain(&self.path, e))?;
        Ok(())
    }

    /// Marks an upgrade terminal: status, completion time, error.
    pub fn finish(&mut self, upgrade_id: &str, terminal: Terminal, message: &str, error: Option<&str>) -> Result<()> {
        self.transition(upgrade_id, terminal.status(), message)?;
        self.set_fields(
            upgrade_id,
            &[("completedAt", now_ms().into()), ("errorMessage", error.map(str::to_string).into())],
        )
    }

    /// Updates the heartbeat of a running upgrade.
    pub fn heartbeat(&self, upgrade_id: &str) -> Result<()> {
        self.set_fields(upgrade_id, &[("updatedAt", now_ms().into())])
    }

    /// Records a request from a trigger; `false` when its upgrade id was seen before (a duplicate).
    pub fn insert_request(&self, request: &QueuedRequest) -> Result<bool> {
        let inserted = self
            .conn
            .execute(
                "INSERT OR IGNORE INTO requests (upgradeId, version, backup, force, source, raw, receivedAt, state, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    request.upgrade_id,
                    request.version,
                    request.backup,
                    request.force,
                    request.source,
                    request.raw,
                    request.received_at,
                    request.state,
                    request.reason
                ],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(inserted == 1)
    }

    /// The oldest request still waiting for its upgrade.
    pub fn next_queued(&self) -> Result<Option<QueuedRequest>> {
        self.conn
            .query_row(
                "SELECT upgradeId, version, backup, force, source, raw, receivedAt, state, reason FROM requests \
                 WHERE state = ?1 ORDER BY id LIMIT 1",
                [RequestState::Queued],
                QueuedRequest::from_row,
            )
            .optional()
            .map_err(|e| explain(&self.path, e))
    }

    /// Whether a request is waiting or running.
    pub fn has_pending_request(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM requests WHERE state IN (?1, ?2))",
                [RequestState::Queued, RequestState::Running],
                |r| r.get(0),
            )
            .map_err(|e| explain(&self.path, e))
    }

    /// Every request, oldest first (for `status` and tests).
    pub fn requests(&self) -> Result<Vec<QueuedRequest>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT upgradeId, version, backup, force, source, raw, receivedAt, state, reason FROM requests ORDER BY id",
            )
            .map_err(|e| explain(&self.path, e))?;
        let rows = stmt.query_map([], QueuedRequest::from_row).map_err(|e| explain(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| explain(&self.path, e))
    }

    /// Moves a request along: `queued` → `running` → `done` (or back to `queued`).
    pub fn set_request_state(&self, upgrade_id: &str, state: RequestState, reason: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE requests SET state = ?2, reason = ?3 WHERE upgradeId = ?1",
                params![upgrade_id, state, reason],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(())
    }

    /// The backup of the last complete upgrade, which retention never deletes.
    pub fn protected_backup(&self) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT backupPath FROM upgrade_history WHERE status = ?1 AND backupPath IS NOT NULL \
                 ORDER BY startedAt DESC, rowid DESC LIMIT 1",
                [Status::Complete],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| explain(&self.path, e))
    }
}

/// What preflight records about the deployment an upgrade works on.
#[derive(Debug, Clone, Default)]
pub struct DeploymentRecord {
    pub from_version: Option<String>,
    pub container: Option<String>,
    pub service: Option<String>,
    pub compose_project: Option<String>,
}

/// What a rebuild records before it moves the checkout.
#[derive(Debug, Clone, Default)]
pub struct CommitsRecord {
    pub previous: String,
    pub target: String,
    pub previous_subject: String,
    pub target_subject: String,
    /// JSON list of `{name, id}`: the images the built services ran.
    pub rollback_images_json: String,
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
}
