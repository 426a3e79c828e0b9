//! What a service's data is, which decides how it is held while it is
//! copied when neither the operator's setting nor the compose file's label
//! says: a database or store is recognised by its image's name, by what its
//! data holds (`PG_VERSION`, InnoDB's `ibdata1`, Redis' `dump.rdb`, …) or by
//! the port it serves (5432, 3306, 6379, …), whatever its image is called
//! (`pgvector/pgvector`, a locally built ClickHouse), and is stopped. A
//! service the upgrade does not move whose data is not known to be safe to
//! copy live is stopped too: `live` is the operator's word for that.

use std::path::{Path, PathBuf};

use crate::ops::docker::{without_digest, ImageRef};
use crate::states::BackupMode;

/// Images whose data is a database or store, by the last component of their
/// repository (`postgres`, `bitnami/postgresql`, `docker.io/library/redis`).
pub(crate) const DATABASE_IMAGES: &[&str] = &[
    "postgres",
    "postgresql",
    "postgis",
    "timescaledb",
    "timescaledb-ha",
    "pgvector",
    "pgvecto-rs",
    "mysql",
    "mariadb",
    "percona-server",
    "mongo",
    "mongodb",
    "redis",
    "redis-stack-server",
    "valkey",
    "keydb",
    "dragonfly",
    "clickhouse",
    "clickhouse-server",
    "influxdb",
    "couchdb",
    "elasticsearch",
    "opensearch",
    "cassandra",
    "neo4j",
    "etcd",
    "rabbitmq",
    "kafka",
    "zookeeper",
    "seaweedfs",
    "minio",
];

/// What only a store keeps at the root of its data (or one directory below
/// it): every name of an entry must be there. With the store it tells of.
const DATA_SIGNATURES: &[(&[&str], &str)] = &[
    (&["PG_VERSION"], "PostgreSQL"),
    (&["ibdata1"], "InnoDB"),
    (&["aria_log_control"], "MariaDB"),
    (&["dump.rdb"], "Redis"),
    (&["appendonlydir"], "Redis"),
    (&["appendonly.aof"], "Redis"),
    (&["WiredTiger"], "MongoDB"),
    (&["meta.properties"], "Kafka"),
    (&["metadata", "preprocessed_configs"], "ClickHouse"),
    (&["metadata", "status", "data"], "ClickHouse"),
    (&["nodes", "node.lock"], "Elasticsearch"),
    (&["_state", "node.lock"], "Elasticsearch"),
    (&["_state", "indices"], "Elasticsearch"),
    (&[".couchdb"], "CouchDB"),
    (&["influxd.bolt"], "InfluxDB"),
    (&["mnesia"], "RabbitMQ"),
    (&["member", "member/snap"], "etcd"),
];

/// The ports stores serve, for an image whose name says nothing (9000 is left
/// out: ClickHouse's, but PHP-FPM's and MinIO's too).
const STORE_PORTS: &[(u16, &str)] = &[
    (5432, "PostgreSQL"),
    (3306, "MySQL"),
    (6379, "Redis"),
    (27017, "MongoDB"),
    (8123, "ClickHouse"),
    (9092, "Kafka"),
    (9200, "Elasticsearch"),
    (5984, "CouchDB"),
    (7687, "Neo4j"),
    (2379, "etcd"),
    (5672, "RabbitMQ"),
    (8086, "InfluxDB"),
    (9042, "Cassandra"),
];

/// What is known of one service when its mode is not configured.
pub(crate) struct Facts<'a> {
    /// The image reference its container runs.
    pub image: &'a str,
    /// The ports its container exposes.
    pub ports: Vec<u16>,
    /// Its data paths on the host.
    pub data: &'a [PathBuf],
    /// The upgrade moves it: stopped for the switch whatever its mode.
    pub moved: bool,
}

/// `stop` for a recognised store, and for data the upgrade does not move and
/// nothing says is safe to copy live; `live` for the moved services (the
/// switch stops them anyway; `backup create` copies them running, SQLite
/// through its backup API). With the reason, as the log and `backup list` show it.
pub(crate) fn default_mode(facts: &Facts<'_>) -> (BackupMode, String) {
    if let Some(why) = recognised(facts) {
        return (BackupMode::Stop, why);
    }
    if facts.moved || facts.data.is_empty() {
        (BackupMode::Live, "default".into())
    } else {
        (BackupMode::Stop, "default: not moved, not labelled live".into())
    }
}

