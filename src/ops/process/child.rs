//! Running one child to its end: spawn it in its own process group, start the
//! threads that feed its stdin, read its pipes and wait for its exit, then
//! drive the [`Machine`] with their events, the clock and the stop flag,
//! sending the signals it asks for.

use std::io::{self, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::left_running::{this_upgrader, UPGRADER_VAR};
use super::phase::{Machine, Signal};
use super::reader::{spawn_reader, Event, Keep, Shared};
use super::{Cmd, Failure, LineSink, Output, STDERR_TAIL_BYTES, STDOUT_MAX_BYTES};

/// How long to wait for a dead child's pipes to close (a grandchild may hold them).
const PIPE_LINGER: Duration = Duration::from_secs(2);
/// How often an interruptible child's stop flag is looked at.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How long to wait when nothing is due: only an event can move the run on.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

/// Runs `cmd` to its end; `sink` receives its lines, `stop` (when set) ends it early.
pub(super) fn execute(cmd: &Cmd, sink: Option<LineSink>, stop: Option<Arc<AtomicBool>>) -> Result<Output, Failure> {
    let started = Instant::now();
    let child = spawn(cmd)?;
    let pid = child.id() as libc::pid_t;
    let (events, stdout, stderr) = watch(child, cmd, sink.is_some());

    let mut machine = Machine::start(started, cmd.timeout, cmd.grace, PIPE_LINGER);
    let label = Path::new(&cmd.program).file_name().unwrap_or_default().to_string_lossy().into_owned();
    while !machine.is_done() {
        if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) {
            send(pid, machine.stop_requested(Instant::now()));
        }
        let polls_stop = stop.is_some() && machine.heeds_stop();
        match events.recv_timeout(wait_time(&machine, polls_stop)) {
            Ok(Event::Line(line)) => {
                if let Some(sink) = &sink {
                    sink(&label, &line);
                }
            }
            Ok(Event::Exited(status)) => machine.exited(status, Instant::now()),
            Ok(Event::Closed) => machine.pipe_closed(),
            Err(RecvTimeoutError::Timeout) => send(pid, machine.tick(Instant::now())),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    let Some(exit) = machine.exit() else {
        return Err(Failure::Spawn(io::Error::other("lost track of the child process")));
    };
    let stdout = stdout.take();
    if stdout.overflow {
        return Err(Failure::StdoutTooLarge);
    }
    let stderr = stderr.take().bytes;
    let stderr = String::from_utf8_lossy(&stderr[stderr.len().saturating_sub(STDERR_TAIL_BYTES)..]).into_owned();
    Ok(Output { stdout: stdout.bytes, stderr, ended: exit.ended() })
}

fn spawn(cmd: &Cmd) -> Result<Child, Failure> {
    let mut command = Command::new(&cmd.program);
    command
        .args(&cmd.args)
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        // Passed on to what it starts: recovery finds what a killed upgrader left running.
        .env(UPGRADER_VAR, this_upgrader())
        .stdin(if cmd.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group, so a timeout reaches grandchildren (compose runs docker).
        .process_group(0);
    // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            // Dies with the thread that spawned it, which waits for it. What it starts
            // itself does not: recovery finds that by `UPGRADER_VAR` (left_running).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    if let Some(dir) = &cmd.cwd {
        command.current_dir(dir);
    }
    command.spawn().map_err(Failure::Spawn)
}

/// Starts the threads around a running child: stdin writer, pipe readers and
/// the waiter. Returns their events and what the readers keep.
fn watch(mut child: Child, cmd: &Cmd, stream_lines: bool) -> (Receiver<Event>, Shared, Shared) {
    let (tx, rx) = mpsc::channel::<Event>();
    if let (Some(bytes), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
        thread::spawn(move || {
            let _ = stdin.write_all(&bytes);
        });
    }
    let stdout = Shared::default();
    let stderr = Shared::default();
    let mut open_pipes = 0;
    if let Some(pipe) = child.stdout.take() {
        spawn_reader(pipe, tx.clone(), stream_lines, stdout.clone(), Keep::Head(STDOUT_MAX_BYTES));
        open_pipes += 1;
    }
    if let Some(pipe) = child.stderr.take() {
        spawn_reader(pipe, tx.clone(), stream_lines, stderr.clone(), Keep::Tail(STDERR_TAIL_BYTES));
        open_pipes += 1;
    }
    // Both are piped by `spawn`; a missing one counts as already closed.
    for _ in open_pipes..2 {
        let _ = tx.send(Event::Closed);
    }
    thread::spawn(move || {
        if let Ok(status) = child.wait() {
            let _ = tx.send(Event::Exited(status));
        }
    });
    (rx, stdout, stderr)
}

/// How long to wait for the next event: until the next deadline, and never
/// longer than the stop poll while a stop request would still matter.
fn wait_time(machine: &Machine, polls_stop: bool) -> Duration {
    let wait = machine.next_deadline().map_or(IDLE_WAIT, |due| due.saturating_duration_since(Instant::now()));
    if polls_stop {
        wait.min(STOP_POLL)
    } else {
        wait
    }
}

fn send(pid: libc::pid_t, signal: Option<Signal>) {
    let Some(signal) = signal else { return };
    // SAFETY: kill(2) with a negative pid signals the process group the child leads.
    unsafe {
        libc::kill(-pid, signal.number());
    }
}
