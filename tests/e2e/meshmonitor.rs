//! An app written for the MeshMonitor watchdog, unchanged, with `upgraderd
//! watch` on the host where the sidecar was: the backend's side of the
//! protocol played byte for byte (`common::meshmonitor_backend`) against the
//! real engine, configured with the watchdog's environment names. A
//! rolled-back upgrade must read `failed` and a good one `complete`, never
//! `ready`; the socket check must answer `PASS:`; a temp file the backend
//! left behind must stay untouched. Nothing here depends on the compose
//! version (the pull tests cover both), so it runs under compose v1 only.

use std::fs;
use std::process::{Child, Stdio};

use crate::common::meshmonitor_backend::{runbook_rank, Backend, Followed, TOKENS};
use crate::common::{self};
use crate::compose::ComposeVersion;
use crate::scenario::Scenario;
use crate::world::must;

/// The daemon, killed if the test ends early.
struct Daemon {
    child: Child,
    log: std::path::PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, and its exit code.
    fn stop(mut self) -> i32 {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `watch` as an operator moving off the watchdog configures it: its own names for the container and interval.
fn watch_with_the_watchdogs_names(s: &Scenario) -> Daemon {
    let name = must(&["docker", "inspect", "--format", "{{.Name}}", &s.container()])
        .trim()
        .trim_start_matches('/')
        .to_string();
    let log = s.sandbox.path().join("watch.log");
    let child = s
        .upgraderd_command(&["watch"])
        .env_remove("UPGRADERD_CONTAINER")
        .env("CONTAINER_NAME", &name)
        .env("CHECK_INTERVAL", "5")
        .env("AUTO_UPGRADE_ENABLED", "true")
        .stdout(Stdio::null())
        .stderr(fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let daemon = Daemon { child, log };
    common::wait("the daemon to watch").showing(|| daemon.log()).until_true(|| daemon.log().contains("watching "));
    daemon
}

#[track_caller]
fn assert_words_of_the_protocol(followed: &Followed) {
    let tokens = &followed.tokens;
    eprintln!("the backend read {tokens:?}");
    assert!(tokens.iter().all(|t| TOKENS.contains(&t.as_str())) && !tokens.iter().any(|t| t == "ready"), "{tokens:?}");
    let ranks: Vec<usize> = tokens.iter().map(|t| runbook_rank(t)).collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "out of runbook order: {tokens:?}");
}

#[test]
fn a_meshmonitor_backend_reads_failed_for_a_rolled_back_upgrade_and_complete_for_a_good_one() {
    let Some(s) = Scenario::start("meshmonitor", &["1.0.0", "2.0.0", "2.0.5"], ComposeVersion::V1) else { return };
    let before = s.dump();
    let app = Backend::new(s.sandbox.path());
    // A trigger write the backend never finished (the app was restarted between write and rename).
    let leftover = s.sandbox.path().join(app.temp_name());
    fs::write(&leftover, "{\n  \"upgradeId\": \"3f0c2a9e-").unwrap();
    let daemon = watch_with_the_watchdogs_names(&s);

    let answer = app.socket_test(&|| daemon.log());
    let container = s.container();
    assert!(answer.starts_with("PASS: the Docker engine "), "{answer}");
    assert!(answer.lines().next().unwrap().ends_with("is running"), "{answer}");
    assert!(!s.sandbox.path().join(".docker-socket-test-request").exists());

    // 2.0.5 migrates the data, then crashes: rolled back, which the backend must read as a failure.
    let bad_id = app.trigger("2.0.5");
    let bad = app.follow(&bad_id, &|| daemon.log());
    assert_words_of_the_protocol(&bad);
    assert_eq!(bad.last_token(), "failed", "{bad:?}");
    assert!(!bad.tokens.iter().any(|t| t == "complete"), "{bad:?}");
    assert_eq!(bad.status["status"], "rolled_back");
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before, "the data came back with the old version");

    let good_id = app.trigger("2.0.0");
    let good = app.follow(&good_id, &|| daemon.log());
    assert_words_of_the_protocol(&good);
    assert_eq!(good.last_token(), "complete", "{good:?}");
    assert_eq!(good.status["status"], "complete");
    s.wait_version("2.0.0");
    assert_ne!(s.container(), container, "recreated by compose");

    assert_eq!(fs::read_to_string(&leftover).unwrap(), "{\n  \"upgradeId\": \"3f0c2a9e-", "left alone");
    let history = s.upgraderd(&["--json", "history"]).success().json();
    let ids: Vec<&str> =
        history["history"].as_array().unwrap().iter().map(|r| r["upgradeId"].as_str().unwrap()).collect();
    assert_eq!(ids, vec![good_id.as_str(), bad_id.as_str()], "the backend's two triggers, and nothing else");
    assert_eq!(daemon.stop(), 0);
}
