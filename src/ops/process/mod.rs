//! The one way upgraderd runs a child process.
//!
//! A [`Cmd`] is an argv (never a shell string built from data), a working
//! directory, extra environment and a timeout. [`Runner::run`] spawns it in its
//! own process group, reads stdout and stderr on their own threads (stderr
//! capped to its tail), optionally streams lines as progress, and on timeout
//! sends SIGTERM to the group, then SIGKILL after a grace period. A failure is a
//! [`ProcessError`] carrying the command line, how the child ended and the tail
//! of its stderr: the record that goes into history. Under `--dry-run` a
//! runner prints a mutating command instead of running it (the engine still
//! asks [`Runner::dry_run`] where a dry run must skip more than one command:
//! the lock, the database, the status file).
//!
//! Children die with upgraderd (`PR_SET_PDEATHSIG`); what they started
//! themselves (the compose plugin under `docker compose`) carries the
//! upgrader's name in its environment, and recovery ends it before it acts
//! ([`left_running`]), so a killed upgrader never leaves a `compose up`
//! racing the recovery that follows it. A command
//! marked interruptible is stopped early when the runner's stop flag is set
//! (a shutdown asked for before the switch).
//!
//! Inside: `child` spawns and drives one run, `phase` is its state machine
//! (running → terminating → killed → draining → done), `reader` reads the pipes.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

mod child;
mod engine;
pub(crate) mod left_running;
mod phase;
mod reader;
#[cfg(test)]
mod tests;

pub(crate) use engine::EngineWait;

/// How much of a child's stderr is kept (the tail).
pub(crate) const STDERR_TAIL_BYTES: usize = 64 * 1024;

/// How much of a child's stdout is kept; more is an error, not a silent cut.
pub(crate) const STDOUT_MAX_BYTES: usize = 64 * 1024 * 1024;

/// How a secret argument is shown: as `upgraderd config` shows a secret.
const MASKED: &str = "********";

/// A child process to run.
#[derive(Clone)]
pub(crate) struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    /// Which of `args` are shown masked.
    secret: Vec<usize>,
    cwd: Option<PathBuf>,
    env: Vec<(OsString, OsString)>,
    timeout: Option<Duration>,
    grace: Duration,
    stdin: Option<Vec<u8>>,
    stream: bool,
    mutates: bool,
    interruptible: bool,
    /// Talks to the Docker engine: an engine that cannot be reached is waited for.
    engine: bool,
}

impl Cmd {
    pub(crate) fn new(program: impl AsRef<OsStr>) -> Cmd {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            secret: Vec::new(),
            cwd: None,
            env: Vec::new(),
            timeout: None,
            grace: Duration::from_secs(10),
            stdin: None,
            stream: false,
            mutates: false,
            interruptible: false,
            engine: false,
        }
    }

    /// Marks a command that talks to the Docker engine (docker, compose): when
    /// it finds the engine unreachable, a runner with an [`EngineWait`] waits
    /// for the engine and runs it again.
    pub(crate) fn talks_to_engine(mut self) -> Cmd {
        self.engine = true;
        self
    }

    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// An argument that may hold a secret (the operator's shell text): passed
    /// as given, shown masked wherever the command line is (logs, errors, history).
    pub(crate) fn secret_arg(mut self, arg: impl AsRef<OsStr>) -> Cmd {
        self.secret.push(self.args.len());
        self.arg(arg)
    }

    pub(crate) fn args<I, S>(mut self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args.extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    pub(crate) fn cwd(mut self, dir: impl AsRef<Path>) -> Cmd {
        self.cwd = Some(dir.as_ref().to_owned());
        self
    }

    pub(crate) fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Cmd {
        self.env.push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Ends the child after this long: SIGTERM, then SIGKILL after the grace period.
    pub(crate) fn timeout(mut self, timeout: Duration) -> Cmd {
        self.timeout = Some(timeout);
        self
    }

    pub(crate) fn grace(mut self, grace: Duration) -> Cmd {
        self.grace = grace;
        self
    }

    /// Feeds these bytes to the child's stdin (only the tests of this module feed it today).
    #[cfg(test)]
    pub(crate) fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Cmd {
        self.stdin = Some(bytes.into());
        self
    }

    /// Streams every output line to the runner's progress sink as it arrives.
    pub(crate) fn streamed(mut self) -> Cmd {
        self.stream = true;
        self
    }

    /// Marks the command as changing the host: `--dry-run` prints it instead of running it.
    pub(crate) fn mutating(mut self) -> Cmd {
        self.mutates = true;
        self
    }

    /// Lets a stop request end the child early (SIGTERM, then SIGKILL after the grace period).
    pub(crate) fn interruptible(mut self) -> Cmd {
        self.interruptible = true;
        self
    }

    /// The command line as a shell would need it typed, for logs and errors;
    /// a secret argument as `********`.
    pub(crate) fn display(&self) -> String {
        let args = self.args.iter().enumerate().map(|(i, arg)| match self.secret.contains(&i) {
            true => MASKED.to_string(),
            false => shell_quote(&arg.to_string_lossy()),
        });
        std::iter::once(shell_quote(&self.program.to_string_lossy())).chain(args).collect::<Vec<_>>().join(" ")
    }
}

/// The command line as [`Cmd::display`] shows it: a secret argument masked here too.
impl fmt::Debug for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cmd")
            .field("line", &self.display())
            .field("cwd", &self.cwd)
            .field("timeout", &self.timeout)
            .field("mutates", &self.mutates)
            .finish_non_exhaustive()
    }
}

