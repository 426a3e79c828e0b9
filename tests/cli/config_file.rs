//! Configuration through the real binary: empty values, the file read the way
//! systemd's `EnvironmentFile=` reads it, keys that clash, unknown keys.

use crate::common::Sandbox;

/// Keys whose value cannot be empty (each has a default), with an example of a valid value.
const NOT_EMPTY: &[(&str, &str)] = &[
    ("UPGRADERD_STATE_DIR", "/var/lib/upgraderd"),
    ("UPGRADERD_DOCKER", "docker"),
    ("UPGRADERD_GIT", "git"),
    ("UPGRADERD_HEALTH_URL", "http://127.0.0.1:3001/api/health"),
    ("UPGRADERD_GIT_REMOTE", "origin"),
    ("UPGRADERD_GIT_BRANCH", "main"),
    ("UPGRADERD_VERSION_POINTER", "/version"),
    ("UPGRADERD_GITHUB_API", "https://api.github.com"),
];

#[test]
fn an_empty_value_is_exit_2_naming_the_key_its_source_and_an_example() {
    for (key, example) in NOT_EMPTY {
        let mut sb = Sandbox::new();
        sb.env(key, "");
        sb.test()
            .args(["config"])
            .status(2)
            .stderr_contains(format!("{key} is empty (from env {key})"))
            .stderr_contains(format!("for example {key}={example}"))
            .run();

        sb.unset(key);
        for line in [format!("{key}="), format!("{key}=\"\""), format!("{key}=  ")] {
            let file = sb.config_file(&format!("# comment\n{line}\n"));
            sb.test()
                .args(["config"])
                .status(2)
                .stderr_contains(format!("{key} is empty (from {}:2 ({key}))", file.display()))
                .stderr_contains(format!("for example {key}={example}"))
                .run();
        }
    }
}

#[test]
fn an_empty_flag_is_exit_2_naming_the_key_or_the_flag() {
    let sb = Sandbox::new();
    sb.test()
        .args(["--docker", "", "config"])
        .status(2)
        .stderr_contains("UPGRADERD_DOCKER is empty (from flag)")
        .stderr_contains("for example UPGRADERD_DOCKER=docker")
        .run();
    sb.test().args(["--state-dir", "", "config"]).status(2).stderr_contains("--state-dir").run();
}

/// A file systemd's `EnvironmentFile=` accepts is read the way systemd reads it.
#[test]
fn the_file_is_read_the_way_systemd_reads_it() {
    let mut sb = Sandbox::new();
    sb.unset("UPGRADERD_STATE_DIR");
    let file = sb.config_file(concat!(
        "\u{feff}UPGRADERD_BACKUP_KEEP=3\n", // 1: the byte order mark is part of the name
        "export UPGRADERD_GIT_REMOTE=upstream\n", // 2: `export` is not special
        "UPGRADERD_GIT_BRANCH=\"rel\"ease\n", // 3: quotes join with what follows
        "UPGRADERD_CONTAINER=mesh\\\n",      // 4: a continuation
        "monitor\n",                         // 5
        "UPGRADERD_IMAGE=ghcr.io/x/app\r\n", // 6: CRLF
        "UPGRADERD_STRATEGY pull\n",         // 7: no `=`
        "  ; a comment\n",                   // 8
        "UPGRADERD_HEALTH_URL = 'http://127.0.0.1:8080/health'  \n", // 9
        "UPGRADERD_COMPOSE_PROJECT=app\rUPGRADERD_SERVICE=web\n", // 10: a lone CR ends a line
        "UPGRADERD_STATE_DIR=\"/var/lib/up \\\"graderd\\\"\"\n", // 11: escapes inside double quotes
        "UPGRADERD_GIT_DIR=\"/srv/app\n",    // 12: a quote left open at the end
    ));
    let run = sb.test().args(["--json", "config"]).run();
    let entries = run.json()["config"].as_array().unwrap().clone();
    let value = |key: &str| entries.iter().find(|e| e["key"] == key).unwrap()["value"].as_str().unwrap().to_string();
    let source = |key: &str| entries.iter().find(|e| e["key"] == key).unwrap()["source"].as_str().unwrap().to_string();
    assert_eq!(value("UPGRADERD_BACKUP_KEEP"), "5");
    assert_eq!(value("UPGRADERD_GIT_REMOTE"), "origin");
    assert_eq!(value("UPGRADERD_GIT_BRANCH"), "release");
    assert_eq!(value("UPGRADERD_CONTAINER"), "meshmonitor");
    assert_eq!(source("UPGRADERD_CONTAINER"), format!("{}:4 (UPGRADERD_CONTAINER)", file.display()));
    assert_eq!(value("UPGRADERD_IMAGE"), "ghcr.io/x/app");
    assert_eq!(value("UPGRADERD_STRATEGY"), "pull");
    assert_eq!(source("UPGRADERD_STRATEGY"), "default");
    assert_eq!(value("UPGRADERD_HEALTH_URL"), "http://127.0.0.1:8080/health");
    assert_eq!(value("UPGRADERD_COMPOSE_PROJECT"), "app");
    assert_eq!(value("UPGRADERD_SERVICE"), "web");
    assert_eq!(value("UPGRADERD_STATE_DIR"), "/var/lib/up \"graderd\"");
    assert_eq!(value("UPGRADERD_GIT_DIR"), "/srv/app\n");
    let warned = |needle: &str| assert!(run.stderr.contains(needle), "stderr lacks {needle:?}:\n{}", run.stderr);
    warned(&format!("{}:1: ", file.display()));
    warned("byte order mark");
    warned(&format!("{}:2: ", file.display()));
    warned("`export` is not special");
    warned(&format!("{}:7: ", file.display()));
    warned("no `=`");
}

