//! The journal of one upgrade: each transition goes to the database first,
//! then to the status file the app reads, then to the terminal.

use std::sync::Arc;

use anyhow::Result;

use crate::config::Config;
use crate::engine::status::{Heartbeat, Snapshot, StatusFile, HEARTBEAT_EVERY};
use crate::ops::process::{Cmd, Runner};
use crate::states::{Status, Terminal};
use crate::store::db::{now_ms, unrecorded, Db};
use crate::store::reserve::{Reserve, RESERVE_BYTES};
use crate::ui::Ui;

/// How many log lines the status file carries.
const STATUS_LOG_LINES: usize = 20;

pub(crate) struct Journal<'a> {
    pub db: Db,
    pub upgrade_id: String,
    pub ui: &'a Ui,
    status_file: Option<Arc<StatusFile>>,
    _heartbeat: Option<Heartbeat>,
    from_version: Option<String>,
    to_version: String,
    started_at: i64,
    logs: Vec<String>,
    reserve: Option<Reserve>,
}

impl<'a> Journal<'a> {
    pub(crate) fn new(
        db: Db,
        upgrade_id: &str,
        ui: &'a Ui,
        status_file: Option<Arc<StatusFile>>,
        to_version: &str,
    ) -> Journal<'a> {
        let heartbeat = status_file.as_ref().map(|file| file.heartbeat(HEARTBEAT_EVERY));
        Journal {
            db,
            upgrade_id: upgrade_id.to_string(),
            ui,
            status_file,
            _heartbeat: heartbeat,
            from_version: None,
            to_version: to_version.to_string(),
            started_at: now_ms(),
            logs: Vec::new(),
            reserve: None,
        }
    }
    pub(crate) fn set_versions(&mut self, from: Option<&str>, to: &str) {
        self.from_version = from.map(str::to_string);
        self.to_version = to.to_string();
    }

    /// Room on the state filesystem to give back when the database finds the disk full.
    pub(crate) fn with_reserve(mut self, reserve: Option<Reserve>) -> Self {
        self.reserve = reserve;
        self
    }

    /// Records a transition before the step that follows it runs. Before the
    /// switch a transition that cannot be recorded stops the upgrade (nothing changed yet).
    pub(crate) fn step(&mut self, status: Status, message: &str) -> Result<()> {
        self.recorded(|db, id| db.transition(id, status, message))?;
        self.announce(status, message, None);
        Ok(())
    }

    /// A transition once the switch began: putting things right must not wait for the
    /// disk. It is recorded when the database can take it, and shown on every other channel anyway.
    pub(crate) fn report(&mut self, status: Status, message: &str) {
        if let Err(e) = self.recorded(|db, id| db.transition(id, status, message)) {
            self.ui.warn(format!("could not record `{status}` in the state database, going on: {e:#}"));
        }
        self.announce(status, message, None);
    }

    /// Records the switch begun, `restarting` (see [`Db::switch_begins`]); an
    /// upgrade whose switch cannot be recorded does not switch.
    pub(crate) fn switch_begins(&mut self, to_version: &str) -> Result<()> {
        const MESSAGE: &str = "Restarting services";
        self.recorded(|db, id| db.switch_begins(id, to_version, MESSAGE))?;
        self.announce(Status::Restarting, MESSAGE, None);
        Ok(())
    }

    /// Runs a database write; on failure gives the reserve back to the filesystem and tries once more.
    fn recorded(&mut self, write: impl Fn(&mut Db, &str) -> Result<()>) -> Result<()> {
        match write(&mut self.db, &self.upgrade_id) {
            Ok(()) => Ok(()),
            Err(first) => match self.reserve.take() {
                Some(reserve) if reserve.release() => {
                    self.ui
                        .warn(format!("{first:#}; released upgraderd's reserve on the state filesystem to record it"));
                    write(&mut self.db, &self.upgrade_id)
                }
                _ => Err(first),
            },
        }
    }

    fn announce(&mut self, status: Status, message: &str, error: Option<&str>) {
        self.logs.push(message.to_string());
        self.write_status(status, message, error);
        self.ui.step(status.progress(), status.as_str(), message);
    }

    /// A log line that is not a transition: history logs, status file, terminal.
    pub(crate) fn log(&mut self, message: &str) {
        // A log line the database cannot take still reaches the status file and the terminal.
        let _ = self.db.append_log(&self.upgrade_id, message);
        self.logs.push(message.to_string());
        if let Some(file) = &self.status_file {
            let _ = file.set_logs(self.recent_logs());
        }
        self.ui.info(format!("       {message}"));
    }

    /// Leaves the attempt unfinished at the step its row is at, for recovery to
    /// finish once the Docker engine answers: says so, with `cause` (the failure
    /// the engine's absence brought), and returns the error that ends the command.
    pub(crate) fn left_interrupted(&mut self, cause: &str) -> anyhow::Error {
        let at = self.db.get(&self.upgrade_id).ok().flatten().map_or(Status::Pending, |r| r.status);
        let cause = cause.lines().next().unwrap_or_default();
        self.log(&format!(
            "Left interrupted during {at}: the Docker engine stayed unreachable past UPGRADERD_ENGINE_WAIT \
             ({cause}); recovery finishes it once the engine answers"
        ));
        crate::engine::EngineGone { upgrade_id: self.upgrade_id.clone(), at }.into()
    }

    /// Logs a command line, then runs it: the history shows what was done, in order.
    pub(crate) fn run(&mut self, runner: &Runner, cmd: &Cmd) -> Result<()> {
        self.log(&format!("$ {}", cmd.display()));
        runner.run(cmd)?;
        Ok(())
    }

    fn recent_logs(&self) -> Vec<String> {
        self.logs[self.logs.len().saturating_sub(STATUS_LOG_LINES)..].to_vec()
    }

    /// Records the terminal state, and shows it on every channel even when the
    /// database cannot take it (then loudly, with the reason).
    pub(crate) fn finish(&mut self, terminal: Terminal, message: &str, error: Option<&str>) {
        if let Err(e) = self.recorded(|db, id| db.finish(id, terminal, message, error)) {
            // Recovery must never take an unrecorded outcome for an interrupted upgrade
            // (and roll back a healthy version): leave it where recovery looks first.
            let kept = unrecorded::keep(self.db.path(), &self.upgrade_id, terminal, message, error);
            self.ui.warn(format!(
                "the outcome `{terminal}` of upgrade {} could not be recorded in the state database: {e:#}; {}",
                self.upgrade_id,
                match kept {
                    Ok(path) => format!("kept in {} until the database takes it", path.display()),
                    Err(e) => format!("nor kept beside it ({e}); the status file and this log carry it"),
                }
            ));
        }
        self.announce(terminal.status(), message, error);
    }

    /// The status file is the app's view; failing to write it must not fail the upgrade.
    fn write_status(&self, status: Status, step: &str, error: Option<&str>) {
        let Some(file) = &self.status_file else { return };
        let snapshot = Snapshot {
            upgrade_id: self.upgrade_id.clone(),
            status,
            progress: status.progress(),
            current_step: step.to_string(),
            from_version: self.from_version.clone(),
            to_version: Some(self.to_version.clone()),
            started_at: self.started_at,
            logs: self.recent_logs(),
            error: error.map(str::to_string),
        };
        if let Err(e) = file.write(snapshot) {
            self.ui.warn(format!("cannot write the app's status file {e}"));
        }
    }
}

