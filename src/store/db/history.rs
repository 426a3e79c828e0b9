//! `upgrade_history` and `upgrade_events`: one row per upgrade attempt with
//! what a rollback needs, and the journal of its transitions. Named methods
//! for each thing the engine records; the column names stay here.

use std::path::Path;

use anyhow::Result;
use rusqlite::{params, OptionalExtension, Row};
use serde::Serialize;

use std::os::unix::ffi::{OsStrExt, OsStringExt};

use super::{explain, now_ms, Db};
use crate::states::{Halt, Initiator, Status, Strategy, Terminal};
pub(super) use crate::store::edited::EditedFile;

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
    pub initiated_by: Option<Initiator>,
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
    /// The services the upgrade moved together, the primary first (empty in rows before schema 3).
    pub services: Vec<String>,
    /// Containers stopped for the backup's final pass and not started again yet.
    #[serde(rename = "stoppedContainers")]
    pub held: Vec<Halt>,
    /// Swarm: the moved services as they ran before the upgrade (JSON, see `record_swarm_services`).
    pub swarm_services: Option<String>,
    /// Pull: the release family as it ran before the upgrade (JSON, see `record_family`).
    pub family: Option<String>,
    /// A complete upgrade's downtime as its health gate measured it (see `record_downtime`).
    pub downtime_ms: Option<i64>,
}

const RECORD_COLUMNS: &str = "id, fromVersion, toVersion, deploymentMethod, status, progress, currentStep, logs, \
    backupPath, startedAt, completedAt, initiatedBy, errorMessage, rollbackAvailable, strategy, updatedAt, pid, \
    switched, container, service, composeProject, imageRef, previousImageId, previousDigest, rollbackTag, \
    newImageId, newDigest, previousCommit, targetCommit, rollbackImages, previousSubject, targetSubject, services, \
    stoppedContainers, swarmServices, family, downtimeMs";

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
            services: json_list(row.get(32)?),
            held: json_list(row.get(33)?).iter().map(|token| Halt::from_token(token)).collect(),
            swarm_services: row.get(34)?,
            family: row.get(35)?,
            downtime_ms: row.get(36)?,
        })
    }

    /// Whether the upgrade reached one of the three terminal states.
    pub(crate) fn is_terminal(&self) -> bool {
        self.status.is_terminal()
    }

    /// The upgrade this row rolls back, when it is an operator's `rollback`.
    pub(crate) fn rollback_of(&self) -> Option<&str> {
        self.initiated_by.as_ref()?.rollback_of()
    }
}

