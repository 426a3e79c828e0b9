//! The `watch` daemon run on a thread of this test process
//! (`upgraderd::testing::daemon`), not as a child: a trigger becomes an
//! upgrade against the fake engine, and the daemon returns cleanly once its
//! stop handle is used, with the request settled.
//!
//! The test process's environment is shared by every test in it and is never
//! changed here: the daemon gets its configuration as explicit pairs (the
//! sandbox's), and its `docker` as `UPGRADERD_DOCKER`, a path, instead of
//! through PATH.

use std::collections::BTreeMap;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::common::fake_engine::Deployment;
use crate::common::wait;
use upgraderd::testing::daemon::{self, Stop};

/// A daemon on a thread of its own; asked to stop when dropped, so a failing test leaves none running.
struct InProcess {
    stop: Stop,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl InProcess {
    fn start(env: BTreeMap<String, String>) -> InProcess {
        let stop = Stop::new();
        let handle = stop.clone();
        // -q: the in-process log would go to the test runner's own stderr.
        let thread = std::thread::spawn(move || daemon::watch(env, -1, &handle));
        InProcess { stop, thread: Some(thread) }
    }

    fn has_ended(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Requests the stop and returns what the daemon returned, waiting at most `within`.
    #[track_caller]
    fn stop(mut self, within: Duration) -> anyhow::Result<()> {
        self.stop.request();
        wait("the in-process daemon to return").within(within).until_true(|| self.has_ended());
        self.thread.take().unwrap().join().expect("the daemon's thread did not panic")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        self.stop.request();
    }
}

fn requests(state_dir: &Path) -> Vec<(String, String, Option<String>)> {
    let db = rusqlite::Connection::open(state_dir.join("upgraderd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let mut stmt = db.prepare("SELECT upgradeId, state, reason FROM requests ORDER BY id").unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn an_in_process_daemon_upgrades_on_a_trigger_and_stops_through_its_handle() {
    let d = Deployment::new();
    let dir = d.sb.path().display().to_string();
    // The fake finds its state through FAKE_STATE, which the daemon's children
    // would inherit from this process, not from the sandbox: a wrapper names it.
    let docker =
        d.sb.fake("docker-in-process", &format!("#!/bin/sh\nFAKE_STATE='{dir}' exec '{dir}/bin/docker' \"$@\"\n"));
    let mut env = d.sb.vars().clone();
    env.insert("UPGRADERD_DOCKER".into(), docker.display().to_string());
    let path_before = std::env::var_os("PATH");

    let daemon = InProcess::start(env);
    d.write_trigger(br#"{"upgradeId":"in-process-1","version":"2.0.0","backup":true,"timestamp":1736000000000}"#);
    let done = wait("the trigger's upgrade to complete")
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(10))
        .showing(|| format!("status: {:?}\ndaemon returned: {}", d.status(), daemon.has_ended()))
        .until(|| {
            assert!(!daemon.has_ended(), "the daemon returned before the upgrade completed");
            d.status().filter(|s| s["upgradeId"] == "in-process-1" && s["status"] == "complete")
        });
    assert_eq!((done["fromVersion"].as_str(), done["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    assert_eq!(d.running_version(), "2.0.0");
    assert!(d.actions().contains(&"up".to_string()), "the upgrade went through the wrapped fake: {:?}", d.actions());
    assert!(!d.trigger_dir().join(".upgrade-trigger").exists(), "the trigger was consumed");
    let row = d.last_history();
    assert_eq!((row["upgradeId"].as_str(), row["initiatedBy"].as_str()), (Some("in-process-1"), Some("trigger")));

    let result = daemon.stop(Duration::from_secs(10));
    assert!(result.is_ok(), "the daemon stopped with an error: {result:?}");
    // It returned only after settling the request its upgrade answered.
    let settled = vec![("in-process-1".to_string(), "done".to_string(), Some("complete".to_string()))];
    assert_eq!(requests(&d.sb.path().join("state-dir")), settled);
    assert_eq!(std::env::var_os("PATH"), path_before, "the test process's PATH is unchanged");
}
