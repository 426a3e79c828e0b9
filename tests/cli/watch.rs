//! The `watch` daemon against the fake engine: triggers in both forms, the
//! status file, a hostile trigger directory, a burst of triggers, stop
//! signals before and after the switch, and recovery of an upgrader killed
//! mid-upgrade.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::common;
use crate::common::fake_engine::Deployment;
use crate::common::watcher::Watcher;
use serde_json::Value;

#[track_caller]
fn wait_for<T>(what: &str, probe: impl FnMut() -> Option<T>, context: &dyn Fn() -> String) -> T {
    wait_for_within(Duration::from_secs(30), what, probe, context)
}

#[track_caller]
fn wait_for_within<T>(
    limit: Duration,
    what: &str,
    probe: impl FnMut() -> Option<T>,
    context: &dyn Fn() -> String,
) -> T {
    common::wait(what).within(limit).every(Duration::from_millis(10)).showing(context).until(probe)
}

/// Waits until the status file shows `upgrade_id` in `state`.
#[track_caller]
fn wait_status(d: &Deployment, w: &Watcher, upgrade_id: Option<&str>, state: &str) -> Value {
    wait_for(
        &format!("status {state} for {upgrade_id:?}"),
        || d.status().filter(|s| s["status"] == state && upgrade_id.is_none_or(|id| s["upgradeId"] == id)),
        &|| format!("status: {:?}\nlog:\n{}", d.status(), w.log()),
    )
}

fn requests(d: &Deployment) -> Vec<(String, String, Option<String>)> {
    let db = rusqlite::Connection::open(d.sb.path().join("state-dir/upgraderd.db")).unwrap();
    // The daemon writes meanwhile; wait for its lock like upgraderd's own readers do.
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = db.prepare("SELECT upgradeId, state, reason FROM requests ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn a_meshmonitor_trigger_becomes_an_upgrade_and_the_status_file_follows_it() {
    let d = Deployment::new();
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"ui-42","version":"2.0.0","backup":true,"timestamp":1736000000000}"#);
    let done = wait_status(&d, &w, Some("ui-42"), "complete");
    assert_eq!(done["fromVersion"], "1.0.0");
    assert_eq!(done["toVersion"], "2.0.0");
    assert_eq!(done["progress"], 100);
    assert!(!d.trigger_dir().join(".upgrade-trigger").exists(), "the trigger was consumed");
    let row = d.last_history();
    assert_eq!((row["upgradeId"].as_str(), row["initiatedBy"].as_str()), (Some("ui-42"), Some("trigger")));
    assert_eq!(d.running_version(), "2.0.0");
    // The request is settled once the worker returns, a moment after the terminal state is written.
    let settled = vec![("ui-42".to_string(), "done".to_string(), Some("complete".to_string()))];
    wait_for("the request to be settled", || (requests(&d) == settled).then_some(()), &|| {
        format!("requests: {:?}\nlog:\n{}", requests(&d), w.log())
    });
    assert_eq!(w.stop(Duration::from_secs(5)), 0, "an idle daemon exits 0 on SIGTERM");
}

