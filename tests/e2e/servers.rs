//! Stack data on real database servers besides PostgreSQL: MariaDB 10.11,
//! Redis 7.0 (which also stands in for Valkey) and ClickHouse 18.16, each
//! built from Debian's packages by `tests/support/server-image.sh`. Each stack
//! is the test app and its database (`db`); only the container and the health
//! settings are configured. A writer inside the database's container writes
//! with the server's own client until the database is stopped for the
//! backup's final pass; version 2.0.5 migrates the data (a table replaced or
//! altered, keys moved) and crashes. The rollback must bring back every
//! acknowledged write, none of the migration, and data the server's own check
//! finds clean.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::compose::ComposeVersion;
use crate::database::{app_images_on, database_writer};
use crate::scenario::Scenario;
use crate::world::{must, sh, world};

/// A database server the test app keeps its data on.
struct Server {
    /// Its recipe in `tests/support/` (`server-image.sh`'s SERVER).
    recipe: &'static str,
    /// The image's repository and tag: the repository's last component names a
    /// database, so `stop` is its default backup mode.
    image: &'static str,
    /// The app's variable naming the database's host.
    app_env: &'static str,
    /// Where the image keeps its data (its VOLUME).
    data: &'static str,
    /// A shell loop in the database's container: writes `w0`, `w1`, … and prints each number acknowledged.
    writer: &'static str,
    /// A command in the database's container that prints schema 1's item names, one a line.
    names: &'static [&'static str],
}

const MARIADB: Server = Server {
    recipe: "mariadb",
    image: "mariadb:10.11",
    app_env: "APP_MARIADB",
    data: "/var/lib/mysql",
    writer: r#"i=0; while mariadb -e "INSERT INTO app.items(name) VALUES ('w$i')" >/dev/null 2>&1; do echo $i; i=$((i+1)); done"#,
    names: &["mariadb", "--batch", "--skip-column-names", "-e", "SELECT name FROM app.items"],
};

const REDIS: Server = Server {
    recipe: "redis",
    image: "redis:7.0",
    app_env: "APP_REDIS",
    data: "/var/lib/redis",
    writer: r#"i=0; while [ "$(redis-cli SADD items w$i 2>/dev/null)" = 1 ]; do echo $i; i=$((i+1)); done"#,
    names: &["redis-cli", "SMEMBERS", "items"],
};

const CLICKHOUSE: Server = Server {
    recipe: "clickhouse",
    image: "clickhouse-server:18.16",
    app_env: "APP_CLICKHOUSE",
    data: "/var/lib/clickhouse",
    writer: r#"i=0; while clickhouse-client --query "INSERT INTO items (name) VALUES ('w$i')" >/dev/null 2>&1; do echo $i; i=$((i+1)); done"#,
    names: &["clickhouse-client", "--query", "SELECT name FROM items"],
};

/// The app's versions on each server: version, behaviour, schema.
const VARIANTS: &[(&str, &str, &str)] = &[("1.0.0", "good", "1"), ("2.0.5", "migrate-crash", "2")];

/// The server's image and the app images built on it (`<prefix>-<recipe>app:<version>`), once per run.
fn images(server: &Server) -> Option<(String, String)> {
    static BUILT: Mutex<Option<HashMap<&'static str, (String, String)>>> = Mutex::new(None);
    let world = world()?;
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(images) = built.get_or_insert_with(HashMap::new).get(server.recipe) {
        return Some(images.clone());
    }
    let started = Instant::now();
    let db = format!("{}-db/{}", world.prefix, server.image);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/server-image.sh");
    must(&[script, server.recipe, &db]);
    let app = format!("{}-{}app", world.prefix, server.recipe);
    app_images_on(&db, &app, VARIANTS);
    eprintln!("{}: the server's image and the app's built in {:.1?}", server.recipe, started.elapsed());
    built.get_or_insert_with(HashMap::new).insert(server.recipe, (db.clone(), app.clone()));
    Some((db, app))
}

/// The ClickHouse server's image, built once per run (with the app images on it).
pub(crate) fn clickhouse_image() -> Option<String> {
    images(&CLICKHOUSE).map(|(db, _)| db)
}

/// The app and the database it keeps its data on.
fn stack(server: &'static Server, db_image: String) -> impl Fn(&str, u16, &str) -> String {
    move |repo, port, prefix| {
        format!(
            "services:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
             environment:\n      {env}: db\n    depends_on:\n      - db\n    labels:\n      upgraderd-e2e: {prefix}\n  \
             db:\n    image: {db_image}\n    restart: unless-stopped\n    volumes:\n      - dbdata:{data}\n    \
             labels:\n      upgraderd-e2e: {prefix}\n\
             volumes:\n  dbdata:\n    labels:\n      upgraderd-e2e: {prefix}\n",
            env = server.app_env,
            data = server.data,
        )
    }
}

impl Scenario {
    /// `args` run in the database's container: what it prints.
    fn in_db(&self, args: &[&str]) -> String {
        let db = self.db();
        let mut all = vec!["docker", "exec", db.as_str()];
        all.extend_from_slice(args);
        must(&all)
    }
}