/// Keeps room on the state filesystem so the outcome can be recorded even if the disk fills meanwhile.
pub(crate) fn keep_room(config: &Config, ui: &Ui) -> Option<Reserve> {
    match Reserve::ensure(&config.state_dir) {
        Ok(reserve) => Some(reserve),
        Err(e) => {
            ui.warn(format!(
                "cannot keep {} MiB in reserve in {}: {e}",
                RESERVE_BYTES >> 20,
                config.state_dir.display()
            ));
            None
        }
    }
}
/// A backup during an upgrade: its lines go into the journal, the containers
/// it stopped into the upgrade's row (recovery starts them again), its progress to the terminal.
impl crate::engine::data::Observer for Journal<'_> {
    fn log(&mut self, line: &str) {
        Journal::log(self, line);
    }

    fn stopped(&mut self, held: &[crate::states::Halt]) -> anyhow::Result<()> {
        self.db.record_held(&self.upgrade_id, held)
    }

    fn progress(&mut self, p: crate::store::backup::Progress) {
        let share = (p.done * 100).checked_div(p.total).unwrap_or(100).min(100);
        let progress = Status::BackingUp.progress() + (share / 5) as u8;
        let text = format!("{} of {}", crate::units::human_bytes(p.done), crate::units::human_bytes(p.total));
        self.ui.step(progress, Status::BackingUp.as_str(), &text);
    }
}
