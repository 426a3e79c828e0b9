//! `UPGRADERD_AUTO_UPGRADE_WINDOW` with the clock fixed by the debug build's
//! test hook (`UPGRADERD_TEST_NOW`, a Sunday in a +01:00 zone): `config` and
//! `check-version` say when the window opens, `check-version --upgrade` and
//! `--trigger` wait for it, the daemon's automatic upgrade starts as it opens,
//! and neither a manual upgrade nor the app's trigger is held back.

use std::fs;

use crate::common::fake_engine::Deployment;
use crate::common::http::{Reply, Server};
use crate::common::watcher::Watcher;
use crate::common::{wait, Sandbox};

const WINDOW: &str = "Sun 02:00-05:00";
/// 2026-11-22 is a Sunday: an hour before the window opens, and inside it.
const BEFORE: &str = "2026-11-22T01:00:00+01:00";
const INSIDE: &str = "2026-11-22T03:00:00+01:00";

fn offers_2_0_0() -> Server {
    Server::start(|_| Reply::json(200, r#"{"version": "2.0.0"}"#))
}

fn deployment(server: &Server, now: &str) -> Deployment {
    Deployment::new()
        .with("UPGRADERD_VERSION_URL", &server.url("/version.json"))
        .with("UPGRADERD_AUTO_UPGRADE_WINDOW", WINDOW)
        .with("UPGRADERD_TEST_NOW", now)
}

#[test]
fn config_says_when_the_window_opens() {
    let mut sb = Sandbox::new();
    sb.env("UPGRADERD_AUTO_UPGRADE_WINDOW", "sun 2:00-5:00").env("UPGRADERD_TEST_NOW", BEFORE);
    let run = sb.test().args(["config"]).run();
    assert!(run.stdout.contains("UPGRADERD_AUTO_UPGRADE_WINDOW"), "{}", run.stdout);
    assert!(
        run.stdout.lines().any(|l| l
            == "auto-upgrade window Sun 02:00-05:00 (host local time): closed now; next opens Sun 2026-11-22 02:00 +01:00"),
        "{}",
        run.stdout
    );
    let json = sb.test().args(["--json", "config"]).run().json();
    let window = &json["autoUpgradeWindow"];
    assert_eq!(window["window"], WINDOW);
    assert_eq!(
        (window["open"].as_bool(), window["opensAt"].as_str()),
        (Some(false), Some("2026-11-22T02:00:00+01:00"))
    );
    // Inside the window it says until when; a window across midnight on another day is named so.
    sb.env("UPGRADERD_TEST_NOW", INSIDE);
    sb.test()
        .args(["config"])
        .stdout_contains(
            "auto-upgrade window Sun 02:00-05:00 (host local time): open now, until Sun 2026-11-22 05:00 +01:00",
        )
        .run();
    sb.env("UPGRADERD_AUTO_UPGRADE_WINDOW", "Mon-Fri 23:00-01:30");
    sb.test().args(["config"]).stdout_contains("closed now; next opens Mon 2026-11-23 23:00 +01:00").run();
    // Without a window, nothing is said about one.
    sb.unset("UPGRADERD_AUTO_UPGRADE_WINDOW");
    let run = sb.test().args(["config"]).run();
    assert!(!run.stdout.contains("auto-upgrade window"), "{}", run.stdout);
}

#[test]
fn a_bad_window_names_the_key_the_value_and_an_example() {
    let mut sb = Sandbox::new();
    for (value, why) in [
        ("Sun 2-5", "`2` is not a time of day; write HH:MM, like 02:00"),
        ("Sonntag 02:00-05:00", "`Sonntag` is not a day"),
        ("Sun 02:00-02:00", "`02:00-02:00` starts and ends at the same time; a whole day is 00:00-24:00"),
    ] {
        sb.env("UPGRADERD_AUTO_UPGRADE_WINDOW", value);
        sb.test()
            .args(["config"])
            .status(2)
            .stderr_contains(format!(
                "invalid UPGRADERD_AUTO_UPGRADE_WINDOW={value:?} (from env UPGRADERD_AUTO_UPGRADE_WINDOW): {why}"
            ))
            .stderr_contains("for example UPGRADERD_AUTO_UPGRADE_WINDOW=Sun 02:00-05:00")
            .run();
    }
}

#[test]
fn check_version_upgrade_outside_the_window_waits_and_exits_0() {
    let server = offers_2_0_0();
    let d = deployment(&server, BEFORE).with("UPGRADERD_POLICY", "major");
    let run = d.sb.test().args(["check-version", "--upgrade"]).run();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "update available: 1.0.0 -> 2.0.0",
            "auto-upgrade window Sun 02:00-05:00 (host local time): closed now; next opens Sun 2026-11-22 02:00 +01:00",
            "not upgrading to 2.0.0 now: outside the auto-upgrade window Sun 02:00-05:00; it opens Sun 2026-11-22 02:00 +01:00",
        ],
        "{}",
        run.stderr
    );
    assert_eq!(d.running_version(), "1.0.0");
    assert!(d.actions().is_empty(), "{:?}", d.actions());
    d.sb.test().args(["check-version", "--upgrade", "--exit-code"]).status(10).run();
    // --trigger waits the same way: no trigger for the daemon.
    d.sb.test()
        .args(["check-version", "--trigger"])
        .stdout_contains("not asking watch for 2.0.0 now: outside the auto-upgrade window")
        .run();
    assert!(!d.trigger_dir().join(".upgrade-trigger").exists());
    let json = d.sb.test().args(["--json", "check-version", "--upgrade"]).run().json();
    assert_eq!(json["waitsForWindowUntil"], "2026-11-22T02:00:00+01:00");
    assert_eq!(json["autoUpgradeWindow"]["open"], false);
    // The operator's own upgrade is never held back by the window.
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn check_version_upgrade_inside_the_window_upgrades() {
    let server = offers_2_0_0();
    let d = deployment(&server, INSIDE).with("UPGRADERD_POLICY", "major");
    d.sb.test()
        .args(["check-version", "--upgrade"])
        .stdout_contains("open now, until Sun 2026-11-22 05:00 +01:00")
        .stdout_contains("complete: 1.0.0 -> 2.0.0")
        .run();
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn the_daemon_waits_for_the_window_and_upgrades_as_it_opens() {
    let server = offers_2_0_0();
    // Three seconds before the window opens; the fixed clock runs on.
    let d = deployment(&server, "2026-11-22T01:59:57+01:00")
        .with("UPGRADERD_POLICY", "major")
        .with("UPGRADERD_CHECK_EVERY", "1s")
        .with("UPGRADERD_AUTO_UPGRADE", "true");
    let w = Watcher::start(&d);
    w.wait_for_log(
        "auto-upgrade window Sun 02:00-05:00 (host local time): closed now; next opens Sun 2026-11-22 02:00 +01:00",
    );
    w.wait_for_log("version check: 2.0.0 is available; automatic upgrades wait for the window Sun 02:00-05:00");
    w.wait_for_log("to 2.0.0 queued");
    wait("the automatic upgrade to complete")
        .showing(|| w.log())
        .until_true(|| d.status().is_some_and(|s| s["status"] == "complete"));
    assert_eq!(d.running_version(), "2.0.0");
    assert_eq!(d.last_history()["initiatedBy"], "check-version");
    let log = w.log();
    assert!(log.find("automatic upgrades wait") < log.find("queued"), "{log}");
}

#[test]
fn the_apps_trigger_is_not_held_back_by_the_window() {
    let server = offers_2_0_0();
    let d = deployment(&server, BEFORE).with("UPGRADERD_AUTO_UPGRADE", "true");
    let w = Watcher::start(&d);
    w.wait_for_log("closed now; next opens Sun 2026-11-22 02:00 +01:00");
    d.write_trigger(br#"{"upgradeId":"now-1","version":"2.0.0"}"#);
    wait("the app's upgrade to complete")
        .showing(|| w.log())
        .until_true(|| d.status().is_some_and(|s| s["upgradeId"] == "now-1" && s["status"] == "complete"));
    assert_eq!(d.running_version(), "2.0.0");
    assert!(fs::read_to_string(d.sb.path().join("argv.log")).unwrap().contains("pull registry.example/demo/app:2.0.0"));
}