#[test]
fn an_opentrace_plain_trigger_upgrades_to_the_latest_version() {
    let d = Deployment::new();
    // Written in place, not renamed: the daemon waits for it to settle.
    fs::write(d.trigger_dir().join(".upgrade-trigger"), "update_requested\n").unwrap();
    let w = Watcher::start(&d);
    let done = wait_status(&d, &w, None, "complete");
    assert_eq!(done["toVersion"], "2.0.0", "latest resolved through the image's version label");
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn hostile_triggers_are_rejected_without_being_followed_and_the_daemon_carries_on() {
    let d = Deployment::new();
    let dir = d.trigger_dir();
    let secret = d.sb.path().join("root-only");
    fs::write(&secret, "SECRET").unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    // The app plants the status file as a symlink to a file it wants upgraderd to overwrite.
    let victim = d.sb.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".upgrade-status.json")).unwrap();
    let w = Watcher::start(&d);

    let rejected_so_far = std::cell::Cell::new(0);
    let expect_rejection = |plant: &dyn Fn(&Path), reason: &str| {
        plant(&dir.join(".upgrade-trigger"));
        rejected_so_far.set(rejected_so_far.get() + 1);
        let rejected = || {
            let rows: Vec<_> = requests(&d).into_iter().filter(|r| r.1 == "rejected").collect();
            (rows.len() == rejected_so_far.get()).then(|| rows.last().and_then(|r| r.2.clone()).unwrap_or_default())
        };
        let recorded = wait_for(&format!("rejection for {reason:?}"), rejected, &|| w.log());
        assert!(recorded.contains(reason), "recorded {recorded:?}, expected {reason:?}");
        let reported = || {
            d.status().filter(|s| s["status"] == "failed" && s["error"].as_str().is_some_and(|e| e.contains(reason)))
        };
        wait_for(&format!("the status file to report {reason:?}"), reported, &|| format!("{:?}", d.status()));
    };
    expect_rejection(&|p| std::os::unix::fs::symlink(&secret, p).unwrap(), "the trigger is a symlink");
    expect_rejection(
        &|p| {
            let c = std::ffi::CString::new(p.as_os_str().to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        },
        "not a regular file",
    );
    expect_rejection(&|p| fs::write(p, vec![b' '; 10 * 1024 * 1024]).unwrap(), "more than the 65536 bytes");
    for version in ["../x", "--help", "$(reboot)", "2.\u{ff10}.0"] {
        let body = serde_json::json!({ "version": version }).to_string();
        expect_rejection(&|p| fs::write(p, &body).unwrap(), "not a valid version tag");
    }
    expect_rejection(&|p| fs::write(p, "{\"version\": 2").unwrap(), "ends early");

    assert_eq!(fs::read_to_string(&secret).unwrap(), "SECRET");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious", "the planted symlink was not written through");
    assert!(fs::symlink_metadata(dir.join(".upgrade-status.json")).unwrap().file_type().is_file());
    assert!(dir.join(".upgrade-trigger.rejected").exists());
    assert!(!w.log().contains("SECRET"));
    let rejected = requests(&d).into_iter().filter(|r| r.1 == "rejected").count();
    assert_eq!(rejected, 8);
    // Still responsive: a good trigger after all that upgrades.
    d.write_trigger(br#"{"upgradeId":"after-abuse","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("after-abuse"), "complete");
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn disabled_upgrades_reject_triggers_with_the_reason() {
    let d = Deployment::new().with("UPGRADERD_ENABLED", "false");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"no-1","version":"2.0.0"}"#);
    let s = wait_status(&d, &w, Some("no-1"), "failed");
    assert!(s["error"].as_str().unwrap().contains("UPGRADERD_ENABLED=false"), "{s}");
    assert_eq!(d.running_version(), "1.0.0");
    assert!(d.actions().is_empty());
}

#[test]
fn a_burst_of_a_thousand_triggers_is_all_recorded_or_rejected() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "0");
    let w = Watcher::start(&d);
    let trigger = d.trigger_dir().join(".upgrade-trigger");
    let mut valid = Vec::new();
    for i in 0..1000 {
        // The app's side: wait until the previous trigger was taken, then write the next.
        wait_for("the previous trigger to be claimed", || (!trigger.exists()).then_some(()), &|| w.log());
        match i % 10 {
            // Valid requests for a tag the registry lacks: each is recorded and fails its preflight.
            0 => {
                let id = format!("burst-{i}");
                d.write_trigger(format!(r#"{{"upgradeId":"{id}","version":"9.9.{i}"}}"#).as_bytes());
                valid.push(id);
            }
            // A repeat of a request already taken is recognised by its id.
            1 => d.write_trigger(format!(r#"{{"upgradeId":"burst-{}","version":"9.9.0"}}"#, i - 1).as_bytes()),
            2..=5 => d.write_trigger(format!(r#"{{"version":"../{i}"}}"#).as_bytes()),
            _ => d.write_trigger(format!("{{\"version\": {i}}}").as_bytes()),
        }
    }
    wait_for("the last trigger to be claimed", || (!trigger.exists()).then_some(()), &|| w.log());
    let settled = || {
        let r = requests(&d);
        (r.len() == 900 && r.iter().all(|(_, state, _)| state == "done" || state == "rejected")).then_some(r)
    };
    let all = wait_for("every request recorded and every upgrade finished", settled, &|| {
        format!("{} requests\n{}", requests(&d).len(), w.log())
    });
    let done: Vec<&String> = all.iter().filter(|r| r.1 == "done").map(|r| &r.0).collect();
    assert_eq!(done, valid.iter().collect::<Vec<_>>(), "queued requests ran in the order they came");
    assert_eq!(all.iter().filter(|r| r.1 == "rejected").count(), 800);
    assert_eq!(w.log().matches("duplicate ignored").count(), 100);
    // Responsive after the burst.
    d.write_trigger(br#"{"upgradeId":"after-burst","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("after-burst"), "complete");
}

#[test]
fn a_trigger_written_during_an_upgrade_runs_after_it() {
    // The second trigger re-installs 2.0.0, which takes a `force` the operator allows.
    let d = Deployment::new().with("SLOW_PULL", "2").with("UPGRADERD_TRIGGER_MAY_FORCE", "true");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"first","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("first"), "downloading");
    d.write_trigger(br#"{"upgradeId":"second","version":"2.0.0","force":true}"#);
    w.wait_for_log("upgrade second to 2.0.0 queued behind the running upgrade");
    wait_status(&d, &w, Some("second"), "complete");
    let history = d.sb.test().args(["--json", "history"]).run().json();
    let ids: Vec<&str> =
        history["history"].as_array().unwrap().iter().map(|r| r["upgradeId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["second", "first"]);
}

#[test]
fn sigterm_before_the_switch_abandons_the_upgrade_and_changes_nothing() {
    let d = Deployment::new().with("SLOW_PULL", "30");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"stop-early","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("stop-early"), "downloading");
    let code = w.stop(Duration::from_secs(15));
    assert_eq!(code, 0);
    let s = d.status().unwrap();
    assert_eq!(s["status"], "failed");
    assert!(s["error"].as_str().unwrap().contains("before the switch"), "{s}");
    assert_eq!(d.running_version(), "1.0.0");
    assert!(!d.actions().iter().any(|a| a == "up"), "{:?}", d.actions());
}

#[test]
fn sigterm_after_the_switch_lets_the_health_gate_finish() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "2s");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"stop-late","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("stop-late"), "health_check");
    assert_eq!(w.stop(Duration::from_secs(20)), 0);
    assert_eq!(d.status().unwrap()["status"], "complete");
    assert_eq!(d.running_version(), "2.0.0");
}

/// Runs `upgrade` and SIGKILLs it once the status file shows `step`.
fn kill_upgrade_at(d: &Deployment, step: &str) {
    let mut child = d.sb.command(&["upgrade", "--to", "2.0.0"]).stderr(Stdio::null()).spawn().unwrap();
    wait_for(
        &format!("the upgrade to reach {step}"),
        || d.status().filter(|s| s["status"] == step).map(|_| ()),
        &|| format!("{:?}", d.status()),
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!d.last_history()["status"].as_str().is_some_and(|s| ["complete", "rolled_back", "failed"].contains(&s)));
}

#[test]
fn an_upgrader_killed_before_the_switch_is_recorded_failed_on_restart() {
    let d = Deployment::new().with("SLOW_PULL", "30");
    let before = d.data();
    kill_upgrade_at(&d, "downloading");
    // What a snapshot cut off mid-write leaves: recovery removes it.
    let cut_off = d.sb.path().join("state-dir/backups/upgrade-backup-20200101_000000-dead00.snap.partial");
    std::fs::create_dir_all(cut_off.join("objects/ab")).unwrap();
    std::fs::write(cut_off.join("objects/ab/incoming-1"), "half").unwrap();
    let w = Watcher::start(&d);
    w.wait_for_log("recovered upgrade");
    assert!(!cut_off.exists(), "the unfinished snapshot is removed: {}", w.log());
    let row = d.last_history();
    assert_eq!(row["status"], "failed");
    assert!(row["errorMessage"].as_str().unwrap().contains("before the new version was started"));
    assert_eq!(d.status().unwrap()["status"], "failed");
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before);
}

#[test]
fn an_upgrader_killed_after_the_switch_is_rolled_back_with_its_data_on_restart() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "30s");
    let before = d.data();
    kill_upgrade_at(&d, "health_check");
    assert_eq!(d.running_version(), "2.0.0");
    assert_ne!(d.data(), before, "the new version migrated the data");
    let d = d.with("UPGRADERD_HEALTH_STABLE", "300ms");
    let w = Watcher::start(&d);
    w.wait_for_log("recovered upgrade");
    let row = d.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    assert_eq!(d.status().unwrap()["status"], "rolled_back");
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before);
}

#[test]
fn an_operators_rollback_killed_half_way_is_finished_on_restart() {
    let d = Deployment::new();
    let before = d.data();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let upgraded = d.last_history()["upgradeId"].as_str().unwrap().to_string();
    // Killed somewhere between its first step and the end of its 30 s health gate.
    let mut child =
        d.sb.command(&["rollback"]).env("UPGRADERD_HEALTH_STABLE", "30s").stderr(Stdio::null()).spawn().unwrap();
    wait_for("the rollback to begin", || d.status().filter(|s| s["status"] == "restarting").map(|_| ()), &|| {
        format!("{:?}", d.status())
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let w = Watcher::start(&d);
    w.wait_for_log("recovered upgrade");
    let row = d.last_history();
    assert_eq!(row["initiatedBy"], format!("rollback of {upgraded}").as_str());
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before, "the rollback's data is restored");
    d.sb.test().args(["rollback"]).status(1).stderr_contains("a rollback is not rolled back").run();
}

#[test]
fn the_next_cli_upgrade_recovers_an_orphan_first() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "30s");
    kill_upgrade_at(&d, "health_check");
    let orphan = d.last_history()["upgradeId"].as_str().unwrap().to_string();
    let out =
        d.sb.command(&["upgrade", "--to", "2.0.0", "--force"]).env("UPGRADERD_HEALTH_STABLE", "0").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("upgrade {orphan} was interrupted during health_check")), "{stderr}");
    let history = d.sb.test().args(["--json", "history"]).run().json();
    let orphan_row = history["history"].as_array().unwrap().iter().find(|r| r["upgradeId"] == orphan.as_str()).unwrap();
    assert_eq!(orphan_row["status"], "rolled_back");
}

