//! A gate in front of the Docker engine's socket: a Unix socket of
//! upgraderd's own through which a client reads from the engine as it likes,
//! while every request that does more (create, stop, rename, start...) is
//! held, unsent, until the gate is opened.
//!
//! It lets compose do everything but its changes ahead of the moment they
//! may happen: compose v1 spends a third of a second starting (Python) and
//! a tenth reading the project's containers, images and networks before its
//! first change; behind the gate it does that while the app still serves.
//! A gate dropped unopened closes the held connections, so the engine never
//! hears of a change. What counts as a read is narrow: a `GET` or `HEAD`
//! without a body or an upgrade; anything else, or a head this cannot read,
//! is held. Past the first held request a connection is relayed as bytes.
//!
//! Only a local engine can be gated: [`local_engine`] says which socket the
//! docker CLI would use, or why it cannot tell.

use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Where the Docker engine listens unless `DOCKER_HOST` says otherwise.
pub(crate) const DEFAULT_ENGINE_SOCKET: &str = "/var/run/docker.sock";

/// The Unix socket a `DOCKER_HOST` value (or its absence) names; `None` for a TCP or SSH engine.
pub(crate) fn socket_path(docker_host: Option<&str>) -> Option<PathBuf> {
    match docker_host.filter(|h| !h.is_empty()) {
        None => Some(PathBuf::from(DEFAULT_ENGINE_SOCKET)),
        Some(host) => host.strip_prefix("unix://").map(PathBuf::from),
    }
}

/// The local socket of the engine the docker CLI talks to, or why that is
/// not known: a TCP or SSH `DOCKER_HOST`, a docker context (which may name
/// another engine), or no socket there.
pub(crate) fn local_engine() -> Result<PathBuf, String> {
    if std::env::var_os("DOCKER_CONTEXT").is_some_and(|c| !c.is_empty() && c != "default") {
        return Err("DOCKER_CONTEXT names a docker context".into());
    }
    if let Some(context) = current_context() {
        return Err(format!("the docker configuration uses the context `{context}`"));
    }
    let host = std::env::var("DOCKER_HOST").ok();
    let socket = socket_path(host.as_deref()).ok_or("DOCKER_HOST is not a unix:// socket")?;
    match fs::metadata(&socket) {
        Ok(meta) if meta.file_type().is_socket() => Ok(socket),
        _ => Err(format!("{} is not a socket", socket.display())),
    }
}

/// The docker context the CLI's configuration selects, unless it is the default one.
fn current_context() -> Option<String> {
    let dir = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(std::env::var_os("HOME")?).join(".docker"),
    };
    let text = fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let context = value.get("currentContext")?.as_str()?;
    (!context.is_empty() && context != "default").then(|| context.to_string())
}

/// A socket that relays reads to the engine at once and holds every other
/// request until [`SocketGate::open`].
pub(crate) struct SocketGate {
    path: PathBuf,
    state: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

/// What the gate's threads share.
struct Shared {
    engine: PathBuf,
    gate: Mutex<Gate>,
    changed: Condvar,
    relayed: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Position {
    Held,
    Open,
    /// Dropped: held requests are never sent, their connections closed.
    Closed,
}

struct Gate {
    position: Position,
    /// Connections whose next request waits for the gate.
    waiting: usize,
}

/// The longest request head read before its request counts as one to hold.
const MAX_HEAD: usize = 64 * 1024;

impl SocketGate {
    /// Listens at `path` (a socket left there by an earlier run is replaced;
    /// anything else there is an error), usable by its owner only.
    pub(crate) fn hold(path: &Path, engine: &Path) -> io::Result<SocketGate> {
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{} exists and is not a socket", path.display()),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(path)?;
        // Before anyone connects: the directory is upgraderd's private one, the socket the engine's equal.
        fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        let state = Arc::new(Shared {
            engine: engine.to_path_buf(),
            gate: Mutex::new(Gate { position: Position::Held, waiting: 0 }),
            changed: Condvar::new(),
            relayed: AtomicUsize::new(0),
        });
        let shared = state.clone();
        let acceptor =
            std::thread::Builder::new().name("gate-accept".into()).spawn(move || accept(&listener, &shared))?;
        Ok(SocketGate { path: path.to_path_buf(), state, acceptor: Some(acceptor) })
    }

