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
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
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

/// The Docker socket the docker CLI talks to, from `DOCKER_HOST`; `None` for a TCP or SSH one.
pub(crate) fn docker_host_socket() -> Option<PathBuf> {
    socket_path(std::env::var("DOCKER_HOST").ok().as_deref())
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
    let socket = docker_host_socket().ok_or("DOCKER_HOST is not a unix:// socket")?;
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

/// The socket's name in the gate's directory.
const SOCKET: &str = "engine.sock";

/// A socket that relays reads to the engine at once and holds every other
/// request until [`SocketGate::open`].
pub(crate) struct SocketGate {
    path: PathBuf,
    state: Arc<Shared>,
    /// The listener's other handle: shutting it down wakes the acceptor.
    wake: UnixListener,
    acceptor: Option<JoinHandle<()>>,
}

/// What the gate's threads share.
struct Shared {
    engine: PathBuf,
    gate: Mutex<Gate>,
    changed: Condvar,
    /// Connections taken from upgraderd's own user.
    connections: AtomicUsize,
    /// Held requests let through.
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
    /// Listens in `dir`, a directory of upgraderd's own (made owner-only, or
    /// refused when it is anything else), before `engine`. A socket left
    /// there by a killed run is replaced.
    pub(crate) fn hold(dir: &Path, engine: &Path) -> io::Result<SocketGate> {
        // Absolute: compose runs in the project's directory, not upgraderd's.
        let dir = std::path::absolute(dir)?;
        private_dir(&dir)?;
        let path = dir.join(SOCKET);
        remove_leftover(&dir)?;
        let listener = UnixListener::bind(&path)?;
        let state = Arc::new(Shared {
            engine: engine.to_path_buf(),
            gate: Mutex::new(Gate { position: Position::Held, waiting: 0 }),
            changed: Condvar::new(),
            connections: AtomicUsize::new(0),
            relayed: AtomicUsize::new(0),
        });
        let wake = listener.try_clone()?;
        let shared = state.clone();
        let acceptor = std::thread::Builder::new().name("gate-accept".into()).spawn(move || accept(&listener, &shared));
        let acceptor = match acceptor {
            Ok(acceptor) => acceptor,
            Err(e) => {
                let _ = fs::remove_file(&path);
                return Err(e);
            }
        };
        Ok(SocketGate { path, state, wake, acceptor: Some(acceptor) })
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

    /// How many connections a client made to the gate: none means it does not come through it.
    pub(crate) fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// How many held requests the gate let through to the engine.
    pub(crate) fn relayed(&self) -> usize {
        self.state.relayed.load(Ordering::SeqCst)
    }
}

/// Closes the gate for good: what it held is dropped unsent, its socket file removed.
impl Drop for SocketGate {
    fn drop(&mut self) {
        self.state.set(Position::Closed);
        // Wakes the acceptor from accept() (Linux ends it with EINVAL), whatever became of the socket file.
        // SAFETY: shutdown(2) on a descriptor this value owns.
        unsafe {
            libc::shutdown(self.wake.as_raw_fd(), libc::SHUT_RDWR);
        }
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let _ = fs::remove_file(&self.path);
    }
}

/// Removes the socket a killed run left in the gate's directory; anything else there is left, and refused.
pub(crate) fn remove_leftover(dir: &Path) -> io::Result<()> {
    let path = dir.join(SOCKET);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_socket() => fs::remove_file(&path),
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket; remove it", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes `dir` a directory only its owner, upgraderd's user, can enter: the
/// socket in it is the engine's equal from the moment it is bound.
fn private_dir(dir: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    let meta = fs::symlink_metadata(dir)?;
    // SAFETY: geteuid(2) cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not a directory of upgraderd's own that only it can enter", dir.display()),
        ));
    }
    Ok(())
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
        let client = match client {
            Ok(client) => client,
            Err(_) => {
                // Out of descriptors, say: not a reason to spin.
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if !same_user(&client) {
            continue;
        }
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let shared = shared.clone();
        let _ = std::thread::Builder::new().name("gate-relay".into()).spawn(move || relay(client, &shared));
    }
}

/// Whether the peer runs as upgraderd's own user and in its view of the
/// processes (a process of another container sharing the directory is neither).
fn same_user(client: &UnixStream) -> bool {
    let mut cred = libc::ucred { pid: 0, uid: u32::MAX, gid: u32::MAX };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: getsockopt(2) writes at most `len` bytes into `cred`, which lives across the call.
    let read = unsafe {
        libc::getsockopt(
            client.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid(2) cannot fail.
    read == 0 && cred.pid != 0 && cred.uid == unsafe { libc::geteuid() }
}

/// One connection: answers flow back as they come; requests go on while
/// they only read, and from the first that does more, once the gate opens.
/// Each way closes on the other side when its sender closes, so a
/// half-closed connection (a hijacked stream) ends as it would directly.
fn relay(client: UnixStream, shared: &Shared) {
    // Connected here, not in the acceptor: an engine slow to accept holds up this connection only.
    let Ok(engine) = UnixStream::connect(&shared.engine) else { return };
    let (Ok(client_out), Ok(engine_in)) = (client.try_clone(), engine.try_clone()) else { return };
    let answers = std::thread::Builder::new().name("gate-relay".into()).spawn(move || {
        let (mut engine_in, mut client_out) = (engine_in, client_out);
        let _ = io::copy(&mut engine_in, &mut client_out);
        let _ = client_out.shutdown(Shutdown::Write);
    });
    // Without the thread for answers, a request sent on would wait for one forever.
    let Ok(answers) = answers else { return };
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
    let _ = answers.join();
}

/// Whether the client closed its side (it gave up on its request while it was held).
fn hung_up(client: &UnixStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: recv(2) into one byte that lives across the call; MSG_PEEK leaves the data where it is.
    let read = unsafe {
        libc::recv(client.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, libc::MSG_PEEK | libc::MSG_DONTWAIT)
    };
    read == 0
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
        let held = shared.position() == Position::Held;
        let only_reads = held && only_reads(&head);
        // A client that gave up while its request was held (a timeout, a crash) has it dropped, not sent.
        if !only_reads && (!shared.pass() || (held && hung_up(requests.get_ref()))) {
            return Err(io::ErrorKind::ConnectionAborted.into());
        }
        if !only_reads {
            // Counted before it is sent: once any of it may have reached the engine, something may have changed.
            shared.relayed.fetch_add(1, Ordering::SeqCst);
        }
        engine.write_all(&head)?;
        if !only_reads {
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
    use std::io::{Read, Write};
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;

    const WAIT: Duration = Duration::from_secs(10);

    /// An "engine" that answers every request with `200` and a body naming
    /// it, a thread for each connection, and reports each request line as it
    /// arrives and, when a connection ends, every byte it received on it.
    struct Engine {
        path: PathBuf,
        quit: Arc<std::sync::atomic::AtomicBool>,
        acceptor: Option<JoinHandle<()>>,
    }

    struct Heard {
        lines: mpsc::Receiver<String>,
        raw: mpsc::Receiver<Vec<u8>>,
    }

    impl Engine {
        fn start(path: &Path) -> (Engine, Heard) {
            let listener = UnixListener::bind(path).unwrap();
            let (line_tx, lines) = mpsc::channel();
            let (raw_tx, raw) = mpsc::channel();
            let quit = Arc::new(std::sync::atomic::AtomicBool::new(false));
            let stop = quit.clone();
            let acceptor = std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let (line_tx, raw_tx) = (line_tx.clone(), raw_tx.clone());
                    std::thread::spawn(move || serve(stream.unwrap(), &line_tx, &raw_tx));
                }
            });
            (Engine { path: path.to_path_buf(), quit, acceptor: Some(acceptor) }, Heard { lines, raw })
        }
    }

    impl Drop for Engine {
        fn drop(&mut self) {
            self.quit.store(true, Ordering::SeqCst);
            let _ = UnixStream::connect(&self.path);
            let _ = self.acceptor.take().unwrap().join();
        }
    }

    /// Reads what it is sent through a tee, so that the raw bytes can be reported.
    struct Tee {
        stream: UnixStream,
        seen: Vec<u8>,
    }

    impl Read for Tee {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.stream.read(buf)?;
            self.seen.extend_from_slice(&buf[..n]);
            Ok(n)
        }
    }

    fn serve(stream: UnixStream, lines: &mpsc::Sender<String>, raw: &mpsc::Sender<Vec<u8>>) {
        let mut writer = stream.try_clone().unwrap();
        let mut reader = BufReader::new(Tee { stream, seen: Vec::new() });
        while let Ok(head) = read_head(&mut reader) {
            let head = String::from_utf8_lossy(&head).to_string();
            let Some(line) = head.lines().next().map(str::to_string) else { break };
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("Content-Length: ").map(|n| n.parse::<usize>().unwrap()))
                .unwrap_or(0);
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_err() {
                break;
            }
            let _ = lines.send(line.clone());
            let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{line}", line.len());
            if writer.write_all(answer.as_bytes()).is_err() {
                break;
            }
        }
        let _ = raw.send(std::mem::take(&mut reader.get_mut().seen));
    }

    /// Reads one answer's body, on a kept-alive connection.
    fn answer(stream: &mut BufReader<UnixStream>) -> io::Result<String> {
        let head = String::from_utf8_lossy(&read_head(stream)?).to_string();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("Content-Length: ").map(|n| n.parse().unwrap()))
            .ok_or_else(|| io::Error::other(format!("no answer: {head:?}")))?;
        let mut body = vec![0; length];
        stream.read_exact(&mut body)?;
        Ok(String::from_utf8(body).unwrap())
    }

    /// Sends a request and reads its answer's body.
    fn ask(stream: &mut BufReader<UnixStream>, request: &str) -> io::Result<String> {
        stream.get_mut().write_all(request.as_bytes())?;
        answer(stream)
    }

    fn connect(path: &Path) -> BufReader<UnixStream> {
        let stream = UnixStream::connect(path).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        BufReader::new(stream)
    }

    /// A gate in `dir/gate` before the engine at `dir/engine.sock`, and where its socket is.
    fn gate_in(dir: &Path) -> (SocketGate, PathBuf) {
        let gate = SocketGate::hold(&dir.join("gate"), &dir.join("engine.sock")).unwrap();
        (gate, dir.join("gate").join(SOCKET))
    }

    const PING: &str = "GET /_ping HTTP/1.1\r\nHost: docker\r\n\r\n";
    const STOP: &str = "POST /containers/app/stop HTTP/1.1\r\nHost: docker\r\nContent-Length: 0\r\n\r\n";
    const CREATE: &str = "POST /containers/create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";

    #[test]
    fn reads_pass_at_once_and_changes_wait_until_the_gate_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, heard) = Engine::start(&dir.path().join("engine.sock"));
        let (gate, socket) = gate_in(dir.path());
        assert_eq!(gate.docker_host(), format!("unix://{}", socket.display()));
        let mode = fs::metadata(dir.path().join("gate")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700, "the gate's directory is its owner's only");

        // A read, then a change, on one kept-alive connection.
        let mut client = connect(&socket);
        assert_eq!(ask(&mut client, PING).unwrap(), "GET /_ping HTTP/1.1");
        assert!(!gate.knocked(Duration::from_millis(50)), "nothing waits yet");
        client.get_mut().write_all(STOP.as_bytes()).unwrap();
        assert!(gate.knocked(WAIT), "the held change is not seen");
        // A read on another connection still passes while the change waits.
        let mut other = connect(&socket);
        assert_eq!(ask(&mut other, "HEAD /version HTTP/1.1\r\n\r\n").unwrap(), "HEAD /version HTTP/1.1");
        assert_eq!(heard.lines.recv_timeout(WAIT).unwrap(), "GET /_ping HTTP/1.1");
        assert_eq!(heard.lines.recv_timeout(WAIT).unwrap(), "HEAD /version HTTP/1.1");
        assert!(heard.lines.recv_timeout(Duration::from_millis(200)).is_err(), "a held change reached the engine");
        assert_eq!((gate.relayed(), gate.connections()), (0, 2));

        gate.open();
        assert_eq!(heard.lines.recv_timeout(WAIT).unwrap(), "POST /containers/app/stop HTTP/1.1");
        assert_eq!(answer(&mut client).unwrap(), "POST /containers/app/stop HTTP/1.1");
        // Once open, everything goes straight through, a body with it.
        let mut later = connect(&socket);
        assert_eq!(ask(&mut later, CREATE).unwrap(), "POST /containers/create HTTP/1.1");
        assert_eq!(gate.relayed(), 2);

        drop(gate);
        assert!(!socket.exists(), "the gate's socket outlived it");
    }

    #[test]
    fn a_read_and_a_change_in_one_write_and_a_head_in_pieces_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, heard) = Engine::start(&dir.path().join("engine.sock"));
        let (gate, socket) = gate_in(dir.path());
        let mut client = connect(&socket);
        client.get_mut().write_all(format!("{PING}{CREATE}").as_bytes()).unwrap();
        assert_eq!(answer(&mut client).unwrap(), "GET /_ping HTTP/1.1");
        assert!(gate.knocked(WAIT));
        let mut pieces = connect(&socket);
        for piece in ["GET /containers/js", "on HTTP/1.1\r\nHo", "st: docker\r", "\n\r\n"] {
            pieces.get_mut().write_all(piece.as_bytes()).unwrap();
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(answer(&mut pieces).unwrap(), "GET /containers/json HTTP/1.1");
        assert_eq!(heard.lines.recv_timeout(WAIT).unwrap(), "GET /_ping HTTP/1.1");
        assert_eq!(heard.lines.recv_timeout(WAIT).unwrap(), "GET /containers/json HTTP/1.1");
        assert!(heard.lines.recv_timeout(Duration::from_millis(200)).is_err(), "the change went with the read");
        gate.open();
        assert_eq!(answer(&mut client).unwrap(), "POST /containers/create HTTP/1.1");
    }

    #[test]
    fn a_head_too_long_to_judge_is_held_and_then_relayed_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, heard) = Engine::start(&dir.path().join("engine.sock"));
        let (gate, socket) = gate_in(dir.path());
        let long = format!("GET /{} HTTP/1.1\r\nHost: docker\r\n\r\n", "a".repeat(MAX_HEAD));
        let mut client = connect(&socket);
        client.get_mut().write_all(long.as_bytes()).unwrap();
        assert!(gate.knocked(WAIT), "a head past the limit is not held");
        assert!(heard.lines.recv_timeout(Duration::from_millis(200)).is_err());
        gate.open();
        // The fake engine cuts its own reading at the same limit; what it received is the whole request.
        assert!(answer(&mut client).unwrap().starts_with("GET /aaaa"));
        drop(client);
        let received = heard.raw.recv_timeout(WAIT).unwrap();
        assert!(received.starts_with(long.as_bytes()), "{} bytes of {} relayed", received.len(), long.len());
    }

    #[test]
    fn a_gate_dropped_unopened_closes_what_it_held_and_the_engine_never_hears_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, heard) = Engine::start(&dir.path().join("engine.sock"));
        let (gate, socket) = gate_in(dir.path());
        let mut client = connect(&socket);
        client.get_mut().write_all(CREATE.as_bytes()).unwrap();
        assert!(gate.knocked(WAIT));
        drop(gate);
        let mut rest = Vec::new();
        let read = client.read_to_end(&mut rest);
        assert!(read.is_err() || rest.is_empty(), "a dropped gate answered: {rest:?}");
        assert!(UnixStream::connect(&socket).is_err(), "a dropped gate still takes connections");
        assert_eq!(heard.raw.recv_timeout(WAIT).unwrap(), b"", "the engine got bytes of a held change");
    }

    #[test]
    fn a_held_request_whose_client_gave_up_is_not_sent_when_the_gate_opens() {
        let dir = tempfile::tempdir().unwrap();
        let (_engine, heard) = Engine::start(&dir.path().join("engine.sock"));
        let (gate, socket) = gate_in(dir.path());
        let mut client = connect(&socket);
        client.get_mut().write_all(STOP.as_bytes()).unwrap();
        assert!(gate.knocked(WAIT));
        drop(client);
        std::thread::sleep(Duration::from_millis(100));
        gate.open();
        assert_eq!(heard.raw.recv_timeout(WAIT).unwrap(), b"", "a request nobody waits for any more was sent");
        assert_eq!(gate.relayed(), 0);
    }

    #[test]
    fn a_gate_whose_socket_file_went_away_still_drops_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (gate, socket) = gate_in(dir.path());
        fs::remove_file(&socket).unwrap();
        let (done_tx, done) = mpsc::channel();
        std::thread::spawn(move || {
            drop(gate);
            done_tx.send(()).unwrap();
        });
        assert!(done.recv_timeout(WAIT).is_ok(), "dropping the gate hung");
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
    fn a_leftover_socket_is_replaced_and_anything_else_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let gate_dir = dir.path().join("gate");
        fs::DirBuilder::new().mode(0o700).create(&gate_dir).unwrap();
        drop(UnixListener::bind(gate_dir.join(SOCKET)).unwrap());
        drop(SocketGate::hold(&gate_dir, Path::new("/nonexistent/engine.sock")).unwrap());
        assert!(!gate_dir.join(SOCKET).exists());
        fs::write(gate_dir.join(SOCKET), b"an operator's file").unwrap();
        let err = SocketGate::hold(&gate_dir, Path::new("/nonexistent/engine.sock")).err().unwrap();
        assert!(err.to_string().contains("exists and is not a socket"), "{err}");
        assert_eq!(fs::read(gate_dir.join(SOCKET)).unwrap(), b"an operator's file");
        // A directory others may enter is not the gate's.
        let open_dir = dir.path().join("open");
        fs::DirBuilder::new().mode(0o755).create(&open_dir).unwrap();
        fs::set_permissions(&open_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let err = SocketGate::hold(&open_dir, Path::new("/nonexistent/engine.sock")).err().unwrap();
        assert!(err.to_string().contains("only it can enter"), "{err}");
        assert!(!open_dir.join(SOCKET).exists());
    }

    #[test]
    fn an_engine_that_cannot_be_reached_closes_the_clients_connection() {
        let dir = tempfile::tempdir().unwrap();
        let (gate, socket) = gate_in(dir.path());
        gate.open();
        let mut client = connect(&socket);
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
