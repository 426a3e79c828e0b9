//! Apps written for the MeshMonitor watchdog, unchanged, against `watch` and
//! the fake engine: the one-word `.upgrade-status` through good, rolled-back,
//! recovered, rejected and manually rolled-back upgrades; the Docker socket
//! check (PASS, WARN, FAIL, hostile requests, during an upgrade); the
//! backend's temp file left by an interrupted write; the operator's old
//! environment names.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use crate::common;
use crate::common::fake_engine::Deployment;
use crate::common::meshmonitor_backend::{runbook_rank, Backend, Followed, TOKENS};
use crate::common::watcher::Watcher;

fn backend(d: &Deployment) -> Backend {
    Backend::new(&d.trigger_dir())
}

/// What every upgrade's words must be: words of the protocol, in runbook order, never `ready`.
#[track_caller]
fn assert_words_of_the_protocol(followed: &Followed) {
    let tokens = &followed.tokens;
    eprintln!("the backend read {tokens:?}");
    assert!(tokens.iter().all(|t| TOKENS.contains(&t.as_str())), "{tokens:?}");
    assert!(!tokens.iter().any(|t| t == "ready"), "{tokens:?}");
    let ranks: Vec<usize> = tokens.iter().map(|t| runbook_rank(t)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "out of runbook order: {tokens:?}");
}

#[test]
fn a_good_upgrade_reads_complete_and_the_json_says_so_too() {
    let d = Deployment::new();
    let w = Watcher::start(&d);
    let app = backend(&d);
    let id = app.trigger("2.0.0");
    let followed = app.follow(&id, &|| w.log());
    assert_words_of_the_protocol(&followed);
    assert_eq!(followed.last_token(), "complete", "{followed:?}");
    assert_eq!(followed.status["status"], "complete");
    assert_eq!(fs::read_to_string(d.trigger_dir().join(".upgrade-status")).unwrap(), "complete\n");
    let mode = fs::metadata(d.trigger_dir().join(".upgrade-status")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o644, "the app reads it as another user");
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn a_rolled_back_upgrade_reads_failed_and_never_complete() {
    let d = Deployment::new().with("CRASH", "2.0.0");
    let w = Watcher::start(&d);
    let app = backend(&d);
    let id = app.trigger("2.0.0");
    let followed = app.follow(&id, &|| w.log());
    assert_words_of_the_protocol(&followed);
    assert_eq!(followed.last_token(), "failed", "{followed:?}");
    assert!(!followed.tokens.iter().any(|t| t == "complete"), "{followed:?}");
    assert_eq!(followed.status["status"], "rolled_back");
    assert_eq!(d.running_version(), "1.0.0");
}

#[test]
fn a_restart_in_the_middle_of_an_upgrade_never_reads_as_success() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "30s");
    let w = Watcher::start(&d);
    let app = backend(&d);
    app.trigger("2.0.0");
    common::wait("the upgrade to reach its health check")
        .showing(|| w.log())
        .until_true(|| app.token().as_deref() == Some("health_check"));
    w.signal(libc::SIGKILL);
    drop(w);
    // The watchdog wrote `ready` at every start: the backend read that as its upgrade done.
    let d = d.with("UPGRADERD_HEALTH_STABLE", "300ms");
    let w = Watcher::start(&d);
    let mut seen = vec![];
    let end =
        common::wait("recovery to end the upgrade").every(Duration::from_millis(2)).showing(|| w.log()).until(|| {
            let token = app.token()?;
            if seen.last() != Some(&token) {
                seen.push(token.clone());
            }
            (token == "failed").then_some(seen.clone())
        });
    assert!(end.iter().all(|t| ["health_check", "rolling_back", "failed"].contains(&t.as_str())), "{end:?}");
    w.wait_for_log("recovered upgrade");
    assert_eq!(d.last_history()["status"], "rolled_back");
    assert_eq!(d.running_version(), "1.0.0");
}

#[test]
fn a_rejected_trigger_reads_failed_under_the_operators_old_names() {
    // The watchdog's environment names, as an existing setup has them.
    let d = Deployment::new()
        .with("AUTO_UPGRADE_ENABLED", "false")
        .with("CHECK_INTERVAL", "5")
        .with("CONTAINER_NAME", "demo-app-1");
    let mut d = d;
    d.sb.unset("UPGRADERD_CONTAINER");
    let w = Watcher::start(&d);
    let app = backend(&d);
    let id = app.trigger("2.0.0");
    let followed = app.follow(&id, &|| w.log());
    assert_eq!(followed.tokens, vec!["failed"]);
    assert!(followed.status["error"].as_str().unwrap().contains("UPGRADERD_ENABLED=false"), "{}", followed.status);
    let config = d.sb.test().args(["--json", "config"]).run().json();
    let source =
        |key: &str| config["config"].as_array().unwrap().iter().find(|e| e["key"] == key).unwrap()["source"].clone();
    assert_eq!(source("UPGRADERD_CONTAINER"), "env CONTAINER_NAME");
    assert_eq!(source("UPGRADERD_POLL_INTERVAL"), "env CHECK_INTERVAL");
}

