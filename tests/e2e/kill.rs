//! The daemon SIGKILLed at each step of an upgrade, for a good and a bad
//! version: the restarted daemon must end the upgrade `complete` or
//! `rolled_back`, with the data intact. Recovery stops, restores and recreates
//! through compose: each runs under compose v1 and v2.

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use crate::common;
use crate::compose::{each_compose, ComposeVersion};
use crate::scenario::Scenario;

const STEPS: &[&str] = &["preflight", "backing_up", "downloading", "restarting", "health_check"];
const TERMINAL: &[&str] = &["complete", "rolled_back", "failed"];
/// How a killed upgrade must end.
const ENDS: &[&str] = &["complete", "rolled_back"];

/// SIGKILLs `watch` once the upgrade reaches `STEPS[i]` (or the first later
/// step, when that one passed too fast to catch), restarts it, and checks the
/// upgrade still ends `complete` or `rolled_back` with the data intact.
fn kill_the_daemon_at(test: &str, version: &str, i: usize, compose: ComposeVersion) {
    let step = STEPS[i];
    let Some(s) = Scenario::start(test, &["1.0.0", version], compose) else { return };
    let before = s.dump();
    let id = format!("kill-{test}");
    let spawn = || s.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let mut daemon = spawn();
    let trigger = s.sandbox.path().join(".upgrade-trigger");
    fs::write(s.sandbox.path().join(".trigger.tmp"), format!(r#"{{"upgradeId":"{id}","version":"{version}"}}"#))
        .unwrap();
    fs::rename(s.sandbox.path().join(".trigger.tmp"), &trigger).unwrap();
    let later: Vec<&str> = STEPS[i..].iter().chain(TERMINAL).copied().collect();
    let seen = common::wait(format!("{id} to reach {step}"))
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(2))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until(|| {
            let status = s.try_status_file().filter(|st| st["upgradeId"] == id.as_str())?;
            let state = status["status"].as_str()?;
            later.contains(&state).then(|| state.to_string())
        });
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let mut daemon = spawn();
    // Only `complete` and `rolled_back` end the wait. A request killed before
    // its switch is first recorded `failed` by recovery (status file and
    // history), then run again under its id by the restarted daemon: that
    // `failed` is not its end. A real failure shows at the timeout.
    let end = common::wait(format!("{id} (killed at {seen}) to end complete or rolled_back"))
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(200))
        .showing(|| format!("status file: {:?}\nhistory: {}", s.try_status_file(), s.last_history()))
        .until(|| {
            let status = s.try_status_file().filter(|st| st["upgradeId"] == id.as_str())?;
            let state = status["status"].as_str()?;
            (ENDS.contains(&state) && s.last_history()["status"] == state).then(|| state.to_string())
        });
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    match end.as_str() {
        "complete" => {
            s.wait_version(version);
            assert!(s.dump().starts_with("schema 2"), "killed at {seen}: {}", s.dump());
        }
        "rolled_back" => {
            s.wait_version("1.0.0");
            assert_eq!(s.dump(), before, "killed at {seen}: data restored");
        }
        other => panic!("killed at {seen}, {id} ended {other}: {}", s.last_history()),
    }
    eprintln!("{test}: aimed at {step}, killed at {seen}, ended {end}");
}

/// One test per step, version and compose, so they run in parallel.
macro_rules! kill_tests {
    ($($name:ident: $version:expr, $step:expr;)*) => {
        $(
            fn $name(compose: ComposeVersion) {
                kill_the_daemon_at(stringify!($name), $version, $step, compose);
            }
        )*
        each_compose! { $($name;)* }
    };
}

// A good version: killed before the switch the request runs again → complete; after it → rolled_back.
// A bad version (2.0.5 migrates the schema, then crashes): always rolled_back with the data restored.
kill_tests! {
    kill_good_at_preflight: "2.0.0", 0;
    kill_good_at_backing_up: "2.0.0", 1;
    kill_good_at_downloading: "2.0.0", 2;
    kill_good_at_restarting: "2.0.0", 3;
    kill_good_at_health_check: "2.0.0", 4;
    kill_bad_at_preflight: "2.0.5", 0;
    kill_bad_at_backing_up: "2.0.5", 1;
    kill_bad_at_downloading: "2.0.5", 2;
    kill_bad_at_restarting: "2.0.5", 3;
    kill_bad_at_health_check: "2.0.5", 4;
}
