//! Every state upgraderd records, writes for the app or reads from the
//! operator, as an enum with its wire name: the upgrade status (and the
//! progress that goes with it), the three terminal states, the state of a
//! queued request and the strategy. These names are part of the contract
//! (the status file, the history columns, `--json`), so they are spelled
//! here and nowhere else, and so is who started an upgrade ([`Initiator`]).
//! Still spelled where they are used, as text: the version sources (`url`,
//! `github`, `registry`) and the `docker-compose` deployment method a history
//! row starts with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Where an upgrade is, as the history, the status file and `--json` name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    #[default]
    Pending,
    Preflight,
    BackingUp,
    Downloading,
    Restarting,
    HealthCheck,
    RollingBack,
    Complete,
    RolledBack,
    Failed,
}

impl Status {
    pub(crate) const ALL: [Status; 10] = [
        Status::Pending,
        Status::Preflight,
        Status::BackingUp,
        Status::Downloading,
        Status::Restarting,
        Status::HealthCheck,
        Status::RollingBack,
        Status::Complete,
        Status::RolledBack,
        Status::Failed,
    ];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Preflight => "preflight",
            Status::BackingUp => "backing_up",
            Status::Downloading => "downloading",
            Status::Restarting => "restarting",
            Status::HealthCheck => "health_check",
            Status::RollingBack => "rolling_back",
            Status::Complete => "complete",
            Status::RolledBack => "rolled_back",
            Status::Failed => "failed",
        }
    }

    /// The percentage the app shows for this status: one value per status, wherever it is entered.
    pub(crate) const fn progress(self) -> u8 {
        match self {
            Status::Pending => 0,
            Status::Preflight => 5,
            // The new version is fetched while the old one serves, then the data is backed up.
            Status::Downloading => 20,
            Status::BackingUp => 35,
            Status::Restarting => 60,
            Status::HealthCheck => 80,
            Status::RollingBack => 90,
            Status::Complete | Status::RolledBack | Status::Failed => 100,
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The one lowercase word the MeshMonitor watchdog protocol's `.upgrade-status`
    /// carries for this status. Apps written for that watchdog take `complete`
    /// (and `ready`) as success and `failed` as the end of their upgrade; every
    /// other word means "still running". So only a complete upgrade says
    /// `complete`, a rolled-back one says `failed` (the app's upgrade did not
    /// happen), and `ready`, which that watchdog wrote at every start, is never
    /// written: a restart in the middle of an upgrade must not read as success.
    /// Before its first step an upgrade is `pending`, the app's own word for an
    /// upgrade it asked for and that has not started its steps yet.
    pub(crate) const fn watchdog_token(self) -> &'static str {
        match self {
            Status::Pending | Status::Preflight => "pending",
            Status::BackingUp => "backing_up",
            Status::Downloading => "downloading",
            Status::Restarting => "restarting",
            Status::HealthCheck => "health_check",
            Status::RollingBack => "rolling_back",
            Status::Complete => "complete",
            Status::RolledBack | Status::Failed => "failed",
        }
    }

    /// One of the invariant's three end states.
    pub(crate) const fn terminal(self) -> Option<Terminal> {
        match self {
            Status::Complete => Some(Terminal::Complete),
            Status::RolledBack => Some(Terminal::RolledBack),
            Status::Failed => Some(Terminal::Failed),
            _ => None,
        }
    }

    pub(crate) const fn is_terminal(self) -> bool {
        self.terminal().is_some()
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who started an upgrade: the history's `initiatedBy` column and a queued
/// request's source, by their wire names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Initiator {
    /// `upgraderd upgrade` on the command line.
    Cli,
    /// The app's trigger file (what a queued request is unless it says otherwise).
    #[default]
    Trigger,
    /// `check-version --upgrade`, or the daemon's scheduled check.
    CheckVersion,
    /// An operator's `upgraderd rollback ID`: the upgrade it rolls back.
    RollbackOf(String),
    /// A name this upgraderd does not know (written by another version): kept as it is.
    Other(String),
}

impl Initiator {
    const ROLLBACK_OF: &'static str = "rollback of ";

    /// Every text is an initiator: one this upgraderd does not know is kept as [`Initiator::Other`].
    pub(crate) fn parse(text: &str) -> Initiator {
        match text {
            "cli" => Initiator::Cli,
            "trigger" => Initiator::Trigger,
            "check-version" => Initiator::CheckVersion,
            other => match other.strip_prefix(Initiator::ROLLBACK_OF) {
                Some(id) => Initiator::RollbackOf(id.to_string()),
                None => Initiator::Other(other.to_string()),
            },
        }
    }

    /// The upgrade this one rolls back, when it is an operator's `rollback`.
    pub(crate) fn rollback_of(&self) -> Option<&str> {
        match self {
            Initiator::RollbackOf(id) => Some(id),
            _ => None,
        }
    }
}

impl From<&str> for Initiator {
    fn from(text: &str) -> Initiator {
        Initiator::parse(text)
    }
}

impl fmt::Display for Initiator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Initiator::Cli => f.write_str("cli"),
            Initiator::Trigger => f.write_str("trigger"),
            Initiator::CheckVersion => f.write_str("check-version"),
            Initiator::RollbackOf(id) => write!(f, "{}{id}", Initiator::ROLLBACK_OF),
            Initiator::Other(text) => f.write_str(text),
        }
    }
}

