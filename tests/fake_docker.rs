//! The exact command lines of a pull upgrade, pinned with a fake `docker`
//! that speaks compose v2 (`docker compose`) and logs every argv it gets.

mod common;

use std::fs;

use common::Sandbox;

/// A fake docker answering from a scenario: one compose v2 service `app`.
fn fake_docker(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path().display().to_string();
    let inspect = format!(
        r#"[{{"Id":"c0ffee","Name":"/demo-app-1","Image":"sha256:old","RestartCount":0,
"Config":{{"Image":"registry.example/demo/app:latest","Labels":{{
 "com.docker.compose.project":"demo","com.docker.compose.service":"app",
 "com.docker.compose.project.working_dir":"{dir}",
 "com.docker.compose.project.config_files":"{dir}/docker-compose.yml,{dir}/docker-compose.prod.yml",
 "com.docker.compose.project.environment_file":"{dir}/.env"}}}},
"State":{{"Status":"running","Running":true,"ExitCode":0}},
"Mounts":[{{"Type":"bind","Source":"{dir}/data","Destination":"/data","RW":true}}]}}]"#
    );
    fs::write(sb.path().join("inspect.json"), inspect).unwrap();
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> {dir}/argv.log
case "$*" in
  "compose version") echo "Docker Compose version v2.29.0" ;;
  "container inspect -- demo-app-1") cat {dir}/inspect.json ;;
  "info --format {{{{.DockerRootDir}}}}") echo {dir} ;;
  image\ inspect\ --format\ *org.opencontainers.image.version*) echo 1.0.0 ;;
  "manifest inspect registry.example/demo/app:2.0.0") echo '{{}}' ;;
  "manifest inspect registry.example/demo/app:9.9.9") echo "no such manifest: registry.example/demo/app:9.9.9" >&2; exit 1 ;;
  compose\ *\ config\ --format\ json) echo '{{"services":{{"app":{{"image":"registry.example/demo/app:latest"}}}}}}' ;;
  *) echo "fake docker: unexpected $*" >&2; exit 99 ;;
esac
"#
    );
    sb.fake("docker", &script)
}

fn deployment() -> Sandbox {
    let mut sb = Sandbox::new();
    for file in ["docker-compose.yml", "docker-compose.prod.yml", ".env"] {
        fs::write(sb.path().join(file), "").unwrap();
    }
    fs::create_dir_all(sb.path().join("data")).unwrap();
    fake_docker(&sb);
    sb.env("UPGRADERD_CONTAINER", "demo-app-1").env("UPGRADERD_MIN_FREE", "1MB");
    sb
}

#[test]
fn dry_run_prints_the_exact_compose_v2_command_lines() {
    let sb = deployment();
    let dir = sb.path().display().to_string();
    let run = sb.run(&["upgrade", "--to", "2.0.0", "--dry-run"]).success().stdout_has("dry run: nothing was changed");
    let planned: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with("docker ")).collect();
    assert!(
        planned[0].starts_with("docker tag sha256:old registry.example/demo/app:upgraderd-rollback-"),
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
    // Nothing mutating reached docker.
    let log = fs::read_to_string(sb.path().join("argv.log")).unwrap();
    assert!(!log.lines().any(|l| l.starts_with("pull") || l.starts_with("tag") || l.contains(" up ")), "{log}");
}

#[test]
fn a_missing_target_is_refused_in_preflight_and_recorded() {
    let sb = deployment();
    sb.run(&["upgrade", "--to", "9.9.9"])
        .code(1)
        .stdout_has("failed: 1.0.0 -> 9.9.9")
        .stderr_has("does not exist in the registry");
    let history = sb.run(&["--json", "history"]).success().json();
    assert_eq!(history["history"][0]["status"], "failed");
    assert!(history["history"][0]["errorMessage"].as_str().unwrap().contains("refused in preflight"));
    let log = fs::read_to_string(sb.path().join("argv.log")).unwrap();
    assert!(!log.lines().any(|l| l.starts_with("pull") || l.starts_with("tag")), "{log}");
}

#[test]
fn hostile_versions_never_reach_an_argv() {
    let sb = deployment();
    for version in ["--help", "../x", "$(id)", "2.0.0 ; rm -rf /"] {
        sb.run(&["upgrade", &format!("--to={version}")]).code(2).stderr_has("is not a valid version tag");
    }
    assert!(!sb.path().join("argv.log").exists());
}
