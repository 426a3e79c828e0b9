//! A fleet of compose hosts rolled out through Ansible: the role and
//! playbook of `examples/ansible/`, run by `ansible-core` (a private
//! virtualenv under `target/`, `tests/support/ansible.sh`) over three
//! "hosts" that are three private engines, each running its own compose
//! project of the test app, with `ansible_connection: local` and per-host
//! variables (`DOCKER_HOST`, the state directory, the config file).
//!
//! The playbook goes one host, then half the rest, then the rest
//! (`serial: [1, "50%", "100%"]`: h1, h2, h3) and stops at the first host
//! that does not end `complete` (`max_fail_percentage: 0`). The versions
//! made for it: 2.1.0 and 2.2.0 are the good build on h1 and h3 and the
//! crashing one on h2.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::json;

use crate::common::{self, Sandbox};
use crate::engine_app::EngineApp;
use crate::world::{docker_build, world};

const HOSTS: [&str; 3] = ["h1", "h2", "h3"];

/// ansible-playbook, from `UPGRADERD_E2E_ANSIBLE` (set by test.sh), or `None`
/// (the test skips) where it is not set; a failure under `UPGRADERD_E2E_REQUIRED=1`.
fn ansible_playbook() -> Option<PathBuf> {
    match std::env::var_os("UPGRADERD_E2E_ANSIBLE") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ => {
            let why = "UPGRADERD_E2E_ANSIBLE is not set (test.sh sets it from tests/support/ansible.sh)";
            assert!(!std::env::var("UPGRADERD_E2E_REQUIRED").is_ok_and(|v| v == "1"), "{why}");
            eprintln!("SKIP: {why}");
            None
        }
    }
}

/// `{prefix}-fleet:{version}` and `{prefix}-fleet:{version}-crash`: the good
/// and the crashing test builds, reporting and labelled `version`.
fn fleet_builds(version: &str) -> [(String, String); 2] {
    let prefix = &world().unwrap().prefix;
    let context = tempfile::tempdir().unwrap();
    let made = |from: &str, tag: String| {
        let dockerfile = format!(
            "FROM {prefix}-build:{from}\nENV APP_VERSION={version}\nLABEL org.opencontainers.image.version={version}\n"
        );
        docker_build(context.path(), &dockerfile, &tag);
        tag
    };
    [
        (version.to_string(), made("2.0.0", format!("{prefix}-fleet:{version}"))),
        (version.to_string(), made("2.0.1", format!("{prefix}-fleet:{version}-crash"))),
    ]
}

struct Fleet {
    hosts: Vec<EngineApp>,
    /// The inventory, ansible's home and its temporary files.
    dir: Sandbox,
    playbook: PathBuf,
    images: Vec<String>,
}

impl Fleet {
    fn start() -> Option<Fleet> {
        let playbook = ansible_playbook()?;
        let world = world()?;
        let later: Vec<[(String, String); 2]> = ["2.1.0", "2.2.0"].map(fleet_builds).into();
        let images: Vec<String> = later.iter().flatten().map(|(_, image)| image.clone()).collect();
        let base = |v: &str| (v.to_string(), format!("{}-build:{v}", world.prefix));
        let hosts: Vec<EngineApp> = std::thread::scope(|scope| {
            let started: Vec<_> = HOSTS
                .iter()
                .enumerate()
                .map(|(i, host)| {
                    let mut images = vec![base("1.0.0"), base("2.0.0")];
                    // h2 gets the crashing build of each later version.
                    images.extend(later.iter().map(|builds| builds[usize::from(i == 1)].clone()));
                    scope.spawn(move || {
                        let images: Vec<(&str, &str)> = images.iter().map(|(t, i)| (t.as_str(), i.as_str())).collect();
                        EngineApp::start_with_images(&format!("fleet-{host}"), &images)
                    })
                })
                .collect();
            started.into_iter().map(|h| h.join().unwrap()).collect::<Option<Vec<_>>>()
        })?;
        let fleet = Fleet { hosts, dir: Sandbox::new(), playbook, images };
        fleet.write_inventory();
        Some(fleet)
    }

    fn host(&self, name: &str) -> &EngineApp {
        &self.hosts[HOSTS.iter().position(|h| *h == name).unwrap()]
    }

    /// Each host: its own config file (upgraderd's settings for its project),
    /// state directory and `DOCKER_HOST`, run locally.
    fn write_inventory(&self) {
        let python = self.playbook.parent().unwrap().join("python3");
        let mut hosts = serde_json::Map::new();
        for (name, app) in HOSTS.iter().zip(&self.hosts) {
            let settings = app.settings();
            let config: String = settings
                .iter()
                .filter(|(key, _)| key.starts_with("UPGRADERD_"))
                .map(|(key, value)| format!("{key}={value}\n"))
                .collect();
            let config_file = app.sandbox.path().join("fleet.env");
            std::fs::write(&config_file, config).unwrap();
            let docker_host = settings.iter().find(|(key, _)| *key == "DOCKER_HOST").unwrap().1.clone();
            hosts.insert(
                name.to_string(),
                json!({
                    "ansible_connection": "local",
                    "ansible_python_interpreter": python,
                    "upgraderd_binary": common::BIN,
                    "upgraderd_config": config_file,
                    "upgraderd_state_dir": app.state_dir(),
                    "upgraderd_environment": {"DOCKER_HOST": docker_host},
                }),
            );
        }
        let inventory = json!({"upgraderd": {"hosts": hosts}});
        std::fs::write(self.inventory(), serde_json::to_string_pretty(&inventory).unwrap()).unwrap();
    }

