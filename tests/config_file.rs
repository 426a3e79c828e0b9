//! Configuration through the real binary: empty values, the file read the way
//! systemd's `EnvironmentFile=` reads it, keys that clash, unknown keys.

mod common;

use common::Sandbox;

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
        sb.run(&["config"])
            .code(2)
            .stderr_has(&format!("{key} is empty (from env {key})"))
            .stderr_has(&format!("for example {key}={example}"));

        sb.unset(key);
        for line in [format!("{key}="), format!("{key}=\"\""), format!("{key}=  ")] {
            let file = sb.config_file(&format!("# comment\n{line}\n"));
            sb.run(&["config"])
                .code(2)
                .stderr_has(&format!("{key} is empty (from {}:2 ({key}))", file.display()))
                .stderr_has(&format!("for example {key}={example}"));
        }
    }
}

#[test]
fn an_empty_flag_is_exit_2_naming_the_key_or_the_flag() {
    let sb = Sandbox::new();
    sb.run(&["--docker", "", "config"])
        .code(2)
        .stderr_has("UPGRADERD_DOCKER is empty (from flag)")
        .stderr_has("for example UPGRADERD_DOCKER=docker");
    sb.run(&["--state-dir", "", "config"]).code(2).stderr_has("--state-dir");
}
