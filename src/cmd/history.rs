//! `upgraderd history [--limit N]`: past upgrades, newest first.

use anyhow::Result;
use serde_json::json;

use crate::cli::HistoryArgs;
use crate::cmd::Ctx;
use crate::engine::preflight;
use crate::exit::Exit;
use crate::store::db::{Db, UpgradeRecord};

pub(super) fn run(ctx: &Ctx, args: &HistoryArgs) -> Result<Exit> {
    let history = match Db::open_read_only(&ctx.config.db_path())? {
        Some(db) => db.history(args.limit)?,
        None => Vec::new(),
    };
    if ctx.ui.json() {
        ctx.ui.data(&json!({"history": history, "count": history.len()}));
        return Ok(Exit::Success);
    }
    if history.is_empty() {
        ctx.ui.info(format!("no upgrades recorded yet in {}", ctx.config.db_path().display()));
        return Ok(Exit::Success);
    }
    let rows: Vec<Vec<String>> = history.iter().map(row).collect();
    ctx.ui.table(&["ID", "STATUS", "FROM", "TO", "STRATEGY", "STARTED", "DURATION", "BY", "ERROR"], &rows);
    Ok(Exit::Success)
}

fn row(record: &UpgradeRecord) -> Vec<String> {
    vec![
        record.id.clone(),
        record.status.to_string(),
        version_cell(
            record.from_version.as_deref(),
            record.previous_subject.as_deref().or(record.previous_commit.as_deref()),
        ),
        version_cell(
            record.to_version.as_deref(),
            record.target_subject.as_deref().or(record.target_commit.as_deref()),
        ),
        record.strategy.to_string(),
        format_time(record.started_at),
        record.completed_at.map(|end| format_duration(end - record.started_at)).unwrap_or_else(|| "-".into()),
        record.initiated_by.as_ref().map_or_else(|| "-".into(), ToString::to_string),
        record.error_message.as_deref().map(error_cell).unwrap_or_else(|| "-".into()),
    ]
}

/// A version, with the commit (short sha and subject) for rebuild upgrades.
fn version_cell(version: Option<&str>, commit: Option<&str>) -> String {
    let commit = commit.map(|c| if c.contains(' ') { first_line(c) } else { c.chars().take(8).collect() });
    match (version, commit) {
        (Some(v), Some(c)) => format!("{v} ({c})"),
        (Some(v), None) => v.to_string(),
        (None, Some(c)) => c,
        (None, None) => "-".into(),
    }
}

fn first_line(text: &str) -> String {
    cut(text.lines().next().unwrap_or(""), 60)
}

/// The reason's first line; a refusal by its cause, which the shared words
/// before it would push out of the cell. `status ID` shows the full text.
fn error_cell(error: &str) -> String {
    let line = error.lines().next().unwrap_or("");
    match preflight::refusal_cause(line) {
        Some(cause) => cut(&format!("refused in preflight: {cause}"), 120),
        None => cut(line, 120),
    }
}

fn cut(line: &str, max: usize) -> String {
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max - 1).collect::<String>())
    } else {
        line.to_string()
    }
}

/// Local time for people: `2025-01-07 14:30:22`.
pub(super) fn format_time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub(super) fn format_duration(ms: i64) -> String {
    let secs = ms.max(0) as f64 / 1000.0;
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:02}s", (secs / 60.0) as i64, (secs % 60.0) as i64)
    }
}
