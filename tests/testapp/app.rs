//! The app the end-to-end tests deploy and upgrade. It keeps its data in
//! SQLite under `$APP_DATA`, serves `GET /api/health` with its version and
//! `POST /api/items?name=…` to add data, and misbehaves on demand through
//! `$APP_BEHAVIOR`, baked into each test image:
//!
//! - `good`: serves; with `APP_SCHEMA=2` it first migrates the schema 1 → 2;
//! - `crash`: exits 1 at start;
//! - `hang`: never listens;
//! - `http500`: health answers 500;
//! - `wrong-version`: reports `APP_REPORTED_VERSION` instead of its own;
//! - `migrate-crash`: migrates the schema to 2, then exits 1.
//!
//! `$APP_ROLE` (set in the compose file) makes the same image a `worker` (opens
//! the data, serves nothing, runs until stopped) or a one-shot `migrate` job
//! (opens and migrates the data, exits 0); `web` (the default) serves.
//!
//! With `$APP_PG`, `$APP_MARIADB`, `$APP_REDIS` or `$APP_CLICKHOUSE` (a host
//! name), the data is on that database server instead ([`Store`]), reached
//! through the server's own client (`psql`, `mariadb`: the image is built on
//! the server's) or its protocol (Redis, ClickHouse's HTTP). Several at once
//! (`$APP_PG` and `$APP_CLICKHOUSE`, as OpenTrace keeps its metadata and its
//! traces) hold the same items and are migrated in that order. Schema 2 is
//! what a real release's migration does to it: a column added to `items` and
//! every name upper-cased (PostgreSQL, MariaDB, ClickHouse), the `items` set
//! moved to `app:items` with upper-cased members and `app:schema` set (Redis).
//!
//! Every version refuses to start on a schema newer than it knows, which is
//! why a rollback must restore the data for the old version to come back.
//! Every version exits at SIGTERM, as a service should: as PID 1 of its
//! container it would otherwise ignore it, and each stop would wait out
//! compose's 10 s timeout.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use rusqlite::Connection;

fn env(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// Exits at once: the data is SQLite in WAL mode, safe at any instant.
extern "C" fn exit_on_term(_signal: libc::c_int) {
    unsafe { libc::_exit(0) }
}

fn main() {
    unsafe { libc::signal(libc::SIGTERM, exit_on_term as *const () as libc::sighandler_t) };
    let version = env("APP_VERSION", "0.0.0");
    // `release-step CODE`: a release's one-off command (`compose run --rm app release-step 0`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("release-step") {
        let code: i32 = args.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
        println!("release step ran on {version}, exiting {code}");
        std::process::exit(code);
    }
    let behavior = env("APP_BEHAVIOR", "good");
    let schema: i64 = env("APP_SCHEMA", "1").parse().unwrap_or(1);
    let data = env("APP_DATA", "/data");
    eprintln!("testapp {version} ({behavior}, schema {schema}) starting");

    if behavior == "crash" {
        eprintln!("crashing at start");
        std::process::exit(1);
    }
    if behavior == "hang" {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let target_schema = if behavior == "migrate-crash" { 2 } else { schema };
    let stores = stores_from_env();
    if !stores.is_empty() {
        return server_app(&stores, target_schema, &behavior, &version);
    }
    let db = match open(&format!("{data}/app.db"), target_schema) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("cannot open database: {e}");
            std::process::exit(2);
        }
    };
    if behavior == "migrate-crash" {
        eprintln!("migrated, now crashing");
        std::process::exit(1);
    }
    match env("APP_ROLE", "web").as_str() {
        // A one-shot migration job: the schema is where this version wants it; done.
        "migrate" => {
            eprintln!("migrated to schema {target_schema}");
            std::process::exit(0);
        }
        // A worker on the same image and data: no port, runs until stopped.
        "worker" => {
            eprintln!("working");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        _ => {}
    }
    let reported = if behavior == "wrong-version" { env("APP_REPORTED_VERSION", "0.0.1") } else { version.clone() };
    let listener = TcpListener::bind(("0.0.0.0", env("APP_PORT", "3001").parse().unwrap_or(3001))).expect("bind");
    eprintln!("listening");
    for stream in listener.incoming().flatten() {
        let _ = serve(stream, &db, &behavior, &reported);
    }
}

