//! After the terminal state is recorded: the metrics file, the notifications
//! and the operator's post-upgrade hook. Neither can change the outcome; a failure of either is
//! a warning, and each notification's result goes into the upgrade's log.
//!
//! Every URL of `UPGRADERD_NOTIFY_URL` is told at once, each in its own
//! format, so one that hangs or refuses does not hold up or stop the others.
//! The message says what the journal says: the outcome, the versions, the
//! step that failed and the last lines of the log.

use crate::config::{Config, NotifyTarget};
use crate::engine::Outcome;
use crate::ops::hooks::{hook, HookContext};
use crate::ops::notify::{self, Message};
use crate::ops::process::Runner;
use crate::states::{Status, Terminal};
use crate::store::db::{Db, Event};
use crate::ui::Ui;

/// How many of the log's last lines a notification carries.
const LOG_LINES: usize = 10;
/// Longer log lines are cut to this many characters.
const LOG_LINE_CHARS: usize = 300;

/// Sends the notifications and runs the post-upgrade hook for a recorded outcome.
pub(crate) fn after_terminal(config: &Config, ui: &Ui, outcome: &Outcome) {
    crate::engine::metrics::write(config, ui);
    if !config.notify.is_empty() {
        notify_all(config, ui, outcome);
    }
    if let Some(command) = &config.post_upgrade_cmd {
        let context = HookContext {
            upgrade_id: &outcome.upgrade_id,
            from_version: outcome.from_version.as_deref(),
            to_version: &outcome.to_version,
            status: outcome.terminal.as_str(),
        };
        if let Err(e) = Runner::new(false).run(&hook(command, context)) {
            ui.warn(format!("UPGRADERD_POST_UPGRADE_CMD failed: {e}"));
        }
    }
}

/// Tells every notification URL, in parallel, and records how each went.
fn notify_all(config: &Config, ui: &Ui, outcome: &Outcome) {
    let db = match Db::open(&config.db_path()) {
        Ok(db) => Some(db),
        Err(e) => {
            ui.warn(format!("notifications go out without the journal's details, which cannot be read: {e:#}"));
            None
        }
    };
    let message = message(outcome, db.as_ref(), &host_name());
    let results: Vec<anyhow::Result<()>> = std::thread::scope(|scope| {
        let sending: Vec<_> = config
            .notify
            .iter()
            .map(|target| scope.spawn(|| notify::send(target.format, &target.url, &message)))
            .collect();
        sending.into_iter().map(|s| s.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the sender crashed")))).collect()
    });
    for (target, result) in config.notify.iter().zip(results) {
        let line = result_line(target, &result);
        match result {
            Ok(()) => ui.detail(&line),
            Err(_) => ui.warn(&line),
        }
        if let Some(db) = &db {
            if let Err(e) = db.append_log(&outcome.upgrade_id, &line) {
                ui.warn(format!("cannot record the notification's result: {e:#}"));
            }
        }
    }
}

/// `Notified discord https://discord.com/api/webhooks/********`, or why it failed, the URL masked.
fn result_line(target: &NotifyTarget, result: &anyhow::Result<()>) -> String {
    match result {
        Ok(()) => format!("Notified {} {}", target.format, target.masked()),
        Err(e) => format!("Notification to {} {} failed: {e:#}", target.format, target.masked()),
    }
}

/// What the notifications say: the outcome, and from the journal the failed step and the last log lines.
fn message(outcome: &Outcome, db: Option<&Db>, host: &str) -> Message {
    let record = db.and_then(|db| db.get(&outcome.upgrade_id).ok().flatten());
    let events = db.and_then(|db| db.events(&outcome.upgrade_id).ok()).unwrap_or_default();
    Message {
        upgrade_id: outcome.upgrade_id.clone(),
        terminal: outcome.terminal,
        from_version: outcome.from_version.clone().or_else(|| record.as_ref().and_then(|r| r.from_version.clone())),
        to_version: outcome.to_version.clone(),
        failed_step: failed_step(&events, outcome.terminal),
        error: outcome.error.clone(),
        logs: record.map(|r| last_lines(&r.logs, LOG_LINES)).unwrap_or_default(),
        host: host.to_string(),
        backup: outcome.backup.as_ref().map(|p| p.display().to_string()),
    }
}

/// The step the attempt was in when it failed: the last step journaled before
/// the rollback began or the attempt ended. An attempt run again under its id
/// (interrupted before its switch) counts from its last start.
fn failed_step(events: &[Event], terminal: Terminal) -> Option<(Status, String)> {
    if terminal == Terminal::Complete {
        return None;
    }
    let end = events.iter().rposition(|e| e.status.is_terminal()).unwrap_or(events.len());
    let start = events[..end].iter().rposition(|e| e.status.is_terminal()).map_or(0, |i| i + 1);
    let attempt = &events[start..end];
    let before_rollback = attempt.iter().position(|e| e.status == Status::RollingBack).unwrap_or(attempt.len());
    attempt[..before_rollback].iter().rev().find(|e| is_step(e.status)).map(|e| (e.status, e.message.clone()))
}

fn is_step(status: Status) -> bool {
    matches!(
        status,
        Status::Pending
            | Status::Preflight
            | Status::BackingUp
            | Status::Downloading
            | Status::Restarting
            | Status::HealthCheck
    )
}

/// The last `count` lines of the log (an entry may hold several), each cut to a readable length.
fn last_lines(logs: &[String], count: usize) -> Vec<String> {
    let lines: Vec<&str> = logs.iter().flat_map(|entry| entry.lines()).filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(count)..]
        .iter()
        .map(|line| match line.char_indices().nth(LOG_LINE_CHARS) {
            Some((cut, _)) => format!("{}…", &line[..cut]),
            None => line.to_string(),
        })
        .collect()
}

