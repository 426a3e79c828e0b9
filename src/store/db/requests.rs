//! `requests`: every upgrade request (a trigger, an automatic check) recorded
//! before its trigger is removed, and what became of it.

use anyhow::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use super::{explain, Db};
use crate::states::{Initiator, RequestState};

/// One row of `requests`: what a trigger asked for, and what became of it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueuedRequest {
    pub upgrade_id: String,
    pub version: String,
    pub backup: bool,
    pub force: bool,
    /// Who asked: the app's trigger, or the daemon's version check.
    pub source: Initiator,
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

impl Db {
    /// Records a request from a trigger; `false` when its upgrade id was seen before (a duplicate).
    pub(crate) fn insert_request(&self, request: &QueuedRequest) -> Result<bool> {
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

    /// The state of the request behind an upgrade, when one (a trigger, a check) asked for it.
    pub(crate) fn request_state(&self, upgrade_id: &str) -> Result<Option<RequestState>> {
        self.conn
            .query_row("SELECT state FROM requests WHERE upgradeId = ?1", [upgrade_id], |r| r.get(0))
            .optional()
            .map_err(|e| explain(&self.path, e))
    }

    /// The oldest request still waiting for its upgrade.
    pub(crate) fn next_queued(&self) -> Result<Option<QueuedRequest>> {
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
    pub(crate) fn has_pending_request(&self) -> Result<bool> {
        self.conn
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM requests WHERE state IN (?1, ?2))",
                [RequestState::Queued, RequestState::Running],
                |r| r.get(0),
            )
            .map_err(|e| explain(&self.path, e))
    }

    /// How many requests are in `state`.
    pub(crate) fn count_requests(&self, state: RequestState) -> Result<u64> {
        self.conn
            .query_row("SELECT count(*) FROM requests WHERE state = ?1", [state], |r| r.get::<_, i64>(0))
            .map(|n| n.max(0) as u64)
            .map_err(|e| explain(&self.path, e))
    }

    /// Every request, oldest first (for `status` and tests).
    pub(crate) fn requests(&self) -> Result<Vec<QueuedRequest>> {
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
    pub(crate) fn set_request_state(&self, upgrade_id: &str, state: RequestState, reason: Option<&str>) -> Result<()> {
        self.conn
            .execute(
                "UPDATE requests SET state = ?2, reason = ?3 WHERE upgradeId = ?1",
                params![upgrade_id, state, reason],
            )
            .map_err(|e| explain(&self.path, e))?;
        Ok(())
    }
}