fn open(path: &str, schema: i64) -> rusqlite::Result<Connection> {
    let db = Connection::open(path)?;
    db.busy_timeout(Duration::from_secs(5))?;
    db.query_row("PRAGMA journal_mode=WAL", [], |r| r.get::<_, String>(0))?;
    let current: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > schema {
        eprintln!("database schema {current} is newer than this version understands ({schema}); refusing to start");
        std::process::exit(3);
    }
    if current < 1 {
        db.execute_batch(
            "CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT NOT NULL); PRAGMA user_version = 1;",
        )?;
    }
    if current < 2 && schema >= 2 {
        // Two services on one database (a web and a worker) start together: the write lock
        // first, then a second look, as migration tools do, so only one of them migrates.
        db.execute_batch("BEGIN IMMEDIATE")?;
        let now: i64 = db.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if now < 2 {
            db.execute_batch(
                "ALTER TABLE items ADD COLUMN created TEXT NOT NULL DEFAULT 'migrated';
                 UPDATE items SET name = upper(name); PRAGMA user_version = 2;",
            )?;
        }
        db.execute_batch("COMMIT")?;
    }
    Ok(db)
}

fn serve(mut stream: TcpStream, db: &Connection, behavior: &str, version: &str) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        ("GET", "/api/health") if behavior == "http500" => (500, r#"{"status":"broken"}"#.to_string()),
        ("GET", "/api/health") => {
            let greeting = env("GREETING", "");
            let overlay = env("OVERLAY", "");
            (200, format!(r#"{{"status":"ok","version":"{version}","greeting":"{greeting}","overlay":"{overlay}"}}"#))
        }
        ("POST", "/api/items") => {
            let name = query.strip_prefix("name=").unwrap_or("item");
            match db.execute("INSERT INTO items(name) VALUES (?1)", [name]) {
                Ok(_) => (201, r#"{"ok":true}"#.to_string()),
                Err(e) => (500, format!(r#"{{"error":"{e}"}}"#)),
            }
        }
        _ => (404, r#"{"error":"not found"}"#.to_string()),
    };
    let reason = match status {
        200 => "OK",
        201 => "Created",
        404 => "Not Found",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// A database server holding the app's data, reached through its own client.
trait Store {
    /// Makes what schema 1 needs when it is not there; fails while the server is not up yet.
    fn prepare(&self) -> Result<(), String>;
    /// The schema the data is at: 1, or 2 once migrated.
    fn schema(&self) -> Result<i64, String>;
    /// Schema 1 to 2. The web and the worker start together on a new version:
    /// the migration takes a lock and looks again (or changes nothing the second
    /// time), as real migration tools do, so the data is migrated once.
    fn migrate(&self) -> Result<(), String>;
    /// Adds the item `name` (letters and digits only) at `schema`.
    fn insert(&self, name: &str, schema: i64) -> Result<(), String>;
}

/// Runs `program args…`: its trimmed stdout, or its stderr as the error.
fn client(program: &str, args: &[&str]) -> Result<String, String> {
    let out = std::process::Command::new(program).args(args).output().map_err(|e| format!("{program}: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

struct Postgres {
    host: String,
}

impl Postgres {
    fn psql(&self, sql: &str) -> Result<String, String> {
        client("psql", &["-h", &self.host, "-U", "postgres", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
    }
}

impl Store for Postgres {
    fn prepare(&self) -> Result<(), String> {
        self.psql("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text NOT NULL)").map(drop)
    }

    fn schema(&self) -> Result<i64, String> {
        let payload = self.psql(
            "SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'payload'",
        )?;
        Ok(if payload == "1" { 2 } else { 1 })
    }

    fn migrate(&self) -> Result<(), String> {
        self.psql(
            "BEGIN; SELECT pg_advisory_xact_lock(20); \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_name = 'items' AND column_name = 'payload') THEN \
             ALTER TABLE items ADD COLUMN payload text NOT NULL DEFAULT 'migrated'; \
             UPDATE items SET name = upper(name); END IF; END $$; COMMIT;",
        )
        .map(drop)
    }

    fn insert(&self, name: &str, _schema: i64) -> Result<(), String> {
        self.psql(&format!("INSERT INTO items(name) VALUES ('{name}')")).map(drop)
    }
}

/// MariaDB: the database `app`, its InnoDB table `items`.
struct Mariadb {
    host: String,
}

impl Mariadb {
    fn sql(&self, sql: &str) -> Result<String, String> {
        client("mariadb", &["--host", &self.host, "--user", "root", "--batch", "--skip-column-names", "-e", sql])
    }
}

impl Store for Mariadb {
    fn prepare(&self) -> Result<(), String> {
        self.sql(
            "CREATE DATABASE IF NOT EXISTS app; \
             CREATE TABLE IF NOT EXISTS app.items (id int AUTO_INCREMENT PRIMARY KEY, name varchar(255) NOT NULL) \
             ENGINE = InnoDB",
        )
        .map(drop)
    }

    fn schema(&self) -> Result<i64, String> {
        let payload = self.sql(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_schema = 'app' AND table_name = 'items' AND column_name = 'payload'",
        )?;
        Ok(if payload == "1" { 2 } else { 1 })
    }

    fn migrate(&self) -> Result<(), String> {
        // The lock is the session's, held until the client exits; a second run changes nothing.
        self.sql(
            "DO GET_LOCK('testapp-migrate', 60); \
             ALTER TABLE app.items ADD COLUMN IF NOT EXISTS payload varchar(64) NOT NULL DEFAULT 'migrated'; \
             UPDATE app.items SET name = upper(name) WHERE name <> upper(name)",
        )
        .map(drop)
    }

    fn insert(&self, name: &str, _schema: i64) -> Result<(), String> {
        self.sql(&format!("INSERT INTO app.items(name) VALUES ('{name}')")).map(drop)
    }
}

/// Redis, spoken to in its protocol (RESP): schema 1 is the set `items`,
/// schema 2 the set `app:items` and `app:schema` = 2.
struct Redis {
    host: String,
}

impl Redis {
    /// One command on a fresh connection: a status, integer or string reply (`None` for nil).
    fn call(&self, args: &[&str]) -> Result<Option<String>, String> {
        let io = |e: std::io::Error| format!("redis at {}: {e}", self.host);
        let mut stream = TcpStream::connect((self.host.as_str(), 6379)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(io)?;
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        reader.read_line(&mut line).map_err(io)?;
        let line = line.trim_end();
        let (kind, rest) = (line.get(..1).unwrap_or(""), line.get(1..).unwrap_or(""));
        match kind {
            "+" | ":" => Ok(Some(rest.to_string())),
            "-" => Err(rest.to_string()),
            "$" => {
                let Ok(len) = usize::try_from(rest.parse::<i64>().unwrap_or(-1)) else { return Ok(None) };
                let mut bulk = vec![0; len + 2];
                std::io::Read::read_exact(&mut reader, &mut bulk).map_err(io)?;
                bulk.truncate(len);
                Ok(Some(String::from_utf8_lossy(&bulk).into_owned()))
            }
            _ => Err(format!("unexpected reply {line:?}")),
        }
    }
}

impl Store for Redis {
    fn prepare(&self) -> Result<(), String> {
        // A server still loading its data answers LOADING.
        self.call(&["PING"]).map(drop)
    }

    fn schema(&self) -> Result<i64, String> {
        Ok(self.call(&["GET", "app:schema"])?.and_then(|v| v.parse().ok()).unwrap_or(1))
    }

    fn migrate(&self) -> Result<(), String> {
        // A script runs atomically: nothing sees the data half-moved, and a second run finds it done.
        let script = "if redis.call('GET', 'app:schema') == '2' then return 0 end \
                      for _, name in ipairs(redis.call('SMEMBERS', 'items')) do \
                        redis.call('SADD', 'app:items', string.upper(name)) end \
                      redis.call('DEL', 'items') redis.call('SET', 'app:schema', '2') return 1";
        self.call(&["EVAL", script, "0"]).map(drop)
    }

    fn insert(&self, name: &str, schema: i64) -> Result<(), String> {
        let set = if schema >= 2 { "app:items" } else { "items" };
        self.call(&["SADD", set, name]).map(drop)
    }
}

/// ClickHouse: the table `items` in the database `default`, of the Log engine,
/// the one ClickHouse 18.16 can check (`CHECK TABLE`) and cannot alter: schema 2
/// is a new table in its place, with the column `payload`.
struct Clickhouse {
    host: String,
}

impl Clickhouse {
    /// One query over ClickHouse's HTTP interface (port 8123): the app then
    /// needs no ClickHouse client in its image, as beside PostgreSQL's.
    fn query(&self, sql: &str) -> Result<String, String> {
        let io = |e: std::io::Error| format!("clickhouse at {}: {e}", self.host);
        let mut stream = TcpStream::connect((self.host.as_str(), 8123)).map_err(io)?;
        stream.set_read_timeout(Some(Duration::from_secs(30))).map_err(io)?;
        let request = format!("POST / HTTP/1.0\r\nHost: {}\r\nContent-Length: {}\r\n\r\n{sql}", self.host, sql.len());
        stream.write_all(request.as_bytes()).map_err(io)?;
        let mut response = String::new();
        std::io::Read::read_to_string(&mut stream, &mut response).map_err(io)?;
        let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
        match head.split_whitespace().nth(1) {
            Some("200") => Ok(body.trim().to_string()),
            _ => Err(format!("{}: {}", head.lines().next().unwrap_or("no answer"), body.trim())),
        }
    }
}

impl Store for Clickhouse {
    fn prepare(&self) -> Result<(), String> {
        self.query("CREATE TABLE IF NOT EXISTS items (name String) ENGINE = Log").map(drop)
    }

    fn schema(&self) -> Result<i64, String> {
        let payload = self.query(
            "SELECT count() FROM system.columns WHERE database = 'default' AND table = 'items' AND name = 'payload'",
        )?;
        Ok(if payload == "1" { 2 } else { 1 })
    }

    fn migrate(&self) -> Result<(), String> {
        // ClickHouse has no transactions: a table left by an interrupted run is
        // made again, and the swap is one RENAME.
        self.query("DROP TABLE IF EXISTS items_v2")?;
        self.query(
            "CREATE TABLE items_v2 ENGINE = Log AS SELECT upper(name) AS name, 'migrated' AS payload FROM items",
        )?;
        self.query("RENAME TABLE items TO items_v1, items_v2 TO items")?;
        self.query("DROP TABLE items_v1").map(drop)
    }

    fn insert(&self, name: &str, _schema: i64) -> Result<(), String> {
        self.query(&format!("INSERT INTO items (name) VALUES ('{name}')")).map(drop)
    }
}

/// The database servers named in the environment, in the order they are migrated.
fn stores_from_env() -> Vec<Box<dyn Store>> {
    let host = |name: &str| std::env::var(name).ok();
    let mut stores: Vec<Box<dyn Store>> = Vec::new();
    if let Some(host) = host("APP_PG") {
        stores.push(Box::new(Postgres { host }));
    }
    if let Some(host) = host("APP_MARIADB") {
        stores.push(Box::new(Mariadb { host }));
    }
    if let Some(host) = host("APP_REDIS") {
        stores.push(Box::new(Redis { host }));
    }
    if let Some(host) = host("APP_CLICKHOUSE") {
        stores.push(Box::new(Clickhouse { host }));
    }
    stores
}

/// The app on database servers: the same behaviours, the data in every one of
/// `stores` (an item is acknowledged once each has it), each migrated in turn.
fn server_app(stores: &[Box<dyn Store>], schema: i64, behavior: &str, version: &str) {
    for store in stores {
        // The database may still be starting (or restarting after a restore).
        let mut tries = 0;
        while let Err(e) = store.prepare() {
            tries += 1;
            if tries > 120 {
                eprintln!("cannot reach the database: {e}");
                std::process::exit(2);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        let current = store.schema().unwrap_or_else(|e| {
            eprintln!("cannot read the database's schema: {e}");
            std::process::exit(2)
        });
        if current > schema {
            eprintln!("database schema {current} is newer than this version understands ({schema}); refusing to start");
            std::process::exit(3);
        }
    }
    for store in stores {
        if store.schema().unwrap_or(1) < 2 && schema >= 2 {
            if let Err(e) = store.migrate() {
                eprintln!("migration failed: {e}");
                std::process::exit(2);
            }
        }
    }
    if behavior == "migrate-crash" {
        eprintln!("migrated, now crashing");
        std::process::exit(1);
    }
    if env("APP_ROLE", "web") == "worker" {
        eprintln!("working");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    let listener = TcpListener::bind(("0.0.0.0", env("APP_PORT", "3001").parse().unwrap_or(3001))).expect("bind");
    eprintln!("listening");
    for mut stream in listener.incoming().flatten() {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut request_line = String::new();
        let _ = reader.read_line(&mut request_line);
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 || header.trim().is_empty() {
                break;
            }
        }
        let (status, body) = if let Some(query) = request_line.strip_prefix("POST /api/items?name=") {
            let name: String = query
                .split_whitespace()
                .next()
                .unwrap_or("item")
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            match stores.iter().try_for_each(|store| store.insert(&name, schema)) {
                Ok(_) => (201, r#"{"ok":true}"#.to_string()),
                Err(e) => (500, format!("{{\"error\":{e:?}}}")),
            }
        } else {
            (200, format!(r#"{{"status":"ok","version":"{version}"}}"#))
        };
        let _ = write!(
            stream,
            "HTTP/1.1 {status} OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