fn host_name() -> String {
    std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(steps: &[(Status, &str)]) -> Vec<Event> {
        steps
            .iter()
            .enumerate()
            .map(|(i, (status, message))| Event {
                seq: i as i64,
                at: 0,
                status: *status,
                progress: 0,
                message: message.to_string(),
            })
            .collect()
    }

    #[test]
    fn the_failed_step_is_the_last_one_before_the_rollback() {
        let journal = events(&[
            (Status::Pending, "Upgrade to 2.0.0 initiated by cli"),
            (Status::Preflight, "Running pre-flight checks"),
            (Status::Downloading, "Downloading new version"),
            (Status::Restarting, "Restarting services"),
            (Status::HealthCheck, "Running health checks"),
            (Status::RollingBack, "Rolling back: exited"),
            (Status::Restarting, "Restarting the previous version"),
            (Status::RolledBack, "Rolled back"),
        ]);
        assert_eq!(
            failed_step(&journal, Terminal::RolledBack),
            Some((Status::HealthCheck, "Running health checks".into()))
        );
        assert_eq!(failed_step(&journal, Terminal::Complete), None);
    }

    #[test]
    fn a_failure_before_the_switch_and_a_run_again_count_from_the_last_start() {
        let journal = events(&[
            (Status::Pending, "first try"),
            (Status::Downloading, "Downloading new version"),
            (Status::Failed, "Interrupted before the switch"),
            (Status::Pending, "second try"),
            (Status::Preflight, "Running pre-flight checks"),
            (Status::Failed, "Pre-flight checks failed"),
        ]);
        assert_eq!(
            failed_step(&journal, Terminal::Failed),
            Some((Status::Preflight, "Running pre-flight checks".into()))
        );
        assert_eq!(failed_step(&[], Terminal::Failed), None);
    }

    #[test]
    fn the_last_log_lines_are_split_and_cut() {
        let logs = vec!["one".to_string(), "job output:\ntwo\n\nthree".into(), "x".repeat(400)];
        let last = last_lines(&logs, 3);
        assert_eq!(last[..2], ["two".to_string(), "three".into()]);
        assert_eq!(last[2].chars().count(), LOG_LINE_CHARS + 1);
        assert_eq!(last_lines(&logs, 10).len(), 5);
    }

    #[test]
    fn without_a_journal_the_outcome_alone_is_told() {
        let outcome = Outcome {
            upgrade_id: "u".into(),
            terminal: Terminal::Failed,
            from_version: None,
            to_version: "2.0.0".into(),
            error: Some("boom".into()),
            backup: None,
        };
        let m = message(&outcome, None, "web1");
        assert_eq!((&m.failed_step, m.logs.len()), (&None, 0));
        assert_eq!(m.title(), "web1: upgrade to 2.0.0 failed");
    }
}
