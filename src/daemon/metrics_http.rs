//! `GET /metrics` for Prometheus, served by `watch` when
//! `UPGRADERD_METRICS_LISTEN` names an address: the same text the metrics
//! file holds, gathered afresh at most every [`FRESH_FOR`] (a gathering
//! reads the state database and walks the backup directory, which a scrape
//! every few seconds should not repeat each time).
//!
//! One thread, one connection at a time, synchronous: a scrape is one small
//! request. A request not read whole within [`READ_TIMEOUT`] (however slowly
//! its bytes trickle in), or longer than [`MAX_REQUEST`], is answered 408 or
//! 431 and closed, so a slow or hostile client holds the thread for seconds
//! at most. Only `GET`
//! and `HEAD` of `/metrics` are answered; it changes nothing.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::config::Config;
use crate::ui::Ui;

/// How long a gathering of the metrics is served again.
const FRESH_FOR: Duration = Duration::from_secs(5);
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// The most of a request read (its line and headers).
const MAX_REQUEST: u64 = 8 * 1024;

/// The endpoint's thread; dropped, it stops.
pub(super) struct MetricsEndpoint {
    address: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Listens on `UPGRADERD_METRICS_LISTEN`, when it is set.
    pub(super) fn start(config: &Config, ui: &Ui) -> Result<Option<MetricsEndpoint>> {
        let Some(address) = config.metrics_listen else { return Ok(None) };
        let listener = TcpListener::bind(address).with_context(|| {
            format!("cannot listen on UPGRADERD_METRICS_LISTEN={address} for /metrics (is the port taken?)")
        })?;
        let address = listener.local_addr()?;
        ui.info(format!("serving Prometheus metrics on http://{address}/metrics"));
        let stop = Arc::new(AtomicBool::new(false));
        let (config, flag) = (config.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&listener, &config, &flag))
            .context("cannot start the metrics endpoint")?;
        Ok(Some(MetricsEndpoint { address, stop, thread: Some(thread) }))
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // The thread waits in accept(2): a connection of our own wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: &TcpListener, config: &Config, stop: &AtomicBool) {
    let mut cached: Option<(Instant, String)> = None;
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        // A client that goes away mid-answer is its own business.
        let _ = answer(stream, config, &mut cached);
    }
}

fn answer(mut stream: TcpStream, config: &Config, cached: &mut Option<(Instant, String)>) -> std::io::Result<()> {
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    let request = match read_request_line(&stream) {
        Ok(Some(line)) => line,
        Ok(None) => {
            return respond(
                &mut stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
                true,
            )
        }
        Err(_) => return respond(&mut stream, "408 Request Timeout", "text/plain", "no request\n", true),
    };
    let mut words = request.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    match (method, path) {
        ("GET" | "HEAD", "/metrics") => match metrics(config, cached) {
            Ok(text) => {
                respond(&mut stream, "200 OK", "text/plain; version=0.0.4; charset=utf-8", &text, method == "GET")
            }
            Err(e) => respond(&mut stream, "500 Internal Server Error", "text/plain", &format!("{e:#}\n"), true),
        },
        (_, "/metrics") => respond(&mut stream, "405 Method Not Allowed", "text/plain", "only GET and HEAD\n", true),
        _ => respond(&mut stream, "404 Not Found", "text/plain", "upgraderd serves /metrics only\n", true),
    }
}

/// The request line, once the headers after it are read too; `None` when they are too long.
fn read_request_line(stream: &TcpStream) -> std::io::Result<Option<String>> {
    let deadline = Instant::now() + READ_TIMEOUT;
    let mut reader = BufReader::new(Deadline { stream, deadline }.take(MAX_REQUEST));
    let mut line = String::new();
    reader.read_line(&mut line)?;
    if !line.ends_with('\n') {
        return Ok(None);
    }
    // The headers, read so the client's request is consumed before the answer; their content is not needed.
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || !header.ends_with('\n') {
            return Ok(None);
        }
        if header.trim().is_empty() {
            return Ok(Some(line.trim_end().to_string()));
        }
    }
}

/// Reads that all end by one deadline: a client sending a byte now and then
/// cannot stretch its request past it.
struct Deadline<'a> {
    stream: &'a TcpStream,
    deadline: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

fn metrics(config: &Config, cached: &mut Option<(Instant, String)>) -> anyhow::Result<String> {
    if let Some((_, text)) = cached.as_ref().filter(|(at, _)| at.elapsed() < FRESH_FOR) {
        return Ok(text.clone());
    }
    let text = crate::engine::metrics::render_now(config)?;
    *cached = Some((Instant::now(), text.clone()));
    Ok(text)
}

fn respond(stream: &mut TcpStream, status: &str, kind: &str, body: &str, with_body: bool) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    if with_body {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}
