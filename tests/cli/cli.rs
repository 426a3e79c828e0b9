//! Configuration, state database, lock, history and status through the real binary.

use std::fs;
use std::path::Path;

use crate::common;
use crate::common::{can_mount, Mounted, Sandbox};
use upgraderd::testing::db::{Db, UpgradeRecord};
use upgraderd::testing::{Status, Strategy, Terminal};

#[test]
fn config_shows_every_value_with_its_source_and_masks_secrets() {
    let mut sb = Sandbox::new();
    let file = sb.config_file(
        "# deployment\nUPGRADERD_BACKUP_KEEP=7\nIMAGE_NAME=ghcr.io/example/app\nUPGRADERD_GITHUB_TOKEN=ghp_topsecret\nSOMETHING_ELSE=1\n",
    );
    sb.env("CONTAINER_NAME", "meshmonitor").env("UPGRADERD_HEALTH_TIMEOUT", "5m");
    let run = sb.test().args(["--json", "--container", "from-flag", "config"]).run();
    let entries = run.json()["config"].as_array().unwrap().clone();
    let find = |key: &str| entries.iter().find(|e| e["key"] == key).unwrap().clone();
    assert_eq!(find("UPGRADERD_CONTAINER")["value"], "from-flag");
    assert_eq!(find("UPGRADERD_CONTAINER")["source"], "flag");
    assert_eq!(find("UPGRADERD_HEALTH_TIMEOUT")["source"], "env UPGRADERD_HEALTH_TIMEOUT");
    assert_eq!(find("UPGRADERD_BACKUP_KEEP")["source"], format!("{}:2 (UPGRADERD_BACKUP_KEEP)", file.display()));
    assert_eq!(find("UPGRADERD_IMAGE")["value"], "ghcr.io/example/app");
    assert_eq!(find("UPGRADERD_IMAGE")["source"], format!("{}:3 (IMAGE_NAME)", file.display()));
    assert_eq!(find("UPGRADERD_GITHUB_TOKEN")["value"], "********");
    assert_eq!(find("UPGRADERD_MIN_FREE")["source"], "default");
    assert!(!run.stdout.contains("ghp_topsecret"));
    assert!(run.stderr.contains(":5: unknown key SOMETHING_ELSE"), "{}", run.stderr);

    let table = sb.test().args(["config"]).run();
    assert!(
        table.stdout.lines().any(|l| l.starts_with("UPGRADERD_CONTAINER")
            && l.contains("meshmonitor")
            && l.ends_with("env CONTAINER_NAME")),
        "{}",
        table.stdout
    );
}

#[test]
fn bad_configuration_is_exit_2_naming_key_source_and_example() {
    let mut sb = Sandbox::new();
    let file = sb.config_file("UPGRADERD_HEALTH_STABLE=soon\n");
    sb.test()
        .args(["config"])
        .status(2)
        .stderr_contains(format!("invalid UPGRADERD_HEALTH_STABLE=\"soon\" (from {}:1", file.display()))
        .stderr_contains("for example UPGRADERD_HEALTH_STABLE=90s")
        .run();

    sb.config_file("");
    sb.env("UPGRADERD_BACKUP_KEEP", "many");
    sb.test()
        .args(["history"])
        .status(2)
        .stderr_contains("UPGRADERD_BACKUP_KEEP=\"many\" (from env UPGRADERD_BACKUP_KEEP)")
        .run();

    sb.unset("UPGRADERD_BACKUP_KEEP");
    sb.test().args(["--backup-keep=-3", "config"]).status(2).stderr_contains("(from flag)").run();

    let file = sb.config_file("UPGRADERD_MIN_FREE=5GB\n\0");
    sb.test().args(["config"]).status(2).stderr_contains(format!("config file {}:2: a NUL byte", file.display())).run();

    sb.test()
        .args(["-c", "/nonexistent/upgraderd.env", "config"])
        .status(2)
        .stderr_contains("cannot read config file /nonexistent/upgraderd.env")
        .run();
    sb.config_file("");
    sb.test().args(["upgrade-everything"]).status(2).run();
}

