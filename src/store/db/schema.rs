//! The schema, as forward-only migrations counted by `PRAGMA user_version`.

/// Forward-only migrations; index + 1 is the schema version they produce.
/// Never edit a released entry: add a new one.
pub(super) const MIGRATIONS: &[&str] = &[
    // 1: the first schema.
    r#"
    CREATE TABLE upgrade_history (
        id                  TEXT PRIMARY KEY,
        fromVersion         TEXT,
        toVersion           TEXT,
        deploymentMethod    TEXT NOT NULL DEFAULT 'docker-compose',
        status              TEXT NOT NULL,
        progress            INTEGER NOT NULL DEFAULT 0,
        currentStep         TEXT,
        logs                TEXT NOT NULL DEFAULT '[]',
        backupPath          TEXT,
        startedAt           INTEGER NOT NULL,
        completedAt         INTEGER,
        initiatedBy         TEXT,
        errorMessage        TEXT,
        rollbackAvailable   INTEGER NOT NULL DEFAULT 0,
        strategy            TEXT NOT NULL DEFAULT 'pull',
        updatedAt           INTEGER,
        pid                 INTEGER,
        switched            INTEGER NOT NULL DEFAULT 0,
        container           TEXT,
        service             TEXT,
        composeProject      TEXT,
        imageRef            TEXT,
        previousImageId     TEXT,
        previousDigest      TEXT,
        rollbackTag         TEXT,
        newImageId          TEXT,
        newDigest           TEXT,
        previousCommit      TEXT,
        targetCommit        TEXT
    );
    CREATE INDEX upgrade_history_startedAt ON upgrade_history(startedAt);
    CREATE TABLE upgrade_events (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        upgradeId   TEXT NOT NULL REFERENCES upgrade_history(id),
        at          INTEGER NOT NULL,
        status      TEXT NOT NULL,
        progress    INTEGER NOT NULL,
        message     TEXT NOT NULL
    );
    CREATE INDEX upgrade_events_upgrade ON upgrade_events(upgradeId, seq);
    CREATE TABLE requests (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        upgradeId   TEXT NOT NULL UNIQUE,
        version     TEXT NOT NULL,
        backup      INTEGER NOT NULL DEFAULT 1,
        force       INTEGER NOT NULL DEFAULT 0,
        source      TEXT NOT NULL,
        raw         TEXT,
        receivedAt  INTEGER NOT NULL,
        state       TEXT NOT NULL DEFAULT 'queued',
        reason      TEXT
    );
    "#,
    // 2: rebuild upgrades: the images kept for rollback, and commit subjects for history.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN rollbackImages TEXT;
    ALTER TABLE upgrade_history ADD COLUMN previousSubject TEXT;
    ALTER TABLE upgrade_history ADD COLUMN targetSubject TEXT;
    "#,
    // 3: stacks: the services an upgrade moved together (JSON list, the primary first).
    r#"
    ALTER TABLE upgrade_history ADD COLUMN services TEXT;
    "#,
    // 4: stack data: the containers stopped for the backup's final pass (JSON list of ids),
    // until they run again, so that an interrupted upgrade starts them again.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN stoppedContainers TEXT;
    "#,
    // 5: Swarm: each moved service's spec before the upgrade (JSON list of
    // {service, image, replicas}, the image with its digest), which a rollback updates back to.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN swarmServices TEXT;
    "#,
    // 6: pinned versions: the release family an upgrade moved (JSON list of
    // {service, previousRef, previousImageId, targetRef, retag}), and the
    // operator's files it edited, with their bytes before and after.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN family TEXT;
    CREATE TABLE edited_files (
        upgradeId   TEXT NOT NULL REFERENCES upgrade_history(id),
        path        BLOB NOT NULL,
        original    BLOB NOT NULL,
        edited      BLOB NOT NULL,
        PRIMARY KEY (upgradeId, path)
    );
    "#,
    // 7: the downtime of a complete upgrade as its health gate measured it: from the switch
    // to the first look of the healthy streak that passed the gate, in milliseconds.
    r#"
    ALTER TABLE upgrade_history ADD COLUMN downtimeMs INTEGER;
    "#,
];

/// The schema version this build writes.
pub fn schema_version() -> i64 {
    MIGRATIONS.len() as i64
}
