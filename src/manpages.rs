//! The man pages: clap's page of every command (`man/upgraderd.1`,
//! `man/upgraderd-backup-restore.1`, ...) with the sections clap cannot know:
//! EXIT STATUS from [`Exit`], ENVIRONMENT from the key table [`KEYS`], FILES
//! from the names upgraderd uses, EXAMPLES and SEE ALSO. `tests/cli/generated.rs`
//! keeps the checked-in pages equal to these.

use clap::CommandFactory;
use roff::{bold, italic, roman, Inline, Roff};

use crate::cli::Cli;
use crate::config::{self, app, KeySpec, BANNER_FILE, KEYS, LEGACY_STATUS_FILE, SOCKET_TEST_PREFIX};
use crate::exit::Exit;

/// Every page as (file name, roff source), the main page first.
pub fn pages() -> Vec<(String, String)> {
    let mut cmd = without_help_subcommands(Cli::command());
    cmd.build();
    let mut out = Vec::new();
    add_pages(&cmd, "", &mut out);
    out
}

/// `upgraderd help` is not a page of its own: leave it out of every SUBCOMMANDS list.
fn without_help_subcommands(cmd: clap::Command) -> clap::Command {
    cmd.disable_help_subcommand(true).mut_subcommands(without_help_subcommands)
}

fn add_pages(cmd: &clap::Command, parent: &str, out: &mut Vec<(String, String)>) {
    let name = if parent.is_empty() { cmd.get_name().to_string() } else { format!("{parent}-{}", cmd.get_name()) };
    out.push((format!("{name}.1"), page(cmd, &name, parent)));
    for sub in cmd.get_subcommands() {
        add_pages(sub, &name, out);
    }
}

/// One page: clap's sections, then upgraderd's own before VERSION.
fn page(cmd: &clap::Command, name: &str, parent: &str) -> String {
    let man = clap_mangen::Man::new(cmd.clone().display_name(name))
        .source(format!("upgraderd {}", env!("CARGO_PKG_VERSION")))
        .manual("upgraderd manual");
    let mut bytes = Vec::new();
    man.render(&mut bytes).expect("rendering into memory cannot fail");
    let clap_part = String::from_utf8(bytes).expect("clap renders UTF-8");
    let ours = sections(name, parent);
    match clap_part.find("\n.SH VERSION\n") {
        Some(at) => format!("{}\n{ours}{}", &clap_part[..at], &clap_part[at + 1..]),
        None => format!("{clap_part}{ours}"),
    }
}

/// upgraderd's sections of one page, as roff without the preamble clap already wrote.
fn sections(name: &str, parent: &str) -> String {
    let mut roff = Roff::new();
    exit_status(&mut roff, name);
    if name == "upgraderd" {
        environment(&mut roff);
    } else {
        environment_of_command(&mut roff);
    }
    files(&mut roff, name);
    examples(&mut roff, name);
    see_also(&mut roff, name, parent);
    let preamble = Roff::new().render();
    roff.render().strip_prefix(&preamble).map(str::to_string).unwrap_or_else(|| roff.render())
}

fn item(roff: &mut Roff, term: impl Into<Vec<Inline>>, text: impl Into<Vec<Inline>>) {
    roff.control("TP", []);
    roff.text(term);
    roff.text(text);
}

fn exit_status(roff: &mut Roff, name: &str) {
    roff.control("SH", ["EXIT STATUS"]);
    for code in exit_codes(name) {
        item(roff, [bold((code as u8).to_string())], [roman(code.meaning())]);
    }
}

/// The codes a command can end with: 3 where it takes the lock, 10 for `check-version`.
fn exit_codes(name: &str) -> Vec<Exit> {
    const TAKES_THE_LOCK: &[&str] = &[
        "upgraderd",
        "upgraderd-watch",
        "upgraderd-upgrade",
        "upgraderd-rollback",
        "upgraderd-check-version",
        "upgraderd-backup",
        "upgraderd-backup-create",
        "upgraderd-backup-restore",
        "upgraderd-backup-prune",
    ];
    Exit::ALL
        .into_iter()
        .filter(|code| match code {
            Exit::Locked => TAKES_THE_LOCK.contains(&name),
            Exit::UpdateAvailable => matches!(name, "upgraderd" | "upgraderd-check-version"),
            _ => true,
        })
        .collect()
}

