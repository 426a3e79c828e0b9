//! The pull upgrade against a stateful fake `docker` (and `docker-compose`):
//! the exact command lines for compose v2 and v1, and a failure injected at
//! every step, each ending in one of the invariant's three states with the
//! data where it must be.
//!
//! The fake keeps images as files (`images/<reference>` holding an id of the
//! form `sha256:v-<version>`), the service container's image in `running`
//! and its state in `state`. A new version "migrates" the data when it starts.
//! `FAIL_ON="up:2 tag:1"` makes the n-th call of a verb fail; `CRASH=2.0.0`
//! makes that version exit at start. A health server on loopback answers
//! with the running version.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use common::{tree, Sandbox};
use serde_json::Value;

const FAKE_DOCKER: &str = r#"#!/bin/sh
S="$FAKE_STATE"
echo "$*" >> "$S/argv.log"
key() { printf '%s' "$1" | tr '/:' '__'; }
resolve() { if [ -f "$S/images/$(key "$1")" ]; then cat "$S/images/$(key "$1")"; else printf '%s\n' "$1"; fi; }
version_of() { id=$(resolve "$1"); echo "${id#sha256:v-}"; }
# The n-th call of a verb fails when FAIL_ON names it.
count() {
  n=$(( $(cat "$S/count.$1" 2>/dev/null || echo 0) + 1 )); echo $n > "$S/count.$1"
  for f in $FAIL_ON; do
    if [ "$f" = "$1:$n" ]; then echo "fake docker: injected failure of $1 #$n" >&2; exit 1; fi
  done
}
container_json() {
  id=$(cat "$S/running"); state=$(cat "$S/state")
  if [ "$state" = running ]; then running=true; code=0; else running=false; code=$(cat "$S/exit_code"); fi
  cat <<EOF
[{"Id":"c0ffee","Name":"/demo-app-1","Image":"$id","RestartCount":0,
"Config":{"Image":"registry.example/demo/app:latest","Labels":{
 "com.docker.compose.project":"demo","com.docker.compose.service":"app",
 "com.docker.compose.project.working_dir":"$S",
 "com.docker.compose.project.config_files":"$S/docker-compose.yml,$S/docker-compose.prod.yml",
 "com.docker.compose.project.environment_file":"$S/.env"}},
"State":{"Status":"$state","Running":$running,"ExitCode":$code},
"Mounts":[{"Type":"bind","Source":"$S/data","Destination":"/data","RW":true}]}]
EOF
}
compose_verb() {
  case "$*" in
    *" config"*)
      if [ -f "$S/v1" ]; then printf 'services:\n  app:\n    image: registry.example/demo/app:latest\nversion: "3.9"\n'
      else echo '{"services":{"app":{"image":"registry.example/demo/app:latest"}}}'; fi ;;
    *" up "*)
      count up
      resolve registry.example/demo/app:latest > "$S/running"
      v=$(version_of registry.example/demo/app:latest)
      [ "$v" = 1.0.0 ] || echo "migrated by $v" >> "$S/data/app.db"
      if [ "$v" = "$CRASH" ]; then echo exited > "$S/state"; echo 1 > "$S/exit_code"; else echo running > "$S/state"; fi ;;
    *" stop "*)
      count stop
      echo exited > "$S/state"; echo 0 > "$S/exit_code"
      # Damage the backup, as a failing disk would, when asked to.
      case " $FAIL_ON " in *" backup "*) for f in "$S"/state-dir/backups/*.tar.gz; do printf 'x' | dd of="$f" bs=1 seek=200 conv=notrunc 2>/dev/null; done ;; esac ;;
    *) echo "fake compose: unexpected $*" >&2; exit 99 ;;
  esac
}
case "$*" in
  "compose version") if [ -f "$S/v1" ]; then echo "docker: 'compose' is not a docker command." >&2; exit 1; fi
                     echo "Docker Compose version v2.29.0" ;;
  compose\ *) compose_verb "$@" ;;
  "info --format {{.DockerRootDir}}") echo "$S" ;;
  "container inspect -- demo-app-1"|"container inspect -- c0ffee") container_json ;;
  ps\ -a\ *) echo c0ffee ;;
  logs\ *) echo "app: the last thing it said" ;;
  "manifest inspect registry.example/demo/app:2.0.0") echo '{}' ;;
  manifest\ inspect\ *) echo "no such manifest: $3" >&2; exit 1 ;;
  image\ inspect\ --format\ {{.Id}}\ --\ *)
    if [ -f "$S/images/$(key "$6")" ]; then cat "$S/images/$(key "$6")"; else echo "Error: No such image: $6" >&2; exit 1; fi ;;
  image\ inspect\ --format\ *org.opencontainers.image.version*) version_of "$6" ;;
  image\ inspect\ --format\ *RepoDigests*) echo '[]' ;;
  "image ls --format {{.Tag}} "*) prefix="$(key "$5")_"; ls "$S/images" | while read -r f; do case "$f" in "$prefix"*) echo "${f#"$prefix"}";; esac; done ;;
  "image rm "*) rm -f "$S/images/$(key "$3")" ;;
  tag\ *) count tag; resolve "$2" > "$S/images/$(key "$3")" ;;
  pull\ *) count pull; echo "Pulling $2"; [ -z "$SLOW_PULL" ] || sleep "$SLOW_PULL"; echo "sha256:v-${2##*:}" > "$S/images/$(key "$2")" ;;
  *) echo "fake docker: unexpected $*" >&2; exit 99 ;;
esac
"#;

const FAKE_COMPOSE_V1: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_STATE/compose-v1.log"
if [ "$*" = version ]; then echo "docker-compose version 1.29.2, build unknown"; exit 0; fi
exec docker compose "$@"
"#;

/// A deployment of `registry.example/demo/app:latest` running 1.0.0, with its data and a health server.
struct Deployment {
    sb: Sandbox,
}

impl Deployment {
    fn new() -> Deployment {
        let mut sb = Sandbox::new();
        let dir = sb.path().to_path_buf();
        for file in ["docker-compose.yml", "docker-compose.prod.yml", ".env"] {
            fs::write(dir.join(file), "").unwrap();
        }
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(dir.join("data/app.db"), "items: a, b, c\n").unwrap();
        fs::create_dir_all(dir.join("images")).unwrap();
        fs::create_dir_all(dir.join("trigger")).unwrap();
        fs::write(dir.join("images/registry.example_demo_app_latest"), "sha256:v-1.0.0\n").unwrap();
        fs::write(dir.join("running"), "sha256:v-1.0.0\n").unwrap();
        fs::write(dir.join("state"), "running\n").unwrap();
        sb.fake("docker", FAKE_DOCKER);
        let port = serve_health(&dir);
        sb.env("FAKE_STATE", dir.display().to_string())
            .env("UPGRADERD_STATE_DIR", dir.join("state-dir").display().to_string())
            .env("UPGRADERD_CONTAINER", "demo-app-1")
            .env("UPGRADERD_MIN_FREE", "1MB")
            .env("UPGRADERD_TRIGGER_DIR", dir.join("trigger").display().to_string())
            .env("UPGRADERD_HEALTH_URL", format!("http://127.0.0.1:{port}/api/health"))
            .env("UPGRADERD_HEALTH_TIMEOUT", "10s")
            .env("UPGRADERD_HEALTH_STABLE", "300ms")
            .env("UPGRADERD_HEALTH_VERSION_POINTER", "/version");
        Deployment { sb }
    }

    fn compose_v1(self) -> Deployment {
        fs::write(self.sb.path().join("v1"), "").unwrap();
        self.sb.fake("docker-compose", FAKE_COMPOSE_V1);
        self
    }

    fn with(mut self, key: &str, value: &str) -> Deployment {
        self.sb.env(key, value);
        self
    }

    fn running_version(&self) -> String {
        let id = fs::read_to_string(self.sb.path().join("running")).unwrap();
        id.trim().trim_start_matches("sha256:v-").to_string()
    }

    fn data(&self) -> std::collections::BTreeMap<String, String> {
        tree(&self.sb.path().join("data"))
    }

    fn argv(&self) -> Vec<String> {
        fs::read_to_string(self.sb.path().join("argv.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The mutating docker calls, in order, without the project's compose flags.
    fn actions(&self) -> Vec<String> {
        self.argv()
            .into_iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                match words[0] {
                    "tag" | "pull" => Some(format!(
                        "{} {}",
                        words[0],
                        words[1..].join(" ").replace("registry.example/demo/app", "app")
                    )),
                    "compose" if line.contains(" up ") => Some("up".into()),
                    "compose" if line.contains(" stop ") => Some("stop".into()),
                    _ => None,
                }
            })
            .collect()
    }

    fn last_history(&self) -> Value {
        self.sb.run(&["--json", "history", "--limit", "1"]).success().json()["history"][0].clone()
    }

    fn status_file(&self) -> Value {
        serde_json::from_slice(&fs::read(self.sb.path().join("trigger/.upgrade-status.json")).unwrap()).unwrap()
    }
}

/// Answers every request with the version the fake container runs.
fn serve_health(state: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = state.join("running");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let id = fs::read_to_string(&running).unwrap_or_default();
            let body = format!(r#"{{"version":"{}"}}"#, id.trim().trim_start_matches("sha256:v-"));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

#[test]
fn dry_run_prints_the_exact_compose_v2_command_lines() {
    let d = Deployment::new();
    let dir = d.sb.path().display().to_string();
    let run = d.sb.run(&["upgrade", "--to", "2.0.0", "--dry-run"]).success().stdout_has("dry run: nothing was changed");
    let planned: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("docker ")).collect();
    assert!(
        planned[0].starts_with("docker tag sha256:v-1.0.0 registry.example/demo/app:upgraderd-rollback-"),
        "{planned:?}"
    );
    assert_eq!(
        planned[1..],
        vec![
            "docker pull registry.example/demo/app:2.0.0".to_string(),
            "docker tag registry.example/demo/app:2.0.0 registry.example/demo/app:latest".to_string(),
            format!(
                "docker compose -p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml \
                 --env-file {dir}/.env up -d --no-deps --force-recreate --pull never app"
            ),
        ]
    );
    assert!(d.actions().is_empty(), "nothing mutating reached docker: {:?}", d.actions());
}

#[test]
fn a_good_upgrade_runs_the_runbook_in_order_and_completes() {
    let d = Deployment::new();
    d.sb.run(&["upgrade", "--to", "2.0.0"]).success().stdout_has("complete: 1.0.0 -> 2.0.0");
    let id = d.last_history()["upgradeId"].as_str().unwrap().to_string();
    assert_eq!(
        d.actions(),
        vec![
            format!("tag sha256:v-1.0.0 app:upgraderd-rollback-{id}"),
            "pull app:2.0.0".into(),
            "tag app:2.0.0 app:latest".into(),
            "up".into(),
        ]
    );
    assert_eq!(d.running_version(), "2.0.0");
    assert_eq!(d.last_history()["status"], "complete");
    assert_eq!(d.status_file()["status"], "complete");
    assert_eq!(d.status_file()["upgradeId"], id.as_str());
}

#[test]
fn compose_v1_gets_its_own_command_lines() {
    let d = Deployment::new().compose_v1();
    let dir = d.sb.path().display().to_string();
    d.sb.run(&["upgrade", "--to", "2.0.0"]).success();
    let v1 = fs::read_to_string(d.sb.path().join("compose-v1.log")).unwrap();
    let base = format!(
        "-p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml --env-file {dir}/.env"
    );
    assert_eq!(
        v1.lines().collect::<Vec<_>>(),
        vec![
            "version".to_string(),
            format!("{base} config"),
            // v1 has no `--pull never`; it never pulls on `up` when the image is present.
            format!("{base} up -d --no-deps --force-recreate app"),
        ]
    );
    assert_eq!(d.running_version(), "2.0.0");
}

#[test]
fn the_status_file_beats_during_a_long_pull() {
    let d = Deployment::new().with("SLOW_PULL", "5");
    let mut child = d.sb.command(&["upgrade", "--to", "2.0.0"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let status_path = d.sb.path().join("trigger/.upgrade-status.json");
    let read = || -> Option<Value> { serde_json::from_slice(&fs::read(&status_path).ok()?).ok() };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let first = loop {
        match read() {
            Some(v) if v["status"] == "downloading" => break v,
            _ if std::time::Instant::now() > deadline => panic!("never saw downloading: {:?}", read()),
            _ => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    };
    std::thread::sleep(std::time::Duration::from_millis(3000));
    let later = read().unwrap();
    assert_eq!(later["status"], "downloading", "{later}");
    assert_eq!(later["upgradeId"], first["upgradeId"]);
    assert_ne!(later["updatedAt"], first["updatedAt"], "no heartbeat while the pull ran");
    assert!(child.wait().unwrap().success());
    assert_eq!(d.status_file()["status"], "complete");
}

/// One injected failure: what is asked, and how the attempt must end.
struct Case {
    fail_on: &'static str,
    crash: &'static str,
    terminal: &'static str,
    error_has: &'static str,
    running: &'static str,
    /// Whether the pre-upgrade data must be back (or never changed).
    data_intact: bool,
}

fn check(case: Case) {
    let d = Deployment::new().with("FAIL_ON", case.fail_on).with("CRASH", case.crash);
    let before = d.data();
    let run = d.sb.run(&["upgrade", "--to", "2.0.0"]).code(1);
    let row = d.last_history();
    let what = format!("FAIL_ON={:?} CRASH={:?}\n{}", case.fail_on, case.crash, run.stderr);
    assert_eq!(row["status"], case.terminal, "{what}");
    assert_eq!(d.status_file()["status"], case.terminal, "{what}");
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains(case.error_has), "error lacks {:?}: {error}\n{what}", case.error_has);
    assert_eq!(d.running_version(), case.running, "{what}");
    if case.data_intact {
        assert_eq!(d.data(), before, "{what}");
    }
    // The backup is never consumed by a failure.
    let backups = d.sb.run(&["--json", "backup", "list"]).success().json();
    assert_eq!(backups["backups"].as_array().map(Vec::len), Some(1), "{what}\n{backups}");
}

#[test]
fn failing_to_keep_the_old_image_changes_nothing() {
    check(Case {
        fail_on: "tag:1",
        crash: "",
        terminal: "failed",
        error_has: "injected failure of tag #1",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_pull_changes_nothing() {
    check(Case {
        fail_on: "pull:1",
        crash: "",
        terminal: "failed",
        error_has: "pulling registry.example/demo/app:2.0.0",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_retag_is_rolled_back() {
    check(Case {
        fail_on: "tag:2",
        crash: "",
        terminal: "rolled_back",
        error_has: "injected failure of tag #2",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_recreate_is_rolled_back() {
    check(Case {
        fail_on: "up:1",
        crash: "",
        terminal: "rolled_back",
        error_has: "recreating the service",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_crashing_new_version_is_rolled_back_with_its_data() {
    check(Case {
        fail_on: "",
        crash: "2.0.0",
        terminal: "rolled_back",
        error_has: "exited with code 1",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_stop_during_rollback_is_logged_and_the_rollback_goes_on() {
    check(Case {
        fail_on: "stop:1",
        crash: "2.0.0",
        terminal: "rolled_back",
        error_has: "exited with code 1",
        running: "1.0.0",
        data_intact: true,
    });
}

#[test]
fn a_damaged_backup_fails_the_rollback_loudly_and_touches_no_data() {
    let d = Deployment::new().with("FAIL_ON", "backup").with("CRASH", "2.0.0");
    d.sb.run(&["upgrade", "--to", "2.0.0"]).code(1).stderr_has("rollback failed: restoring data");
    let row = d.last_history();
    assert_eq!(row["status"], "failed");
    // Restore verifies before it writes: the new version's data is left as it was, not half-restored.
    assert!(fs::read_to_string(d.sb.path().join("data/app.db")).unwrap().contains("migrated by 2.0.0"));
}

#[test]
fn a_failed_retag_of_the_old_image_fails_the_rollback() {
    check(Case {
        fail_on: "tag:3",
        crash: "2.0.0",
        terminal: "failed",
        error_has: "rollback failed",
        running: "2.0.0",
        data_intact: true,
    });
}

#[test]
fn a_failed_recreate_of_the_old_version_fails_the_rollback() {
    check(Case {
        fail_on: "up:2",
        crash: "2.0.0",
        terminal: "failed",
        error_has: "rollback failed",
        running: "2.0.0",
        data_intact: true,
    });
}

#[test]
fn a_missing_target_is_refused_in_preflight_and_recorded() {
    let d = Deployment::new();
    d.sb.run(&["upgrade", "--to", "9.9.9"])
        .code(1)
        .stdout_has("failed: 1.0.0 -> 9.9.9")
        .stderr_has("does not exist in the registry");
    let row = d.last_history();
    assert_eq!(row["status"], "failed");
    assert!(row["errorMessage"].as_str().unwrap().contains("refused in preflight"));
    assert!(d.actions().is_empty(), "{:?}", d.actions());
}

#[test]
fn hostile_versions_never_reach_an_argv() {
    let d = Deployment::new();
    for version in ["--help", "../x", "$(id)", "2.0.0 ; rm -rf /"] {
        d.sb.run(&["upgrade", &format!("--to={version}")]).code(2).stderr_has("is not a valid version tag");
    }
    assert!(d.argv().is_empty(), "{:?}", d.argv());
}
