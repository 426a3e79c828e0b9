//! The OpenTrace stack for real: the app built from its git checkout by the
//! rebuild strategy, keeping its metadata in PostgreSQL and its traces in
//! ClickHouse, both in the compose file and both migrated by the app at start
//! (schema 2). A good release migrates both; a release whose migration of
//! both succeeds and which then crashes is rolled back: the checkout, the
//! images, both databases and the app, as they were.

use std::fs;
use std::path::Path;

use crate::compose::ComposeVersion;
use crate::database::pg_images;
use crate::rebuild::{commit_release, git};
use crate::scenario::Scenario;
use crate::servers::clickhouse_image;
use crate::world::{free_port, must};

/// OpenTrace's `docker-compose.prod.yml`: the app built from the checkout,
/// started once both databases are healthy, as OpenTrace's own file does.
fn compose_file(port: u16, prefix: &str, postgres: &str, clickhouse: &str) -> String {
    format!(
        "services:\n  app:\n    build: .\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
         environment:\n      APP_PG: postgres\n      APP_CLICKHOUSE: clickhouse\n    \
         depends_on:\n      postgres:\n        condition: service_healthy\n      clickhouse:\n        condition: service_healthy\n    \
         labels:\n      upgraderd-e2e: {prefix}\n  \
         postgres:\n    image: {postgres}\n    restart: unless-stopped\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n    \
         labels:\n      upgraderd-e2e: {prefix}\n  \
         clickhouse:\n    image: {clickhouse}\n    restart: unless-stopped\n    volumes:\n      - chdata:/var/lib/clickhouse\n    \
         labels:\n      upgraderd-e2e: {prefix}\n\
         volumes:\n  pgdata:\n    labels:\n      upgraderd-e2e: {prefix}\n  chdata:\n    labels:\n      upgraderd-e2e: {prefix}\n"
    )
}

impl Scenario {
    /// The OpenTrace checkout at v1.0.0 (schema 1), deployed with
    /// `docker compose -f docker-compose.prod.yml up --build -d` and seeded,
    /// while origin/main has 2.0.0 (tag v2.0.0, migrates both databases) and
    /// at its tip 2.0.1, which migrates both and crashes. The commits, oldest first.
    fn start_opentrace(test: &str) -> Option<(Scenario, Vec<String>)> {
        let (postgres, pg_app) = pg_images()?.clone();
        let clickhouse = clickhouse_image()?;
        let (world, name, docker_config) = Scenario::enter(test, ComposeVersion::V2)?;
        let sandbox = crate::common::Sandbox::new();
        let src = sandbox.path().join("src");
        fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        let port = free_port();
        fs::write(src.join("docker-compose.prod.yml"), compose_file(port, &world.prefix, &postgres, &clickhouse))
            .unwrap();
        // The app's image has PostgreSQL's client (psql); ClickHouse it speaks to over HTTP.
        let base = format!("{pg_app}:base");
        let mut commits = vec![commit_release(&src, &base, "1.0.0", "good", 1, "OpenTrace 1.0.0")];
        git(&src, &["tag", "v1.0.0"]);
        commits.push(commit_release(&src, &base, "2.0.0", "good", 2, "OpenTrace 2.0.0: trace retention"));
        git(&src, &["tag", "v2.0.0"]);
        commits.push(commit_release(
            &src,
            &base,
            "2.0.1",
            "migrate-crash",
            2,
            "OpenTrace 2.0.1 (crashes after migrating)",
        ));
        let scenario = Scenario::deploy_checkout(name, sandbox, port, ComposeVersion::V2, docker_config);
        Some((scenario, commits))
    }

    /// `args` run in `service`'s container: what it prints, trimmed.
    fn in_service(&self, service: &str, args: &[&str]) -> String {
        let container = self.service_container(service).unwrap_or_else(|| panic!("{service} has a container"));
        let mut all = vec!["docker", "exec", container.as_str()];
        all.extend_from_slice(args);
        must(&all).trim().to_string()
    }