fn environment(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([roman(
        "Every setting is taken from, in order: a flag, the UPGRADERD_* variable, the configuration file \
         (its UPGRADERD_* name, then its older name), its older name in the environment, the default. An older \
         name in the environment counts only where its key is set nowhere else. upgraderd config prints each \
         effective value and where it came from.",
    )]);
    for key in KEYS {
        item(roff, key_term(key), [roman(key_text(key))]);
    }
    config_file_item(roff);
    item(
        roff,
        [bold(app::CONFIG_ROOT_VAR)],
        [roman(format!("Where --app NAME finds NAME.env. Default: {}.", app::DEFAULT_CONFIG_ROOT))],
    );
    item(
        roff,
        [bold(app::STATE_ROOT_VAR)],
        [roman(format!("Where --app NAME keeps its state directory NAME. Default: {}.", app::DEFAULT_STATE_ROOT))],
    );
}

/// `UPGRADERD_CONFIG`, on the main page and on every command's.
fn config_file_item(roff: &mut Roff) {
    item(
        roff,
        [bold("UPGRADERD_CONFIG")],
        [roman(format!(
            "The configuration file when no -c is given. Default: {}, when it exists.",
            config::DEFAULT_CONFIG_FILE
        ))],
    );
}

/// A command's page: where settings come from, and the main page for the key table
/// (repeating about 60 keys on every page would bury what the command itself says).
fn environment_of_command(roff: &mut Roff) {
    roff.control("SH", ["ENVIRONMENT"]);
    roff.text([
        roman(
            "Every setting is taken from, in order: a flag, the UPGRADERD_* variable, the configuration file, \
             its older name in the environment, the default. Every key, with its default and older name, is \
             listed under ENVIRONMENT in ",
        ),
        bold("upgraderd"),
        roman("(1); "),
        bold("upgraderd config"),
        roman(" prints each effective value and where it came from."),
    ]);
    config_file_item(roff);
}

fn key_term(key: &KeySpec) -> Vec<Inline> {
    let mut term = vec![bold(key.name)];
    if let Some(older) = key.fallback {
        term.extend([roman(" (older name "), bold(older), roman(")")]);
    }
    term
}

fn key_text(key: &KeySpec) -> String {
    match key.default {
        Some(default) => format!("{}. Default: {default}.", key.help),
        None => format!("{}.", key.help),
    }
}

/// Which groups of FILES a page lists: the main page all of them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Group {
    Config,
    State,
    Backups,
    Trigger,
    Units,
}

fn groups_of(name: &str) -> &'static [Group] {
    use Group::*;
    match name {
        "upgraderd" => &[Config, State, Backups, Trigger, Units],
        "upgraderd-watch" => &[Config, State, Backups, Trigger, Units],
        "upgraderd-upgrade" | "upgraderd-rollback" | "upgraderd-check-version" => &[Config, State, Backups, Trigger],
        "upgraderd-history" | "upgraderd-status" => &[Config, State],
        "upgraderd-config" => &[Config],
        "upgraderd-completions" => &[],
        // backup and its subcommands
        _ => &[Config, State, Backups],
    }
}

