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
//! With `$APP_PG` (a host name), the data is a PostgreSQL database there
//! instead, reached through `psql` (the image is built on the PostgreSQL
//! one): the schema is the `payload` column of `items`, which schema 2 adds.
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
    if let Ok(host) = std::env::var("APP_PG") {
        return postgres_app(&host, target_schema, &behavior, &version);
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

/// The app on PostgreSQL: the same behaviours, the data in `items` on `host`.
fn postgres_app(host: &str, schema: i64, behavior: &str, version: &str) {
    let psql = |sql: &str| -> Result<String, String> {
        let out = std::process::Command::new("psql")
            .args(["-h", host, "-U", "postgres", "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).trim().to_string()),
            false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
        }
    };
    // The database may still be starting (or restarting after a restore).
    let mut tries = 0;
    while let Err(e) = psql("CREATE TABLE IF NOT EXISTS items (id serial PRIMARY KEY, name text NOT NULL)") {
        tries += 1;
        if tries > 120 {
            eprintln!("cannot reach the database: {e}");
            std::process::exit(2);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let has_payload =
        psql("SELECT count(*) FROM information_schema.columns WHERE table_name = 'items' AND column_name = 'payload'")
            .unwrap_or_default()
            == "1";
    if has_payload && schema < 2 {
        eprintln!("database schema 2 is newer than this version understands ({schema}); refusing to start");
        std::process::exit(3);
    }
    if !has_payload && schema >= 2 {
        // The web and the worker start together on the new version: the
        // migration takes a lock and looks again, as real migration tools do,
        // so only one of them runs it.
        if let Err(e) = psql(
            "BEGIN; SELECT pg_advisory_xact_lock(20); \
             DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM information_schema.columns \
             WHERE table_name = 'items' AND column_name = 'payload') THEN \
             ALTER TABLE items ADD COLUMN payload text NOT NULL DEFAULT 'migrated'; \
             UPDATE items SET name = upper(name); END IF; END $$; COMMIT;",
        ) {
            eprintln!("migration failed: {e}");
            std::process::exit(2);
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
            match psql(&format!("INSERT INTO items(name) VALUES ('{name}')")) {
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