#[test]
fn the_app_side_examples_request_an_upgrade_and_follow_it() {
    let d = Deployment::new();
    let w = Watcher::start(&d);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/app-side");
    let out = std::process::Command::new(examples.join("request-upgrade.sh"))
        .arg(d.trigger_dir())
        .arg("2.0.0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("status: complete"), "{text}\n{}", w.log());
    assert_eq!(d.running_version(), "2.0.0");

    let python = format!(
        r#"
import sys, time
sys.path.insert(0, {examples:?})
from upgrade_client import request_upgrade, read_status
upgrade_id = request_upgrade({dir:?}, "latest")
for _ in range(300):
    status = read_status({dir:?}, upgrade_id)
    if status["status"] in ("complete", "rolled_back", "failed"):
        print(status["status"])
        break
    time.sleep(0.1)
"#,
        examples = examples.display().to_string(),
        dir = d.trigger_dir().display().to_string()
    );
    let out = std::process::Command::new("python3").args(["-c", &python]).output();
    match out {
        Err(_) => eprintln!("SKIP: python3 not installed; the Python client was not exercised"),
        Ok(out) => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(text.trim(), "complete", "{}\n{}", String::from_utf8_lossy(&out.stderr), w.log());
        }
    }
}

#[test]
fn a_request_whose_daemon_was_killed_before_the_switch_runs_again_under_its_id() {
    let d = Deployment::new().with("SLOW_PULL", "30");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"again-1","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("again-1"), "downloading");
    w.signal(libc::SIGKILL);
    drop(w);
    let d = d.with("SLOW_PULL", "0");
    let w = Watcher::start(&d);
    // The request runs again: the app is never told `failed` on the way.
    let seen = d.status().unwrap_or_default();
    assert!(!(seen["upgradeId"] == "again-1" && seen["status"] == "failed"), "{seen}");
    wait_status(&d, &w, Some("again-1"), "complete");
    assert_eq!(d.running_version(), "2.0.0");
    let row = d.last_history();
    assert_eq!((row["upgradeId"].as_str(), row["status"].as_str()), (Some("again-1"), Some("complete")));
    let journal = d.sb.test().args(["--json", "status", "again-1"]).run().json();
    assert!(journal.to_string().contains("Interrupted before the switch"), "{journal}");
}