fn files(roff: &mut Roff, name: &str) {
    let groups = groups_of(name);
    if groups.is_empty() {
        return;
    }
    let state = config::spec("UPGRADERD_STATE_DIR").and_then(|k| k.default).unwrap_or(app::DEFAULT_STATE_ROOT);
    let trigger = config::spec("UPGRADERD_TRIGGER_FILE").and_then(|k| k.default).unwrap_or(".upgrade-trigger");
    let status = config::spec("UPGRADERD_STATUS_FILE").and_then(|k| k.default).unwrap_or(".upgrade-status.json");
    let (config_root, state_root) = (app::DEFAULT_CONFIG_ROOT, app::DEFAULT_STATE_ROOT);
    roff.control("SH", ["FILES"]);
    use Group::*;
    let entries: Vec<(Group, Vec<Inline>, String)> = vec![
        (Config, path(config::DEFAULT_CONFIG_FILE), "The configuration file (KEY=VALUE lines, as systemd's EnvironmentFile= reads them), when no -c is given.".into()),
        (Config, path(&format!("{config_root}/NAME.env")), "The configuration of app NAME, read by --app NAME and the unit upgraderd@NAME.".into()),
        (State, path(state), "The state directory (mode 0700), UPGRADERD_STATE_DIR or --state-dir.".into()),
        (State, path(&format!("{state_root}/NAME")), "The state directory of app NAME.".into()),
        (State, state_entry(config::DB_FILE), "The state database (SQLite): every upgrade, its journal, the app's requests.".into()),
        (State, state_entry(config::LOCK_FILE), "The lock held by the one upgrade, rollback or backup change running on this state directory; it names its holder. Each app has its own.".into()),
        (Backups, state_entry(&format!("{}/upgrade-backup-*.tar.gz", config::BACKUPS_DIR)), "Backups of the data (files 0600), unless UPGRADERD_BACKUP_DIR says otherwise.".into()),
        (Trigger, trigger_entry(trigger), "The trigger the app writes to ask for an upgrade (JSON, or any short note for the latest version); UPGRADERD_TRIGGER_FILE.".into()),
        (Trigger, trigger_entry(&format!("{}/", config::spool_name(trigger))), "The spool: one file per request, taken in name order.".into()),
        (Trigger, trigger_entry(&config::rejected_name(trigger)), "A rejected trigger, moved aside; the reason is in the status file.".into()),
        (Trigger, trigger_entry(status), "The progress of the current or last upgrade, rewritten atomically; UPGRADERD_STATUS_FILE.".into()),
        (Trigger, trigger_entry(LEGACY_STATUS_FILE), "The same progress as one word, for apps written for the MeshMonitor watchdog.".into()),
        (Trigger, trigger_entry(BANNER_FILE), "The last version check: current and latest version, whether an update is available.".into()),
        (Trigger, trigger_entry(&format!("{SOCKET_TEST_PREFIX}-request")), format!("Asks for a Docker socket check; answered in {SOCKET_TEST_PREFIX}.")),
        (Units, path("/etc/systemd/system/upgraderd.service"), "The unit of the single instance (upgraderd watch).".into()),
        (Units, path("/etc/systemd/system/upgraderd@.service"), "The unit of one app per instance (upgraderd --app NAME watch).".into()),
    ];
    for (group, term, text) in entries {
        if groups.contains(&group) {
            item(roff, term, [roman(text)]);
        }
    }
}

fn path(text: &str) -> Vec<Inline> {
    vec![italic(text)]
}

fn state_entry(name: &str) -> Vec<Inline> {
    path(&format!("STATE_DIR/{name}"))
}

fn trigger_entry(name: &str) -> Vec<Inline> {
    path(&format!("TRIGGER_DIR/{name}"))
}