/// Why the service's data is a store, if it is one: its image, its data or its port.
fn recognised(facts: &Facts<'_>) -> Option<String> {
    // A Swarm task runs `postgres:15@sha256:…`: the digest says nothing of what the image is.
    let repository = ImageRef::parse(without_digest(facts.image)).repository;
    let last = repository.rsplit('/').next().unwrap_or(&repository);
    if DATABASE_IMAGES.contains(&last) {
        return Some(format!("image {last}"));
    }
    if let Some((root, store, name)) = facts.data.iter().find_map(|root| signature(root).map(|(s, n)| (root, s, n))) {
        return Some(format!("data: {store}'s {name} in {}", root.display()));
    }
    let port = facts.ports.iter().find_map(|p| STORE_PORTS.iter().find(|(port, _)| port == p))?;
    Some(format!("port {} ({})", port.0, port.1))
}

/// The store whose signature `root` (or one of its subdirectories) holds, and the entry that tells.
fn signature(root: &Path) -> Option<(&'static str, &'static str)> {
    let holds = |dir: &Path| {
        DATA_SIGNATURES
            .iter()
            .find(|(names, _)| names.iter().all(|name| dir.join(name).symlink_metadata().is_ok()))
            .map(|(names, store)| (*store, names[0]))
    };
    if let Some(found) = holds(root) {
        return Some(found);
    }
    // PGDATA is often one level below the volume (`/var/lib/postgresql` mounted, data in `data/`).
    let below = std::fs::read_dir(root).ok()?;
    below
        .flatten()
        .take(64)
        .filter(|entry| entry.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|entry| holds(&entry.path()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(image: &'a str, ports: &[u16], data: &'a [PathBuf], moved: bool) -> Facts<'a> {
        Facts { image, ports: ports.to_vec(), data, moved }
    }

    #[test]
    fn a_store_is_known_by_its_image_whatever_registry_or_digest() {
        for image in [
            "postgres:15",
            "docker.io/library/mariadb:11",
            "bitnami/postgresql",
            "127.0.0.1:5000/x/redis:7",
            "postgres:15@sha256:0123abcd",
            "tensorchord/pgvecto-rs:pg14-v0.2.0",
            "pgvector/pgvector:pg16",
            "timescale/timescaledb:latest-pg16",
            "valkey/valkey:8",
        ] {
            assert_eq!(default_mode(&facts(image, &[], &[], false)).0, BackupMode::Stop, "{image}");
        }
        let moved = default_mode(&facts("ghcr.io/acme/app:2", &[], &[PathBuf::from("/d")], true));
        assert_eq!(moved, (BackupMode::Live, "default".into()));
        let exporter = default_mode(&facts("postgres-exporter:1", &[], &[], false));
        assert_eq!(exporter.0, BackupMode::Live, "no data, nothing to hold");
    }

    #[test]
    fn a_store_under_another_name_is_known_by_its_data_or_its_port() {
        let dir = tempfile::tempdir().unwrap();
        let data = [dir.path().to_path_buf()];
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/PG_VERSION"), "15\n").unwrap();
        let (mode, why) = default_mode(&facts("registry.local/my-db:15", &[], &data, true));
        assert_eq!(mode, BackupMode::Stop, "even when moved: its data says what it is");
        assert!(why.starts_with("data: PostgreSQL's PG_VERSION"), "{why}");
        let empty = tempfile::tempdir().unwrap();
        let plain = [empty.path().to_path_buf()];
        let (mode, why) = default_mode(&facts("sentry/clickhouse-local:1", &[9000, 8123], &plain, true));
        assert_eq!((mode, why.as_str()), (BackupMode::Stop, "port 8123 (ClickHouse)"));
        let (mode, why) = default_mode(&facts("caddy:2", &[80, 443], &plain, false));
        assert_eq!((mode, why.as_str()), (BackupMode::Stop, "default: not moved, not labelled live"));
    }
}
