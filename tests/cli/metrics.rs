//! `UPGRADERD_METRICS_FILE`: the Prometheus textfile after a rolled-back and
//! a good upgrade against the fake `docker`, and after a version check; the
//! counts it holds, its mode, and `promtool check metrics` where Debian's
//! `prometheus` package put `promtool` on PATH.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::common::fake_engine::Deployment;
use crate::common::http::{Reply, Server};

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_string))
}

/// `promtool check metrics < file`, or a printed line saying it was skipped.
fn promtool_check(path: &Path) {
    let Ok(child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(fs::File::open(path).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        println!("skipped: promtool is not on PATH (Debian's `prometheus` package has it)");
        return;
    };
    let out = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {said}\n{}",
        fs::read_to_string(path).unwrap()
    );
}

#[test]
fn the_metrics_file_counts_a_rolled_back_and_a_good_upgrade() {
    let mut d = Deployment::new();
    let dir = d.sb.path().join("textfile");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join("upgraderd.prom");
    d.sb.env("UPGRADERD_METRICS_FILE", file.display().to_string());

    // A new version that crashes: rolled back.
    d.sb.env("CRASH", "2.0.0");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    assert_eq!(d.last_history()["status"], "rolled_back");
    let text = fs::read_to_string(&file).expect("the metrics file is written after a rollback");
    assert_eq!(
        sample(&text, r#"upgraderd_upgrades_total{status="rolled_back",strategy="pull"}"#).as_deref(),
        Some("1")
    );
    assert_eq!(sample(&text, r#"upgraderd_upgrades_total{status="complete",strategy="pull"}"#).as_deref(), Some("0"));
    assert_eq!(
        sample(&text, r#"upgraderd_last_upgrade_status{status="rolled_back",strategy="pull"}"#).as_deref(),
        Some("1"),
        "{text}"
    );
    promtool_check(&file);

    // The same version, fixed and forced past its quarantine: complete.
    d.sb.unset("CRASH");
    d.sb.test().args(["upgrade", "--to", "2.0.0", "--force"]).run();
    assert_eq!(d.last_history()["status"], "complete");
    let text = fs::read_to_string(&file).unwrap();
    for (series, want) in [
        (r#"upgraderd_upgrades_total{status="complete",strategy="pull"}"#, "1"),
        (r#"upgraderd_upgrades_total{status="rolled_back",strategy="pull"}"#, "1"),
        (r#"upgraderd_upgrades_total{status="failed",strategy="pull"}"#, "0"),
        (r#"upgraderd_last_upgrade_status{status="complete",strategy="pull"}"#, "1"),
        (r#"upgraderd_last_upgrade_status{status="rolled_back",strategy="pull"}"#, "0"),
        ("upgraderd_backups", "2"),
        ("upgraderd_requests_pending", "0"),
    ] {
        assert_eq!(sample(&text, series).as_deref(), Some(want), "{series}\n{text}");
    }
    let number = |series: &str| -> f64 {
        sample(&text, series).unwrap_or_else(|| panic!("{series} missing:\n{text}")).parse().unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let ended = number("upgraderd_last_upgrade_end_timestamp_seconds");
    assert!((now - 120.0..=now + 1.0).contains(&ended), "{ended} is not about now ({now})");
    let (duration, downtime) =
        (number("upgraderd_last_upgrade_duration_seconds"), number("upgraderd_last_upgrade_downtime_seconds"));
    assert!(duration > 0.0 && downtime > 0.0 && downtime <= duration, "duration {duration}, downtime {downtime}");
    // The downtime is the gate's measure, recorded with the upgrade, not read off the journal.
    let row = d.last_history();
    let recorded = row["downtimeMs"].as_i64().unwrap_or_else(|| panic!("no downtimeMs: {row}"));
    assert!((downtime - recorded as f64 / 1000.0).abs() < 0.001, "{downtime} s against {recorded} ms");
    assert!(row["logs"].to_string().contains("s from the switch to the first healthy look"), "{row}");
    assert!(number("upgraderd_backup_size_bytes") > 0.0, "{text}");
    assert!(number("upgraderd_last_backup_timestamp_seconds") <= now + 1.0);
    assert!(text.contains(&format!("upgraderd_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
    assert!(!text.contains("upgraderd_version_info"), "no check has run yet:\n{text}");
    assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o644, "node_exporter reads it");
    promtool_check(&file);

    // A version check adds what it found, and keeps the counts.
    let server = Server::start(|_| Reply::json(200, r#"{"version": "3.0.0"}"#));
    d.sb.test()
        .args(["check-version"])
        .env("UPGRADERD_VERSION_URL", server.url("/version.json"))
        .stdout_contains("update available: 2.0.0 -> 3.0.0")
        .run();
    let text = fs::read_to_string(&file).unwrap();
    assert_eq!(
        sample(&text, r#"upgraderd_version_info{running="2.0.0",latest="3.0.0",allowed="3.0.0"}"#).as_deref(),
        Some("1"),
        "{text}"
    );
    assert_eq!(sample(&text, "upgraderd_update_allowed").as_deref(), Some("1"));
    assert_eq!(sample(&text, r#"upgraderd_upgrades_total{status="complete",strategy="pull"}"#).as_deref(), Some("1"));
    promtool_check(&file);

    // The check is remembered: the next outcome's write still carries it.
    d.sb.test().args(["rollback"]).run();
    let text = fs::read_to_string(&file).unwrap();
    assert!(text.contains("upgraderd_version_info{"), "{text}");
    promtool_check(&file);
}

#[test]
fn a_metrics_file_that_cannot_be_written_is_a_warning() {
    let mut d = Deployment::new();
    d.sb.env("UPGRADERD_METRICS_FILE", d.sb.path().join("no-such-dir/upgraderd.prom").display().to_string());
    d.sb.test()
        .args(["upgrade", "--to", "2.0.0"])
        .stdout_contains("complete: 1.0.0 -> 2.0.0")
        .stderr_contains("cannot write the metrics file")
        .run();
    assert_eq!(d.last_history()["status"], "complete");
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// One raw HTTP exchange, as a client that may misbehave would have it.
fn exchange(port: u16, request: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).unwrap();
    stream.write_all(request).unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer
}

#[test]
fn watch_serves_the_metrics_over_http_and_nothing_else() {
    let mut d = Deployment::new();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let port = free_port();
    d.sb.env("UPGRADERD_METRICS_LISTEN", format!("127.0.0.1:{port}"));
    let w = crate::common::watcher::Watcher::start(&d);
    w.wait_for_log(&format!("serving Prometheus metrics on http://127.0.0.1:{port}/metrics"));

    let scraped = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap();
    assert_eq!(scraped.header("Content-Type"), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = scraped.into_string().unwrap();
    assert_eq!(sample(&text, r#"upgraderd_upgrades_total{status="complete",strategy="pull"}"#).as_deref(), Some("1"));
    let saved = d.sb.path().join("scraped.prom");
    fs::write(&saved, &text).unwrap();
    promtool_check(&saved);

    let head = exchange(port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK") && head.ends_with("\r\n\r\n"), "HEAD has no body: {head:?}");
    assert!(exchange(port, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"), "only /metrics");
    assert!(exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"), "it changes nothing");
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20_000));
    assert!(exchange(port, huge.as_bytes()).starts_with("HTTP/1.1 431"), "a request too large is refused");
    // A client that connects and says nothing, or trickles a byte at a time,
    // holds the endpoint for seconds, not for ever.
    let _silent = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let trickler = std::thread::spawn(move || {
        use std::io::Write;
        let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        for byte in b"GET /metrics HTTP/1.1\r\nX-Slow: yes".iter().cycle().take(40) {
            if slow.write_all(&[*byte]).is_err() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    });
    let after = ureq::get(&format!("http://127.0.0.1:{port}/metrics")).call().unwrap();
    assert_eq!(after.status(), 200);
    trickler.join().unwrap();
    assert!(w.is_alive());
    assert_eq!(w.stop(std::time::Duration::from_secs(20)), 0);
}

#[test]
fn a_metrics_address_that_is_not_one_or_is_taken_is_refused_by_name() {
    let mut d = Deployment::new();
    d.sb.env("UPGRADERD_METRICS_LISTEN", "localhost:9877");
    d.sb.test().args(["watch"]).status(2).stderr_contains("UPGRADERD_METRICS_LISTEN").run();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    d.sb.env("UPGRADERD_METRICS_LISTEN", format!("127.0.0.1:{port}"));
    d.sb.test().args(["watch"]).status(1).stderr_contains("is the port taken?").run();
}