    /// What a client's `DOCKER_HOST` says to come through the gate.
    pub(crate) fn docker_host(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Lets every held request through, and every one to come.
    pub(crate) fn open(&self) {
        self.state.set(Position::Open);
    }

    /// Whether a request waits at the gate, waiting up to `wait` for one.
    pub(crate) fn knocked(&self, wait: Duration) -> bool {
        let gate = self.state.gate.lock().unwrap_or_else(|e| e.into_inner());
        let (gate, _) = self
            .state
            .changed
            .wait_timeout_while(gate, wait, |g| g.waiting == 0 && g.position == Position::Held)
            .unwrap_or_else(|e| e.into_inner());
        gate.waiting > 0
    }

    /// How many requests the gate held and then let through.
    pub(crate) fn relayed(&self) -> usize {
        self.state.relayed.load(Ordering::SeqCst)
    }
}

/// Closes the gate for good: what it held is dropped unsent, its socket file removed.
impl Drop for SocketGate {
    fn drop(&mut self) {
        self.state.set(Position::Closed);
        if let Some(acceptor) = self.acceptor.take() {
            // The acceptor sleeps in accept(): one connection of our own wakes it to see the gate closed.
            let _ = UnixStream::connect(&self.path);
            let _ = acceptor.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

impl Shared {
    fn set(&self, position: Position) {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.position = position;
        self.changed.notify_all();
    }

    fn position(&self) -> Position {
        self.gate.lock().unwrap_or_else(|e| e.into_inner()).position
    }

    /// Waits until the gate opens (true) or closes (false), counted as waiting meanwhile.
    fn pass(&self) -> bool {
        let mut gate = self.gate.lock().unwrap_or_else(|e| e.into_inner());
        gate.waiting += 1;
        self.changed.notify_all();
        let mut gate =
            self.changed.wait_while(gate, |g| g.position == Position::Held).unwrap_or_else(|e| e.into_inner());
        gate.waiting -= 1;
        gate.position == Position::Open
    }
}

fn accept(listener: &UnixListener, shared: &Arc<Shared>) {
    for client in listener.incoming() {
        if shared.position() == Position::Closed {
            return;
        }
        let Ok(client) = client else { continue };
        // An engine that cannot be reached closes the client's connection: it sees the engine gone, as it would.
        let Ok(engine) = UnixStream::connect(&shared.engine) else { continue };
        let shared = shared.clone();
        let _ = std::thread::Builder::new().name("gate-relay".into()).spawn(move || relay(client, engine, &shared));
    }
}

/// One connection: answers flow back as they come; requests go on while
/// they only read, and from the first that does more, once the gate opens.
/// Each way closes on the other side when its sender closes, so a
/// half-closed connection (a hijacked stream) ends as it would directly.
fn relay(client: UnixStream, engine: UnixStream, shared: &Shared) {
    let (Ok(client_out), Ok(engine_in)) = (client.try_clone(), engine.try_clone()) else { return };
    let answers = std::thread::Builder::new().name("gate-relay".into()).spawn(move || {
        let (mut engine_in, mut client_out) = (engine_in, client_out);
        let _ = io::copy(&mut engine_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    let mut requests = BufReader::new(client);
    let mut engine_out = engine;
    if forward_requests(&mut requests, &mut engine_out, shared).is_ok() {
        let _ = io::copy(&mut requests, &mut engine_out);
    }
    let _ = engine_out.shutdown(Shutdown::Write);
    if shared.position() == Position::Closed {
        // Nothing more of this connection reaches either side.
        let _ = requests.get_ref().shutdown(Shutdown::Both);
        let _ = engine_out.shutdown(Shutdown::Both);
    }
    if let Ok(answers) = answers {
        let _ = answers.join();
    }
}

/// Sends reads on as they come; returns once a request that does more is
/// through the gate (the rest of the connection is copied as it is), or an
/// error when the client is gone or the gate closed first.
fn forward_requests(requests: &mut BufReader<UnixStream>, engine: &mut UnixStream, shared: &Shared) -> io::Result<()> {
    loop {
        let head = read_head(requests)?;
        if head.is_empty() {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let only_reads = shared.position() == Position::Held && only_reads(&head);
        if !only_reads && !shared.pass() {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        engine.write_all(&head)?;
        if !only_reads {
            shared.relayed.fetch_add(1, Ordering::SeqCst);
            return Ok(());
        }
    }
}

/// The head of the next request: its lines up to and with the empty one;
/// cut short at [`MAX_HEAD`] or the end of the stream (empty when there is none).
fn read_head(requests: &mut impl BufRead) -> io::Result<Vec<u8>> {
    let mut head = Vec::new();
    while head.len() < MAX_HEAD {
        let before = head.len();
        if requests.take((MAX_HEAD - before) as u64).read_until(b'\n', &mut head)? == 0 {
            break;
        }
        let line = &head[before..];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    Ok(head)
}

/// Whether a request head is a whole request that only reads: `GET` or
/// `HEAD`, no body, no upgrade to another protocol. Anything else, or
/// anything this cannot tell, is held.
fn only_reads(head: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(head) else { return false };
    if !text.ends_with("\r\n\r\n") && !text.ends_with("\n\n") {
        return false;
    }
    let mut lines = text.lines();
    let method = lines.next().and_then(|line| line.split(' ').next()).unwrap_or_default();
    if method != "GET" && method != "HEAD" {
        return false;
    }
    lines.all(|line| {
        let Some((name, value)) = line.split_once(':') else { return true };
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        match name.as_str() {
            "content-length" => value == "0",
            "transfer-encoding" | "upgrade" => false,
            _ => true,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// An "engine" that answers every request with `200` and a body naming
    /// it, a thread for each connection, and reports each request line as it arrives.
    struct Engine {
        path: PathBuf,
        quit: Arc<std::sync::atomic::AtomicBool>,
        acceptor: Option<JoinHandle<()>>,
    }

    impl Engine {
        fn start(path: &Path) -> (Engine, mpsc::Receiver<String>) {
            let listener = UnixListener::bind(path).unwrap();
            let (seen, requests) = mpsc::channel();
            let quit = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop = quit.clone();
            let acceptor = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let seen = seen.clone();
                    std::thread::spawn(move || serve(stream.unwrap(), &seen));
                }
            });
            (Engine { path: path.to_path_buf(), quit, acceptor: Some(acceptor) }, requests)
        }
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            self.quit.store(true, Ordering::SeqCst);
            let _ = UnixStream::connect(&self.path);
            let _ = self.acceptor.take().unwrap().join();
        }
    }

    fn serve(stream: UnixStream, seen: &mpsc::Sender<String>) {
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        loop {
            let Ok(head) = read_head(&mut reader) else { return };
            let head = String::from_utf8_lossy(&head).to_string();
            let Some(line) = head.lines().next().map(str::to_string) else { return };
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: ").map(|n| n.parse::<usize>().unwrap()))
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            let _ = seen.send(line.clone());
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}", line.len());
            if writer.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Sends a request and reads its answer's body, on a kept-alive connection.
    fn ask(stream: &mut BufReader<UnixStream>, request: &str) -> io::Result<String> {
        stream.get_mut().write_all(request.as_bytes())?;
        let head = read_head(stream)?;
        let head = String::from_utf8_lossy(&head).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: ").map(|n| n.parse().unwrap()))
            .ok_or_else(|| io::Error::other(format!("no answer: {head:?}")))?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body)?;
        Ok(String::from_utf8(body).unwrap())
    }

    fn connect(path: &Path) -> BufReader<UnixStream> {
        BufReader::new(UnixStream::connect(path).unwrap())
    }

    const PING: &str = "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
    const STOP: &str = "POST /containers/app/stop HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n";
    const CREATE: &str = "POST /containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn reads_pass_at_once_and_changes_wait_until_the_gate_opens() {
        let dir = tempfile::tempdir().unwrap();
        let engine_path = dir.path().join("engine.sock");
        let (engine, seen) = Engine::start(&engine_path);
        let gate = SocketGate::hold(&dir.path().join("gate.sock"), &engine_path).unwrap();
        assert_eq!(gate.docker_host(), format!("unix://{}", dir.path().join("gate.sock").display()));
        let mode = fs::metadata(dir.path().join("gate.sock")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        // A read, then a change, on one kept-alive connection.
        let mut client = connect(&dir.path().join("gate.sock"));
        assert_eq!(ask(&mut client, PING).unwrap(), "GET /_ping HTTP/1.1");
        assert!(!gate.knocked(Duration::from_millis(50)), "nothing waits yet");
        client.get_mut().write_all(STOP.as_bytes()).unwrap();
        assert!(gate.knocked(Duration::from_secs(5)), "the held change is not seen");
        // A read on another connection still passes while the change waits.
        let mut other = connect(&dir.path().join("gate.sock"));
        assert_eq!(ask(&mut other, "HEAD /version HTTP/1.1\r\n\r\n").unwrap(), "HEAD /version HTTP/1.1");
        assert_eq!(seen.recv().unwrap(), "GET /_ping HTTP/1.1");
        assert_eq!(seen.recv().unwrap(), "HEAD /version HTTP/1.1");
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "a held change reached the engine");
        assert_eq!(gate.relayed(), 0);

        gate.open();
        assert_eq!(seen.recv_timeout(Duration::from_secs(5)).unwrap(), "POST /containers/app/stop HTTP/1.1");
        let head = read_head(&mut client).unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200 OK"));
        // Once open, everything goes straight through, a body with it.
        let mut later = connect(&dir.path().join("gate.sock"));
        assert_eq!(ask(&mut later, CREATE).unwrap(), "POST /containers/create HTTP/1.1");
        assert_eq!(gate.relayed(), 2);

        drop(gate);
        assert!(!dir.path().join("gate.sock").exists(), "the gate's socket outlived it");
        drop(engine);
    }

    #[test]
    fn a_gate_dropped_unopened_closes_what_it_held_and_the_engine_never_hears_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let engine_path = dir.path().join("engine.sock");
        let (engine, seen) = Engine::start(&engine_path);
        let gate = SocketGate::hold(&dir.path().join("gate.sock"), &engine_path).unwrap();
        let mut client = connect(&dir.path().join("gate.sock"));
        client.get_mut().write_all(CREATE.as_bytes()).unwrap();
        assert!(gate.knocked(Duration::from_secs(5)));
        drop(gate);
        let mut answer = Vec::new();
        let read = client.read_to_end(&mut answer);
        assert!(read.is_err() || answer.is_empty(), "a dropped gate answered: {answer:?}");
        assert!(UnixStream::connect(dir.path().join("gate.sock")).is_err(), "a dropped gate still takes connections");
        assert!(seen.recv_timeout(Duration::from_millis(200)).is_err(), "the engine heard of a held change");
        drop(engine);
    }

    #[test]
    fn only_a_whole_read_without_body_or_upgrade_passes_a_held_gate() {
        assert!(only_reads(PING.as_bytes()));
        assert!(only_reads(b"HEAD /_ping HTTP/1.1\r\n\r\n"));
        assert!(only_reads(b"GET /containers/json HTTP/1.1\r\nContent-Length: 0\r\n\r\n"));
        assert!(!only_reads(STOP.as_bytes()));
        assert!(!only_reads(b"DELETE /containers/app HTTP/1.1\r\n\r\n"));
        assert!(!only_reads(b"GET /x HTTP/1.1\r\nContent-Length: 5\r\n\r\n"));
        assert!(!only_reads(b"GET /x HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n"));
        assert!(!only_reads(b"GET /containers/app/attach/ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n"));
        // Cut short (too long, or the client stopped mid-head): held.
        assert!(!only_reads(b"GET /_ping HTTP/1.1\r\nHost: docker\r\n"));
        assert!(!only_reads(b"\xff\xfe GET"));
        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_HEAD));
        let head = read_head(&mut BufReader::new(long.as_bytes())).unwrap();
        assert_eq!(head.len(), MAX_HEAD);
        assert!(!only_reads(&head));
    }

    #[test]
    fn a_gate_replaces_a_stale_socket_and_refuses_to_replace_anything_else() {
        let dir = tempfile::tempdir().unwrap();
        let stale = dir.path().join("gate.sock");
        drop(UnixListener::bind(&stale).unwrap());
        assert!(stale.exists());
        let gate = SocketGate::hold(&stale, Path::new("/nonexistent/engine.sock")).unwrap();
        drop(gate);
        fs::write(&stale, b"an operator's file").unwrap();
        let err = SocketGate::hold(&stale, Path::new("/nonexistent/engine.sock")).err().unwrap();
        assert!(err.to_string().contains("exists and is not a socket"), "{err}");
        assert_eq!(fs::read(&stale).unwrap(), b"an operator's file");
    }

    #[test]
    fn an_engine_that_cannot_be_reached_closes_the_clients_connection() {
        let dir = tempfile::tempdir().unwrap();
        let gate = SocketGate::hold(&dir.path().join("gate.sock"), &dir.path().join("none.sock")).unwrap();
        gate.open();
        let mut client = connect(&dir.path().join("gate.sock"));
        assert!(ask(&mut client, PING).is_err());
        assert_eq!(gate.relayed(), 0);
    }

    #[test]
    fn only_a_unix_docker_host_names_a_socket() {
        assert_eq!(socket_path(None), Some(PathBuf::from(DEFAULT_ENGINE_SOCKET)));
        assert_eq!(socket_path(Some("")), Some(PathBuf::from(DEFAULT_ENGINE_SOCKET)));
        assert_eq!(
            socket_path(Some("unix:///run/user/1000/docker.sock")),
            Some(PathBuf::from("/run/user/1000/docker.sock"))
        );
        assert_eq!(socket_path(Some("tcp://10.0.0.2:2376")), None);
        assert_eq!(socket_path(Some("ssh://admin@host")), None);
    }
}
