//! The pull upgrade against the stateful fake `docker` (`common::fake_engine`):
//! the exact command lines for compose v2 and v1, and a failure injected at
//! every step, each ending in one of the invariant's three states with the
//! data where it must be.

use std::fs;
use std::time::Duration;

use crate::common;
use crate::common::fake_engine::Deployment;
use serde_json::Value;

#[test]
fn dry_run_prints_the_exact_compose_v2_command_lines() {
    let d = Deployment::new();
    let dir = d.sb.path().display().to_string();
    let run =
        d.sb.test()
            .args(["upgrade", "--to", "2.0.0", "--dry-run"])
            .stdout_contains("dry run: nothing was changed")
            .run();
    let planned: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("docker ")).collect();
    assert_eq!(
        planned,
        vec![
            "docker tag sha256:v-1.0.0 registry.example/demo/app:upgraderd-rollback-UPGRADE_ID".to_string(),
            "docker pull registry.example/demo/app:2.0.0".to_string(),
            "docker tag registry.example/demo/app:2.0.0 registry.example/demo/app:latest".to_string(),
            format!(
                "docker compose -p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml \
                 --env-file {dir}/.env up -d --no-deps --force-recreate --pull never app"
            ),
        ]
    );
    assert!(d.actions().is_empty(), "nothing mutating reached docker: {:?}", d.actions());
}

/// Whether `text` holds something shaped like an upgrade id (a UUID).
fn names_an_id(text: &str) -> bool {
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    text.split(|c: char| !(c.is_ascii_hexdigit() || c == '-')).any(|word| {
        let parts: Vec<&str> = word.split('-').collect();
        parts.len() == 5 && [8, 4, 4, 4, 12].iter().zip(&parts).all(|(n, p)| hex(p, *n))
    })
}