impl Serialize for Initiator {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

const SWARM_PREFIX: &str = "swarm:";

/// One thing stopped to hold a service's data still, to be started again
/// (`engine::halt` stops and starts it). Recorded in the journal row as a
/// token: the container id, or `swarm:SERVICE=REPLICAS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Halt {
    /// A container, by id.
    Container(String),
    /// A Swarm service and the replicas it runs with.
    SwarmService { name: String, replicas: u64 },
}

impl Halt {
    /// The recorded form: the container id, or `swarm:SERVICE=REPLICAS`.
    pub(crate) fn token(&self) -> String {
        match self {
            Halt::Container(id) => id.clone(),
            Halt::SwarmService { name, replicas } => format!("{SWARM_PREFIX}{name}={replicas}"),
        }
    }

    pub(crate) fn from_token(token: &str) -> Halt {
        let swarm = token.strip_prefix(SWARM_PREFIX).and_then(|rest| rest.rsplit_once('='));
        match swarm.and_then(|(name, n)| Some((name, n.parse().ok()?))) {
            Some((name, replicas)) => Halt::SwarmService { name: name.to_string(), replicas },
            None => Halt::Container(token.to_string()),
        }
    }

    /// For the log: a short container id, or the service.
    pub(crate) fn describe(&self) -> String {
        match self {
            Halt::Container(id) => id[..id.len().min(12)].to_string(),
            Halt::SwarmService { name, .. } => format!("Swarm service {name}, scaled to 0"),
        }
    }
}

impl Serialize for Halt {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.token())
    }
}

/// Where the version check asks what exists (`UPGRADERD_VERSION_SOURCE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VersionSource {
    /// A `version.json` at `UPGRADERD_VERSION_URL`.
    Url,
    /// The releases of `UPGRADERD_GITHUB_REPO`.
    Github,
    /// The tags of the image's repository in its registry.
    Registry,
}

impl VersionSource {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            VersionSource::Url => "url",
            VersionSource::Github => "github",
            VersionSource::Registry => "registry",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<VersionSource> {
        [VersionSource::Url, VersionSource::Github, VersionSource::Registry].into_iter().find(|s| s.as_str() == text)
    }
}

/// How an upgrade ended: one of the invariant's three states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Terminal {
    Complete,
    RolledBack,
    Failed,
}

impl Terminal {
    pub(crate) const fn status(self) -> Status {
        match self {
            Terminal::Complete => Status::Complete,
            Terminal::RolledBack => Status::RolledBack,
            Terminal::Failed => Status::Failed,
        }
    }

    pub(crate) const fn as_str(self) -> &'static str {
        self.status().as_str()
    }
}

impl fmt::Display for Terminal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What became of a request recorded from a trigger or a version check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RequestState {
    /// Waiting for its upgrade.
    #[default]
    Queued,
    /// Its upgrade is running.
    Running,
    /// Its upgrade ended (the reason says how) or could not start.
    Done,
    /// Refused before it became an upgrade.
    Rejected,
}

impl RequestState {
    pub(crate) const ALL: [RequestState; 4] =
        [RequestState::Queued, RequestState::Running, RequestState::Done, RequestState::Rejected];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            RequestState::Queued => "queued",
            RequestState::Running => "running",
            RequestState::Done => "done",
            RequestState::Rejected => "rejected",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<RequestState> {
        RequestState::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

impl fmt::Display for RequestState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a deployment gets its new version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// `docker pull IMAGE:VERSION`, retag, recreate through compose.
    #[default]
    Pull,
    /// `git` checkout of the version, `compose build`, recreate.
    Rebuild,
    /// `docker service update --image` of Swarm services, with the data on this node.
    Swarm,
}

impl Strategy {
    pub(crate) const ALL: [Strategy; 3] = [Strategy::Pull, Strategy::Rebuild, Strategy::Swarm];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Strategy::Pull => "pull",
            Strategy::Rebuild => "rebuild",
            Strategy::Swarm => "swarm",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// The reference API's `deploymentMethod`: what runs the deployment.
    pub(crate) const fn deployment_method(self) -> &'static str {
        match self {
            Strategy::Pull | Strategy::Rebuild => "docker-compose",
            Strategy::Swarm => "docker-swarm",
        }
    }

    /// For messages: `pull or rebuild`.
    pub(crate) fn choices() -> String {
        Strategy::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" or ")
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a service's data is kept consistent while it is backed up and restored
/// (the compose label `upgraderd.backup`, or `UPGRADERD_BACKUP_MODES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum BackupMode {
    /// Stopped while its data is copied (the final pass) and while it is restored.
    Stop,
    /// Copied while it runs; SQLite databases through their backup API.
    Live,
    /// Not backed up.
    Skip,
}