/// Quotes a word for display when it has characters a shell would treat specially.
pub(crate) fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty() && word.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// How a child ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
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
    pub(crate) fn success(&self) -> bool {
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
pub(crate) struct Output {
    pub stdout: Vec<u8>,
    /// The last [`STDERR_TAIL_BYTES`] of stderr.
    pub stderr: String,
    pub ended: Ended,
}

impl Output {
    pub(crate) fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// The last few non-empty stderr lines, for one-line messages.
    pub(crate) fn stderr_tail(&self, lines: usize) -> String {
        tail_lines(&self.stderr, lines)
    }
}

fn tail_lines(text: &str, lines: usize) -> String {
    let kept: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    kept[kept.len().saturating_sub(lines)..].join("\n")
}

/// A child that could not be run or did not succeed.
#[derive(Debug)]
pub(crate) struct ProcessError {
    pub command: String,
    pub failure: Failure,
}

#[derive(Debug)]
pub(crate) enum Failure {
    Spawn(io::Error),
    /// The child ran and did not exit with code 0.
    Ended(Output),
    /// Its stdout was larger than [`STDOUT_MAX_BYTES`].
    StdoutTooLarge,
    /// It could not reach the Docker engine, which stayed away past the wait's limit.
    EngineUnreachable {
        waited: Duration,
        stderr: String,
    },
}

impl ProcessError {
    /// The output of a child that ran, if it did.
    pub(crate) fn output(&self) -> Option<&Output> {
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
            Failure::EngineUnreachable { waited, stderr } => {
                write!(
                    f,
                    "`{}` could not reach the Docker engine, which stayed unreachable for {}s (UPGRADERD_ENGINE_WAIT); \
                     stderr:\n{}",
                    self.command,
                    waited.as_secs(),
                    tail_lines(stderr, 8)
                )
            }
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
pub(crate) type LineSink = Arc<dyn Fn(&str, &str) + Send + Sync>;

/// Spawns commands; the only place that decides whether `--dry-run` runs them.
#[derive(Clone, Default)]
pub(crate) struct Runner {
    dry_run: bool,
    sink: Option<LineSink>,
    /// Dry-run: the command lines that would have been run.
    planned: Arc<std::sync::Mutex<Vec<String>>>,
    /// Set when upgraderd is asked to stop; ends interruptible children.
    stop: Option<Arc<AtomicBool>>,
    /// How engine commands wait for an engine that cannot be reached; without it they fail at once.
    engine: Option<EngineWait>,
}

impl fmt::Debug for Runner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runner").field("dry_run", &self.dry_run).finish()
    }
}

impl Runner {
    pub(crate) fn new(dry_run: bool) -> Runner {
        Runner { dry_run, ..Runner::default() }
    }

    pub(crate) fn with_sink(mut self, sink: LineSink) -> Runner {
        self.sink = Some(sink);
        self
    }

    pub(crate) fn with_stop_flag(mut self, stop: Arc<AtomicBool>) -> Runner {
        self.stop = Some(stop);
        self
    }

    pub(crate) fn with_engine_wait(mut self, wait: EngineWait) -> Runner {
        self.engine = Some(wait);
        self
    }

    /// The same runner without its wait for the engine: for a command whose
    /// failure to reach the engine its caller answers itself.
    pub(crate) fn without_engine_wait(mut self) -> Runner {
        self.engine = None;
        self
    }

    pub(crate) fn dry_run(&self) -> bool {
        self.dry_run
    }

    /// How long this runner's commands have waited for the Docker engine so far.
    pub(crate) fn engine_away(&self) -> Duration {
        self.engine.as_ref().map(EngineWait::away).unwrap_or_default()
    }

    /// Whether the Docker engine stayed away past the wait's limit: what
    /// failed since is not the app's doing, and the attempt is left to be resumed.
    pub(crate) fn engine_gone(&self) -> bool {
        self.engine.as_ref().is_some_and(EngineWait::gone)
    }

    /// Adds a note to a dry run's plan (a step that is not a command, like a data restore).
    pub(crate) fn plan(&self, note: String) {
        if let Ok(mut planned) = self.planned.lock() {
            planned.push(note);
        }
    }

    /// The mutating command lines a dry run skipped, in order.
    pub(crate) fn planned(&self) -> Vec<String> {
        self.planned.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Runs the command; anything but exit code 0 is an error.
    pub(crate) fn run(&self, cmd: &Cmd) -> Result<Output, ProcessError> {
        Self::succeeded(cmd, self.output(cmd)?)
    }

    /// For `cmd` that ran elsewhere (started ahead) and ended as `first`:
    /// what [`Runner::run`] makes of it, an engine that could not be reached
    /// waited for and the command run again once it answers.
    pub(crate) fn run_after(&self, cmd: &Cmd, first: Output) -> Result<Output, ProcessError> {
        Self::succeeded(cmd, self.execute(cmd, Some(first))?)
    }

    /// Runs the command and returns how it ended, whatever the exit code.
    pub(crate) fn output(&self, cmd: &Cmd) -> Result<Output, ProcessError> {
        if self.dry_run && cmd.mutates {
            if let Ok(mut planned) = self.planned.lock() {
                planned.push(cmd.display());
            }
            return Ok(Output { stdout: Vec::new(), stderr: String::new(), ended: Ended::Code(0) });
        }
        self.execute(cmd, None)
    }

    /// Runs `cmd` (or takes `first` as its first run), waiting out an
    /// unreachable engine for an engine command and running it again.
    fn execute(&self, cmd: &Cmd, first: Option<Output>) -> Result<Output, ProcessError> {
        let sink = if cmd.stream { self.sink.clone() } else { None };
        let stop = self.stop.clone().filter(|_| cmd.interruptible);
        let execute = |cmd: &Cmd| child::execute(cmd, sink.clone(), stop.clone());
        let outcome = match (self.engine.as_ref().filter(|_| cmd.engine), first) {
            (Some(wait), None) => wait.run(cmd, &execute),
            (Some(wait), Some(first)) => wait.run_from(Ok(first), cmd, &execute),
            (None, None) => execute(cmd),
            (None, Some(first)) => Ok(first),
        };
        outcome.map_err(|failure| ProcessError { command: cmd.display(), failure })
    }

    /// Anything but exit code 0 is an error.
    fn succeeded(cmd: &Cmd, output: Output) -> Result<Output, ProcessError> {
        match output.ended.success() {
            true => Ok(output),
            false => Err(ProcessError { command: cmd.display(), failure: Failure::Ended(output) }),
        }
    }
}