    fn inventory(&self) -> PathBuf {
        self.dir.path().join("inventory.json")
    }

    /// `ansible-playbook rollout.yml` to `version`, with more `-e` variables.
    fn roll_out(&self, version: &str, extra: &[&str]) -> common::Run {
        let playbook = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ansible/rollout.yml");
        let home = self.dir.path();
        let mut cmd = Command::new(&self.playbook);
        cmd.arg("-i").arg(self.inventory()).arg(&playbook).args(["-e", &format!("upgraderd_version={version}")]);
        for var in extra {
            cmd.args(["-e", var]);
        }
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("LC_ALL", "C.UTF-8")
            .env("ANSIBLE_LOCAL_TEMP", home.join("ansible-tmp"))
            .env("ANSIBLE_NOCOLOR", "1")
            .current_dir(home);
        let began = Instant::now();
        let run = common::Run::from_output(cmd.output().unwrap());
        eprintln!("fleet: the rollout of {version} exited {} in {:?}", run.code, began.elapsed());
        run
    }

    /// Each host's newest record as (status, to version), and the version it answers.
    fn state(&self) -> Vec<(String, String, String)> {
        self.hosts
            .iter()
            .map(|app| {
                let row = app.last_history();
                let answers = app.health().map(|h| h["version"].as_str().unwrap_or_default().to_string());
                (
                    row["status"].as_str().unwrap_or_default().to_string(),
                    row["toVersion"].as_str().unwrap_or_default().to_string(),
                    answers.unwrap_or_else(|| "nothing".into()),
                )
            })
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for image in &self.images {
            let _ = crate::world::sh(&["docker", "rmi", image]);
        }
    }
}

fn row(status: &str, to: &str, answers: &str) -> (String, String, String) {
    (status.into(), to.into(), answers.into())
}

#[test]
fn a_rollout_over_three_hosts_stops_at_the_first_that_does_not_end_complete() {
    let began = Instant::now();
    let Some(fleet) = Fleet::start() else { return };
    eprintln!("fleet: three hosts up in {:?}", began.elapsed());

    // A good version reaches every host, one batch after the other.
    let run = fleet.roll_out("2.0.0", &[]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(fleet.state(), vec![row("complete", "2.0.0", "2.0.0"); 3]);
    let h3_before = fleet.host("h3").last_history()["upgradeId"].clone();

    // 2.1.0 fails its gate on h2: h1 keeps it, h2 is rolled back, h3 is never reached.
    let run = fleet.roll_out("2.1.0", &[]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("fatal: [h2]"), "{}", run.stdout);
    assert!(
        run.stdout.contains("h2: upgrade ") && run.stdout.contains("ended rolled_back (2.0.0 -> 2.1.0)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("[h3]"), "h3 was not reached:\n{}", run.stdout);
    assert_eq!(
        fleet.state(),
        vec![
            row("complete", "2.1.0", "2.1.0"),
            row("rolled_back", "2.1.0", "2.0.0"),
            row("complete", "2.0.0", "2.0.0")
        ]
    );
    assert_eq!(fleet.host("h3").last_history()["upgradeId"], h3_before, "nothing ran on h3");

    // With the role's option, a failure rolls back the hosts this play upgraded: h1, from 2.2.0.
    let run = fleet.roll_out("2.2.0", &["upgraderd_rollback_finished=true"]);
    assert_ne!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("ended rolled_back (2.0.0 -> 2.2.0)"), "{}", run.stdout);
    assert!(run.stdout.contains("changed: [h2 -> h1] => (item=h1)"), "{}", run.stdout);
    let h1 = fleet.host("h1").last_history();
    // The operator's rollback is an attempt of its own: 2.2.0 back to 2.1.0, with its data.
    let moved = (h1["status"].as_str(), h1["fromVersion"].as_str(), h1["toVersion"].as_str());
    assert_eq!(moved, (Some("complete"), Some("2.2.0"), Some("2.1.0")), "{h1}");
    fleet.host("h1").wait_version("2.1.0");
    fleet.host("h2").wait_version("2.0.0");
    assert_eq!(fleet.host("h3").last_history()["upgradeId"], h3_before, "nothing ran on h3");
    fleet.host("h3").wait_version("2.0.0");
    eprintln!("fleet: done in {:?}", began.elapsed());
}