impl BackupMode {
    pub(crate) const ALL: [BackupMode; 3] = [BackupMode::Stop, BackupMode::Live, BackupMode::Skip];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            BackupMode::Stop => "stop",
            BackupMode::Live => "live",
            BackupMode::Skip => "skip",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<BackupMode> {
        BackupMode::ALL.into_iter().find(|m| m.as_str() == text)
    }

    /// For messages: `stop, live or skip`.
    pub(crate) fn choices() -> &'static str {
        "stop, live or skip"
    }
}

impl fmt::Display for BackupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The body a notification URL is sent in; its wire name is the URL's scheme
/// prefix that forces it (`discord+https://…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum NotifyFormat {
    /// upgraderd's own JSON: the outcome as `--json` shows it.
    Json,
    Ntfy,
    Gotify,
    Discord,
    Slack,
}

impl NotifyFormat {
    pub(crate) const ALL: [NotifyFormat; 5] =
        [NotifyFormat::Json, NotifyFormat::Ntfy, NotifyFormat::Gotify, NotifyFormat::Discord, NotifyFormat::Slack];

    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            NotifyFormat::Json => "json",
            NotifyFormat::Ntfy => "ntfy",
            NotifyFormat::Gotify => "gotify",
            NotifyFormat::Discord => "discord",
            NotifyFormat::Slack => "slack",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<NotifyFormat> {
        NotifyFormat::ALL.into_iter().find(|f| f.as_str() == text)
    }

    /// For messages: `json, ntfy, gotify, discord or slack`.
    pub(crate) fn choices() -> String {
        let names: Vec<&str> = NotifyFormat::ALL.iter().map(|f| f.as_str()).collect();
        format!("{} or {}", names[..names.len() - 1].join(", "), names[names.len() - 1])
    }
}

impl fmt::Display for NotifyFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_formats_round_trip() {
        for format in NotifyFormat::ALL {
            assert_eq!(NotifyFormat::parse(format.as_str()), Some(format));
        }
        assert_eq!(NotifyFormat::choices(), "json, ntfy, gotify, discord or slack");
    }

    #[test]
    fn wire_names_round_trip_and_match_serde() {
        for status in Status::ALL {
            assert_eq!(Status::parse(status.as_str()), Some(status));
            assert_eq!(serde_json::to_value(status).unwrap(), status.as_str());
        }
        for state in RequestState::ALL {
            assert_eq!(RequestState::parse(state.as_str()), Some(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        for strategy in Strategy::ALL {
            assert_eq!(Strategy::parse(strategy.as_str()), Some(strategy));
            assert_eq!(serde_json::to_value(strategy).unwrap(), strategy.as_str());
        }
        for mode in BackupMode::ALL {
            assert_eq!(BackupMode::parse(mode.as_str()), Some(mode));
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.as_str());
        }
        assert_eq!(Status::parse("ready"), None);
    }

    #[test]
    fn watchdog_tokens_say_complete_only_for_a_complete_upgrade_and_never_ready() {
        // What the MeshMonitor backend and the apps that copied it understand.
        let in_progress = ["pending", "backing_up", "downloading", "restarting", "health_check", "rolling_back"];
        for status in Status::ALL {
            let token = status.watchdog_token();
            assert!(token.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{status}: {token:?}");
            assert_ne!(token, "ready", "{status}");
            assert_eq!(token == "complete", status == Status::Complete, "{status}");
            match status.terminal() {
                Some(_) => assert!(["complete", "failed"].contains(&token), "{status}: {token}"),
                None => assert!(in_progress.contains(&token), "{status}: {token}"),
            }
        }
        assert_eq!(Status::RolledBack.watchdog_token(), "failed", "a rolled-back upgrade did not happen");
        assert_eq!(Status::Failed.watchdog_token(), "failed");
        for step in
            [Status::BackingUp, Status::Downloading, Status::Restarting, Status::HealthCheck, Status::RollingBack]
        {
            assert_eq!(step.watchdog_token(), step.as_str(), "the watchdog's own word for {step}");
        }
        assert_eq!(Status::Preflight.watchdog_token(), "pending");
    }

    #[test]
    fn progress_only_grows_along_the_runbook_and_ends_at_100() {
        let runbook = [
            Status::Pending,
            Status::Preflight,
            Status::Downloading,
            Status::BackingUp,
            Status::Restarting,
            Status::HealthCheck,
            Status::RollingBack,
        ];
        assert!(runbook.windows(2).all(|w| w[0].progress() < w[1].progress()));
        for terminal in [Terminal::Complete, Terminal::RolledBack, Terminal::Failed] {
            assert_eq!(terminal.status().progress(), 100);
            assert_eq!(terminal.status().terminal(), Some(terminal));
        }
        assert!(!Status::RollingBack.is_terminal());
    }
}
