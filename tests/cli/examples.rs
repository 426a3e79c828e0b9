//! The OpenTrace example runs as its README says: what its compose file
//! builds is there (`Dockerfile`, the files it copies, `.env` from
//! `.env.example`, `data/updates/`), the compose file renders, the trigger
//! directory upgraderd is configured with is the one the app writes, and the
//! app itself answers its health check with `VERSION` and writes
//! `data/updates/trigger` when asked for an update.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/opentrace")
}

#[test]
fn the_opentrace_example_has_everything_its_compose_file_builds_and_mounts() {
    let dir = example();
    let compose = fs::read_to_string(dir.join("docker-compose.prod.yml")).unwrap();
    assert!(
        compose.contains("build: .") && compose.contains("env_file: .env") && compose.contains("- ./data:/app/data")
    );
    let dockerfile = fs::read_to_string(dir.join("Dockerfile")).unwrap();
    for line in dockerfile.lines().filter(|l| l.starts_with("COPY ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        for source in &words[1..words.len() - 1] {
            assert!(dir.join(source).exists(), "the Dockerfile copies {source}, which is missing");
        }
    }
    // Both databases, each migrated by the app from its own directory.
    for (service, migration) in [("postgres", "001_projects.sql"), ("clickhouse", "001_spans.sql")] {
        assert!(compose.contains(&format!("\n  {service}:\n")), "the stack has {service}");
        assert!(dir.join("migrations").join(service).join(migration).is_file(), "{service}'s first migration");
    }
    assert!(dir.join("data/updates/.gitkeep").is_file(), "the trigger directory ships with the checkout");
    assert!(dir.join(".env.example").is_file(), "the README copies .env.example to .env");

    // upgraderd watches the directory the container writes its trigger into.
    let env = fs::read_to_string(dir.join("upgraderd.env")).unwrap();
    assert!(env.contains("UPGRADERD_TRIGGER_DIR=/opt/opentrace/data/updates\n"));
    assert!(env.contains("UPGRADERD_TRIGGER_FILE=trigger\n"));
    // The stack's data is found from the project: a data dir would replace it with one directory.
    assert!(!env.lines().any(|l| l.starts_with("UPGRADERD_DATA_DIR=")), "{env}");
    let app = fs::read_to_string(dir.join("app.py")).unwrap();
    assert!(app.contains("UPDATES = DATA / \"updates\"") && app.contains("UPDATES / \"trigger\""));
    assert!(dockerfile.contains("DATA_DIR=/app/data"));
}

#[test]
fn the_opentrace_compose_file_renders_with_the_env_file_the_readme_makes() {
    if Command::new("docker-compose").arg("version").output().is_err() {
        assert!(
            std::env::var("UPGRADERD_E2E_REQUIRED").as_deref() != Ok("1"),
            "docker-compose is missing; install Debian's docker-compose package"
        );
        eprintln!("SKIP: docker-compose not installed; the example's compose file was not rendered");
        return;
    }
    let copy = tempfile::tempdir().unwrap();
    for file in ["docker-compose.prod.yml", "Dockerfile", "app.py", "VERSION"] {
        fs::copy(example().join(file), copy.path().join(file)).unwrap();
    }
    fs::copy(example().join(".env.example"), copy.path().join(".env")).unwrap();
    let out = Command::new("docker-compose")
        .args(["-p", "opentrace", "-f", "docker-compose.prod.yml", "config"])
        .current_dir(copy.path())
        .output()
        .unwrap();
    let rendered = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(rendered.contains("SITE_NAME: OpenTrace"), "the .env reaches the service:\n{rendered}");
    assert!(rendered.contains("PGPASSWORD: change-me"), "the password reaches the app:\n{rendered}");
}