#[test]
fn a_missing_container_setting_is_exit_2_for_every_command_that_needs_one() {
    let sb = Sandbox::new();
    let trigger = sb.path().join("trigger");
    fs::create_dir(&trigger).unwrap();
    let trigger = format!("--trigger-dir={}", trigger.display());
    let cases: &[(&[&str], &str)] = &[
        (&["upgrade", "--to", "2.0.0", "--dry-run"], "no service to upgrade: set UPGRADERD_CONTAINER"),
        (&["upgrade", "--to", "2.0.0"], "no service to upgrade: set UPGRADERD_CONTAINER"),
        (&["backup", "create"], "no data to back up: set UPGRADERD_DATA_DIR"),
        (&["watch"], "watch needs UPGRADERD_TRIGGER_DIR"),
        (&[&trigger, "watch"], "watch needs a service to upgrade: set UPGRADERD_CONTAINER"),
        (&["check-version"], "no service to upgrade: set UPGRADERD_CONTAINER"),
        (&["check-version", "--exit-code"], "no service to upgrade: set UPGRADERD_CONTAINER"),
        (&["check-version", "--upgrade"], "no service to upgrade: set UPGRADERD_CONTAINER"),
        (&[&trigger, "check-version", "--trigger"], "no service to upgrade: set UPGRADERD_CONTAINER"),
    ];
    for (args, message) in cases {
        sb.test().args(args.iter().copied()).status(2).stderr_contains(*message).run();
        if args.contains(&"--dry-run") {
            assert!(!sb.state().exists(), "a dry run made the state directory");
        }
    }
}

fn seed(sb: &Sandbox) {
    fs::create_dir_all(sb.state()).unwrap();
    let mut db = Db::open(&sb.state().join("upgraderd.db")).unwrap();
    for (id, started, terminal) in [("older", 1_000, Terminal::Complete), ("newer", 2_000, Terminal::RolledBack)] {
        db.insert_upgrade(&UpgradeRecord {
            id: id.into(),
            from_version: Some("1.0.0".into()),
            to_version: Some("2.0.0".into()),
            deployment_method: "docker-compose".into(),
            status: Status::Pending,
            started_at: started,
            strategy: Strategy::Pull,
            initiated_by: Some("cli".into()),
            ..Default::default()
        })
        .unwrap();
        db.transition(id, Status::BackingUp, "Creating backup").unwrap();
        let error = (terminal == Terminal::RolledBack).then_some("health check failed: HTTP 500");
        db.finish(id, terminal, "done", error).unwrap();
    }
}

#[test]
fn history_and_status_for_people_and_for_scripts() {
    let sb = Sandbox::new();
    sb.test().args(["history"]).stderr_contains("no upgrades recorded yet").run();
    seed(&sb);
    let table = sb.test().args(["history"]).run();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"));
    assert!(
        lines[1].starts_with("newer") && lines[1].contains("rolled_back") && lines[1].contains("health check failed")
    );
    assert!(lines[2].starts_with("older"));

    let json = sb.test().args(["--json", "history", "--limit", "1"]).run().json();
    assert_eq!(json["count"], 1);
    assert_eq!(json["history"][0]["upgradeId"], "newer");
    assert_eq!(json["history"][0]["fromVersion"], "1.0.0");

    sb.test().args(["status"]).stdout_contains("upgrade   newer").stdout_contains("Creating backup").run();
    let status = sb.test().args(["--json", "status", "older"]).run().json();
    assert_eq!(status["upgrade"]["status"], "complete");
    assert_eq!(status["events"].as_array().unwrap().len(), 2);
    sb.test().args(["status", "missing"]).status(1).stderr_contains("no upgrade with id missing").run();
}

#[test]
fn a_corrupt_state_database_is_reported_and_left_untouched() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.state()).unwrap();
    let db = sb.state().join("upgraderd.db");
    let garbage = b"this is not a database, but it is someone's file".repeat(100);
    fs::write(&db, &garbage).unwrap();
    sb.test()
        .args(["history"])
        .status(1)
        .stderr_contains("is not a valid SQLite database")
        .stderr_contains("left untouched")
        .run();
    assert_eq!(fs::read(&db).unwrap(), garbage);
}