/// Starts the app 1.0.0 on `server`, writes to the database until it is
/// stopped, upgrades to 2.0.5 (migrates, crashes) and checks the rollback:
/// rolled back, the database stopped for the final pass and for the restore,
/// 1.0.0 serving again, and every acknowledged write present. The scenario,
/// for the server's own checks.
fn acknowledged_writes_survive_a_migration_that_crashes(server: &'static Server) -> Option<Scenario> {
    let (db, app) = images(server)?;
    let started = Instant::now();
    let layout = stack(server, db);
    let test = format!("{}-writer", server.recipe);
    let s = Scenario::start_from(&app, &test, &["1.0.0", "2.0.5"], ComposeVersion::V1, &layout, &["up", "-d"])?;
    let (writer, acked) = database_writer(&s, server.writer);
    crate::common::wait("the writer to have writes acknowledged")
        .within(Duration::from_secs(30))
        .until_true(|| acked.lock().unwrap().len() >= 5);
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{}", run.stderr);
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains("migrated, now crashing"), "2.0.5 migrated the data, then crashed: {error}");
    writer.join().unwrap();
    s.wait_version("1.0.0");

    let logs = s.logs();
    let kind = server.image.split(':').next().unwrap();
    assert!(
        logs.contains(&format!("db (stop, image {kind})")),
        "the database was found and stopped by default:\n{logs}"
    );
    assert_eq!(logs.matches("Stopping db").count(), 2, "stopped for the final pass and for the restore:\n{logs}");
    assert_eq!(logs.matches("Starting db again").count(), 2, "{logs}");

    let acked = acked.lock().unwrap().clone();
    let names = s.in_db(server.names);
    let present: HashSet<&str> = names.lines().map(str::trim).collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|n| !present.contains(format!("w{n}").as_str())).collect();
    assert!(lost.is_empty(), "{} of {} acknowledged writes lost: {lost:?}", lost.len(), acked.len());
    for seeded in ["alpha", "beta", "gamma"] {
        assert!(present.contains(seeded), "{seeded}, written through the app, is back as 1.0.0 wrote it:\n{names}");
    }
    eprintln!(
        "{}: {} writes acknowledged, all present after the rollback ({} items in all); the scenario took {:.1?}",
        server.recipe,
        acked.len(),
        present.len(),
        started.elapsed()
    );
    Some(s)
}

#[test]
fn mariadb_every_acknowledged_write_survives_a_migration_that_crashes() {
    let Some(s) = acknowledged_writes_survive_a_migration_that_crashes(&MARIADB) else { return };
    let columns = s.in_db(&[
        "mariadb",
        "--batch",
        "--skip-column-names",
        "-e",
        "SELECT column_name FROM information_schema.columns WHERE table_schema = 'app' AND table_name = 'items' ORDER BY ordinal_position",
    ]);
    assert_eq!(columns.split_whitespace().collect::<Vec<_>>(), ["id", "name"], "2.0.5's column is gone");
    // mariadb-check runs CHECK TABLE on every table of every database.
    let check = s.in_db(&["mariadb-check", "--all-databases"]);
    assert!(check.lines().any(|l| l.starts_with("app.items ")), "{check}");
    let unclean: Vec<&str> = check.lines().filter(|l| !l.trim_end().ends_with(" OK")).collect();
    assert!(unclean.is_empty(), "mariadb-check found problems: {unclean:?}\n{check}");
}

#[test]
fn redis_every_acknowledged_write_survives_a_migration_that_crashes() {
    let Some(s) = acknowledged_writes_survive_a_migration_that_crashes(&REDIS) else { return };
    assert_eq!(s.in_db(&["redis-cli", "EXISTS", "app:schema", "app:items"]).trim(), "0", "2.0.5's keys are gone");
    let aof = s.in_db(&["redis-check-aof", "/var/lib/redis/appendonlydir/appendonly.aof.manifest"]);
    assert!(aof.contains("is valid"), "redis-check-aof:\n{aof}");
    // The snapshot Redis saved when it was stopped for the backup's final pass, restored.
    let rdb = s.in_db(&["redis-check-rdb", "/var/lib/redis/dump.rdb"]);
    assert!(rdb.contains("RDB looks OK"), "redis-check-rdb:\n{rdb}");
}

#[test]
fn clickhouse_every_acknowledged_write_survives_a_migration_that_crashes() {
    let Some(s) = acknowledged_writes_survive_a_migration_that_crashes(&CLICKHOUSE) else { return };
    let q = |sql: &str| s.in_db(&["clickhouse-client", "--query", sql]).trim().to_string();
    let columns = q("SELECT name FROM system.columns WHERE database = 'default' AND table = 'items'");
    assert_eq!(columns, "name", "2.0.5's table is gone");
    assert_eq!(q("SELECT count() FROM system.tables WHERE database = 'default' AND name != 'items'"), "0");
    assert_eq!(q("CHECK TABLE items"), "1", "ClickHouse's CHECK TABLE finds the restored table clean");
    // The server logged no error since it started on the restored files.
    let db = s.db();
    let since = must(&["docker", "inspect", "--format", "{{.State.StartedAt}}", &db]);
    let (_, log) = sh(&["docker", "logs", "--since", since.trim(), &db]);
    assert!(!log.contains("<Error>"), "ClickHouse logged errors after the restore:\n{log}");
}