#[test]
fn unknown_keys_are_warned_about_even_when_a_value_is_bad() {
    let sb = Sandbox::new();
    let file = sb.config_file("UPGRADERD_DOKCER=/usr/bin/docker\nUPGRADERD_MIN_FREE=lots\n");
    sb.test()
        .args(["config"])
        .status(2)
        .stderr_contains(format!(
            "{}:1: unknown key UPGRADERD_DOKCER (ignored); did you mean UPGRADERD_DOCKER?",
            file.display()
        ))
        .stderr_contains("invalid UPGRADERD_MIN_FREE=\"lots\"")
        .run();
}

#[test]
fn a_trigger_named_like_a_file_upgraderd_writes_is_exit_2_naming_both_keys() {
    let mut sb = Sandbox::new();
    sb.env("UPGRADERD_TRIGGER_FILE", ".upgrade-status.json");
    sb.test()
        .args(["config"])
        .status(2)
        .stderr_contains("UPGRADERD_TRIGGER_FILE=.upgrade-status.json (from env UPGRADERD_TRIGGER_FILE)")
        .stderr_contains("UPGRADERD_STATUS_FILE=.upgrade-status.json (from default)")
        .run();

    sb.unset("UPGRADERD_TRIGGER_FILE");
    let file = sb.config_file("UPGRADERD_TRIGGER_FILE=state\nUPGRADERD_STATUS_FILE=state.rejected\n");
    sb.test()
        .args(["config"])
        .status(2)
        .stderr_contains(format!("UPGRADERD_TRIGGER_FILE=state (from {}:1", file.display()))
        .stderr_contains(format!("UPGRADERD_STATUS_FILE=state.rejected (from {}:2", file.display()))
        .run();

    for name in [".upgrade-available.json", ".upgrade-status", ".docker-socket-test-request"] {
        sb.config_file(&format!("UPGRADERD_TRIGGER_FILE={name}\n"));
        sb.test()
            .args(["config"])
            .status(2)
            .stderr_contains(format!("UPGRADERD_TRIGGER_FILE={name} (from "))
            .stderr_contains(
                "which upgraderd writes in the trigger directory; choose another name, for example \
             UPGRADERD_TRIGGER_FILE=.upgrade-trigger",
            )
            .run();
    }

    sb.config_file("UPGRADERD_TRIGGER_FILE=update_requested\nUPGRADERD_STATUS_FILE=status.json\n");
    sb.test().args(["config"]).run();
}

/// A shell that exports `CONTAINER_NAME` for something else does not retarget
/// upgraderd: the configuration file's `UPGRADERD_CONTAINER` wins, and
/// `upgraderd config` says where the value came from and what it set aside.
#[test]
fn a_stray_older_name_in_the_environment_does_not_beat_the_file() {
    let mut sb = Sandbox::new();
    let file = sb.config_file("UPGRADERD_CONTAINER=app\n");
    sb.env("CONTAINER_NAME", "other");
    let run = sb.test().args(["--json", "config"]).run();
    let entries = run.json()["config"].as_array().unwrap().clone();
    let entry = entries.iter().find(|e| e["key"] == "UPGRADERD_CONTAINER").unwrap();
    assert_eq!(entry["value"], "app");
    assert_eq!(entry["source"], format!("{}:1 (UPGRADERD_CONTAINER)", file.display()));
    assert!(
        run.stderr.contains("CONTAINER_NAME=other from the environment is ignored")
            && run.stderr.contains(&format!("UPGRADERD_CONTAINER=app (from {}:1", file.display())),
        "{}",
        run.stderr
    );

    let table = sb.test().args(["config"]).run();
    let line = table.stdout.lines().find(|l| l.starts_with("UPGRADERD_CONTAINER")).unwrap();
    assert!(line.contains("app") && !line.contains("other"), "{line}");
    assert!(line.ends_with(&format!("{}:1 (UPGRADERD_CONTAINER)", file.display())), "{line}");

    // With the key set nowhere, the older name still moves an existing setup over.
    sb.config_file("");
    let table = sb.test().args(["config"]).run();
    let line = table.stdout.lines().find(|l| l.starts_with("UPGRADERD_CONTAINER")).unwrap();
    assert!(line.contains("other") && line.ends_with("env CONTAINER_NAME"), "{line}");
}
