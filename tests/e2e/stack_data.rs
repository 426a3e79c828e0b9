//! The data of real stacks: a PostgreSQL known by its data whatever its
//! image is called, held services started together and awaited by their own
//! HEALTHCHECK command (not Docker's 30 s schedule), a rollback that leaves
//! what it did not stop alone, a host system file bound in without `:ro`,
//! the backup's room known before it starts, and backups of failed attempts
//! pruned to the number kept.

use std::fs;
use std::time::Duration;

use crate::compose::{each_compose, ComposeVersion};
use crate::database::{database_writer, pg_images, PG_WRITER};
use crate::scenario::{single_app, Scenario};
use crate::world::{must, world};

each_compose! {
    a_writable_bind_of_a_host_symlink_does_not_block_the_backup;
}

/// The app on PostgreSQL (`db`, its HEALTHCHECK run by Docker only every 30 s),
/// a `cache` on another repository keeping its own data (not moved, not
/// labelled: held still by default), a `sidecar` whose data is `skip`, and a
/// stateless `probe`.
fn real_stack(db_image: String, cache_image: String) -> impl Fn(&str, u16, &str) -> String {
    move |repo, port, prefix| {
        let labels = format!("    labels:\n      upgraderd-e2e: {prefix}\n");
        format!(
            "services:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
             environment:\n      APP_PG: db\n    depends_on:\n      - db\n{labels}  \
             db:\n    image: {db_image}\n    restart: unless-stopped\n    volumes:\n      - pgdata:/var/lib/postgresql/data\n    \
             healthcheck:\n      test: [\"CMD\", \"pg_isready\", \"--host=127.0.0.1\", \"--port=5432\", \"--quiet\"]\n      \
             interval: 30s\n      timeout: 5s\n      start_period: 60s\n{labels}  \
             cache:\n    image: {cache_image}\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
             volumes:\n      - cachedata:/data\n{labels}  \
             sidecar:\n    image: {cache_image}\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
             volumes:\n      - sidedata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n      upgraderd.backup: skip\n  \
             probe:\n    image: {cache_image}\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
             tmpfs:\n      - /data\n{labels}\
             volumes:\n  pgdata:\n{volume_labels}  cachedata:\n{volume_labels}  sidedata:\n{volume_labels}",
            volume_labels = format!("    labels:\n      upgraderd-e2e: {prefix}\n"),
        )
    }
}

/// The real stack, its database image tagged `db_as` (a name upgraderd does not know, or the known one).
fn start_real(test: &str, versions: &[&str], db_as: Option<&str>) -> Option<Scenario> {
    let (db, app) = pg_images()?;
    let world = world()?;
    let (_, name, _) = Scenario::enter(test, ComposeVersion::V1)?;
    let db_image = match db_as {
        Some(tag) => {
            let renamed = format!("{}-db/{tag}", world.prefix);
            must(&["docker", "tag", db, &renamed]);
            renamed
        }
        None => db.clone(),
    };
    // The SQLite test app, FROM scratch: no port or volume of the database image comes with it.
    let cache = format!("{}/{name}/cache", world.registry);
    must(&["docker", "tag", &format!("{}-build:1.0.0", world.prefix), &format!("{cache}:7")]);
    let layout = real_stack(db_image, format!("{cache}:7"));
    let mut s = Scenario::start_from(app, test, versions, ComposeVersion::V1, &layout, &["up", "-d"])?;
    s.more_repos.push(cache);
    Some(s)
}

impl Scenario {
    /// `upgrade --to VERSION` with time for a PostgreSQL app to answer again
    /// after its database was restored, on a machine other tests keep busy.
    fn upgrade_on_a_busy_machine(&self, version: &str) -> crate::common::Run {
        let mut cmd = self.upgraderd_command(&["upgrade", "--to", version]);
        crate::common::Run::from_output(cmd.env("UPGRADERD_HEALTH_TIMEOUT", "90s").output().unwrap())
    }

    /// The id and start time of `service`'s container.
    fn identity(&self, service: &str) -> String {
        let id = self.service_container(service).unwrap_or_else(|| panic!("{service} has a container"));
        must(&["docker", "inspect", "--format", "{{.Id}} {{.State.StartedAt}}", &id]).trim().to_string()
    }
}

#[test]
fn a_postgresql_under_an_image_name_upgraderd_does_not_know_is_held_still_and_loses_no_write() {
    let Some(s) = start_real("pg-unlisted", &["1.0.0", "2.0.5"], Some("vectors:pg15")) else { return };
    let (writer, acked) = database_writer(&s, PG_WRITER);
    crate::common::wait("the writer to commit rows")
        .within(Duration::from_secs(30))
        .until_true(|| acked.lock().unwrap().len() >= 5);
    let run = s.upgrade_on_a_busy_machine("2.0.5");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    writer.join().unwrap();
    let logs = s.logs();
    assert!(logs.contains("db (stop, data: PostgreSQL's PG_VERSION in "), "known by its data:\n{logs}");
    let acked = acked.lock().unwrap().clone();
    let rows = s.psql("SELECT name FROM items WHERE name LIKE 'w%'");
    let present: std::collections::HashSet<&str> = rows.lines().collect();
    let lost: Vec<u64> = acked.iter().copied().filter(|n| !present.contains(format!("w{n}").as_str())).collect();
    assert!(lost.is_empty(), "{} of {} committed rows lost: {lost:?}", lost.len(), acked.len());
    must(&["docker", "exec", &s.db(), "pg_amcheck", "-U", "postgres", "--install-missing", "postgres"]);
    s.wait_version("1.0.0");
}

#[test]
fn held_services_start_together_awaited_by_their_own_healthcheck_and_a_rollback_leaves_the_rest_alone() {
    let Some(s) = start_real("held", &["1.0.0", "2.0.5"], None) else { return };
    let before = s.pg_dump();
    let (sidecar, probe) = (s.identity("sidecar"), s.identity("probe"));
    let run = s.upgrade_on_a_busy_machine("2.0.5");
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    let logs = s.logs();
    assert!(logs.contains("cache (stop, default: not moved, not labelled live)"), "{logs}");
    assert!(logs.contains("Starting cache, db again"), "started together, not one after the other:\n{logs}");
    assert!(logs.contains("db ready (its HEALTHCHECK passes) after"), "awaited by its own check:\n{logs}");
    assert!(logs.contains("cache ready (running, no HEALTHCHECK) after"), "{logs}");
    assert_eq!(s.identity("sidecar"), sidecar, "a skipped service is never stopped, by the backup or the rollback");
    assert_eq!(s.identity("probe"), probe, "nor is one without data");
    assert_eq!(s.pg_dump(), before);
}

fn a_writable_bind_of_a_host_symlink_does_not_block_the_backup(compose: ComposeVersion) {
    let with_localtime = |repo: &str, port: u16, prefix: &str| {
        single_app(repo, port, prefix)
            .replace("      - appdata:/data\n", "      - appdata:/data\n      - /etc/localtime:/etc/localtime\n")
    };
    let Some(s) = Scenario::start_with("localtime", &["1.0.0", "2.0.0"], compose, &with_localtime, &["up", "-d"])
    else {
        return;
    };
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert!(!run.stderr.contains("/etc/localtime"), "a host system file is not data: {}", run.stderr);
}

#[test]
fn a_backup_directory_too_small_for_the_data_is_refused_before_anything_changes() {
    let Some(s) = Scenario::start("tiny-backups", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    fs::write(s.volume_dir().join("photos.bin"), vec![7u8; 8 << 20]).unwrap();
    if !crate::common::can_mount() {
        assert!(std::env::var("UPGRADERD_E2E_REQUIRED").map_or(true, |v| v != "1"), "a tmpfs cannot be mounted here");
        eprintln!("SKIP: a tmpfs cannot be mounted here; the small backup directory was not exercised");
        return;
    }
    let tiny = crate::common::Mounted::tmpfs(&s.sandbox.path().join("tiny-backups"), "4m");
    let container = s.container();
    let run = s.upgraderd_command(&["upgrade", "--to", "2.0.0"]).env("UPGRADERD_BACKUP_DIR", &tiny.0).output().unwrap();
    let run = crate::common::Run::from_output(run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("has 4.0 MiB free; the backup needs up to 8."), "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "failed");
    assert_eq!(s.container(), container, "nothing was stopped or recreated");
    assert_eq!(fs::read_dir(&tiny.0).unwrap().count(), 0, "not a byte was written");
    s.wait_version("1.0.0");
}

#[test]
fn backups_of_failed_attempts_are_pruned_to_the_number_kept() {
    let Some(s) = Scenario::start("prune-failed", &["1.0.0", "2.0.1"], ComposeVersion::V1) else { return };
    for attempt in 1..=3 {
        let run =
            s.upgraderd_command(&["upgrade", "--to", "2.0.1"]).env("UPGRADERD_BACKUP_KEEP", "1").output().unwrap();
        let run = crate::common::Run::from_output(run);
        assert_eq!(run.code, 1, "attempt {attempt}: {}", run.stderr);
        assert_eq!(s.last_history()["status"], "rolled_back");
    }
    let archives: Vec<_> = fs::read_dir(s.sandbox.backups())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("upgrade-backup-"))
        .collect();
    assert_eq!(archives.len(), 1, "three rolled-back attempts keep UPGRADERD_BACKUP_KEEP=1 backup: {archives:?}");
    s.wait_version("1.0.0");
}