/// Each page's examples: (command line, what it does).
fn examples_of(name: &str) -> &'static [(&'static str, &'static str)] {
    match name {
        "upgraderd" => &[
            ("upgraderd config", "Every effective setting and where it came from."),
            (
                "upgraderd upgrade --to 2.14.0 --dry-run",
                "The pre-flight checks and the exact commands; nothing changes.",
            ),
            (
                "upgraderd upgrade --to 2.14.0",
                "Back up, fetch, switch, health-check; roll back image and data on failure.",
            ),
            ("upgraderd history", "Past upgrades, newest first."),
            (
                "upgraderd --app meshmonitor history",
                "The history of app meshmonitor (/etc/upgraderd/meshmonitor.env, /var/lib/upgraderd/meshmonitor).",
            ),
            ("systemctl enable --now upgraderd@opentrace", "The daemon for app opentrace, beside the other apps' own."),
            ("upgraderd completions bash > /etc/bash_completion.d/upgraderd", "Completions for bash."),
        ],
        "upgraderd-watch" => &[
            ("systemctl enable --now upgraderd", "The daemon under systemd (Type=notify)."),
            ("upgraderd --app meshmonitor watch", "The daemon of one app, as upgraderd@meshmonitor runs it."),
            (
                "echo update_requested > /opt/opentrace/data/updates/trigger",
                "What an app does to ask for the latest version.",
            ),
        ],
        "upgraderd-upgrade" => &[
            (
                "upgraderd upgrade --to 2.14.0 --dry-run",
                "The pre-flight checks and the exact commands; nothing changes.",
            ),
            ("upgraderd upgrade --to latest", "The newest version the version source names."),
            (
                "upgraderd --app opentrace upgrade --to latest --strategy rebuild",
                "git pull and compose build for app opentrace.",
            ),
            ("upgraderd --json upgrade --to 2.14.0", "Progress as JSON lines on stdout."),
        ],
        "upgraderd-rollback" => &[
            ("upgraderd rollback", "Undo the last complete upgrade, data included."),
            (
                "upgraderd rollback 6f1c2a --no-restore-data",
                "Put back the version before upgrade 6f1c2a, keep today's data.",
            ),
        ],
        "upgraderd-backup" => &[
            ("upgraderd backup create", "Back up the data paths now."),
            ("upgraderd backup list", "The backups, newest first, with the disk each holds alone and shares."),
            (
                "upgraderd backup restore 20250107_143022-abc123 --to /tmp/look",
                "Unpack one backup elsewhere to look inside.",
            ),
            (
                "upgraderd backup export 20250107_143022-abc123 /mnt/offsite/app.tar.gz",
                "One .tar.gz of a backup for an off-host copy.",
            ),
        ],
        "upgraderd-backup-create" => &[
            (
                "upgraderd backup create",
                "Back up the data paths into a new snapshot (what changed is stored, the rest shared).",
            ),
            ("UPGRADERD_BACKUP_FORMAT=archive upgraderd backup create", "One self-contained .tar.gz instead."),
        ],
        "upgraderd-backup-list" => &[("upgraderd --json backup list", "The backups as JSON.")],
        "upgraderd-backup-export" => &[
            (
                "upgraderd backup export 20250107_143022-abc123 /mnt/offsite/app.tar.gz",
                "Write the snapshot as one .tar.gz, then read it back and check every sha256.",
            ),
            (
                "upgraderd backup export 20250107_143022-abc123 /mnt/offsite/app.tar.zst",
                "The same with zstd: faster, and smaller.",
            ),
        ],
        "upgraderd-backup-verify" => &[(
            "upgraderd backup verify /var/lib/upgraderd/backups/upgrade-backup-20250107_143022-abc123.tar.gz",
            "Check every member against the manifest.",
        )],
        "upgraderd-backup-restore" => &[
            ("upgraderd backup restore 20250107_143022-abc123", "Restore over the paths the backup was taken from."),
            (
                "upgraderd backup restore 6f1c2a --to /tmp/look",
                "The backup of upgrade 6f1c2a, unpacked into /tmp/look.",
            ),
        ],
        "upgraderd-backup-prune" => {
            &[("upgraderd backup prune --keep 3", "Keep the newest three and the last complete upgrade's.")]
        }
        "upgraderd-check-version" => &[
            ("upgraderd check-version", "One line: up to date, or what is available."),
            (
                "upgraderd check-version --exit-code",
                "Exit 10 when an allowed update exists, 0 when there is none (cron, scripts).",
            ),
            (
                "upgraderd check-version --upgrade",
                "Upgrade here when an allowed update exists (cron without a daemon).",
            ),
        ],
        "upgraderd-history" => &[
            ("upgraderd history --limit 5", "The last five upgrades."),
            (
                "upgraderd --app meshmonitor --json history",
                "App meshmonitor's history as JSON, the reference API's shape.",
            ),
        ],
        "upgraderd-status" => &[
            ("upgraderd status", "The latest upgrade with its journal."),
            ("upgraderd --json status 6f1c2a", "One upgrade as JSON."),
        ],
        "upgraderd-config" => &[
            ("upgraderd config", "Every effective setting and where it came from, secrets masked."),
            ("upgraderd --app opentrace config", "What the unit upgraderd@opentrace sees."),
        ],
        "upgraderd-completions" => &[
            ("upgraderd completions bash > /etc/bash_completion.d/upgraderd", "Completions for bash."),
            ("upgraderd completions zsh > \"${fpath[1]}/_upgraderd\"", "Completions for zsh."),
        ],
        _ => &[],
    }
}

fn examples(roff: &mut Roff, name: &str) {
    let examples = examples_of(name);
    if examples.is_empty() {
        return;
    }
    roff.control("SH", ["EXAMPLES"]);
    for (command, what) in examples {
        item(roff, [bold(*command)], [roman(*what)]);
    }
}

fn see_also(roff: &mut Roff, name: &str, parent: &str) {
    let mut pages: Vec<String> = Vec::new();
    if !parent.is_empty() {
        pages.push(format!("{parent}(1)"));
    }
    if name == "upgraderd" {
        pages.extend(["systemctl(1)", "systemd.exec(5)", "docker(1)"].map(String::from));
    }
    if pages.is_empty() {
        return;
    }
    roff.control("SH", ["SEE ALSO"]);
    roff.text([roman(pages.join(", "))]);
}
