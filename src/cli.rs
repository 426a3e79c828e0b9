//! The command line: every subcommand and flag, as clap derive definitions.
//!
//! The man pages in `man/` and the completions in `completions/` are generated
//! from these definitions; `tests/cli/generated.rs` fails when they go stale.

use std::path::PathBuf;

use clap::{ArgAction, Args, Parser, Subcommand, ValueEnum};

/// Safe upgrades for Docker Compose deployments: back up, switch, prove health, roll back image and data.
#[derive(Debug, Parser)]
#[command(name = "upgraderd", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// One of several apps on this host: reads /etc/upgraderd/NAME.env, keeps its state in /var/lib/upgraderd/NAME (as the unit upgraderd@NAME does); -c and --state-dir replace either half
    #[arg(long, value_name = "NAME", global = true)]
    pub app: Option<String>,

    /// Env-style configuration file (KEY=VALUE lines) [default: /etc/upgraderd/upgraderd.env when present]
    #[arg(short = 'c', long = "config", value_name = "FILE", global = true)]
    pub config_file: Option<PathBuf>,

    /// Directory holding the state database, the lock and (by default) backups
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,

    /// Print machine-readable JSON on stdout (JSON lines for progress)
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output on stderr (repeat for more)
    #[arg(short, long, action = ArgAction::Count, global = true, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only errors on stderr
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(flatten)]
    pub settings: SettingFlags,

    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// -1 quiet, 0 normal, 1.. verbose.
    pub(crate) fn verbosity(&self) -> i8 {
        if self.quiet {
            -1
        } else {
            self.verbose.min(3) as i8
        }
    }
}

/// Configuration keys that can also be given as flags; they win over every other source.
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Configuration (override UPGRADERD_* variables and the config file)")]
pub struct SettingFlags {
    /// Container of the service to upgrade [UPGRADERD_CONTAINER]
    #[arg(long, value_name = "NAME", global = true)]
    pub container: Option<String>,
    /// Data paths to back up, comma separated [UPGRADERD_DATA_DIR]
    #[arg(long, value_name = "PATHS", global = true)]
    pub data_dir: Option<String>,
    /// Where backups are written [UPGRADERD_BACKUP_DIR]
    #[arg(long, value_name = "DIR", global = true)]
    pub backup_dir: Option<String>,
    /// How many backups to keep [UPGRADERD_BACKUP_KEEP]
    #[arg(long, value_name = "N", global = true)]
    pub backup_keep: Option<String>,
    /// Directory shared with the app: trigger and status files [UPGRADERD_TRIGGER_DIR]
    #[arg(long, value_name = "DIR", global = true)]
    pub trigger_dir: Option<String>,
    /// Path of the docker program [UPGRADERD_DOCKER]
    #[arg(long, value_name = "PATH", global = true)]
    pub docker: Option<String>,
}

