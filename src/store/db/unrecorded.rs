//! Outcomes the database could not take (a full or read-only disk when the
//! upgrade ended), kept as small files beside it until it can. Recovery
//! records them before it looks for interrupted upgrades, so an upgrade that
//! ended is never mistaken for one that was interrupted and put back.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use super::Db;
use crate::states::Terminal;
use crate::store::files;

/// One outcome waiting to be recorded.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Unrecorded {
    pub upgrade_id: String,
    pub status: crate::states::Status,
    pub message: String,
    pub error: Option<String>,
}

fn dir_for(db_path: &Path) -> PathBuf {
    db_path.with_file_name("unrecorded")
}

/// Keeps an outcome beside the database at `db_path`; the file's path.
pub(crate) fn keep(
    db_path: &Path,
    upgrade_id: &str,
    terminal: Terminal,
    message: &str,
    error: Option<&str>,
) -> io::Result<PathBuf> {
    let dir = dir_for(db_path);
    files::ensure_private_dir(&dir)?;
    let outcome = Unrecorded {
        upgrade_id: upgrade_id.to_string(),
        status: terminal.status(),
        message: message.to_string(),
        error: error.map(str::to_string),
    };
    let path = dir.join(format!("{upgrade_id}.json"));
    files::write_atomic(&path, &serde_json::to_vec(&outcome).map_err(io::Error::other)?, 0o600)?;
    Ok(path)
}

/// Records every kept outcome whose upgrade the database still shows unfinished, and removes its file.
pub(crate) fn record_kept(db: &mut Db) -> Result<Vec<Unrecorded>> {
    let dir = dir_for(db.path());
    let Ok(entries) = fs::read_dir(&dir) else { return Ok(Vec::new()) };
    let mut recorded = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(outcome) = fs::read(&path).ok().and_then(|b| serde_json::from_slice::<Unrecorded>(&b).ok()) else {
            continue;
        };
        let unfinished = db.get(&outcome.upgrade_id)?.is_some_and(|row| !row.is_terminal());
        if let (true, Some(terminal)) = (unfinished, outcome.status.terminal()) {
            db.finish(&outcome.upgrade_id, terminal, &outcome.message, outcome.error.as_deref())?;
            recorded.push(outcome);
        }
        fs::remove_file(&path)?;
    }
    Ok(recorded)
}