#[test]
fn a_locked_state_database_is_reported() {
    let sb = Sandbox::new();
    seed(&sb);
    let holder = rusqlite::Connection::open(sb.state().join("upgraderd.db")).unwrap();
    holder.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;").unwrap();
    sb.test().args(["history"]).status(1).stderr_contains("is locked by another process").run();
    holder.execute_batch("COMMIT").unwrap();
}

#[test]
fn a_read_only_state_database_is_reported() {
    if !can_mount() {
        eprintln!("SKIP: cannot mount here; read-only state database not exercised");
        return;
    }
    let sb = Sandbox::new();
    seed(&sb);
    let dir = sb.path().join("ro-state");
    let _ro = Mounted::read_only_bind(&sb.state(), &dir);
    let before = fs::read(dir.join("upgraderd.db")).unwrap();
    let run = sb.test().args(["--state-dir", dir.to_str().unwrap(), "backup", "prune"]).status(1).run();
    assert!(run.stderr.contains("read-only") || run.stderr.contains("Read-only"), "{}", run.stderr);
    assert_eq!(fs::read(dir.join("upgraderd.db")).unwrap(), before);
}

#[test]
fn a_second_mutating_command_gets_exit_3_naming_the_holder() {
    let mut sb = Sandbox::new();
    let data = sb.path().join("data");
    fs::create_dir_all(&data).unwrap();
    sb.env("UPGRADERD_DATA_DIR", data.display().to_string());
    fs::create_dir_all(sb.state()).unwrap();
    let mut lock = upgraderd::testing::Lock::acquire(&sb.state().join("upgraderd.lock"), "upgrade --to 2.0.0").unwrap();
    lock.set_upgrade("7f3a").unwrap();
    sb.test()
        .args(["backup", "create"])
        .status(3)
        .stderr_contains(format!("pid {} running `upgrade --to 2.0.0` for upgrade 7f3a since", std::process::id()))
        .run();
    // Reading is never blocked by the lock.
    sb.test().args(["history"]).run();
    drop(lock);
    sb.test().args(["backup", "create"]).run();
}

#[test]
fn the_first_schema_keeps_opening_after_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("upgraderd.db");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.db"), &copy).unwrap();
    let db = Db::open(&copy).unwrap();
    assert_eq!(db.user_version().unwrap(), upgraderd::testing::db::schema_version());
    let history = db.history(10).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].id, "fixture-upgrade");
    assert_eq!(history[0].status, Status::Complete);
    assert_eq!(db.events("fixture-upgrade").unwrap().len(), 2);
}

#[test]
fn completions_are_printed_for_each_shell() {
    let sb = Sandbox::new();
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let run = sb.test().args(["completions", shell]).run();
        assert!(run.stdout.contains("upgraderd") && run.stdout.contains("backup"), "{shell}");
    }
    sb.test().args(["completions", "tcsh"]).status(2).run();
}

#[test]
fn every_example_env_file_names_only_known_keys_with_valid_values() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for example in ["upgraderd.env", "meshmonitor/upgraderd.env", "opentrace/upgraderd.env"] {
        let text = fs::read_to_string(root.join(example)).unwrap();
        // Every commented-out setting, switched on.
        let enabled: String = text
            .lines()
            .map(|l| l.strip_prefix('#').filter(|rest| rest.starts_with("UPGRADERD_")).unwrap_or(l))
            .map(|l| format!("{l}\n"))
            .collect();
        let sb = Sandbox::new();
        sb.config_file(&enabled);
        let run = sb.test().args(["config"]).run();
        assert!(!run.stderr.contains("unknown key"), "{example}:\n{}", run.stderr);
    }
}

