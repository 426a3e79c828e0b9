//! The one way upgraderd runs a child process.
//!
//! A [`Cmd`] is an argv (never a shell string built from data), a working
//! directory, extra environment and a timeout. [`Runner::run`] spawns it in its
//! own process group, reads stdout and stderr on their own threads (stderr
//! capped to its tail), optionally streams lines as progress, and on timeout
//! sends SIGTERM to the group, then SIGKILL after a grace period. A failure is a
//! [`ProcessError`] carrying the command line, how the child ended and the tail
//! of its stderr: the record that goes into history. `--dry-run` is decided
//! here and nowhere else: a mutating command is printed instead of run.
//!
//! Children die with upgraderd (`PR_SET_PDEATHSIG`), so a killed upgrader
//! never leaves a `compose up` racing the recovery that follows it. A command
//! marked interruptible is stopped early when the runner's stop flag is set
//! (a shutdown asked for before the switch).

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{self, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How much of a child's stderr is kept (the tail).
pub const STDERR_TAIL_BYTES: usize = 64 * 1024;
/// How much of a child's stdout is kept; more is an error, not a silent cut.
pub const STDOUT_MAX_BYTES: usize = 64 * 1024 * 1024;
/// How long to wait for a dead child's pipes to close (a grandchild may hold them).
const PIPE_LINGER: Duration = Duration::from_secs(2);

/// A child process to run.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    timeout: Option<Duration>,
    grace: Duration,
    stdin: Option<Vec<u8>>,
    stream: bool,
    mutates: bool,
    interruptible: bool,
}

