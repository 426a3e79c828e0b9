//! What the app's request may ask of an attempt: the app only requests, so its
//! `force` and `backup: false` count where the operator opted in, the
//! operator's policy and quarantine bind the version it asks for, and an
//! image this host rolled back is not switched to again at every trigger.

use std::cmp::Ordering;

use super::Attempt;
use crate::engine::check;
use crate::engine::preflight::Problem;
use crate::engine::strategy::Fetched;
use crate::version::compare_versions;

impl Attempt<'_, '_> {
    /// The app only requests: its `force` and `backup: false` count where the operator opted in.
    pub(super) fn bind_app_request(&mut self) {
        if self.request.force && !self.config.trigger_may_force {
            self.force = false;
            self.journal.log(
                "The trigger asked to force the upgrade; ignored (set UPGRADERD_TRIGGER_MAY_FORCE=true to allow it)",
            );
        }
        if !self.request.backup && !self.config.trigger_may_skip_backup {
            self.backup_wanted = true;
            self.journal.log(
                "The trigger asked to skip the backup; ignored (set UPGRADERD_TRIGGER_MAY_SKIP_BACKUP=true to allow it)",
            );
        }
    }

    /// The operator's policy and quarantine bind what the app asks for, unless forced where allowed.
    pub(super) fn app_policy_problems(&self, current: Option<&str>) -> Vec<Problem> {
        if !self.request.is_from_app() || self.force || self.request.target.is_latest() {
            // `latest` is checked once the fetch says which version it is.
            return Vec::new();
        }
        let refusal = check::rules(self.config, Some(&self.journal.db))
            .map(|rules| check::app_request_refusal(self.request.target.as_str(), current, &rules));
        match refusal {
            Ok(None) => Vec::new(),
            Ok(Some(why)) => vec![Problem::new("policy", why)],
            Err(e) => vec![Problem::from_error("policy", &e)],
        }
    }

    /// The app asked again for an image this host rolled back and has not run
    /// complete since (`latest` with no version label says nothing else about
    /// itself): refused, so a failing image is not switched to at every trigger.
    /// The operator's `--force` (or the app's, where allowed) still may.
    pub(super) fn quarantined_image(&self, fetched: &Fetched) -> Option<String> {
        if !self.request.is_from_app() || self.force {
            return None;
        }
        let image = fetched.image_id.as_deref()?;
        let at = self.journal.db.image_rolled_back_at(image).ok().flatten()?;
        let when = chrono::DateTime::from_timestamp_millis(at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default();
        Some(format!(
            "the image {} was rolled back on this host at {when} and has not run complete since; a new image, or \
             `upgraderd upgrade --to {} --force`, goes ahead",
            image, self.request.target
        ))
    }

    /// `latest` asked for by the app: the fetched version must be within the operator's rules.
    pub(super) fn app_policy_refusal(&mut self, fetched: &Fetched) -> Option<String> {
        if !self.request.is_from_app() || self.force || !self.request.target.is_latest() {
            return None;
        }
        let Some(version) = fetched.version.clone() else {
            self.journal.log("The fetched version does not say which version it is; UPGRADERD_POLICY was not checked");
            return None;
        };
        let rules = match check::rules(self.config, Some(&self.journal.db)) {
            Ok(rules) => rules,
            Err(e) => return Some(format!("{e:#}")),
        };
        let older =
            compare_versions(&version, self.from_version.as_deref().unwrap_or_default()) == Some(Ordering::Less);
        if older && !self.config.allow_downgrade {
            return Some(format!(
                "latest is {version}, older than the running {}; set UPGRADERD_ALLOW_DOWNGRADE=true to allow it",
                self.from_version.as_deref().unwrap_or_default()
            ));
        }
        check::app_request_refusal(&version, self.from_version.as_deref(), &rules)
    }
}
