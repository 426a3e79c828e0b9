//! Configuration, state database, lock, history and status through the real binary.

mod common;

use std::fs;
use std::path::Path;

use common::{can_mount, Mounted, Sandbox};
use upgraderd::states::{Status, Strategy, Terminal};
use upgraderd::store::db::{Db, UpgradeRecord};

#[test]
fn config_shows_every_value_with_its_source_and_masks_secrets() {
    let mut sb = Sandbox::new();
    let file = sb.config_file(
        "# deployment\nUPGRADERD_BACKUP_KEEP=7\nIMAGE_NAME=ghcr.io/example/app\nUPGRADERD_GITHUB_TOKEN=ghp_topsecret\nSOMETHING_ELSE=1\n",
    );
    sb.env("CONTAINER_NAME", "meshmonitor").env("UPGRADERD_HEALTH_TIMEOUT", "5m");
    let run = sb.run(&["--json", "--container", "from-flag", "config"]).success();
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

    let table = sb.run(&["config"]).success();
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
    sb.run(&["config"])
        .code(2)
        .stderr_has(&format!("invalid UPGRADERD_HEALTH_STABLE=\"soon\" (from {}:1", file.display()))
        .stderr_has("for example UPGRADERD_HEALTH_STABLE=90s");

    sb.config_file("");
    sb.env("UPGRADERD_BACKUP_KEEP", "many");
    sb.run(&["history"]).code(2).stderr_has("UPGRADERD_BACKUP_KEEP=\"many\" (from env UPGRADERD_BACKUP_KEEP)");

    sb.unset("UPGRADERD_BACKUP_KEEP");
    sb.run(&["--backup-keep=-3", "config"]).code(2).stderr_has("(from flag)");

    let file = sb.config_file("UPGRADERD_MIN_FREE=5GB\n\0");
    sb.run(&["config"]).code(2).stderr_has(&format!("config file {}:2: a NUL byte", file.display()));

    sb.run(&["-c", "/nonexistent/upgraderd.env", "config"])
        .code(2)
        .stderr_has("cannot read config file /nonexistent/upgraderd.env");
    sb.config_file("");
    sb.run(&["upgrade-everything"]).code(2);
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
    sb.run(&["history"]).success().stderr_has("no upgrades recorded yet");
    seed(&sb);
    let table = sb.run(&["history"]).success();
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"));
    assert!(
        lines[1].starts_with("newer") && lines[1].contains("rolled_back") && lines[1].contains("health check failed")
    );
    assert!(lines[2].starts_with("older"));

    let json = sb.run(&["--json", "history", "--limit", "1"]).success().json();
    assert_eq!(json["count"], 1);
    assert_eq!(json["history"][0]["upgradeId"], "newer");
    assert_eq!(json["history"][0]["fromVersion"], "1.0.0");

    sb.run(&["status"]).success().stdout_has("upgrade   newer").stdout_has("Creating backup");
    let status = sb.run(&["--json", "status", "older"]).success().json();
    assert_eq!(status["upgrade"]["status"], "complete");
    assert_eq!(status["events"].as_array().unwrap().len(), 2);
    sb.run(&["status", "missing"]).code(1).stderr_has("no upgrade with id missing");
}

#[test]
fn a_corrupt_state_database_is_reported_and_left_untouched() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.state()).unwrap();
    let db = sb.state().join("upgraderd.db");
    let garbage = b"this is not a database, but it is someone's file".repeat(100);
    fs::write(&db, &garbage).unwrap();
    sb.run(&["history"]).code(1).stderr_has("is not a valid SQLite database").stderr_has("left untouched");
    assert_eq!(fs::read(&db).unwrap(), garbage);
}

#[test]
fn a_locked_state_database_is_reported() {
    let sb = Sandbox::new();
    seed(&sb);
    let holder = rusqlite::Connection::open(sb.state().join("upgraderd.db")).unwrap();
    holder.execute_batch("PRAGMA locking_mode=EXCLUSIVE; BEGIN EXCLUSIVE;").unwrap();
    sb.run(&["history"]).code(1).stderr_has("is locked by another process");
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
    let run = sb.run(&["--state-dir", dir.to_str().unwrap(), "backup", "prune"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
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
    let mut lock =
        upgraderd::store::lock::Lock::acquire(&sb.state().join("upgraderd.lock"), "upgrade --to 2.0.0").unwrap();
    lock.set_upgrade("7f3a").unwrap();
    sb.run(&["backup", "create"])
        .code(3)
        .stderr_has(&format!("pid {} running `upgrade --to 2.0.0` for upgrade 7f3a since", std::process::id()));
    // Reading is never blocked by the lock.
    sb.run(&["history"]).success();
    drop(lock);
    sb.run(&["backup", "create"]).success();
}

#[test]
fn the_first_schema_keeps_opening_after_every_migration() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("upgraderd.db");
    fs::copy(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/state-v1.db"), &copy).unwrap();
    let db = Db::open(&copy).unwrap();
    assert_eq!(db.user_version().unwrap(), upgraderd::store::db::schema_version());
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
        let run = sb.run(&["completions", shell]).success();
        assert!(run.stdout.contains("upgraderd") && run.stdout.contains("backup"), "{shell}");
    }
    sb.run(&["completions", "tcsh"]).code(2);
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
        let run = sb.run(&["config"]).success();
        assert!(!run.stderr.contains("unknown key"), "{example}:\n{}", run.stderr);
    }
}