impl SettingFlags {
    /// The flags that were given, as (configuration key, value).
    pub(crate) fn given(&self) -> Vec<(&'static str, String)> {
        [
            ("UPGRADERD_CONTAINER", &self.container),
            ("UPGRADERD_DATA_DIR", &self.data_dir),
            ("UPGRADERD_BACKUP_DIR", &self.backup_dir),
            ("UPGRADERD_BACKUP_KEEP", &self.backup_keep),
            ("UPGRADERD_TRIGGER_DIR", &self.trigger_dir),
            ("UPGRADERD_DOCKER", &self.docker),
        ]
        .into_iter()
        .filter_map(|(key, value)| value.clone().map(|v| (key, v)))
        .collect()
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: turn the app's triggers into upgrades, recover interrupted ones
    Watch(WatchArgs),
    /// Upgrade the service: back up, fetch, switch, health-check, roll back on failure
    Upgrade(UpgradeArgs),
    /// Put back the version before an upgrade (default: the last complete one) and its data
    Rollback(RollbackArgs),
    /// Create, list, verify, restore and prune data backups
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Ask the version source for a newer version; optionally trigger or run the upgrade
    CheckVersion(CheckVersionArgs),
    /// Show past upgrades, newest first
    History(HistoryArgs),
    /// Show one upgrade (default: the latest) with its journal
    Status(StatusArgs),
    /// Print the effective configuration and where each value came from
    Config,
    /// Print a shell completion script
    Completions(CompletionsArgs),
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Only say whether a `watch` of this state directory is alive: exit 0 when
    /// its heartbeat (written every 30 s) is under 90 s old, else 1. For a
    /// container's HEALTHCHECK
    #[arg(long)]
    pub alive: bool,
}

/// `--strategy`: checked where it is read, so the command gets a strategy, not a name.
fn strategy_arg(name: &str) -> Result<crate::states::Strategy, String> {
    crate::states::Strategy::parse(name)
        .ok_or_else(|| format!("unknown strategy {name}: use {}", crate::states::Strategy::choices()))
}

#[derive(Debug, Args)]
pub struct UpgradeArgs {
    /// Target version tag, or `latest`
    #[arg(long, value_name = "VERSION|latest")]
    pub to: String,
    /// pull (image), rebuild (git + compose build) or swarm (a Swarm service takes it by itself) [default: UPGRADERD_STRATEGY]
    #[arg(long, value_name = "STRATEGY", value_parser = strategy_arg)]
    pub strategy: Option<crate::states::Strategy>,
    /// Skip the data backup (a rollback then cannot restore data)
    #[arg(long)]
    pub no_backup: bool,
    /// Upgrade even to the running version or to an older one
    #[arg(long)]
    pub force: bool,
    /// Run the pre-flight checks and print the commands that would run; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The upgrade to undo [default: the last complete upgrade]
    #[arg(value_name = "UPGRADE_ID")]
    pub upgrade_id: Option<String>,
    /// Keep the current data instead of restoring the upgrade's backup
    #[arg(long)]
    pub no_restore_data: bool,
    /// Print what would be done; change nothing
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Back up the data paths into a new backup (a snapshot, or an archive: UPGRADERD_BACKUP_FORMAT)
    Create,
    /// List the backups in the backup directory, with the disk each holds alone and shares
    List,
    /// Check a backup: every member's sha256 against the manifest (and a compressed file's checksum)
    Verify(BackupRef),
    /// Restore a backup over the data paths it was taken from (or into --to DIR)
    Restore(RestoreArgs),
    /// Write a backup as one .tar.gz or .tar.zst file (for an off-host copy), checked once written
    Export(ExportArgs),
    /// Delete old backups, keeping the newest N and the last complete upgrade's
    Prune(PruneArgs),
}

#[derive(Debug, Args)]
pub struct BackupRef {
    /// Backup path (an archive or a snapshot directory), backup id (as `backup list` shows it) or upgrade id
    #[arg(value_name = "FILE|ID")]
    pub backup: String,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub backup: BackupRef,
    /// The file to write (it must not exist yet): a .tar.zst when its name ends in .zst or .tzst, else a .tar.gz
    #[arg(value_name = "OUTPUT")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub backup: BackupRef,
    /// Restore into this directory instead of the original paths
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Backups to keep [default: UPGRADERD_BACKUP_KEEP]
    #[arg(long, value_name = "N")]
    pub keep: Option<usize>,
}

#[derive(Debug, Args)]
pub struct CheckVersionArgs {
    /// Exit 10 when an update the policy allows exists (for cron and scripts)
    #[arg(long)]
    pub exit_code: bool,
    /// Write a trigger for the running `watch` when an allowed update exists
    #[arg(long, conflicts_with = "upgrade")]
    pub trigger: bool,
    /// Run the upgrade here when an allowed update exists (cron without a daemon; takes the lock)
    #[arg(long)]
    pub upgrade: bool,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Show at most N upgrades
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Upgrade id [default: the latest upgrade]
    #[arg(value_name = "UPGRADE_ID")]
    pub upgrade_id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to print completions for
    #[arg(value_enum)]
    pub shell: Shell,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
    Elvish,
    Powershell,
}
