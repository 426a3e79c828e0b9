//! After the terminal state is recorded: the notification and the operator's
//! post-upgrade hook. Neither can change the outcome; a failure of either is
//! a warning.

use serde_json::json;

use crate::config::Config;
use crate::engine::Outcome;
use crate::ops::hooks::{hook, HookContext};
use crate::ops::notify;
use crate::ops::process::Runner;
use crate::ui::Ui;

/// Sends the notification and runs the post-upgrade hook for a recorded outcome.
pub fn after_terminal(config: &Config, ui: &Ui, outcome: &Outcome) {
    if let Some(url) = &config.notify_url {
        let mut body = outcome.to_json();
        body["host"] =
            json!(std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default());
        if let Err(e) = notify::post_json(url, &body) {
            ui.warn(format!("{e:#}"));
        }
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
