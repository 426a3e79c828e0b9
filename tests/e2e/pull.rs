//! The pull strategy on the real engine: a good upgrade and manual rollback,
//! each kind of bad version rolled back, refusals before anything changes, the
//! lock, the dry run and check-version against the real registry. What goes
//! through compose (discovery, rendering, recreate, rollback, the printed
//! commands) runs under compose v1 and v2; the health gate's verdicts, the
//! lock and the registry checks, which compose does not touch, under v1.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::common;
use crate::compose::{each_compose, ComposeVersion};
use crate::scenario::Scenario;

each_compose! {
    happy_path_keeps_settings_and_migrates_data;
    a_version_that_migrates_then_crashes_is_rolled_back_with_its_data;
    a_target_missing_from_the_registry_is_refused_before_anything_changes;
    a_compose_file_pinning_another_tag_is_refused_naming_the_file;
    dry_run_prints_the_commands_and_changes_nothing;
}

fn happy_path_keeps_settings_and_migrates_data(compose: ComposeVersion) {
    let Some(s) = Scenario::start("happy", &["1.0.0", "2.0.0"], compose) else { return };
    let before = s.dump();
    assert!(before.starts_with("schema 1"), "{before}");
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("[ 20%] downloading"), "{}", run.stderr);
    let health = s.wait_version("2.0.0");
    assert_eq!(health["greeting"], "hello-from-env-file");
    assert_eq!(health["overlay"], "from-overlay");
    let after = s.dump();
    assert!(after.starts_with("schema 2") && after.contains("ALPHA"), "{after}");
    let row = s.last_history();
    assert_eq!(row["status"], "complete");
    assert_eq!((row["fromVersion"].as_str(), row["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    assert!(Path::new(row["backupPath"].as_str().unwrap()).exists());
    let status = s.status_file();
    assert_eq!((status["status"].as_str(), status["progress"].as_i64()), (Some("complete"), Some(100)));
    assert_eq!(status["upgradeId"], row["upgradeId"]);
    let recreate = format!("$ {} -p {}", compose.program(), s.name);
    assert!(
        row["logs"].as_array().unwrap().iter().any(|l| l.as_str().is_some_and(|l| l.starts_with(&recreate))),
        "upgraderd ran {}: {row}",
        compose.program()
    );
    let logs: Vec<&str> = row["logs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(!s.sandbox.state().join("compose-gate/engine.sock").exists());
    // upgraderd runs on the engine's host: the final pass began as the app's processes ended, and
    // the data it holds (the migration's input, checked above) had every write the app made.
    assert!(
        logs.iter().any(|l| l.starts_with("Final pass: ") && l.contains("begun as the stopped processes ended")),
        "{logs:#?}"
    );
    if compose == ComposeVersion::V2 {
        // v2 starts fast, and its plugin would outlive a killed upgrader cut off from the engine: not held.
        assert!(logs.iter().any(|l| l.contains("compose v2 starts in tens of milliseconds")), "{logs:#?}");
        assert!(!logs.iter().any(|l| l.contains("held from the engine")), "{logs:#?}");
        return rollback_puts_back(&s, &before);
    }
    // That compose started with the backup, held at the gate until the switch; the gate is gone after it.
    let held =
        logs.iter().position(|l| l.starts_with(&recreate) && l.ends_with("held from the engine until the switch)"));
    let stopped = logs.iter().position(|l| l.starts_with("Stopping app"));
    let released = logs.iter().position(|l| l.starts_with("Released the compose started"));
    assert!(held < stopped && stopped < released && held.is_some(), "{logs:#?}");
    let fallbacks = ["Compose starts at the switch", "did not reach the engine", "not at the gate", "started again"];
    assert!(!logs.iter().any(|l| fallbacks.iter().any(|f| l.contains(f))), "{logs:#?}");
    rollback_puts_back(&s, &before);
}

/// A manual rollback puts 1.0.0 and its data back.
fn rollback_puts_back(s: &Scenario, before: &str) {
    let run = s.upgraderd(&["rollback"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
}

/// Upgrades to a bad version and checks the rollback: 1.0.0 back with its data, the reason recorded.
fn bad_version_rolls_back(test: &str, version: &str, reason: &str, compose: ComposeVersion) {
    let Some(s) = Scenario::start(test, &["1.0.0", version], compose) else { return };
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", version]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before, "data must be restored byte for byte in content");
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    let error = row["errorMessage"].as_str().unwrap();
    assert!(error.contains(reason), "expected {reason:?} in {error}");
    assert_eq!(s.status_file()["status"], "rolled_back");
}

#[test]
fn a_version_that_crashes_at_start_is_rolled_back_without_waiting_for_the_timeout() {
    let Some(s) = Scenario::start("crash", &["1.0.0", "2.0.1"], ComposeVersion::V1) else { return };
    let run = common::Run::from_output(
        s.upgraderd_command(&["upgrade", "--to", "2.0.1"]).env("UPGRADERD_HEALTH_TIMEOUT", "120s").output().unwrap(),
    );
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("1.0.0");
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(
        error.starts_with("the container exited with code") || error.starts_with("the container is crash-looping"),
        "the reason names the crash, not the timeout: {error}"
    );
    // Generous against a loaded machine, far below the timeout: the gate did not wait for it.
    let gate = s.gate_time();
    assert!(gate < Duration::from_secs(60), "the gate ran {gate:?} of its 120 s timeout before failing");
    eprintln!("crash: the gate failed after {gate:?} of its 120 s timeout");
}

#[test]
fn a_version_that_never_listens_is_rolled_back() {
    bad_version_rolls_back("hang", "2.0.2", "not healthy after 20s", ComposeVersion::V1);
}

#[test]
fn a_version_whose_health_answers_500_is_rolled_back() {
    bad_version_rolls_back("http500", "2.0.3", "answered HTTP 500", ComposeVersion::V1);
}

#[test]
fn a_version_reporting_the_wrong_version_is_rolled_back() {
    bad_version_rolls_back(
        "wrongver",
        "2.0.4",
        "reports version 1.9.9 at /version, expected 2.0.4",
        ComposeVersion::V1,
    );
}

fn a_version_that_migrates_then_crashes_is_rolled_back_with_its_data(compose: ComposeVersion) {
    bad_version_rolls_back("migcrash", "2.0.5", "the container", compose);
}

fn a_target_missing_from_the_registry_is_refused_before_anything_changes(compose: ComposeVersion) {
    let Some(s) = Scenario::start("absent", &["1.0.0"], compose) else { return };
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "9.9.9"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("does not exist in the registry"), "{}", run.stderr);
    assert_eq!(s.container(), container, "the container was not recreated");
    let row = s.last_history();
    assert_eq!(row["status"], "failed");
    assert!(row["errorMessage"].as_str().unwrap().contains("refused in preflight"));
    assert!(row["backupPath"].is_null());
}

fn a_compose_file_pinning_another_tag_is_refused_naming_the_file(compose: ComposeVersion) {
    let Some(s) = Scenario::start("pinned", &["1.0.0", "2.0.0"], compose) else { return };
    let container = s.container();
    fs::write(
        s.dir.join("docker-compose.prod.yml"),
        format!(
            "version: '3.7'\nservices:\n  app:\n    image: {}:1.0.0\n    environment:\n      OVERLAY: from-overlay\n",
            s.repo
        ),
    )
    .unwrap();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("docker-compose.prod.yml:4 sets the image"), "{}", run.stderr);
    assert_eq!(s.container(), container);
    s.wait_version("1.0.0");
}

#[test]
fn a_second_upgrade_while_one_runs_exits_3() {
    let Some(s) = Scenario::start("twice", &["1.0.0", "2.0.2"], ComposeVersion::V1) else { return };
    // 2.0.2 never listens: the first upgrade holds the lock through its whole 20 s gate.
    let first = s
        .upgraderd_command(&["upgrade", "--to", "2.0.2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    common::wait(format!("the first upgrade (pid {pid}) to hold the lock"))
        .within(Duration::from_secs(60))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until_true(|| s.lock_holder().is_some_and(|holder| holder["pid"] == pid));
    let second = s.upgraderd(&["upgrade", "--to", "2.0.2"]);
    assert_eq!(second.code, 3, "{}", second.stderr);
    assert!(second.stderr.contains("another upgraderd holds the lock"), "{}", second.stderr);
    assert!(second.stderr.contains(&format!("pid {pid} ")), "the holder is named: {}", second.stderr);
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    s.wait_version("1.0.0");
}

/// What keeps the plain order, each ending `complete`: a compose that fails
/// through the gate before any change reached the engine is run again the
/// plain way; one that goes around the gate (it drops `DOCKER_HOST`) is
/// found out by its `ps` before anything is started ahead; and
/// `UPGRADERD_EARLY_COMPOSE=false` starts nothing ahead.
#[test]
fn a_compose_that_fails_at_the_gate_or_goes_around_it_keeps_the_plain_order() {
    let Some(s) = Scenario::start("gatefail", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let wrapper = s.sandbox.path().join("compose-wrapper");
    fs::write(
        &wrapper,
        "#!/bin/sh\ncase \"$WRAPPER_MODE:$DOCKER_HOST:$*\" in\n\
         fail-up:*compose-gate*:*' up '*) echo 'wrapper: no engine here' >&2; exit 1 ;;\n\
         around:*) unset DOCKER_HOST ;;\nesac\nexec docker-compose \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let before = s.dump();
    let upgrade = |mode: &str, early: &str, args: &[&str]| {
        let run = common::Run::from_output(
            s.upgraderd_command(args)
                .env("UPGRADERD_COMPOSE_CMD", &wrapper)
                .env("WRAPPER_MODE", mode)
                .env("UPGRADERD_EARLY_COMPOSE", early)
                .output()
                .unwrap(),
        );
        assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
        s.wait_version("2.0.0");
        let row = s.last_history();
        assert_eq!(row["status"], "complete", "{row}");
        assert!(!s.sandbox.state().join("compose-gate/engine.sock").exists());
        row["logs"].as_array().unwrap().iter().filter_map(Value::as_str).map(str::to_string).collect::<Vec<_>>()
    };

    let logs = upgrade("fail-up", "true", &["upgrade", "--to", "2.0.0"]);
    assert!(logs.iter().any(|l| l.ends_with("held from the engine until the switch)")), "{logs:#?}");
    assert!(
        logs.iter().any(|l| l.starts_with("Compose started ahead did not reach the engine")
            && l.contains("wrapper: no engine here")
            && l.ends_with("running it again")),
        "{logs:#?}"
    );
    assert!(after_migration(&s.dump(), &before));

    let logs = upgrade("around", "true", &["upgrade", "--to", "2.0.0", "--force"]);
    assert!(
        logs.iter().any(|l| l.starts_with("Compose starts at the switch")
            && l.contains("does not talk to the engine DOCKER_HOST names")),
        "{logs:#?}"
    );
    assert!(!logs.iter().any(|l| l.contains("held from the engine")), "{logs:#?}");

    let logs = upgrade("", "false", &["upgrade", "--to", "2.0.0", "--force"]);
    assert!(!logs.iter().any(|l| l.contains("held from the engine") || l.starts_with("Compose starts")), "{logs:#?}");
}

/// The data after 1.0.0's was migrated by 2.0.0: its schema moved, its rows kept.
fn after_migration(after: &str, before: &str) -> bool {
    after.starts_with("schema 2") && before.starts_with("schema 1") && after.contains("ALPHA")
}

fn dry_run_prints_the_commands_and_changes_nothing(compose: ComposeVersion) {
    let Some(s) = Scenario::start("dryrun", &["1.0.0", "2.0.0"], compose) else { return };
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0", "--dry-run"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains(&format!("pull {}:2.0.0", s.repo)), "{}", run.stdout);
    let recreate = match compose {
        ComposeVersion::V1 => "up -d --no-deps --force-recreate app",
        // v2 is told never to pull: the target was pulled and tagged already.
        ComposeVersion::V2 => "up -d --no-deps --force-recreate --pull never app",
    };
    assert!(run.stdout.contains(&format!("{} -p {}", compose.program(), s.name)), "{}", run.stdout);
    assert!(run.stdout.contains(recreate), "{}", run.stdout);
    assert_eq!(s.container(), container);
    assert!(!s.sandbox.state().join("upgraderd.db").exists() || s.last_history().is_null());
}

#[test]
fn check_version_reads_the_real_registry_tags_and_upgrades() {
    let Some(s) = Scenario::start("tags", &["1.0.0", "2.0.0", "2.0.1"], ComposeVersion::V1) else { return };
    // The scenario allows major steps for the app's triggers; this check is about the default policy.
    let json = s.upgraderd_command(&["--json", "check-version"]).env("UPGRADERD_POLICY", "minor").output().unwrap();
    let json = common::Run::from_output(json);
    assert_eq!(json.code, 0, "{}", json.stderr);
    let report: Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(report["source"], "registry");
    assert_eq!(report["currentVersion"], "1.0.0", "from the image's version label");
    assert_eq!(report["latestVersion"], "2.0.1");
    assert_eq!(report["allowedVersion"], Value::Null, "2.x is beyond the default minor policy");
    let run = s.upgraderd_command(&["check-version", "--upgrade"]).env("UPGRADERD_POLICY", "major").output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    // 2.0.1 crashes at start: the automatic upgrade is rolled back, and 2.0.1 is quarantined.
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    s.wait_version("1.0.0");
    let report: Value = serde_json::from_slice(
        &s.upgraderd_command(&["--json", "check-version"]).env("UPGRADERD_POLICY", "major").output().unwrap().stdout,
    )
    .unwrap();
    assert_eq!(report["allowedVersion"], "2.0.0", "{report}");
    assert!(report["heldBack"][0].as_str().unwrap().contains("rolled back on this host"), "{report}");
}