#[test]
fn the_periodic_check_writes_the_banner_and_upgrades_when_allowed_to() {
    let server = common::http::Server::start(|_| common::http::Reply::json(200, r#"{"version": "2.0.0"}"#));
    let d = Deployment::new()
        .with("UPGRADERD_VERSION_URL", &server.url("/version.json"))
        .with("UPGRADERD_POLICY", "major")
        .with("UPGRADERD_CHECK_EVERY", "1s")
        .with("UPGRADERD_AUTO_UPGRADE", "true");
    let w = Watcher::start(&d);
    let done = wait_status(&d, &w, None, "complete");
    assert_eq!(done["toVersion"], "2.0.0");
    assert_eq!(d.last_history()["initiatedBy"], "check-version");
    let banner: Value =
        serde_json::from_slice(&fs::read(d.trigger_dir().join(".upgrade-available.json")).unwrap()).unwrap();
    // Checks run every second, so the banner may already be a later check's; the upgrade's row
    // keeps what the first check saw: 1.0.0 running, 2.0.0 offered.
    assert_eq!(banner["latestVersion"], "2.0.0");
    assert_eq!((done["fromVersion"].as_str(), done["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    // The next checks find nothing newer and queue nothing.
    wait_for(
        "a check after the upgrade",
        || {
            let b: Value =
                serde_json::from_slice(&fs::read(d.trigger_dir().join(".upgrade-available.json")).ok()?).ok()?;
            (b["currentVersion"] == "2.0.0").then_some(())
        },
        &|| w.log(),
    );
    assert_eq!(requests(&d).len(), 1);
}

#[test]
fn check_version_upgrade_runs_the_upgrade_in_process() {
    let server = common::http::Server::start(|_| common::http::Reply::json(200, r#"{"version": "2.0.0"}"#));
    let d = Deployment::new().with("UPGRADERD_VERSION_URL", &server.url("/v")).with("UPGRADERD_POLICY", "major");
    d.sb.test().args(["check-version", "--upgrade"]).stdout_contains("complete: 1.0.0 -> 2.0.0").run();
    assert_eq!(d.running_version(), "2.0.0");
    assert_eq!(d.last_history()["initiatedBy"], "check-version");
    d.sb.test().args(["check-version", "--exit-code"]).status(0).stdout_contains("up to date: 2.0.0").run();
}

#[test]
fn the_apps_trigger_is_bound_by_the_operators_policy_and_cannot_force_past_it() {
    let d = Deployment::new().with("UPGRADERD_POLICY", "patch");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"p1","version":"2.0.0"}"#);
    let refused = wait_status(&d, &w, Some("p1"), "failed");
    assert!(refused["error"].as_str().unwrap().contains("beyond UPGRADERD_POLICY=patch"), "{refused}");
    d.write_trigger(br#"{"upgradeId":"p2","version":"2.0.0","force":true}"#);
    let forced = wait_status(&d, &w, Some("p2"), "failed");
    assert!(forced["error"].as_str().unwrap().contains("beyond UPGRADERD_POLICY=patch"), "{forced}");
    let logs = forced["logs"].to_string();
    assert!(logs.contains("asked to force the upgrade; ignored (set UPGRADERD_TRIGGER_MAY_FORCE=true"), "{logs}");
    // `latest` is checked once the download says which version it is.
    d.write_trigger(b"update_requested");
    let latest = wait_for(
        "the latest request to end",
        || d.status().filter(|s| s["status"] == "failed" && s["upgradeId"] != "p2"),
        &|| w.log(),
    );
    assert!(latest["error"].as_str().unwrap().contains("2.0.0: beyond UPGRADERD_POLICY=patch"), "{latest}");
    assert!(d.image_tags().iter().all(|t| !t.contains("upgraderd-rollback-")), "{:?}", d.image_tags());
    assert_eq!(d.running_version(), "1.0.0");
    drop(w);
    // The operator's own upgrade is not bound by the automatic policy.
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn an_unlabelled_latest_that_was_rolled_back_is_not_switched_to_again_at_the_apps_next_trigger() {
    let d = Deployment::new().with("CRASH", "2.0.0").with("NO_LABEL", "1").with("UPGRADERD_POLICY", "major");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"l1","version":"latest"}"#);
    wait_status(&d, &w, Some("l1"), "rolled_back");
    let ups = d.actions().iter().filter(|a| *a == "up").count();
    d.write_trigger(br#"{"upgradeId":"l2","version":"latest"}"#);
    let refused = wait_status(&d, &w, Some("l2"), "failed");
    assert!(refused["error"].as_str().unwrap().contains("was rolled back on this host"), "{refused}");
    assert_eq!(d.actions().iter().filter(|a| *a == "up").count(), ups, "not switched to again: {:?}", d.actions());
    assert_eq!(d.running_version(), "1.0.0");
    drop(w);
    // The operator may still force it.
    let forced = d.sb.test().args(["upgrade", "--to", "latest", "--force"]).status(1).run();
    forced.stderr_has("rolled_back");
}

#[test]
fn the_apps_trigger_cannot_downgrade_or_skip_the_backup_unless_the_operator_opts_in() {
    let d = Deployment::new().with("UPGRADERD_CURRENT_VERSION", "3.0.0").with("UPGRADERD_POLICY", "major");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"d1","version":"2.0.0","force":true,"backup":false}"#);
    let refused = wait_status(&d, &w, Some("d1"), "failed");
    assert!(refused["error"].as_str().unwrap().contains("older than the running 3.0.0"), "{refused}");
    assert_eq!(d.running_version(), "1.0.0");
    drop(w);

    let d = d.with("UPGRADERD_TRIGGER_MAY_FORCE", "true");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"d2","version":"2.0.0","force":true,"backup":false}"#);
    let done = wait_status(&d, &w, Some("d2"), "complete");
    let logs = done["logs"].to_string();
    assert!(logs.contains("asked to skip the backup; ignored (set UPGRADERD_TRIGGER_MAY_SKIP_BACKUP=true"), "{logs}");
    assert!(d.last_history()["backupPath"].is_string(), "the backup was taken anyway");
    drop(w);

    let d = d.with("UPGRADERD_TRIGGER_MAY_SKIP_BACKUP", "true").with("UPGRADERD_CURRENT_VERSION", "1.0.0");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"d3","version":"2.0.0","force":true,"backup":false}"#);
    wait_status(&d, &w, Some("d3"), "complete");
    assert!(d.last_history()["backupPath"].is_null(), "the operator allowed the app to skip the backup");
}

#[test]
fn a_trigger_directory_swapped_for_a_symlink_is_refused_and_the_host_directory_is_left_alone() {
    let d = Deployment::new().with("UPGRADERD_POLL_INTERVAL", "1s");
    let w = Watcher::start(&d);
    let host = d.sb.path().join("host-dir");
    fs::create_dir_all(host.join(".upgrade-trigger.rejected")).unwrap();
    fs::write(host.join(".upgrade-trigger"), br#"{"upgradeId":"via-link","version":"2.0.0"}"#).unwrap();
    fs::write(host.join(".upgrade-status.json"), "host file").unwrap();
    let before = common::tree(&host);
    let moved = d.sb.path().join("trigger-moved");
    fs::rename(d.trigger_dir(), &moved).unwrap();
    std::os::unix::fs::symlink(&host, d.trigger_dir()).unwrap();
    w.wait_for_log("was replaced by a symlink");
    // Give the daemon several polls in which it could have claimed, rejected or written.
    w.wait_for_log_count("was replaced by a symlink", 2);
    assert_eq!(common::tree(&host), before, "nothing in the host directory was claimed, removed or written");
    assert_eq!(d.running_version(), "1.0.0");
    // Put back, the same directory is used again.
    fs::remove_file(d.trigger_dir()).unwrap();
    fs::rename(&moved, d.trigger_dir()).unwrap();
    d.write_trigger(br#"{"upgradeId":"after-link","version":"2.0.0"}"#);
    wait_status(&d, &w, Some("after-link"), "complete");
}

#[test]
fn the_spool_form_loses_no_request_of_a_burst_written_without_waiting() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "0");
    let spool = d.trigger_dir().join(".upgrade-trigger.d");
    fs::create_dir(&spool).unwrap();
    let w = Watcher::start(&d);
    let mut valid = Vec::new();
    let started = Instant::now();
    for i in 0..1000 {
        // The app's side: one file per request, written whole and renamed into the spool, no waiting.
        let body = if i % 10 == 0 {
            valid.push(format!("spool-{i:04}"));
            format!(r#"{{"upgradeId":"spool-{i:04}","version":"9.9.{i}"}}"#)
        } else {
            format!(r#"{{"upgradeId":"spool-{i:04}","version":"../{i}"}}"#)
        };
        let tmp = spool.join(format!(".spool-{i:04}.tmp"));
        fs::write(&tmp, body).unwrap();
        fs::rename(&tmp, spool.join(format!("{i:013}-spool-{i:04}.json"))).unwrap();
    }
    eprintln!("wrote 1000 spool requests in {:?}", started.elapsed());
    let settled = || {
        let r = requests(&d);
        (r.len() == 1000 && r.iter().all(|(_, state, _)| state == "done" || state == "rejected")).then_some(r)
    };
    // A thousand durable inserts and a hundred upgrade attempts: bounded generously for a loaded machine.
    let all = wait_for_within(
        Duration::from_secs(180),
        "every spooled request recorded and every upgrade finished",
        settled,
        &|| format!("{} requests\n{}", requests(&d).len(), w.log()),
    );
    let done: Vec<&String> = all.iter().filter(|r| r.1 == "done").map(|r| &r.0).collect();
    assert_eq!(done, valid.iter().collect::<Vec<_>>(), "spooled requests ran in name order");
    assert_eq!(all.iter().filter(|r| r.1 == "rejected").count(), 900);
    let left: Vec<String> = fs::read_dir(&spool)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".rejected"))
        .collect();
    assert!(left.is_empty(), "every accepted request file was removed once recorded: {left:?}");
}

#[test]
fn a_startup_recovery_the_lock_held_up_is_tried_again_soon_not_left_for_the_stale_check() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "30s");
    let before = d.data();
    kill_upgrade_at(&d, "health_check");
    let d = d.with("UPGRADERD_HEALTH_STABLE", "300ms");
    // Something else holds the upgrade lock while the daemon starts (another upgrader finishing).
    let lock = d.sb.path().join("state-dir/upgraderd.lock");
    let mut holder = std::process::Command::new("flock").arg(&lock).args(["sleep", "3"]).spawn().unwrap();
    common::wait("the lock to be held")
        .until_true(|| fs::File::open(&lock).is_ok_and(|f| matches!(f.try_lock(), Err(fs::TryLockError::WouldBlock))));
    let w = Watcher::start(&d);
    holder.wait().unwrap();
    w.wait_for_log("recovered upgrade");
    assert_eq!(d.last_history()["status"], "rolled_back");
    assert_eq!(d.running_version(), "1.0.0");
    assert_eq!(d.data(), before);
}

#[test]
fn watch_alive_reads_the_daemons_heartbeat() {
    let d = Deployment::new();
    d.sb.test().args(["watch", "--alive"]).status(1).stderr_contains("not alive: no heartbeat of watch in").run();
    let w = Watcher::start(&d);
    // `watching` is said early in the daemon's start; its first beat comes once the start is done.
    let beat = d.sb.path().join("state-dir/watch.alive");
    wait_for("the first heartbeat", || beat.exists().then_some(()), &|| w.log());
    d.sb.test().args(["watch", "--alive"]).stdout_contains("alive: watch (pid ").run();
    assert_eq!(w.stop(Duration::from_secs(30)), 0);
    // A heartbeat three beats old is a daemon gone or stuck.
    let old = std::process::Command::new("touch").arg("--date=-100 seconds").arg(&beat).status().unwrap();
    assert!(old.success());
    d.sb.test().args(["watch", "--alive"]).status(1).stderr_contains("s old (it beats every 30s)").run();
}