/// A sandbox whose `--app` roots are its own `etc/` and `lib/`, with `a.env` and `b.env` there.
fn two_apps() -> Sandbox {
    let mut sb = Sandbox::new();
    let etc = sb.path().join("etc");
    let lib = sb.path().join("lib");
    fs::create_dir_all(&etc).unwrap();
    fs::write(etc.join("a.env"), "UPGRADERD_BACKUP_KEEP=3\n").unwrap();
    fs::write(etc.join("b.env"), "UPGRADERD_BACKUP_KEEP=4\n").unwrap();
    sb.env("UPGRADERD_APP_CONFIG_ROOT", etc.display().to_string())
        .env("UPGRADERD_APP_STATE_ROOT", lib.display().to_string())
        .unset("UPGRADERD_STATE_DIR")
        .unset("UPGRADERD_CONFIG");
    sb
}

fn config_entry(run: &common::Run, key: &str) -> serde_json::Value {
    run.json()["config"].as_array().unwrap().iter().find(|e| e["key"] == key).unwrap().clone()
}

#[test]
fn app_selects_its_own_config_file_and_state_dir() {
    let sb = two_apps();
    let lib = sb.path().join("lib");
    let run = sb.test().args(["--json", "--app", "a", "config"]).run();
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["value"], lib.join("a").display().to_string());
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["source"], "--app a");
    let keep = config_entry(&run, "UPGRADERD_BACKUP_KEEP");
    assert_eq!(
        (keep["value"].as_str(), keep["source"].as_str().unwrap()),
        (Some("3"), &*format!("{}:1 (UPGRADERD_BACKUP_KEEP)", sb.path().join("etc/a.env").display()))
    );
    let backups = config_entry(&sb.test().args(["--json", "--app", "b", "config"]).run(), "UPGRADERD_BACKUP_DIR");
    assert_eq!(backups["value"], "", "unset: the default below the app's own state dir");

    // Histories are per app: a's database is not b's.
    fs::create_dir_all(lib.join("a")).unwrap();
    let db = Db::open(&lib.join("a/upgraderd.db")).unwrap();
    db.insert_upgrade(&UpgradeRecord {
        id: "only-in-a".into(),
        deployment_method: "docker-compose".into(),
        status: Status::Pending,
        started_at: 1_000,
        strategy: Strategy::Pull,
        ..Default::default()
    })
    .unwrap();
    drop(db);
    sb.test().args(["--app", "a", "history"]).stdout_contains("only-in-a").run();
    sb.test().args(["--app", "b", "history"]).stderr_contains("no upgrades recorded yet").run();
    // The app's file only: the single instance's file and state are not read.
    sb.test().args(["history"]).stderr_contains("no upgrades recorded yet in /var/lib/upgraderd/upgraderd.db").run();
}

#[test]
fn explicit_config_file_and_state_dir_win_over_app() {
    let sb = two_apps();
    let other = sb.path().join("trial.env");
    fs::write(&other, "UPGRADERD_BACKUP_KEEP=9\n").unwrap();
    let state = sb.path().join("elsewhere");
    let state_arg = state.display().to_string();
    let run = sb.test().args(["--json", "--app", "a", "-c", other.to_str().unwrap(), "config"]).run();
    assert_eq!(config_entry(&run, "UPGRADERD_BACKUP_KEEP")["value"], "9");
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["source"], "--app a");
    let run = sb.test().args(["--json", "--app", "a", "--state-dir", &state_arg, "config"]).run();
    assert_eq!(config_entry(&run, "UPGRADERD_BACKUP_KEEP")["value"], "3");
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["value"], state_arg.as_str());
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["source"], "flag");
}

#[test]
fn a_state_dir_from_the_environment_or_the_file_cannot_merge_two_apps() {
    let mut sb = two_apps();
    let etc = sb.path().join("etc");
    fs::write(etc.join("a.env"), "UPGRADERD_STATE_DIR=/var/lib/upgraderd\n").unwrap();
    let run = sb.test().args(["--json", "--app", "a", "config"]).run();
    assert_eq!(config_entry(&run, "UPGRADERD_STATE_DIR")["source"], "--app a");
    assert!(
        run.stderr.contains(&format!(
            "warning: UPGRADERD_STATE_DIR=/var/lib/upgraderd (from {}:1 (UPGRADERD_STATE_DIR)) is ignored: --app a keeps its state in {}",
            etc.join("a.env").display(),
            sb.path().join("lib/a").display()
        )),
        "{}",
        run.stderr
    );
    sb.env("UPGRADERD_STATE_DIR", "/srv/shared");
    sb.test()
        .args(["--app", "b", "config"])
        .stderr_contains("UPGRADERD_STATE_DIR=/srv/shared (from env UPGRADERD_STATE_DIR) is ignored: --app b")
        .run();
}