/// The example's app under the host's python3, its data in `data`, on `port`.
struct App(Child);

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn the_opentrace_app_answers_its_version_and_writes_the_trigger() {
    let Ok(python) = which("python3") else {
        eprintln!("SKIP: python3 not installed; the example's app was not run");
        return;
    };
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let _app = App(Command::new(python)
        .arg(example().join("app.py"))
        .env("DATA_DIR", data.path())
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let base = format!("http://127.0.0.1:{port}");
    let health: serde_json::Value = common::wait(format!("the example app on port {port}"))
        .every(Duration::from_millis(50))
        .until(|| ureq::get(&format!("{base}/api/health")).call().ok()?.into_json().ok());
    let version = fs::read_to_string(example().join("VERSION")).unwrap();
    assert_eq!(health, serde_json::json!({"status": "ok", "version": version.trim()}));

    let page = ureq::get(&format!("{base}/")).call().unwrap().into_string().unwrap();
    assert!(page.contains("Install Update") && page.contains("1 visits"), "{page}");
    assert_eq!(fs::read_to_string(data.path().join("visits")).unwrap(), "1\n", "the app keeps its data in data/");

    let answer = ureq::post(&format!("{base}/api/update")).call().unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(fs::read_to_string(data.path().join("updates/trigger")).unwrap(), "update_requested\n");
    let names: Vec<_> = fs::read_dir(data.path().join("updates")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["trigger"], "nothing but the trigger is left behind");
}

/// The example's app against a fake `psql` that logs every statement and
/// answers `SELECT version FROM schema_migrations` with `applied`: how it exited
/// (or `None` when it went on to serve), its stderr, and the statements.
fn migrate_with(applied: &str) -> (Option<i32>, String, String) {
    let python = which("python3").expect("python3");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("statements");
    let psql = dir.path().join("psql");
    fs::write(
        &psql,
        format!(
            "#!/bin/sh\nfor last; do :; done\nprintf '%s\\n' \"$last\" >>'{}'\n\
             case \"$last\" in 'SELECT version FROM schema_migrations') printf '{applied}' ;; esac\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&psql, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!("{}:{}", dir.path().display(), std::env::var("PATH").unwrap_or_default());
    let mut app = Command::new(python)
        .arg(example().join("app.py"))
        .env("PATH", path)
        .env("POSTGRES_HOST", "postgres")
        .env_remove("CLICKHOUSE_URL")
        .env("DATA_DIR", dir.path().join("data"))
        .env("PORT", free_port().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let code = common::wait("the example app to migrate").every(Duration::from_millis(50)).until(|| {
        match app.try_wait().unwrap() {
            Some(status) => Some(status.code()),
            None => fs::read_to_string(&log).ok().filter(|l| l.contains("INSERT INTO")).map(|_| None),
        }
    });
    let _ = app.kill();
    let output = app.wait_with_output().unwrap();
    (code, String::from_utf8_lossy(&output.stderr).into_owned(), fs::read_to_string(&log).unwrap_or_default())
}

#[test]
fn the_opentrace_app_applies_its_migrations_and_refuses_data_from_a_newer_version() {
    if which("python3").is_err() {
        eprintln!("SKIP: python3 not installed; the example's migrations were not run");
        return;
    }
    let (code, stderr, statements) = migrate_with("");
    assert_eq!(code, None, "a fresh database is migrated and the app goes on: {stderr}");
    assert!(statements.contains("CREATE TABLE projects"), "{statements}");
    assert!(statements.contains("INSERT INTO schema_migrations (version) VALUES ('001_projects')"), "{statements}");

    let (code, stderr, statements) = migrate_with("001_projects\\n002_from_the_future\\n");
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("postgres holds migrations this version does not know (002_from_the_future)"), "{stderr}");
    assert!(!statements.contains("CREATE TABLE projects"), "nothing is applied to a newer database:\n{statements}");
}

fn which(program: &str) -> Result<PathBuf, ()> {
    let path = std::env::var_os("PATH").ok_or(())?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|p| p.is_file()).ok_or(())
}

/// The Swarm example's configuration loads and names a service its stack defines.
#[test]
fn the_swarm_example_configuration_names_a_service_of_its_stack() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/swarm");
    let sandbox = common::Sandbox::new();
    let config = dir.join("upgraderd.env");
    let shown = sandbox.run(&["-c", config.to_str().unwrap(), "--json", "config"]).success().json();
    let service = shown["config"]
        .as_array()
        .and_then(|values| values.iter().find(|v| v["key"] == "UPGRADERD_SWARM_SERVICE"))
        .map(|v| v["value"].as_str().unwrap_or_default().to_string())
        .unwrap_or_else(|| panic!("no UPGRADERD_SWARM_SERVICE in {shown}"));
    let stack = fs::read_to_string(dir.join("stack.yml")).unwrap();
    let (name, service) = service.split_once('_').expect("STACK_SERVICE");
    assert!(stack.contains(&format!("docker stack deploy -c stack.yml {name}")), "the stack is deployed as {name}");
    assert!(stack.contains(&format!("\n  {service}:\n")), "the stack defines {service}");
}
