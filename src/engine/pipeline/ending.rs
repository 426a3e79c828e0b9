//! How an attempt ends: a failed step ends it `failed` or rolls it back (as
//! [`after_failure`] says), a stop request before the switch abandons it,
//! and every end is recorded once, with what could not be put back named in
//! it and the backups pruned. An end the Docker engine's absence decided is
//! not taken: the attempt is left interrupted, for recovery to finish.

use std::path::PathBuf;

use anyhow::Result;

use super::{after_failure, Attempt, Next, Step};
use crate::engine::rollback::restore_previous;
use crate::engine::strategy::Strategy;
use crate::engine::{Outcome, Terminal};
use crate::states::Status;
use crate::store::backup;
use crate::units::human_bytes;

/// Something an attempt ending before its switch could not put back.
#[derive(Debug)]
pub(super) enum Leftover {
    /// Services the backup stopped that did not start again.
    NotStartedAgain(String),
    /// What the fetch changed (a moved tag, a checkout) that did not go back.
    FetchNotUndone(String),
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Leftover::NotStartedAgain(why) => write!(f, "starting the stopped services again failed too: {why}"),
            Leftover::FetchNotUndone(why) => write!(f, "putting back what the download changed failed too: {why}"),
        }
    }
}

impl Attempt<'_, '_> {
    /// Ends a failed step the way [`after_failure`] says.
    pub(super) fn failed(&mut self, strategy: &mut dyn Strategy, step: Step, reason: String) -> Result<Outcome> {
        if self.runner.engine_gone() {
            // The failure is the engine's absence, not the app's: nothing can be judged or put back now.
            return self.interrupted(&reason);
        }
        match after_failure(step) {
            Next::Fail => {
                let message = match step {
                    Step::Backup => "Backup failed; nothing was changed",
                    Step::Prepare => "Preparing the switch failed; the running version was not touched",
                    _ => "Download failed; the running version was not touched",
                };
                self.end(Terminal::Failed, message, Some(reason))
            }
            Next::RollBack => self.roll_back(strategy, reason),
        }
    }

    /// Puts the previous version and its data back; `failed` if even that does not come up healthy.
    pub(super) fn roll_back(&mut self, strategy: &mut dyn Strategy, reason: String) -> Result<Outcome> {
        let first_line = reason.lines().next().unwrap_or_default().to_string();
        self.journal.report(Status::RollingBack, &format!("Rolling back: {first_line}"));
        let backup = self.backup.clone();
        let from = self.from_version.clone();
        let end = restore_previous(self.config, &self.runner, self.journal, strategy, backup.as_deref(), from, reason);
        self.end(end.terminal, end.message, Some(end.error))
    }

    /// A stop request before the switch, when something could not be put back: the leftovers say what.
    pub(super) fn stopped_before_switch(&mut self) -> Result<Outcome> {
        let error = "upgraderd was asked to stop before the switch".to_string();
        self.end(Terminal::Failed, "Interrupted before the switch", Some(error))
    }

    pub(super) fn abandon(&mut self, during: &str) -> Result<Outcome> {
        let error = format!(
            "upgraderd was asked to stop during {during}, before the switch; the running version and its data were not touched"
        );
        self.end(Terminal::Failed, "Interrupted before the switch; nothing was changed", Some(error))
    }

    /// Ends the attempt after the fetch, before anything stopped: what the fetch changed goes back first.
    pub(super) fn end_after_fetch(
        &mut self,
        strategy: &mut dyn Strategy,
        terminal: Terminal,
        message: &str,
        reason: Option<String>,
    ) -> Result<Outcome> {
        self.put_back_fetch(strategy);
        self.end(terminal, message, reason)
    }

    /// Keeps `UPGRADERD_BACKUP_KEEP` backups whatever their attempts' outcomes
    /// (repeated failures must not fill the disk), and never this attempt's nor
    /// the last complete upgrade's, which `rollback` restores.
    pub(super) fn prune_backups(&mut self) {
        let keep = self.config.backup_keep;
        let last_complete = self.journal.db.protected_backup().ok().flatten().map(PathBuf::from);
        let protected: Vec<&std::path::Path> = self.backup.iter().chain(&last_complete).map(PathBuf::as_path).collect();
        match backup::prune(&self.config.backup_dir, keep, &protected) {
            Ok(pruned) => {
                for path in &pruned.deleted {
                    self.journal.log(&format!("Pruned old backup {}", path.display()));
                }
                if !pruned.deleted.is_empty() {
                    self.journal.log(&format!("Pruning freed {}", human_bytes(pruned.freed_bytes)));
                }
            }
            Err(e) => self.journal.log(&format!("Pruning backups failed: {e:#}")),
        }
    }

    /// Leaves the attempt unfinished where it is, for recovery to finish once the engine answers.
    pub(super) fn interrupted(&mut self, reason: &str) -> Result<Outcome> {
        Err(self.journal.left_interrupted(reason))
    }

    /// The recorded reason with what could not be put back added, said once;
    /// without a reason (nothing went wrong but that), they go to the log.
    pub(super) fn with_leftovers(&mut self, error: Option<String>) -> Option<String> {
        let leftovers: Vec<String> = self.leftovers.drain(..).map(|l| l.to_string()).collect();
        match error {
            _ if leftovers.is_empty() => error,
            Some(error) => Some(format!("{error}; {}", leftovers.join("; "))),
            None => {
                for leftover in &leftovers {
                    self.journal.log(leftover);
                }
                None
            }
        }
    }

    pub(super) fn end(&mut self, terminal: Terminal, message: &str, error: Option<String>) -> Result<Outcome> {
        if terminal != Terminal::Complete && self.runner.engine_gone() {
            return self.interrupted(error.as_deref().unwrap_or(message));
        }
        let away = self.runner.engine_away();
        if !away.is_zero() {
            self.journal.log(&format!(
                "The Docker engine was unreachable for {:.1}s in all during this attempt; upgraderd waited for it \
                 (the health gate's clock did not run meanwhile)",
                away.as_secs_f64()
            ));
        }
        let error = self.with_leftovers(error);
        self.journal.finish(terminal, message, error.as_deref());
        if self.backup.is_some() && !self.request.dry_run {
            self.prune_backups();
        }
        Ok(Outcome {
            upgrade_id: self.journal.upgrade_id.clone(),
            terminal,
            from_version: self.from_version.clone(),
            to_version: self.request.target.to_string(),
            error,
            backup: self.backup.clone(),
        })
    }
}
