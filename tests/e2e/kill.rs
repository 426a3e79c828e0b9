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

/// upgraderd SIGKILLed the moment the switch's compose creates the new
/// container, in the middle of its recreate (under compose v2 the plugin
/// winds down on its own after the CLI died): recovery run at once ends the
/// upgrade `rolled_back`, with one app container, under its own name,
/// serving the old version on its data.
fn killed_in_the_middle_of_the_recreate(compose: ComposeVersion) {
    let Some(s) = Scenario::start("midrecreate", &["1.0.0", "2.0.0"], compose) else { return };
    let before = s.dump();
    let project = format!("label=com.docker.compose.project={}", s.name);
    let mut events = std::process::Command::new("docker")
        .args(["events", "--format", "{{.Actor.Attributes.name}}", "--filter", "type=container"])
        .args(["--filter", "event=create", "--filter", &project])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut created = std::io::BufReader::new(events.stdout.take().unwrap());
    let mut upgrader = s
        .upgraderd_command(&["upgrade", "--to", "2.0.0"])
        .env("UPGRADERD_EARLY_COMPOSE", "false")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut name = String::new();
    std::io::BufRead::read_line(&mut created, &mut name).unwrap();
    upgrader.kill().unwrap();
    upgrader.wait().unwrap();
    let _ = events.kill();
    let _ = events.wait();
    assert!(!name.is_empty(), "no container was created before the events stream ended");

    let end = s.recover_with_watch(&["rolled_back", "failed"]);
    assert_eq!(end, "rolled_back", "killed as {} was created: {}", name.trim(), s.last_history());
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
    let names = crate::world::must(&["docker", "ps", "-a", "--format", "{{.Names}}", "--filter", &project]);
    let expected = match compose {
        ComposeVersion::V1 => format!("{}_app_1", s.name),
        ComposeVersion::V2 => format!("{}-app-1", s.name),
    };
    assert_eq!(names.trim(), expected, "killed as {} was created", name.trim());
    eprintln!("killed as {} was created; recovered: {}", name.trim(), s.last_history()["logs"]);
}

each_compose! { killed_in_the_middle_of_the_recreate; }

/// What a killed upgrader's compose started itself outlives it (the compose
/// plugin under `docker compose` winds down on its own): recovery ends it
/// before it runs compose, so the two never act on the project at once. A
/// compose wrapper stands in for the plugin, starting at the switch a process
/// of its own that would act 10 minutes later.
#[test]
fn what_a_killed_upgraders_compose_left_running_is_ended_before_recovery_acts() {
    let Some(s) = Scenario::start("leftrun", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let before = s.dump();
    let wrapper = s.sandbox.path().join("compose-wrapper");
    let left_pid = s.sandbox.path().join("left.pid");
    let acted = s.sandbox.path().join("left.acted");
    fs::write(
        &wrapper,
        "#!/bin/sh\ncase \" $* \" in *' up '*)\n\
         setsid sh -c 'sleep 600; touch \"$0\"' \"$ACTED\" </dev/null >/dev/null 2>&1 &\n\
         echo $! > \"$LEFT_PID\"\nexec sleep 600 ;;\nesac\nexec docker-compose \"$@\"\n",
    )
    .unwrap();
    fs::set_permissions(&wrapper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut upgrader = s
        .upgraderd_command(&["upgrade", "--to", "2.0.0"])
        .env("UPGRADERD_COMPOSE_CMD", &wrapper)
        .env("UPGRADERD_EARLY_COMPOSE", "false")
        .env("LEFT_PID", &left_pid)
        .env("ACTED", &acted)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid: i32 = common::wait("the wrapper's up to start its process")
        .within(Duration::from_secs(90))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until(|| fs::read_to_string(&left_pid).ok()?.trim().parse().ok());
    upgrader.kill().unwrap();
    upgrader.wait().unwrap();
    assert!(runs(pid), "the left process outlives the upgrader");

    let end = s.recover_with_watch(&["rolled_back", "failed"]);
    assert_eq!(end, "rolled_back", "{}", s.last_history());
    assert!(!runs(pid), "recovery ended the left process");
    assert!(!acted.exists());
    let logs = s.last_history()["logs"].to_string();
    assert!(logs.contains("Waiting up to 10 s for what the interrupted upgrader left running to end"), "{logs}");
    assert!(logs.contains("Killed what was still running: pid "), "{logs}");
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
}

/// Whether `pid` runs: it exists and is not a zombie (this machine's pid 1 may reap nothing).
fn runs(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}
