//! Stack data with a real database: a `web` and a `worker` on one image
//! whose data is a PostgreSQL 15 service (`db`, built from Debian packages by
//! `tests/support/postgres-image.sh`). Only the container and the health
//! settings are configured: the database is found, stopped for the backup's
//! final pass and around its restore (its image is `postgres`), and a
//! rollback loses no committed write. And the same promise for a SQLite app.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use crate::compose::ComposeVersion;
use crate::scenario::Scenario;
use crate::world::{docker_build, must, testapp_binary, world};

/// The app's versions on PostgreSQL: version, behaviour, schema.
const PG_VARIANTS: &[(&str, &str, &str)] =
    &[("1.0.0", "good", "1"), ("2.0.0", "good", "2"), ("2.0.5", "migrate-crash", "2")];

/// The test app on top of a database image (so it has the server's client
/// tools), as `APP:base` and `APP:<version>` for each of `variants` (version, behaviour, schema).
pub(crate) fn app_images_on(db: &str, app: &str, variants: &[(&str, &str, &str)]) {
    let prefix = &world().expect("the engine's world").prefix;
    let context = tempfile::tempdir().unwrap();
    std::fs::copy(testapp_binary(), context.path().join("testapp")).unwrap();
    let base = format!(
        "FROM {db}\nCOPY testapp /testapp\nLABEL upgraderd-e2e={prefix}\nHEALTHCHECK NONE\nSTOPSIGNAL SIGTERM\n\
         ENTRYPOINT [\"/testapp\"]\nCMD []\n"
    );
    docker_build(context.path(), &base, &format!("{app}:base"));
    for (version, behavior, schema) in variants {
        let dockerfile = format!(
            "FROM {app}:base\nENV APP_VERSION={version} APP_BEHAVIOR={behavior} APP_SCHEMA={schema}\n\
             LABEL org.opencontainers.image.version={version}\n"
        );
        let context = tempfile::tempdir().unwrap();
        docker_build(context.path(), &dockerfile, &format!("{app}:{version}"));
    }
}

/// The PostgreSQL image and the app images built on it (`<prefix>-pgapp:<version>`), once per run.
pub(crate) fn pg_images() -> Option<&'static (String, String)> {
    static IMAGES: OnceLock<Option<(String, String)>> = OnceLock::new();
    IMAGES
        .get_or_init(|| {
            let world = world()?;
            // The repository's last component names it a database: `stop` is its default mode.
            let db = format!("{}-db/postgres:15", world.prefix);
            let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/postgres-image.sh");
            must(&[script, &db]);
            let app = format!("{}-pgapp", world.prefix);
            app_images_on(&db, &app, PG_VARIANTS);
            Some((db, app))
        })
        .as_ref()
}

/// web + worker on the app's image, and the database they share.
fn pg_stack(db_image: String) -> impl Fn(&str, u16, &str) -> String {
    move |repo, port, prefix| {
        format!(
            "services:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
             environment:\n      APP_PG: db\n    depends_on:\n      - db\n    labels:\n      upgraderd-e2e: {prefix}\n  \
             worker:\n    image: {repo}:latest\n    restart: unless-stopped\n    environment:\n      APP_PG: db\n      APP_ROLE: worker\n    \
             depends_on:\n      - db\n    labels:\n      upgraderd-e2e: {prefix}\n  \
             db:\n    image: {db_image}\n    restart: unless-stopped\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n    \
             labels:\n      upgraderd-e2e: {prefix}\n\
             volumes:\n  pgdata:\n    labels:\n      upgraderd-e2e: {prefix}\n"
        )
    }
}

fn start_pg(test: &str, versions: &[&str]) -> Option<Scenario> {
    let (db, app) = pg_images()?;
    let layout = pg_stack(db.clone());
    Scenario::start_from(app, test, versions, ComposeVersion::V1, &layout, &["up", "-d"])
}

impl Scenario {
    /// The container of the stack's database service, `db`.
    pub(crate) fn db(&self) -> String {
        self.service_container("db").expect("the db service has a container")
    }

    /// The whole database as SQL, comparable across dumps (a fixed `\restrict` key).
    pub(crate) fn pg_dump(&self) -> String {
        must(&["docker", "exec", &self.db(), "pg_dump", "-U", "postgres", "--restrict-key=upgraderd", "postgres"])
    }

    pub(crate) fn psql(&self, sql: &str) -> String {
        must(&["docker", "exec", &self.db(), "psql", "-U", "postgres", "-qAtX", "-c", sql])
    }

    fn db_started_at(&self) -> String {
        must(&["docker", "inspect", "--format", "{{.State.StartedAt}}", &self.db()]).trim().to_string()
    }