impl Cmd {
    pub fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            cwd: None,
            env: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(10),
            stdin: None,
            stream: false,
            mutates: false,
            interruptible: false,
        }
    }

    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub fn cwd(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Ends the child after this long: SIGTERM, then SIGKILL after the grace period.
    pub fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = Some(timeout);
        self
    }

    pub fn grace(mut self, grace: Duration) -> Cmd {
        self.grace = grace;
        self
    }

    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Streams every output line to the runner's progress sink as it arrives.
    pub fn streamed(mut self) -> Cmd {
        self.stream = true;
        self
    }

    /// Marks the command as changing the host: `--dry-run` prints it instead of running it.
    pub fn mutating(mut self) -> Cmd {
        self.mutates = true;
        self
    }

    /// Lets a stop request end the child early (SIGTERM, then SIGKILL after the grace period).
    pub fn interruptible(mut self) -> Cmd {
        self.interruptible = true;
        self
    }

    pub fn is_mutating(&self) -> bool {
        self.mutates
    }

    pub fn program(&self) -> &OsStr {
        &self.program
    }

    pub fn arguments(&self) -> &[OsString] {
        &self.args
    }

    /// The command line as a shell would need it typed, for logs and errors.
    pub fn display(&self) -> String {
        std::iter::once(&self.program)
            .chain(&self.args)
            .map(|a| shell_quote(&a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Quotes a word for display when it has characters a shell would treat specially.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited with this code.
    Code(i32),
    /// A signal upgraderd did not send ended it.
    Signal(i32),
    /// It outlived its timeout; `killed` when SIGTERM was not enough and SIGKILL was sent.
    TimedOut { after: Duration, killed: bool },
    /// upgraderd was asked to stop and ended it.
    Interrupted,
}

impl Ended {
    pub fn success(&self) -> bool {
        matches!(self, Ended::Code(0))
    }

    fn from_status(status: ExitStatus) -> Ended {
        match (status.code(), status.signal()) {
            (Some(code), _) => Ended::Code(code),
            (None, Some(signal)) => Ended::Signal(signal),
            (None, None) => Ended::Code(-1),
        }
    }
}

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ended::Code(code) => write!(f, "exited with code {code}"),
            Ended::Signal(signal) => write!(f, "was killed by signal {signal} ({})", signal_name(*signal)),
            Ended::TimedOut { after, killed: false } => {
                write!(f, "timed out after {:.1}s and was stopped with SIGTERM", after.as_secs_f64())
            }
            Ended::TimedOut { after, killed: true } => {
                write!(f, "timed out after {:.1}s, ignored SIGTERM and was killed with SIGKILL", after.as_secs_f64())
            }
            Ended::Interrupted => write!(f, "was stopped because upgraderd was asked to stop"),
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGKILL => "SIGKILL",
        libc::SIGINT => "SIGINT",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// What a child left behind.
#[derive(Debug, Clone)]
pub struct Output {
    pub stdout: Vec<u8>,
    /// The last [`STDERR_TAIL_BYTES`] of stderr.
    pub stderr: String,
    pub ended: Ended,
    pub elapsed: Duration,
}

impl Output {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last few non-empty stderr lines, for one-line messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail_lines(&self.stderr, lines)
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// A child that could not be run or did not succeed.
#[derive(Debug)]
pub struct ProcessError {
    pub command: String,
    pub failure: Failure,
}

#[derive(Debug)]
pub enum Failure {
    Spawn(io::Error),
    /// The child ran and did not exit with code 0.
    Ended(Output),
    /// Its stdout was larger than [`STDOUT_MAX_BYTES`].
    StdoutTooLarge,
}

impl ProcessError {
    /// The output of a child that ran, if it did.
    pub fn output(&self) -> Option<&Output> {
        match &self.failure {
            Failure::Ended(output) => Some(output),
            _ => None,
        }
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.failure {
            Failure::Spawn(err) if err.kind() == io::ErrorKind::NotFound => {
                write!(
                    f,
                    "`{}` could not be started: program not found (check the path in the configuration)",
                    self.command
                )
            }
            Failure::Spawn(err) => write!(f, "`{}` could not be started: {err}", self.command),
            Failure::StdoutTooLarge => {
                write!(f, "`{}` printed more than {} MiB on stdout", self.command, STDOUT_MAX_BYTES >> 20)
            }
            Failure::Ended(output) => {
                write!(f, "`{}` {}", self.command, output.ended)?;
                let tail = output.stderr_tail(8);
                if !tail.is_empty() {
                    write!(f, "; stderr:\n{tail}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ProcessError {}

/// Receives streamed output lines: (program name, line).
pub type LineSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Spawns commands; the only place that decides whether `--dry-run` runs them.
#[derive(Clone, Default)]
pub struct Runner {
    dry_run: bool,
    sink: Option<LineSink>,
    /// Dry-run: the command lines that would have been run.
    planned: Arc<std::sync::Mutex<Vec<String>>>,
    /// Set when upgraderd is asked to stop; ends interruptible children.
    stop: Option<Arc<AtomicBool>>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner").field("dry_run", &self.dry_run).finish()
    }
}

impl Runner {
    pub fn new(dry_run: bool) -> Runner {
        Runner { dry_run, ..Runner::default() }
    }

    pub fn with_sink(mut self, sink: LineSink) -> Runner {
        self.sink = Some(sink);
        self
    }

    pub fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> Runner {
        self.stop = Some(stop);
        self
    }

    pub fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// Adds a note to a dry run's plan (a step that is not a command, like a data restore).
    pub fn plan(&self, note: String) {
        if let Ok(mut planned) = self.planned.lock() {
            planned.push(note);
        }
    }

    /// The mutating command lines a dry run skipped, in order.
    pub fn planned(&self) -> Vec<String> {
        self.planned.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Runs the command; anything but exit code 0 is an error.
    pub fn run(&self, cmd: &Cmd) -> Result<Output, ProcessError> {
        let output = self.output(cmd)?;
        if output.ended.success() {
            Ok(output)
        } else {
            Err(ProcessError { command: cmd.display(), failure: Failure::Ended(output) })
        }
    }

    /// Runs the command and returns how it ended, whatever the exit code.
    pub fn output(&self, cmd: &Cmd) -> Result<Output, ProcessError> {
        if self.dry_run && cmd.mutates {
            if let Ok(mut planned) = self.planned.lock() {
                planned.push(cmd.display());
            }
            return Ok(Output {
                stdout: Vec::new(),
                stderr: String::new(),
                ended: Ended::Code(0),
                elapsed: Duration::ZERO,
            });
        }
        let sink = if cmd.stream { self.sink.clone() } else { None };
        let stop = self.stop.clone().filter(|_| cmd.interruptible);
        execute(cmd, sink, stop).map_err(|failure| ProcessError { command: cmd.display(), failure })
    }
}

enum Event {
    Line(String),
    Exited(ExitStatus),
    /// A pipe reached its end.
    Closed,
}

/// What a reader thread has kept so far; read by the caller even when a
/// grandchild keeps the pipe open past the child's exit.
#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    overflow: bool,
}

type Shared = Arc<std::sync::Mutex<Captured>>;

fn take(shared: &Shared) -> Captured {
    shared.lock().map(|mut c| std::mem::take(&mut *c)).unwrap_or_default()
}

/// How often an interruptible child's stop flag is looked at.
const STOP_POLL: Duration = Duration::from_millis(100);

fn execute(cmd: &Cmd, sink: Option<LineSink>, stop: Option<Arc<AtomicBool>>) -> Result<Output, Failure> {
    let started = Instant::now();
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout reaches grandchildren (compose runs docker).
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // Dies with the thread that spawned it, which waits for it: never an orphan racing recovery.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    if let Some(dir) = &cmd.cwd {
        command.current_dir(dir);
    }
    let mut child = command.spawn().map_err(Failure::Spawn)?;
    let pid = child.id() as libc::pid_t;

    let (tx, rx) = mpsc::channel::<Event>();
    if let (Some(bytes), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let label = Path::new(&cmd.program).file_name().unwrap_or_default().to_string_lossy().into_owned();
    let stdout: Shared = Shared::default();
    let stderr: Shared = Shared::default();
    let streaming = sink.is_some();
    spawn_reader(
        child.stdout.take().expect("stdout is piped"),
        tx.clone(),
        streaming,
        stdout.clone(),
        Keep::Head(STDOUT_MAX_BYTES),
    );
    spawn_reader(
        child.stderr.take().expect("stderr is piped"),
        tx.clone(),
        streaming,
        stderr.clone(),
        Keep::Tail(STDERR_TAIL_BYTES),
    );
    let waiter_tx = tx.clone();
    thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = waiter_tx.send(Event::Exited(status));
        }
    });
    drop(tx);

    let mut deadline = cmd.timeout.map(|t| started + t);
    let mut terminated = false;
    let mut killed = false;
    let mut interrupted = false;
    let mut status = None;
    let mut open_pipes = 2;
    let mut linger_until = None;
    while status.is_none() || open_pipes > 0 {
        let wait_until = match (status.is_some(), deadline) {
            (true, _) => *linger_until.get_or_insert_with(|| Instant::now() + PIPE_LINGER),
            (false, Some(d)) => d,
            (false, None) => Instant::now() + Duration::from_secs(3600),
        };
        if !terminated && stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            signal_group(pid, libc::SIGTERM);
            (terminated, interrupted) = (true, true);
            deadline = Some(Instant::now() + cmd.grace);
        }
        let mut wait = wait_until.saturating_duration_since(Instant::now());
        if stop.is_some() && !terminated {
            wait = wait.min(STOP_POLL);
        }
        match rx.recv_timeout(wait) {
            Ok(Event::Line(line)) => {
                if let Some(sink) = &sink {
                    sink(&label, &line);
                }
            }
            Ok(Event::Exited(s)) => status = Some(s),
            Ok(Event::Closed) => open_pipes -= 1,
            Err(RecvTimeoutError::Timeout) if status.is_some() => break,
            Err(RecvTimeoutError::Timeout) if Instant::now() < wait_until => {}
            Err(RecvTimeoutError::Timeout) if !terminated => {
                signal_group(pid, libc::SIGTERM);
                terminated = true;
                deadline = Some(Instant::now() + cmd.grace);
            }
            Err(RecvTimeoutError::Timeout) => {
                signal_group(pid, libc::SIGKILL);
                killed = true;
                deadline = Some(Instant::now() + Duration::from_secs(3600));
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let Some(status) = status else {
        return Err(Failure::Spawn(io::Error::other("lost track of the child process")));
    };
    let stdout = take(&stdout);
    if stdout.overflow {
        return Err(Failure::StdoutTooLarge);
    }
    let stderr = take(&stderr).bytes;
    let stderr = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(STDERR_TAIL_BYTES)..]).into_owned();
    let ended = match (terminated, cmd.timeout) {
        _ if interrupted => Ended::Interrupted,
        (true, Some(timeout)) => Ended::TimedOut { after: timeout, killed },
        _ => Ended::from_status(status),
    };
    Ok(Output { stdout: stdout.bytes, stderr, ended, elapsed: started.elapsed() })
}

#[derive(Clone, Copy)]
enum Keep {
    /// The first N bytes; more is an overflow.
    Head(usize),
    /// The last N bytes.
    Tail(usize),
}

/// Reads a pipe to its end on a thread, streaming lines when asked and
/// keeping what `keep` says in `shared`.
fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<Event>,
    stream_lines: bool,
    shared: Shared,
    keep: Keep,
) {
    thread::spawn(move || {
        let mut partial: Vec<u8> = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match pipe.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            let data = &chunk[..n];
            if stream_lines {
                partial.extend_from_slice(data);
                // Docker prints progress with bare carriage returns; both end a line here.
                while let Some(end) = partial.iter().position(|&b| b == b'\n' || b == b'\r') {
                    let line: Vec<u8> = partial.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line[..line.len() - 1]).trim_end().to_string();
                    if !text.is_empty() {
                        let _ = tx.send(Event::Line(text));
                    }
                }
            }
            if let Ok(mut captured) = shared.lock() {
                match keep {
                    Keep::Head(cap) if captured.bytes.len() + data.len() > cap => captured.overflow = true,
                    Keep::Head(_) => captured.bytes.extend_from_slice(data),
                    Keep::Tail(cap) => {
                        captured.bytes.extend_from_slice(data);
                        if captured.bytes.len() > cap * 2 {
                            let excess = captured.bytes.len() - cap;
                            captured.bytes.drain(..excess);
                        }
                    }
                }
            }
        }
        if stream_lines && !partial.is_empty() {
            let _ = tx.send(Event::Line(String::from_utf8_lossy(&partial).trim_end().to_string()));
        }
        let _ = tx.send(Event::Closed);
    });
}

fn signal_group(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-pid, signal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn sh(script: &str) -> Cmd {
        Cmd::new("sh").arg("-c").arg(script)
    }

    #[test]
    fn captures_stdout_and_exit_code() {
        let out = Runner::default().run(&sh("printf 'a b'")).unwrap();
        assert_eq!(out.stdout_text(), "a b");
        assert_eq!(out.ended, Ended::Code(0));

        let err = Runner::default().run(&sh("echo boom >&2; exit 3")).unwrap_err();
        assert_eq!(err.output().unwrap().ended, Ended::Code(3));
        let text = err.to_string();
        assert!(text.contains("`sh -c 'echo boom >&2; exit 3'` exited with code 3"), "{text}");
        assert!(text.ends_with("stderr:\nboom"), "{text}");
    }

    #[test]
    fn a_stop_request_ends_only_interruptible_children() {
        let stop = Arc::new(AtomicBool::new(false));
        let runner = Runner::default().with_stop_flag(stop.clone());
        let flag = stop.clone();
        let setter = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::SeqCst);
        });
        let started = Instant::now();
        let err = runner.run(&sh("sleep 30").interruptible()).unwrap_err();
        setter.join().unwrap();
        assert_eq!(err.output().unwrap().ended, Ended::Interrupted);
        assert!(started.elapsed() < Duration::from_secs(20));
        assert!(err.to_string().contains("asked to stop"), "{err}");
        // A command that is not interruptible runs to its end even with the flag set.
        assert!(runner.run(&sh("sleep 0.3; echo done")).unwrap().stdout_text().contains("done"));
    }

    #[test]
    fn reports_a_signal() {
        let err = Runner::default().run(&sh("kill -SEGV $$")).unwrap_err();
        assert_eq!(err.output().unwrap().ended, Ended::Signal(libc::SIGSEGV));
        assert!(err.to_string().contains("killed by signal 11 (SIGSEGV)"));
    }

    #[test]
    fn missing_program_names_the_command() {
        let err = Runner::default().run(&Cmd::new("/nonexistent/docker").arg("ps")).unwrap_err();
        assert!(err.to_string().contains("`/nonexistent/docker ps` could not be started: program not found"), "{err}");
    }

    #[test]
    fn timeout_sends_sigterm_first() {
        let started = Instant::now();
        let out = Runner::default().output(&sh("sleep 30").timeout(Duration::from_millis(200))).unwrap();
        assert_eq!(out.ended, Ended::TimedOut { after: Duration::from_millis(200), killed: false });
        assert!(started.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn a_child_ignoring_sigterm_is_killed_after_the_grace_period() {
        let cmd = sh("trap '' TERM; echo ready; while :; do sleep 1; done")
            .timeout(Duration::from_millis(300))
            .grace(Duration::from_millis(300));
        let out = Runner::default().output(&cmd).unwrap();
        assert!(matches!(out.ended, Ended::TimedOut { killed: true, .. }), "{:?}", out.ended);
        assert!(out.ended.to_string().contains("ignored SIGTERM"));
    }

    #[test]
    fn stderr_flood_keeps_only_the_tail_and_does_not_block() {
        let script = "i=0; while [ $i -lt 20000 ]; do echo line-$i-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx >&2; i=$((i+1)); done; echo done";
        let out = Runner::default().run(&sh(script)).unwrap();
        assert!(out.stderr.len() <= STDERR_TAIL_BYTES);
        assert!(out.stderr.trim_end().ends_with("line-19999-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"));
        assert_eq!(out.stdout_text(), "done\n");
    }

    #[test]
    fn streams_lines_as_they_come() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let runner =
            Runner::default().with_sink(Arc::new(move |_, line| sink_seen.lock().unwrap().push(line.to_string())));
        runner.run(&sh("echo one; echo two >&2; printf 'a\\rb'").streamed()).unwrap();
        let mut lines = seen.lock().unwrap().clone();
        lines.sort();
        assert_eq!(lines, vec!["a", "b", "one", "two"]);
    }

    #[test]
    fn a_grandchild_holding_the_pipe_does_not_hang_the_caller() {
        let started = Instant::now();
        let out = Runner::default().run(&sh("(sleep 20 &) ; echo parent-done")).unwrap();
        assert_eq!(out.stdout_text(), "parent-done\n");
        assert!(started.elapsed() < Duration::from_secs(15));
    }

    #[test]
    fn dry_run_skips_only_mutating_commands() {
        let runner = Runner::new(true);
        let out = runner.run(&sh("exit 7").mutating()).unwrap();
        assert!(out.ended.success());
        assert_eq!(runner.planned(), vec!["sh -c 'exit 7'"]);
        assert_eq!(runner.run(&sh("echo read-only")).unwrap().stdout_text(), "read-only\n");
    }

    #[test]
    fn stdin_env_and_cwd_reach_the_child() {
        let dir = tempfile::tempdir().unwrap();
        let out = Runner::default()
            .run(&sh("cat; echo \" $GREETING $(pwd)\"").stdin("hi").env("GREETING", "hello").cwd(dir.path()))
            .unwrap();
        let canonical = dir.path().canonicalize().unwrap();
        assert_eq!(out.stdout_text(), format!("hi hello {}\n", canonical.display()));
    }
}