/// A JSON list of strings in a column; empty when absent.
fn json_list(column: Option<String>) -> Vec<String> {
    column.and_then(|json| serde_json::from_str(&json).ok()).unwrap_or_default()
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

/// What preflight records about the deployment an upgrade works on.
#[derive(Debug, Clone, Default)]
pub(crate) struct DeploymentRecord {
    pub from_version: Option<String>,
    pub container: Option<String>,
    pub service: Option<String>,
    /// Every service the upgrade moves, the primary first.
    pub services: Vec<String>,
    pub compose_project: Option<String>,
    /// The strategy the deployment takes (a Swarm service takes `swarm` whatever was asked).
    pub strategy: Strategy,
}

/// What a rebuild records before it moves the checkout.
#[derive(Debug, Clone, Default)]
pub(crate) struct CommitsRecord {
    pub previous: String,
    pub target: String,
    pub previous_subject: String,
    pub target_subject: String,
    /// JSON list of `{name, id}`: the images the built services ran.
    pub rollback_images_json: String,
}

impl Db {
    /// Upgrades, newest first.
    pub fn history(&self, limit: usize) -> Result<Vec<UpgradeRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM upgrade_history ORDER BY startedAt DESC, rowid DESC LIMIT ?1");
        self.query_records(&sql, params![limit as i64])
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<UpgradeRecord>> {
        let sql = format!("SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE id = ?1");
        Ok(self.query_records(&sql, params![id])?.pop())
    }

    /// The newest upgrade with this status.
    pub(crate) fn latest_with_status(&self, status: Status) -> Result<Option<UpgradeRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE status = ?1 ORDER BY startedAt DESC, rowid DESC LIMIT 1"
        );
        Ok(self.query_records(&sql, params![status])?.pop())
    }

    /// Upgrades not in a terminal state (interrupted or still running).
    pub(crate) fn unfinished(&self) -> Result<Vec<UpgradeRecord>> {
        let sql =
            format!("SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE status NOT IN (?1, ?2, ?3) ORDER BY startedAt");
        self.query_records(&sql, params![Status::Complete, Status::RolledBack, Status::Failed])
    }

    /// Versions rolled back on this host with no complete upgrade to them since
    /// (a leading `v` dropped): an automatic upgrade skips them.
    pub(crate) fn quarantined_versions(&self) -> Result<Vec<String>> {
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

    /// When the image `image_id` was last rolled back on this host with no
    /// complete upgrade to it since: a quarantine by image, for what says no version.
    pub(crate) fn image_rolled_back_at(&self, image_id: &str) -> Result<Option<i64>> {
        self.conn
            .query_row(
                "SELECT max(r.startedAt) FROM upgrade_history r WHERE r.status = ?1 AND r.newImageId = ?3 \
                 AND NOT EXISTS (SELECT 1 FROM upgrade_history c WHERE c.status = ?2 AND c.newImageId = ?3 \
                 AND c.startedAt > r.startedAt)",
                params![Status::RolledBack, Status::Complete, image_id],
                |r| r.get::<_, Option<i64>>(0),
            )
            .map_err(|e| explain(&self.path, e))
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
    pub(crate) fn reopen_upgrade(&self, upgrade_id: &str, pid: i64) -> Result<()> {
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
        let tx = self.conn.transaction().map_err(|e| explain(&self.path, e))?;
        write_transition(&tx, upgrade_id, status, message).and_then(|_| tx.commit()).map_err(|e| explain(&self.path, e))
    }

    /// Marks the switch begun (from here on an interruption is rolled back,
    /// never abandoned) with the version switched to, nothing held stopped
    /// any more (the switch replaces what the final pass stopped), and the
    /// `restarting` transition: one transaction, as the app waits out the
    /// outage it falls in.
    pub(crate) fn switch_begins(&mut self, upgrade_id: &str, to_version: &str, message: &str) -> Result<()> {
        let tx = self.conn.transaction().map_err(|e| explain(&self.path, e))?;
        tx.execute(
            "UPDATE upgrade_history SET toVersion = ?2, switched = 1, stoppedContainers = NULL WHERE id = ?1",
            params![upgrade_id, to_version],
        )
        .and_then(|_| write_transition(&tx, upgrade_id, Status::Restarting, message))
        .and_then(|_| tx.commit())
        .map_err(|e| explain(&self.path, e))
    }

    /// What preflight found: the running version and where it runs.
    pub(crate) fn record_deployment(&self, upgrade_id: &str, deployment: &DeploymentRecord) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[
                ("fromVersion", deployment.from_version.clone().into()),
                ("container", deployment.container.clone().into()),
                ("service", deployment.service.clone().into()),
                ("services", serde_json::to_string(&deployment.services).unwrap_or_default().into()),
                ("composeProject", deployment.compose_project.clone().into()),
                ("strategy", deployment.strategy.as_str().to_string().into()),
                ("deploymentMethod", deployment.strategy.deployment_method().to_string().into()),
            ],
        )
    }

    /// What is stopped to hold data still, to be started again (empty once it runs again).
    pub(crate) fn record_held(&self, upgrade_id: &str, held: &[Halt]) -> Result<()> {
        let tokens: Vec<String> = held.iter().map(Halt::token).collect();
        let tokens = (!tokens.is_empty()).then(|| serde_json::to_string(&tokens).unwrap_or_default());
        self.set_fields(upgrade_id, &[("stoppedContainers", tokens.into())])
    }

    /// Swarm: the moved services' specs before the upgrade (written before the first update).
    pub(crate) fn record_swarm_services(&self, upgrade_id: &str, services_json: &str) -> Result<()> {
        self.set_fields(upgrade_id, &[("swarmServices", services_json.to_string().into())])
    }

    /// The backup a rollback restores.
    pub fn record_backup(&self, upgrade_id: &str, path: &Path) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[("backupPath", path.display().to_string().into()), ("rollbackAvailable", true.into())],
        )
    }

    /// Pull: the image the service ran, kept under the rollback tag, and the reference that moves.
    pub(crate) fn record_previous_image(
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
    pub(crate) fn record_new_image(&self, upgrade_id: &str, image_id: &str, digest: Option<&str>) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[("newImageId", image_id.to_string().into()), ("newDigest", digest.map(str::to_string).into())],
        )
    }

    /// Rebuild: the commits moved between and the images kept for a rollback.
    pub(crate) fn record_commits(&self, upgrade_id: &str, commits: &CommitsRecord) -> Result<()> {
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

    /// An operator's `rollback`: what it puts back, copied from the upgrade it
    /// undoes before anything is stopped, and marked switched, so that if it is
    /// killed, recovery finishes it from this row alone.
    pub(crate) fn record_rollback_point(
        &self,
        upgrade_id: &str,
        of: &UpgradeRecord,
        restores: Option<&Path>,
    ) -> Result<()> {
        self.set_fields(
            upgrade_id,
            &[
                ("services", serde_json::to_string(&of.services).unwrap_or_default().into()),
                ("previousImageId", of.previous_image_id.clone().into()),
                ("previousDigest", of.previous_digest.clone().into()),
                ("previousCommit", of.previous_commit.clone().into()),
                ("rollbackImages", of.rollback_images.clone().into()),
                ("swarmServices", of.swarm_services.clone().into()),
                ("family", of.family.clone().into()),
                ("backupPath", restores.map(|p| p.display().to_string()).into()),
                ("switched", true.into()),
            ],
        )?;
        self.record_edited_files(upgrade_id, &self.edited_files(&of.id)?)
    }

    /// Pull: the release family as it ran (written before anything is tagged or pulled).
    pub(crate) fn record_family(&self, upgrade_id: &str, family_json: &str) -> Result<()> {
        self.set_fields(upgrade_id, &[("family", family_json.to_string().into())])
    }

    /// The operator's files an upgrade is about to edit, with their bytes
    /// before and after: written before the first of them changes, so that a
    /// rollback or recovery can always put them back.
    pub(crate) fn record_edited_files(&self, upgrade_id: &str, files: &[EditedFile]) -> Result<()> {
        for file in files {
            self.conn
                .execute(
                    "INSERT OR REPLACE INTO edited_files (upgradeId, path, original, edited) VALUES (?1, ?2, ?3, ?4)",
                    params![upgrade_id, file.path.as_os_str().as_bytes(), file.original, file.edited],
                )
                .map_err(|e| explain(&self.path, e))?;
        }
        Ok(())
    }

    /// The files an upgrade edited, as recorded before it edited them.
    pub(crate) fn edited_files(&self, upgrade_id: &str) -> Result<Vec<EditedFile>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, original, edited FROM edited_files WHERE upgradeId = ?1 ORDER BY path")
            .map_err(|e| explain(&self.path, e))?;
        let rows = stmt
            .query_map(params![upgrade_id], |r| {
                let path: Vec<u8> = r.get(0)?;
                Ok(EditedFile {
                    path: std::path::PathBuf::from(std::ffi::OsString::from_vec(path)),
                    original: r.get(1)?,
                    edited: r.get(2)?,
                })
            })
            .map_err(|e| explain(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| explain(&self.path, e))
    }

    /// The downtime the health gate measured: from the switch to the first
    /// look of the healthy streak that passed it.
    pub(crate) fn record_downtime(&self, upgrade_id: &str, downtime: std::time::Duration) -> Result<()> {
        let ms = i64::try_from(downtime.as_millis()).unwrap_or(i64::MAX);
        self.set_fields(upgrade_id, &[("downtimeMs", ms.into())])
    }

    /// A log line that is not a transition.
    pub(crate) fn append_log(&self, upgrade_id: &str, message: &str) -> Result<()> {
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

    /// How many upgrades ended in each terminal state, by strategy (for the metrics).
    pub(crate) fn terminal_counts(&self) -> Result<Vec<(Status, Strategy, u64)>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT status, strategy, count(*) FROM upgrade_history WHERE status IN (?1, ?2, ?3) \
                 GROUP BY status, strategy ORDER BY status, strategy",
            )
            .map_err(|e| explain(&self.path, e))?;
        let rows = stmt
            .query_map(params![Status::Complete, Status::RolledBack, Status::Failed], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)?.max(0) as u64))
            })
            .map_err(|e| explain(&self.path, e))?;
        rows.collect::<rusqlite::Result<Vec<_>>>().map_err(|e| explain(&self.path, e))
    }

    /// The upgrade that reached its terminal state last.
    pub(crate) fn last_finished(&self) -> Result<Option<UpgradeRecord>> {
        let sql = format!(
            "SELECT {RECORD_COLUMNS} FROM upgrade_history WHERE status IN (?1, ?2, ?3) AND completedAt IS NOT NULL \
             ORDER BY completedAt DESC, rowid DESC LIMIT 1"
        );
        Ok(self.query_records(&sql, params![Status::Complete, Status::RolledBack, Status::Failed])?.pop())
    }

    /// The backup of the last complete upgrade, which retention never deletes.
    pub(crate) fn protected_backup(&self) -> Result<Option<String>> {
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

/// The statements of a transition: the event, and the row's status with the message in its logs.
fn write_transition(
    conn: &rusqlite::Connection,
    upgrade_id: &str,
    status: Status,
    message: &str,
) -> rusqlite::Result<()> {
    let now = now_ms();
    let progress = status.progress();
    conn.execute(
        "INSERT INTO upgrade_events (upgradeId, at, status, progress, message) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![upgrade_id, now, status, progress, message],
    )?;
    conn.execute(
        "UPDATE upgrade_history SET status = ?2, progress = ?3, currentStep = ?4, updatedAt = ?5, \
         logs = json_insert(logs, '$[#]', ?4) WHERE id = ?1",
        params![upgrade_id, status, progress, message, now],
    )?;
    Ok(())
}
