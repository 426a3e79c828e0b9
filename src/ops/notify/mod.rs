//! Outgoing notifications: one [`Message`] about an upgrade's outcome, put in
//! the body each service documents (upgraderd's JSON, ntfy, Gotify, Discord,
//! Slack; see `formats`) and POSTed with bounded time. Errors name what went
//! wrong, never the URL: it may carry a secret.

mod formats;

use std::time::Duration;

use anyhow::{anyhow, Result};

use crate::states::{NotifyFormat, Status, Terminal};

/// How long connecting may take, and the whole request.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How much of an error answer's body goes into the error.
const ANSWER_SHOWN: usize = 300;

/// What every notification says about one upgrade attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub upgrade_id: String,
    pub terminal: Terminal,
    pub from_version: Option<String>,
    pub to_version: String,
    /// The step the attempt failed at, and what that step was doing.
    pub failed_step: Option<(Status, String)>,
    pub error: Option<String>,
    /// The last lines of the upgrade's log, oldest first.
    pub logs: Vec<String>,
    pub host: String,
    pub backup: Option<String>,
}

impl Message {
    /// One line: `web1: upgrade 1.0.0 → 2.0.0 rolled back`.
    pub(crate) fn title(&self) -> String {
        let host = if self.host.is_empty() { "upgraderd" } else { &self.host };
        format!("{host}: upgrade {} {}", self.versions(), self.outcome())
    }

    /// `1.0.0 → 2.0.0`, or the target alone when the running version was not known.
    pub(crate) fn versions(&self) -> String {
        match &self.from_version {
            Some(from) => format!("{from} → {}", self.to_version),
            None => format!("to {}", self.to_version),
        }
    }

    /// The outcome in words.
    pub(crate) fn outcome(&self) -> &'static str {
        match self.terminal {
            Terminal::Complete => "complete",
            Terminal::RolledBack => "rolled back",
            Terminal::Failed => "failed",
        }
    }

    /// What the outcome means for the operator.
    pub(crate) fn meaning(&self) -> String {
        match (self.terminal, &self.from_version) {
            (Terminal::Complete, _) => format!("{} is running and healthy", self.to_version),
            (Terminal::RolledBack, Some(from)) => format!("{from} and its data are back and healthy"),
            (Terminal::RolledBack, None) => "the previous version and its data are back and healthy".into(),
            (Terminal::Failed, _) => "needs a look: see the error; any backup taken is kept".into(),
        }
    }

    /// `health_check (Running health checks)`.
    pub(crate) fn failed_step_text(&self) -> Option<String> {
        self.failed_step.as_ref().map(|(status, doing)| format!("{status} ({doing})"))
    }

    /// The labelled facts every format shows: outcome, versions, failed step, error, upgrade id.
    pub(crate) fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts =
            vec![("Outcome", format!("{}: {}", self.outcome(), self.meaning())), ("Versions", self.versions())];
        if let Some(step) = self.failed_step_text() {
            facts.push(("Failed step", step));
        }
        if let Some(error) = &self.error {
            facts.push(("Error", error.clone()));
        }
        facts.push(("Upgrade", self.upgrade_id.clone()));
        facts
    }
}

/// Sends `message` to `url` in `format`; any answer but 2xx is an error saying what came back.
pub(crate) fn send(format: NotifyFormat, url: &str, message: &Message) -> Result<()> {
    let (target, body) = formats::request(format, url, message)?;
    let agent = ureq::AgentBuilder::new().timeout_connect(CONNECT_TIMEOUT).timeout(REQUEST_TIMEOUT).build();
    match agent.post(&target).send_json(body) {
        Ok(_) => Ok(()),
        Err(ureq::Error::Status(code, answer)) => {
            let text = answer.into_string().unwrap_or_default();
            let text: String = text.trim().chars().take(ANSWER_SHOWN).collect();
            Err(anyhow!(
                "the endpoint answered HTTP {code}{}",
                if text.is_empty() { String::new() } else { format!(": {text}") }
            ))
        }
        // The transport error's own text starts with the URL: leave it out.
        Err(ureq::Error::Transport(transport)) => {
            let mut why = transport.kind().to_string();
            if let Some(detail) = transport.message() {
                why.push_str(&format!(": {detail}"));
            }
            if let Some(source) = std::error::Error::source(&transport) {
                why.push_str(&format!(": {source}"));
            }
            Err(anyhow!("no answer ({why})"))
        }
    }
}