#[test]
fn a_bad_or_unknown_app_name_is_exit_2() {
    let sb = two_apps();
    for (name, why) in [
        ("../a", "'/' is not allowed"),
        ("a/b", "'/' is not allowed"),
        ("..", "it starts with \".\""),
        (".a", "it starts with \".\""),
        ("-a", "it starts with \"-\""),
        ("", "it is empty"),
        ("upgraderd", "it is a name upgraderd uses itself"),
    ] {
        sb.test()
            .args([&format!("--app={name}"), "history"])
            .status(2)
            .stderr_contains(format!("invalid app name {name:?} (from --app): {why}"))
            .run();
    }
    sb.test()
        .args(["--app", "c", "history"])
        .status(2)
        .stderr_contains(format!(
            "no configuration for app \"c\": {} does not exist",
            sb.path().join("etc/c.env").display()
        ))
        .run();
    assert!(!sb.path().join("lib").exists(), "nothing was created for a refused app");
}

#[test]
fn each_app_has_its_own_lock() {
    let mut sb = two_apps();
    let data = sb.path().join("data");
    fs::create_dir_all(&data).unwrap();
    sb.env("UPGRADERD_DATA_DIR", data.display().to_string());
    let lib = sb.path().join("lib");
    fs::create_dir_all(lib.join("a")).unwrap();
    let _a_upgrading = upgraderd::testing::Lock::acquire(&lib.join("a/upgraderd.lock"), "upgrade --to 2.0.0").unwrap();
    sb.test().args(["--app", "b", "backup", "create"]).run();
    sb.test()
        .args(["--app", "a", "backup", "create"])
        .status(3)
        .stderr_contains(format!("lock {}", lib.join("a/upgraderd.lock").display()))
        .run();
    assert_eq!(fs::read_dir(lib.join("b/backups")).unwrap().count(), 1, "b's backup went to b's state");
}

/// The commands that print, as a reader that went away finds them.
const PRINTING: &[&[&str]] = &[
    &["completions", "bash"],
    &["completions", "zsh"],
    &["completions", "fish"],
    &["completions", "elvish"],
    &["completions", "powershell"],
    &["--help"],
    &["backup", "--help"],
    &["--version"],
    &["history"],
    &["--json", "history"],
    &["status"],
    &["--json", "status", "older"],
    &["config"],
    &["--json", "config"],
    &["backup", "list"],
];

#[test]
fn a_closed_stdout_ends_the_output_quietly() {
    let sb = Sandbox::new();
    seed(&sb);
    for args in PRINTING {
        // Repeated: a reader going away mid-output used to panic in some runs only.
        for _ in 0..3 {
            let (reader, writer) = std::io::pipe().unwrap();
            drop(reader);
            let out = sb.command(args).stdout(writer).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "upgraderd {args:?} with a closed stdout:\n{stderr}");
            assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{args:?}:\n{stderr}");
        }
    }
    // A closed stderr too: the error is lost, the exit code is not.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = sb.command(&["--backup-keep=many", "config"]).stderr(writer).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_pipe_into_head_ends_quietly() {
    let sb = Sandbox::new();
    seed(&sb);
    for args in ["completions bash", "completions zsh", "history", "--help", "config"] {
        // `head` exits after its line, sometimes before upgraderd is done writing: repeated to meet both orders.
        for _ in 0..20 {
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!("set -o pipefail; \"$0\" {args} | head -1 >/dev/null"))
                .arg(common::BIN)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .env("UPGRADERD_STATE_DIR", sb.state())
                .env("UPGRADERD_CONFIG", sb.path().join("upgraderd.env"))
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "upgraderd {args} | head -1:\n{stderr}");
            assert!(stderr.is_empty(), "upgraderd {args} | head -1:\n{stderr}");
        }
    }
}