    /// Both databases as the app left them: each one's schema and items, sorted.
    fn opentrace_data(&self) -> (String, String) {
        let postgres = self.in_service(
            "postgres",
            &[
                "psql",
                "-qAtX",
                "-c",
                "SELECT string_agg(column_name, ',' ORDER BY ordinal_position) FROM information_schema.columns \
                 WHERE table_name = 'items' UNION ALL SELECT string_agg(name, ',' ORDER BY name) FROM items",
            ],
        );
        let clickhouse = self.in_service(
            "clickhouse",
            &[
                "clickhouse-client",
                "--query",
                "SELECT arrayStringConcat(groupArray(name), ',') FROM (SELECT name FROM system.columns \
                 WHERE database = 'default' AND table = 'items') UNION ALL \
                 SELECT arrayStringConcat(groupArray(name), ',') FROM (SELECT name FROM items ORDER BY name)",
            ],
        );
        (postgres, clickhouse)
    }
}

/// What `opentrace_data` reads at `schema` 1 or 2 for the seeded items (ClickHouse's
/// two lines come in either order: a UNION ALL of two queries).
fn at_schema(data: &(String, String), schema: u8) {
    let (postgres, clickhouse) = data;
    let (pg_columns, ch_columns, names) = match schema {
        1 => ("id,name", "name", "alpha,beta,gamma"),
        _ => ("id,name,payload", "name,payload", "ALPHA,BETA,GAMMA"),
    };
    assert_eq!(postgres.lines().collect::<Vec<_>>(), [pg_columns, names], "PostgreSQL at schema {schema}");
    let mut lines: Vec<&str> = clickhouse.lines().collect();
    lines.sort_unstable();
    let mut expected = [ch_columns, names];
    expected.sort_unstable();
    assert_eq!(lines, expected, "ClickHouse at schema {schema}");
}

/// The data as `opentrace_data` read it, ClickHouse's lines in a fixed order
/// (its UNION ALL answers them in either), to compare two readings.
fn comparable(data: (String, String)) -> (String, Vec<String>) {
    let mut clickhouse: Vec<String> = data.1.lines().map(str::to_string).collect();
    clickhouse.sort_unstable();
    (data.0, clickhouse)
}

fn head(dir: &Path) -> String {
    git(dir, &["rev-parse", "HEAD"])
}

#[test]
fn opentrace_rebuild_migrates_both_databases_and_a_failing_release_puts_the_checkout_and_both_back() {
    let Some((s, commits)) = Scenario::start_opentrace("opentrace") else { return };
    at_schema(&s.opentrace_data(), 1);

    let run = s.upgraderd(&["upgrade", "--strategy", "rebuild", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(head(&s.dir), commits[1]);
    let migrated = s.opentrace_data();
    at_schema(&migrated, 2);
    let logs = s.logs();
    for store in ["postgres (stop, image postgres)", "clickhouse (stop, image clickhouse-server)"] {
        assert!(logs.contains(store), "{store}: held still for the backup, found by its image:\n{logs}");
    }

    let postgres = s.service_container("postgres");
    let run = s.upgraderd(&["upgrade", "--strategy", "rebuild", "--to", "latest"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    assert!(row["errorMessage"].as_str().unwrap_or_default().contains("migrated, now crashing"), "{row}");
    s.wait_version("2.0.0");
    assert_eq!(head(&s.dir), commits[1], "the checkout is back at 2.0.0's commit");
    assert_eq!(comparable(s.opentrace_data()), comparable(migrated), "both databases are as 2.0.0 left them");
    assert_eq!(s.service_container("postgres"), postgres, "the database's container is the same, restarted");
    let check = s.in_service("clickhouse", &["clickhouse-client", "--query", "CHECK TABLE items"]);
    assert_eq!(check, "1", "ClickHouse's CHECK TABLE finds the restored table clean");
    let amcheck = s.in_service("postgres", &["pg_amcheck", "--install-missing", "--heapallindexed", "postgres"]);
    assert!(amcheck.is_empty(), "pg_amcheck finds the restored database clean: {amcheck}");
}