#[test]
fn a_dry_run_leaves_nothing_and_names_no_upgrade_id() {
    let d = Deployment::new();
    let state = d.sb.path().join("state-dir");
    let trigger_before = common::tree(&d.trigger_dir());
    let runs = [
        d.sb.test().args(["upgrade", "--to", "2.0.0", "--dry-run"]).run(),
        d.sb.test().args(["--json", "upgrade", "--to", "2.0.0", "--dry-run"]).run(),
        // Refused in preflight: the result line and the JSON result name no id either.
        d.sb.test()
            .args(["upgrade", "--to", "1.0.0", "--dry-run"])
            .status(1)
            .stdout_contains("(dry run: nothing was changed)")
            .run(),
        d.sb.test().args(["--json", "upgrade", "--to", "1.0.0", "--dry-run"]).status(1).run(),
    ];
    for run in &runs {
        assert!(!names_an_id(&run.stdout) && !names_an_id(&run.stderr), "{}\n{}", run.stdout, run.stderr);
    }
    assert!(runs[0].stderr.contains("UPGRADE_ID stands for the id the upgrade gets"), "{}", runs[0].stderr);
    for run in [&runs[1], &runs[3]] {
        // stdout stays JSON lines: the plan too.
        let lines: Vec<Value> = run.stdout.lines().map(|l| serde_json::from_str(l).expect(l)).collect();
        let result = lines.last().unwrap();
        assert_eq!((result["event"].as_str(), result["dryRun"].as_bool()), (Some("result"), Some(true)), "{result}");
        assert!(result.get("upgradeId").is_none(), "{result}");
    }
    assert!(runs[1].stdout.contains(r#""event":"plan","line":"docker pull registry.example/demo/app:2.0.0""#));
    assert_eq!(
        runs[1].stdout.lines().last().map(|l| serde_json::from_str::<Value>(l).unwrap()["status"].clone()),
        Some(Value::from("complete"))
    );
    assert!(!state.exists(), "the state directory was created: {:?}", fs::read_dir(&state).map(|r| r.count()));
    assert_eq!(common::tree(&d.trigger_dir()), trigger_before, "the app's directory changed");
    assert!(d.actions().is_empty(), "{:?}", d.actions());

    // With a state directory in use, a dry run adds nothing to it and nothing to history.
    // (The lock file names its holder, a dry run too, while it holds it.)
    let state_files = || {
        let mut files = common::tree(&state);
        files.remove("upgraderd.lock").expect("the lock file stays");
        files.into_iter().map(|(name, text)| (name, text.len(), text)).collect::<Vec<_>>()
    };
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let before = state_files();
    let rolled = d.sb.test().args(["--json", "rollback", "--dry-run"]).run();
    let upgrades = d.sb.run(&["upgrade", "--to", "3.0.0", "--dry-run"]);
    let after = state_files();
    assert!(
        after == before,
        "the state directory changed: {:?}",
        after.iter().map(|f| (&f.0, f.1)).collect::<Vec<_>>()
    );
    let result: Value = serde_json::from_str(rolled.stdout.lines().last().unwrap()).unwrap();
    assert!(result.get("upgradeId").is_none() && result["dryRun"] == true, "{result}");
    assert!(
        !names_an_id(&upgrades.stdout) && !names_an_id(&upgrades.stderr),
        "{}\n{}",
        upgrades.stdout,
        upgrades.stderr
    );
    let history = d.sb.test().args(["--json", "history"]).run().json();
    assert_eq!(history["count"], 1, "{history}");
}

/// `docker pull`'s output is streamed to stderr as it comes, and `-q`
/// ("only errors on stderr") quiets it with the rest of the log.
#[test]
fn streamed_pull_output_is_shown_and_quiet_hides_it() {
    let pulling = "| Pulling registry.example/demo/app:2.0.0";
    let d = Deployment::new();
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).stdout_contains("complete: 1.0.0 -> 2.0.0").run();
    assert!(run.stderr.contains(pulling), "the pull's output is not shown:\n{}", run.stderr);

    let d = Deployment::new();
    let run = d.sb.test().args(["-q", "upgrade", "--to", "2.0.0"]).stdout_contains("complete: 1.0.0 -> 2.0.0").run();
    assert!(!run.stderr.contains("Pulling"), "-q shows the pull's output:\n{}", run.stderr);
    assert!(!run.stderr.lines().any(|l| l.trim_start().starts_with('|')), "-q shows child output:\n{}", run.stderr);
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn a_good_upgrade_runs_the_runbook_in_order_and_completes() {
    let d = Deployment::new();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).stdout_contains("complete: 1.0.0 -> 2.0.0").run();
    let id = d.last_history()["upgradeId"].as_str().unwrap().to_string();
    assert_eq!(
        d.actions(),
        vec![
            format!("tag sha256:v-1.0.0 app:upgraderd-rollback-{id}"),
            "pull app:2.0.0".into(),
            "tag app:2.0.0 app:latest".into(),
            "up".into(),
        ]
    );
    assert_eq!(d.running_version(), "2.0.0");
    assert_eq!(d.last_history()["status"], "complete");
    assert_eq!(d.status_file()["status"], "complete");
    assert_eq!(d.status_file()["upgradeId"], id.as_str());
}

#[test]
fn compose_v1_gets_its_own_command_lines() {
    let d = Deployment::new().compose_v1();
    let dir = d.sb.path().display().to_string();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let v1 = fs::read_to_string(d.sb.path().join("compose-v1.log")).unwrap();
    let base = format!(
        "-p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml --env-file {dir}/.env"
    );
    assert_eq!(
        v1.lines().collect::<Vec<_>>(),
        vec![
            "version".to_string(),
            format!("{base} config"),
            // v1 has no `--pull never`; it never pulls on `up` when the image is present.
            format!("{base} up -d --no-deps --force-recreate app"),
        ]
    );
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn the_status_file_beats_during_a_long_pull() {
    let d = Deployment::new().with("SLOW_PULL", "5");
    let mut child = d.sb.command(&["upgrade", "--to", "2.0.0"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let status_path = d.sb.path().join("trigger/.upgrade-status.json");
    let read = || -> Option<Value> { serde_json::from_slice(&fs::read(&status_path).ok()?).ok() };
    let first = common::wait("the upgrade to start downloading")
        .within(Duration::from_secs(20))
        .showing(|| format!("{:?}", read()))
        .until(|| read().filter(|v| v["status"] == "downloading"));
    // The pull takes 5 s and the heartbeat comes every 2 s: a newer beat must arrive while it runs.
    let beat = common::wait("a heartbeat during the pull")
        .within(Duration::from_secs(4))
        .showing(|| format!("first {first}\nnow {:?}", read()))
        .until(|| read().filter(|v| v["updatedAt"] != first["updatedAt"]));
    assert_eq!(beat["status"], "downloading", "{beat}");
    assert_eq!(beat["upgradeId"], first["upgradeId"]);
    assert!(child.try_wait().unwrap().is_none(), "the beat came while the upgrade ran");
    assert!(child.wait().unwrap().success());
    assert_eq!(d.status_file()["status"], "complete");
}

/// One injected failure: what is asked, and how the attempt must end.
struct Case {
    fail_on: &'static str,
    crash: &'static str,
    terminal: &'static str,
    error_has: &'static str,
    running: &'static str,
    /// Whether the pre-upgrade data must be back (or never changed).
    data_intact: bool,
}

/// Runs the upgrade with the case's failure and checks how it ended; returns the history row.
fn check(case: Case) -> Value {
    let d = Deployment::new().with("FAIL_ON", case.fail_on).with("CRASH", case.crash);
    let before = d.data();
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    let row = d.last_history();
    let what = format!("FAIL_ON={:?} CRASH={:?}\n{}", case.fail_on, case.crash, run.stderr);
    assert_eq!(row["status"], case.terminal, "{what}");
    assert_eq!(d.status_file()["status"], case.terminal, "{what}");
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains(case.error_has), "error lacks {:?}: {error}\n{what}", case.error_has);
    assert_eq!(d.running_version(), case.running, "{what}");
    if case.data_intact {
        assert_eq!(d.data(), before, "{what}");
    }
    // The backup, taken after the download and the switch's preparation, is never consumed by a failure.
    let fetched = !matches!(case.fail_on, "tag:1" | "pull:1" | "tag:2");
    let backups = d.sb.test().args(["--json", "backup", "list"]).run().json();
    assert_eq!(backups["backups"].as_array().map(Vec::len), Some(usize::from(fetched)), "{what}\n{backups}");
    row
}

#[test]
fn failing_to_keep_the_old_image_changes_nothing() {
    check(Case {
        fail_on: "tag:1",
        crash: "",
        terminal: "failed",
        error_has: "injected failure of tag #1",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_pull_changes_nothing() {
    check(Case {
        fail_on: "pull:1",
        crash: "",
        terminal: "failed",
        error_has: "pulling registry.example/demo/app:2.0.0",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn an_attempt_that_fails_before_the_switch_leaves_no_rollback_tag() {
    for fail_on in ["pull:1", "up:1"] {
        let d = Deployment::new().with("FAIL_ON", fail_on);
        d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
        let terminal = d.last_history()["status"].clone();
        let rollback_tags: Vec<String> =
            d.image_tags().into_iter().filter(|t| t.contains("upgraderd-rollback-")).collect();
        if fail_on == "pull:1" {
            assert_eq!(terminal, "failed");
            assert!(rollback_tags.is_empty(), "a failed pull left {rollback_tags:?}");
            assert!(d.argv().iter().any(|l| l.starts_with("image rm ") && l.contains("upgraderd-rollback-")));
        } else {
            // After the switch the tag is what the rollback went back to; it stays for retention.
            assert_eq!(terminal, "rolled_back");
            assert_eq!(rollback_tags.len(), 1, "{rollback_tags:?}");
        }
    }
}

/// The channel's tag is moved while the old version serves, before the
/// backup stops anything: a failure there changes nothing and restores nothing.
#[test]
fn a_failed_move_of_the_channel_tag_changes_nothing() {
    check(Case {
        fail_on: "tag:2",
        crash: "",
        terminal: "failed",
        error_has: "injected failure of tag #2",
        running: "1.0.0",
        data_intact: true,
    });
    let d = Deployment::new().with("FAIL_ON", "tag:2");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).stderr_contains("Preparing the switch failed").run();
    let actions = d.actions();
    assert!(!actions.iter().any(|a| a == "up" || a == "stop"), "nothing stopped or recreated: {actions:?}");
    assert_eq!(actions.last().map(String::as_str), Some("tag sha256:v-1.0.0 app:latest"), "{actions:?}");
    assert!(d.argv().iter().all(|l| !l.starts_with("stop ")), "the backup stopped nothing: {:?}", d.argv());
}

#[test]
fn a_failed_recreate_is_rolled_back() {
    check(Case {
        fail_on: "up:1",
        crash: "",
        terminal: "rolled_back",
        error_has: "recreating the service",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_crashing_new_version_is_rolled_back_with_its_data() {
    check(Case {
        fail_on: "",
        crash: "2.0.0",
        terminal: "rolled_back",
        error_has: "exited with code 1",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_stop_of_a_version_that_already_exited_is_logged_and_the_rollback_goes_on() {
    let row = check(Case {
        fail_on: "stop:1",
        crash: "2.0.0",
        terminal: "rolled_back",
        error_has: "exited with code 1",
        running: "1.0.0",
        data_intact: true,
    });
    let logs: Vec<&str> = row["logs"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let stop_failed = logs.iter().position(|l| l.starts_with("Stopping the new version failed"));
    let restored = logs.iter().position(|l| l.starts_with("Restoring data from"));
    assert!(
        stop_failed.is_some_and(|i| logs[i].contains("injected failure of stop #1")),
        "the history's log says the stop failed, and why: {logs:#?}"
    );
    assert!(stop_failed < restored, "logged when it happened, before the restore: {logs:#?}");
}

#[test]
fn a_damaged_backup_fails_the_rollback_loudly_and_touches_no_data() {
    let d = Deployment::new().with("FAIL_ON", "backup").with("CRASH", "2.0.0");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).stderr_contains("rollback failed: restoring data").run();
    let row = d.last_history();
    assert_eq!(row["status"], "failed");
    // Restore verifies before it writes: the new version's data is left as it was, not half-restored.
    assert!(fs::read_to_string(d.sb.path().join("data/app.db")).unwrap().contains("migrated by 2.0.0"));
    // And nothing is left stopped: the new version runs again on it, and the record says what runs.
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("the data was left as the new version wrote it; now"), "{error}");
    let argv = d.argv();
    let stopped = argv.iter().rposition(|l| l.contains(" stop ")).expect("the rollback stopped the new version");
    assert!(argv[stopped..].iter().any(|l| l.contains(" start ") || l.contains(" up ")), "started again: {argv:#?}");
}

#[test]
fn a_failed_retag_of_the_old_image_fails_the_rollback() {
    check(Case {
        fail_on: "tag:3",
        crash: "2.0.0",
        terminal: "failed",
        error_has: "rollback failed",
        running: "2.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_recreate_of_the_old_version_fails_the_rollback() {
    check(Case {
        fail_on: "up:2",
        crash: "2.0.0",
        terminal: "failed",
        error_has: "rollback failed",
        running: "2.0.0",
        data_intact: true,
    });
}

#[test]
fn a_previous_version_that_fails_its_gate_after_the_revert_fails_the_rollback_on_its_restored_data() {
    // Both crash: the new one, then the previous one once it is back on its data.
    let row = check(Case {
        fail_on: "",
        crash: "2.0.0 1.0.0",
        terminal: "failed",
        error_has: "rollback failed: the previous version is not healthy either",
        running: "1.0.0",
        data_intact: true,
    });
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("exited with code 1"), "the new version's failure comes first: {error}");
}

#[test]
fn a_missing_target_is_refused_in_preflight_and_recorded() {
    let d = Deployment::new();
    d.sb.test()
        .args(["upgrade", "--to", "9.9.9"])
        .status(1)
        .stdout_contains("failed: 1.0.0 -> 9.9.9")
        .stderr_contains("does not exist in the registry")
        .run();
    let row = d.last_history();
    assert_eq!(row["status"], "failed");
    assert!(row["errorMessage"].as_str().unwrap().contains("refused in preflight"));
    assert!(d.actions().is_empty(), "{:?}", d.actions());
    // history shows the cause, not only that there was one; `status` has the full text.
    let history = d.sb.test().args(["history"]).run();
    let line = history.stdout.lines().nth(1).unwrap().to_string();
    assert!(
        line.ends_with(
            "refused in preflight: registry.example/demo/app:9.9.9 does not exist in the registry; check the version"
        ),
        "{line}"
    );
    let status = d.sb.test().args(["status"]).run();
    assert!(
        status.stdout.contains("refused in preflight, nothing was changed: registry.example/demo/app:9.9.9"),
        "{}",
        status.stdout
    );
}

#[test]
fn hostile_versions_never_reach_an_argv() {
    let d = Deployment::new();
    for version in ["--help", "../x", "$(id)", "2.0.0 ; rm -rf /"] {
        d.sb.test()
            .args(["upgrade", &format!("--to={version}")])
            .status(2)
            .stderr_contains("is not a valid version tag")
            .run();
    }
    assert!(d.argv().is_empty(), "{:?}", d.argv());
}

#[test]
fn manual_rollback_plans_then_puts_back_the_image_and_the_data() {
    let d = Deployment::new();
    let before = d.data();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let upgraded = d.last_history()["upgradeId"].as_str().unwrap().to_string();
    assert_ne!(d.data(), before);

    let plan = d.sb.test().args(["rollback", "--dry-run"]).run();
    let lines: Vec<&str> = plan.stdout.lines().collect();
    assert!(lines[0].starts_with("docker compose -p demo") && lines[0].contains(" stop -t 10 app"), "{lines:?}");
    assert!(lines[1].starts_with("# restore data from ") && lines[1].contains("upgrade-backup-"), "{lines:?}");
    assert_eq!(lines[2], "docker tag sha256:v-1.0.0 registry.example/demo/app:latest");
    assert!(lines[3].contains(" up -d --no-deps --force-recreate --pull never app"), "{lines:?}");
    assert_eq!(d.running_version(), "2.0.0", "a dry run changes nothing");

    d.sb.test().args(["rollback"]).run();
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before);
    let row = d.last_history();
    assert_eq!(row["status"], "complete");
    assert_eq!(row["initiatedBy"], format!("rollback of {upgraded}").as_str());
    assert_eq!((row["fromVersion"].as_str(), row["toVersion"].as_str()), (Some("2.0.0"), Some("1.0.0")));
}

#[test]
fn a_rollback_whose_stop_fails_while_the_new_version_runs_restores_nothing() {
    let d = Deployment::new().with("FAIL_ON", "stop:1");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let migrated = d.data();
    let run = d.sb.test().args(["rollback"]).status(1).run();
    // What runs is read from the engine after the fact, and what the failed stop halted runs again.
    run.stderr_has("stopping the new version failed")
        .stderr_has("nothing was restored")
        .stderr_has("is intact")
        .stderr_has("now app runs registry.example/demo/app:latest (running)");
    assert_eq!(d.actions().last().map(String::as_str), Some("start"), "{:?}", d.actions());
    assert_eq!(d.running_version(), "2.0.0", "left as it is, still serving");
    assert_eq!(d.data(), migrated, "nothing is restored under a running container");
    assert_eq!(d.last_history()["status"], "failed");
}

#[test]
fn latest_asked_while_latest_runs_stops_nothing_backs_up_nothing_and_is_recorded_up_to_date() {
    let d = Deployment::new();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let seen = d.actions().len();
    for _ in 0..3 {
        d.sb.test()
            .args(["upgrade", "--to", "latest"])
            .stderr_contains("Already up to date: latest is the image that runs")
            .run();
    }
    let since: Vec<String> = d.actions()[seen..].to_vec();
    assert!(
        since.iter().all(|a| a.starts_with("tag ") || a.starts_with("pull ")),
        "nothing stopped or recreated: {since:?}"
    );
    let backups = d.sb.test().args(["--json", "backup", "list"]).run().json();
    assert_eq!(backups["backups"].as_array().map(Vec::len), Some(1), "only the real upgrade's: {backups}");
    assert_eq!(d.last_history()["status"], "complete");
    assert!(d.image_tags().iter().filter(|t| t.contains("upgraderd-rollback-")).count() == 1, "{:?}", d.image_tags());
}

#[test]
fn a_rollback_with_nothing_to_restore_switches_straight_back_without_stopping_first() {
    let d = Deployment::new().with("CRASH", "2.0.0");
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0", "--no-backup"]).status(1).run();
    run.stderr_has("No data to restore: switching straight back to the previous version");
    assert_eq!(d.last_history()["status"], "rolled_back");
    assert!(!d.actions().contains(&"stop".to_string()), "a stop with no restore only adds downtime: {:?}", d.actions());
    assert_eq!(d.running_version(), "1.0.0");
}

#[test]
fn a_state_disk_that_fills_after_the_switch_still_rolls_back_and_records_it() {
    if !common::can_mount() {
        eprintln!("SKIP: cannot mount a tmpfs here; the full state disk was not exercised");
        return;
    }
    let d = Deployment::new().with("CRASH", "2.0.0");
    let state = d.sb.path().join("state-dir");
    let _mounted = common::Mounted::tmpfs(&state, "16m");
    let d = d.with("FILL_DISK", &state.display().to_string());
    let before = d.data();
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    assert!(run.stderr.contains("released upgraderd's reserve"), "{}", run.stderr);
    assert_eq!(d.running_version(), "1.0.0", "the crashing version was put back first");
    assert_eq!(d.data(), before);
    assert_eq!(d.status_file()["status"], "rolled_back");
    // The outcome reached the state database although the disk was full.
    std::fs::remove_file(state.join("filler")).unwrap();
    let row = d.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}\n{}", run.stderr);
}

/// The switch's records are one write, made after the final pass stopped the
/// app. A state database that refuses it (here a trigger, where a full or
/// damaged disk would) ends the upgrade before anything switched: what the
/// final pass stopped runs again, the old version serves its data as it was.
#[test]
fn a_switch_that_cannot_be_recorded_starts_the_stopped_app_again_and_switches_nothing() {
    let d = Deployment::new();
    // An attempt refused in preflight makes the state database the trigger goes in.
    d.sb.test().args(["upgrade", "--to", "2.1.0"]).status(1).stderr_contains("does not exist in the registry").run();
    let db = rusqlite::Connection::open(d.sb.path().join("state-dir/upgraderd.db")).unwrap();
    db.execute_batch(
        "CREATE TRIGGER refuse_the_switch BEFORE UPDATE OF switched ON upgrade_history WHEN NEW.switched = 1 \
         BEGIN SELECT RAISE(ABORT, 'the write was refused'); END;",
    )
    .unwrap();
    drop(db);
    let (before, seen) = (d.data(), d.argv().len());
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    run.stderr_has("recording the switch failed").stderr_has("the write was refused");
    let calls = d.argv()[seen..].to_vec();
    assert!(!calls.iter().any(|c| c.contains(" up ")), "nothing switched: {calls:?}");
    let stopped = calls.iter().position(|c| c.starts_with("stop -t ")).expect("the final pass stopped the app");
    assert!(calls[stopped..].iter().any(|c| c == "start -- c0ffee"), "and started it again: {calls:?}");
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before);
    let row = d.last_history();
    assert_eq!(row["status"], "failed", "{row}");
    assert!(row["errorMessage"].as_str().unwrap_or_default().contains("recording the switch failed"), "{row}");
    assert_eq!(d.status_file()["status"], "failed");
}

/// The operator's hook command lines are host configuration: a password in one
/// reaches no file the app can read (the status file, the status word), nor
/// history or the log, and the hooks still run. The pre-upgrade hook copies
/// the app's files while it runs, just after its start was journaled.
#[test]
fn a_password_in_a_hook_command_reaches_neither_the_apps_files_nor_history() {
    const SECRET: &str = "hunter2";
    let d = Deployment::new();
    let (dir, trigger) = (d.sb.path().display().to_string(), d.trigger_dir().display().to_string());
    let pre = format!(
        "cp {trigger}/.upgrade-status.json {dir}/status-during-pre; cp {trigger}/.upgrade-status {dir}/word-during-pre \
         2>/dev/null; true --password={SECRET}"
    );
    let post = format!("touch {dir}/post-ran; false --password={SECRET}");
    let d = d.with("UPGRADERD_PRE_UPGRADE_CMD", &pre).with("UPGRADERD_POST_UPGRADE_CMD", &post);
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    assert!(run.stderr.contains("UPGRADERD_POST_UPGRADE_CMD failed"), "the post hook ran and failed:\n{}", run.stderr);
    assert!(d.sb.path().join("post-ran").exists(), "the post-upgrade hook ran");
    let during = fs::read_to_string(d.sb.path().join("status-during-pre")).expect("the pre-upgrade hook ran");
    assert!(during.contains("Running UPGRADERD_PRE_UPGRADE_CMD"), "copied as the hook ran: {during}");

    let id = d.status_file()["upgradeId"].as_str().unwrap().to_string();
    let mut readable = vec![
        ("the status file while the hook ran", during),
        (
            "the status word while the hook ran",
            fs::read_to_string(d.sb.path().join("word-during-pre")).unwrap_or_default(),
        ),
        ("the status file", fs::read_to_string(d.trigger_dir().join(".upgrade-status.json")).unwrap()),
        ("the status word", fs::read_to_string(d.trigger_dir().join(".upgrade-status")).unwrap()),
        ("the log", run.stderr.clone()),
        ("history", d.sb.test().args(["--json", "history"]).run().stdout),
        ("the upgrade's journal", d.sb.test().args(["--json", "status", &id]).run().stdout),
        ("config", d.sb.test().args(["config"]).run().stdout),
    ];

    // A hook that vetoes: its reason reaches the app, its command line does not.
    let vetoing = Deployment::new().with(
        "UPGRADERD_PRE_UPGRADE_CMD",
        &format!("echo not during opening hours >&2; exit 3; : --password={SECRET}"),
    );
    let refused = vetoing.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    let error = vetoing.status_file()["error"].as_str().unwrap_or_default().to_string();
    assert!(error.contains("refused the upgrade") && error.contains("not during opening hours"), "{error}");
    readable.extend([
        (
            "the vetoed upgrade's status file",
            fs::read_to_string(vetoing.trigger_dir().join(".upgrade-status.json")).unwrap(),
        ),
        ("the vetoed upgrade's log", refused.stderr),
        ("the vetoed upgrade's history", vetoing.sb.test().args(["--json", "history"]).run().stdout),
    ]);
    for (what, text) in &readable {
        assert!(!text.contains(SECRET), "{what} holds the hook's password:\n{text}");
    }
}

/// The data filesystem of the deployment, replaced by a small tmpfs holding `app.db` again.
fn data_on_a_small_disk(d: &Deployment, size: &str) -> common::Mounted {
    let mounted = common::Mounted::tmpfs(&d.sb.path().join("data"), size);
    fs::write(mounted.0.join("app.db"), "items: a, b, c\n").unwrap();
    mounted
}

/// A sparse file far larger than the free space of its filesystem, and a
/// new version that crashes: the rollback restores the data (its holes are
/// not written, so they take no room) and the old version runs again.
#[test]
fn a_rollback_restores_a_sparse_file_larger_than_the_free_space() {
    use std::os::unix::fs::{FileExt, MetadataExt};
    if !common::can_mount() {
        eprintln!("SKIP: cannot mount a tmpfs here; a sparse file larger than the free space not exercised");
        return;
    }
    const APPARENT: u64 = 64 << 20;
    let d = Deployment::new().with("CRASH", "2.0.0");
    let disk = data_on_a_small_disk(&d, "4m");
    let image = disk.0.join("disk.img");
    let file = fs::File::create(&image).unwrap();
    file.set_len(APPARENT).unwrap();
    file.write_all_at(b"boot", 0).unwrap();
    drop(file);
    assert!(upgraderd::testing::free_bytes(&disk.0).unwrap() < APPARENT);

    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    assert_eq!(d.status_file()["status"], "rolled_back", "{}", run.stderr);
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(fs::read_to_string(disk.0.join("app.db")).unwrap(), "items: a, b, c\n", "the migration was undone");
    let restored = fs::metadata(&image).unwrap();
    assert_eq!(restored.len(), APPARENT);
    assert!(restored.blocks() * 512 < 1 << 20, "{} blocks", restored.blocks());
}

/// Preflight counts what a rollback's restore would write exactly as the
/// restore does: data that could not be restored onto its filesystem refuses
/// the upgrade before anything changes, saying how much is needed and free.
#[test]
fn preflight_refuses_an_upgrade_whose_data_a_rollback_could_not_restore() {
    if !common::can_mount() {
        eprintln!("SKIP: cannot mount a tmpfs here; the restore-room preflight not exercised");
        return;
    }
    let d = Deployment::new();
    let disk = data_on_a_small_disk(&d, "4m");
    fs::write(disk.0.join("blob.bin"), vec![7u8; 3 << 20]).unwrap();
    let before = d.data();

    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    let error = d.status_file()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("refused in preflight"), "{error}");
    assert!(
        error.contains(&format!("a rollback could not restore {}", disk.0.display()))
            && error.contains("3.0 MiB needed")
            && error.contains("free"),
        "{error}\n{}",
        run.stderr
    );
    assert_eq!(d.running_version(), "1.0.0");
    assert!(d.actions().is_empty(), "{:?}", d.actions());
    assert_eq!(d.data(), before);
}
