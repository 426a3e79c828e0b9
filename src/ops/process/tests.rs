//! Runs real children (`sh`) through [`Runner`]: exit codes, signals,
//! timeouts, stop requests, output capture and streaming.

use super::*;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Instant;

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
    let flag = stop.clone();
    // The flag is set once the child is known to run: when its first line arrives.
    let runner = Runner::default()
        .with_stop_flag(stop.clone())
        .with_sink(Arc::new(move |_, _| flag.store(true, Ordering::SeqCst)));
    let started = Instant::now();
    let err = runner.run(&sh("echo running; sleep 30").streamed().interruptible()).unwrap_err();
    assert_eq!(err.output().unwrap().ended, Ended::Interrupted);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(err.to_string().contains("asked to stop"), "{err}");
    // A command that is not interruptible runs to its end even with the flag set.
    assert!(stop.load(Ordering::SeqCst));
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
    let runner = Runner::default().with_sink(Arc::new(move |_, line| sink_seen.lock().unwrap().push(line.to_string())));
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
