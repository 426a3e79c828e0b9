//! When the metrics file (`UPGRADERD_METRICS_FILE`, node_exporter's textfile
//! collector format) is written: after every terminal state (upgrade,
//! rollback, recovery: from `announce::after_terminal`), after every version
//! check (`check-version` and the daemon's periodic one), when `watch` starts
//! and when it queues a request. Each write gathers everything afresh — the
//! state database, the backup directory, the last version check — so a write
//! that failed is made good by the next. A failure is a warning, never the
//! operation's failure.
//!
//! The last version check is kept in the state directory
//! (`version-check.json`), so that a write after an upgrade still carries it.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::engine::check::Report;
use crate::store::backup;
use crate::store::db::{now_ms, Db};
use crate::store::files;
use crate::store::metrics::{render, Backups, Snapshot, VersionCheck};
use crate::ui::Ui;

/// The last version check's result, in the state directory.
const CHECK_FILE: &str = "version-check.json";
/// node_exporter runs as its own user: the file is readable by all (it holds no secret).
const MODE: u32 = 0o644;

/// Rewrites the metrics file, when one is configured.
pub(crate) fn write(config: &Config, ui: &Ui) {
    let Some(path) = &config.metrics_file else { return };
    if let Err(e) = write_to(config, path) {
        ui.warn(format!("cannot write the metrics file {}: {e:#}", path.display()));
    }
}

/// Keeps a version check's result for the metrics and rewrites the metrics file, when one is configured.
pub(crate) fn after_check(config: &Config, ui: &Ui, report: &Report) {
    if config.metrics_file.is_none() {
        return;
    }
    if let Err(e) = remember(config, report) {
        ui.warn(format!("cannot keep the version check's result for the metrics: {e:#}"));
    }
    write(config, ui);
}

fn write_to(config: &Config, path: &Path) -> Result<()> {
    files::write_atomic(path, render_now(config)?.as_bytes(), MODE)?;
    Ok(())
}

/// The metrics as they are now, in Prometheus's text format (for the file and for `/metrics`).
pub(crate) fn render_now(config: &Config) -> Result<String> {
    Ok(render(&snapshot(config)?))
}

/// Everything the metrics say, read afresh.
fn snapshot(config: &Config) -> Result<Snapshot> {
    let mut snapshot = Snapshot { build_version: env!("CARGO_PKG_VERSION").to_string(), ..Snapshot::default() };
    if let Some(db) = Db::open_read_only(&config.db_path())? {
        snapshot.read_db(&db).context("reading the state database")?;
    }
    snapshot.backups = backups(&config.backup_dir)?;
    snapshot.check = remembered(config);
    Ok(snapshot)
}

/// The backups in the backup directory: how many, the disk they take
/// together (what snapshots share counted once), when the newest was taken.
fn backups(dir: &Path) -> Result<Backups> {
    let listed = backup::list(dir)?;
    let newest_at_ms = listed.iter().filter_map(taken_at_ms).max();
    let alone: u64 = listed.iter().map(|b| b.bytes).sum();
    Ok(Backups { count: listed.len() as u64, bytes: alone + backup::shared_on_disk(&listed), newest_at_ms })
}

/// When a backup was taken: its metadata's time, else the archive's mtime.
fn taken_at_ms(listed: &backup::Listed) -> Option<i64> {
    let from_meta = listed.meta.as_ref().and_then(|m| rfc3339_ms(&m.created_at));
    from_meta.or_else(|| {
        let modified = std::fs::metadata(&listed.path).and_then(|m| m.modified()).ok()?;
        Some(chrono::DateTime::<chrono::Utc>::from(modified).timestamp_millis())
    })
}

fn rfc3339_ms(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text).ok().map(|t| t.timestamp_millis())
}

fn check_path(config: &Config) -> PathBuf {
    config.state_dir.join(CHECK_FILE)
}

fn remember(config: &Config, report: &Report) -> Result<()> {
    let check = VersionCheck {
        running: report.current_version.clone(),
        latest: report.latest_version.clone(),
        allowed: report.allowed_version.clone(),
        checked_at_ms: rfc3339_ms(&report.checked_at).unwrap_or_else(now_ms),
    };
    files::ensure_private_dir(&config.state_dir)?;
    files::write_atomic(&check_path(config), &serde_json::to_vec(&check)?, 0o600)?;
    Ok(())
}

/// The last version check kept, if any (one that cannot be read is none).
fn remembered(config: &Config) -> Option<VersionCheck> {
    serde_json::from_slice(&std::fs::read(check_path(config)).ok()?).ok()
}