    /// The last upgrade's log lines.
    pub(crate) fn logs(&self) -> String {
        let row = self.last_history();
        row["logs"]
            .as_array()
            .map(|l| l.iter().filter_map(|x| x.as_str()).collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

/// The writer loop for PostgreSQL: `w0`, `w1`, … through `psql`.
pub(crate) const PG_WRITER: &str = r#"i=0; while psql -U postgres -qAtX -v ON_ERROR_STOP=1 -c "INSERT INTO items(name) VALUES ('w$i')" >/dev/null 2>&1; do echo $i; i=$((i+1)); done"#;

/// Runs the shell loop `script` in the database's container until the
/// database goes away; it writes `w0`, `w1`, … with the server's own client
/// and prints each number once the server acknowledged it. The numbers printed.
pub(crate) fn database_writer(s: &Scenario, script: &str) -> (std::thread::JoinHandle<()>, Arc<Mutex<Vec<u64>>>) {
    let mut child = Command::new("docker")
        .args(["exec", &s.db(), "sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let acked = Arc::new(Mutex::new(Vec::new()));
    let seen = acked.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(child.stdout.take().unwrap()).lines().map_while(Result::ok) {
            if let Ok(n) = line.trim().parse() {
                seen.lock().unwrap().push(n);
            }
        }
        let _ = child.wait();
    });
    (reader, acked)
}

#[test]
fn a_version_that_migrates_the_database_and_crashes_rolls_the_database_back() {
    let Some(s) = start_pg("pg-migrate", &["1.0.0", "2.0.5"]) else { return };
    let before = s.pg_dump();
    let started_before = s.db_started_at();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.pg_dump(), before, "the schema and every row are as before");
    must(&["docker", "exec", &s.db(), "pg_amcheck", "-U", "postgres", "--install-missing", "postgres"]);
    let logs = s.logs();
    assert!(logs.contains("db (stop, image postgres)"), "the database was found and stopped by default:\n{logs}");
    assert_eq!(logs.matches("Stopping db").count(), 2, "stopped for the final pass and for the restore:\n{logs}");
    assert_eq!(logs.matches("Starting db again").count(), 2, "{logs}");
    assert_ne!(s.db_started_at(), started_before, "the database was restarted around its restore");
    let worker = s.service_container("worker").unwrap();
    assert_eq!(must(&["docker", "inspect", "--format", "{{.State.Running}}", &worker]).trim(), "true");
}

#[test]
fn every_row_committed_until_the_database_stopped_survives_the_rollback() {
    let Some(s) = start_pg("pg-writer", &["1.0.0", "2.0.5"]) else { return };
    let (writer, acked) = database_writer(&s, PG_WRITER);
    crate::common::wait("the writer to commit rows")
        .within(Duration::from_secs(30))
        .until_true(|| acked.lock().unwrap().len() >= 5);
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    writer.join().unwrap();
    let acked = acked.lock().unwrap().clone();
    let rows = s.psql("SELECT name FROM items WHERE name LIKE 'w%'");
    let present: std::collections::HashSet<&str> = rows.lines().collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|n| !present.contains(format!("w{n}").as_str())).collect();
    assert!(lost.is_empty(), "{} of {} committed rows lost: {lost:?}", lost.len(), acked.len());
    s.wait_version("1.0.0");
    // PostgreSQL's own check of the restored tables and their indexes.
    let db = s.db();
    must(&["docker", "exec", &db, "pg_amcheck", "-U", "postgres", "--install-missing", "--heapallindexed", "postgres"]);
}

#[test]
fn a_manual_rollback_of_a_complete_upgrade_restores_the_earlier_database() {
    let Some(s) = start_pg("pg-manual", &["1.0.0", "2.0.0"]) else { return };
    let before = s.pg_dump();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_ne!(s.pg_dump(), before, "2.0.0 migrated the database");
    let run = s.upgraderd(&["rollback"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.pg_dump(), before);
    assert!(s.logs().contains("Stopping db"), "{}", s.logs());
}

#[test]
fn a_sqlite_app_finds_its_last_write_after_a_rollback() {
    let Some(s) = Scenario::start("sqlite-writer", &["1.0.0", "2.0.5"], ComposeVersion::V1) else { return };
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let writer = {
        let (stop, acked, port) = (stop.clone(), acked.clone(), s.port);
        std::thread::spawn(move || {
            let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
            for n in 0.. {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let url = format!("http://127.0.0.1:{port}/api/items?name=w{n}");
                if agent.post(&url).call().is_err() {
                    break; // The app went away: stopped for the switch.
                }
                acked.lock().unwrap().push(n);
            }
        })
    };
    crate::common::wait("the app to take writes")
        .within(Duration::from_secs(20))
        .until_true(|| acked.lock().unwrap().len() >= 5);
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    let last = *acked.lock().unwrap().last().unwrap();
    let dump = s.dump();
    assert!(dump.contains(&format!("\"w{last}\"")), "the last acknowledged write w{last} is back:\n{dump}");
}