#[test]
fn a_manual_rollback_writes_the_word_as_it_writes_the_status_file() {
    let d = Deployment::new();
    let w = Watcher::start(&d);
    let app = backend(&d);
    let id = app.trigger("2.0.0");
    assert_eq!(app.follow(&id, &|| w.log()).last_token(), "complete");
    drop(w);
    fs::remove_file(d.trigger_dir().join(".upgrade-status")).unwrap();
    d.sb.test().args(["rollback"]).run();
    let status = d.status().unwrap();
    assert_eq!(status["status"], "complete", "a rollback that worked is recorded complete: {status}");
    assert_ne!(status["upgradeId"], id.as_str());
    assert_eq!(app.token().as_deref(), Some("complete"));
    assert_eq!(d.running_version(), "1.0.0");
}

#[test]
fn the_word_file_can_be_renamed_or_turned_off() {
    let d = Deployment::new().with("UPGRADERD_LEGACY_STATUS_FILE", "");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    assert!(!d.trigger_dir().join(".upgrade-status").exists());
    assert_eq!(d.status().unwrap()["status"], "complete");

    let d = Deployment::new().with("UPGRADERD_LEGACY_STATUS_FILE", "upgrade.word");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    assert_eq!(fs::read_to_string(d.trigger_dir().join("upgrade.word")).unwrap(), "complete\n");
    assert!(!d.trigger_dir().join(".upgrade-status").exists());

    let d = Deployment::new().with("UPGRADERD_LEGACY_STATUS_FILE", ".upgrade-status.json");
    d.sb.test()
        .args(["config"])
        .status(2)
        .stderr_contains("UPGRADERD_STATUS_FILE=.upgrade-status.json")
        .stderr_contains("legacy status token")
        .run();
}

#[test]
fn a_temp_file_the_backend_left_is_neither_a_request_nor_removed() {
    let d = Deployment::new();
    let app = backend(&d);
    // Interrupted between write and rename: cut short, and whole.
    let cut = d.trigger_dir().join(app.temp_name());
    fs::write(&cut, "{\n  \"upgradeId\": \"9b2c").unwrap();
    let whole = d.trigger_dir().join(".upgrade-trigger.tmp.1736000000000.x7k2m9q4wz");
    fs::write(&whole, "{\n  \"upgradeId\": \"left-behind\",\n  \"version\": \"2.0.0\",\n  \"backup\": true\n}")
        .unwrap();
    let before = |path: &std::path::Path| {
        let meta = fs::metadata(path).unwrap();
        (fs::read(path).unwrap(), meta.ino(), meta.mtime_nsec())
    };
    let (cut_before, whole_before) = (before(&cut), before(&whole));
    let w = Watcher::start(&d);
    let id = app.trigger("2.0.0");
    assert_eq!(app.follow(&id, &|| w.log()).last_token(), "complete");
    // A restart looks at the directory afresh: still not a request.
    drop(w);
    let w = Watcher::start(&d);
    app.socket_test(&|| w.log());
    assert_eq!((before(&cut), before(&whole)), (cut_before, whole_before), "untouched");
    let history = d.sb.test().args(["--json", "history"]).run().json();
    let ids: Vec<&str> =
        history["history"].as_array().unwrap().iter().map(|r| r["upgradeId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![id.as_str()], "only the renamed trigger was a request");
    assert!(!w.log().contains("rejected"), "{}", w.log());
}

#[test]
fn the_socket_check_passes_warns_and_fails_like_the_watchdogs_script() {
    let d = Deployment::new().with("FAIL_ON", "version:1 ps:1");
    let w = Watcher::start(&d);
    let app = backend(&d);
    let engine_down = app.socket_test(&|| w.log());
    assert!(engine_down.starts_with("FAIL: upgraderd cannot reach the Docker engine from the host: "), "{engine_down}");
    assert!(engine_down.contains("injected failure of version #1"), "{engine_down}");
    let ps_failed = app.socket_test(&|| w.log());
    assert!(ps_failed.starts_with("FAIL: the Docker engine 27.5.1 answers upgraderd, but `docker ps` failed"));
    let pass = app.socket_test(&|| w.log());
    let first = pass.lines().next().unwrap();
    assert!(first.starts_with("PASS: the Docker engine 27.5.1 answers upgraderd on the host"), "{pass}");
    assert!(first.contains("container demo-app-1 is running"), "{pass}");
    assert!(pass.lines().nth(1).unwrap().starts_with("answered by upgraderd "), "{pass}");
    assert!(!d.trigger_dir().join(".docker-socket-test-request").exists());
    drop(w);

    let mut d = d.with("CONTAINER_NAME", "meshmonitor").with("FAIL_ON", "");
    d.sb.unset("UPGRADERD_CONTAINER");
    let w = Watcher::start(&d);
    let warn = app.socket_test(&|| w.log());
    assert!(warn.starts_with("WARN: the Docker engine 27.5.1 answers upgraderd"), "{warn}");
    assert!(
        warn.contains("container meshmonitor cannot be inspected: container `meshmonitor` does not exist"),
        "{warn}"
    );
    assert!(w.log().contains("Docker socket check answered: WARN: "), "{}", w.log());
}

#[test]
fn a_hostile_socket_check_request_is_never_followed_or_opened() {
    let d = Deployment::new();
    let dir = d.trigger_dir();
    let request = dir.join(".docker-socket-test-request");
    let secret = d.sb.path().join("root-only");
    fs::write(&secret, "SECRET").unwrap();
    // The app plants the answer as a link to a host file it wants overwritten.
    let victim = d.sb.path().join("victim");
    fs::write(&victim, "precious").unwrap();
    std::os::unix::fs::symlink(&victim, dir.join(".docker-socket-test")).unwrap();
    let w = Watcher::start(&d);
    let answered = |count: usize| w.wait_for_log_count("Docker socket check answered", count);

    std::os::unix::fs::symlink(&secret, &request).unwrap();
    answered(1);
    let refused = fs::read_to_string(dir.join(".docker-socket-test")).unwrap();
    assert!(refused.starts_with("FAIL: .docker-socket-test-request was not a regular file"), "{refused}");
    assert!(fs::symlink_metadata(dir.join(".docker-socket-test")).unwrap().is_file(), "the planted link was replaced");
    assert!(fs::symlink_metadata(&request).is_err(), "the link was removed");

    // Made elsewhere and moved in whole: upgraderd may take the name as soon as it appears.
    let tree = d.sb.path().join("tree");
    fs::create_dir_all(tree.join("inside/deeper")).unwrap();
    std::os::unix::fs::symlink(&secret, tree.join("inside/link")).unwrap();
    fs::rename(&tree, &request).unwrap();
    answered(2);
    assert!(fs::read_to_string(dir.join(".docker-socket-test")).unwrap().starts_with("FAIL: "));
    assert!(fs::symlink_metadata(&request).is_err(), "the directory was removed");

    let fifo = std::ffi::CString::new(request.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
    answered(3);
    assert!(fs::read_to_string(dir.join(".docker-socket-test")).unwrap().starts_with("FAIL: "));

    // A big regular file is a request like any other: it is never read.
    fs::write(&request, vec![b'7'; 32 << 20]).unwrap();
    answered(4);
    assert!(fs::read_to_string(dir.join(".docker-socket-test")).unwrap().starts_with("PASS: "));
    assert!(fs::symlink_metadata(&request).is_err());

    assert_eq!(fs::read_to_string(&secret).unwrap(), "SECRET");
    assert_eq!(fs::read_to_string(&victim).unwrap(), "precious");
    assert!(!w.log().contains("SECRET"));
    // Still answering: the backend's own round trip.
    assert!(backend(&d).socket_test(&|| w.log()).starts_with("PASS: "));
}

#[test]
fn the_socket_check_is_answered_while_an_upgrade_runs() {
    let d = Deployment::new().with("SLOW_PULL", "30");
    let w = Watcher::start(&d);
    let app = backend(&d);
    app.trigger("2.0.0");
    common::wait("the upgrade to be downloading")
        .showing(|| w.log())
        .until_true(|| app.token().as_deref() == Some("downloading"));
    let answer = app.socket_test(&|| w.log());
    assert!(answer.starts_with("PASS: "), "{answer}");
    assert_eq!(app.token().as_deref(), Some("downloading"), "answered while the pull still runs");
}
