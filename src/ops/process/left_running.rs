//! Commands a killed upgrader left running, found and ended before recovery
//! changes anything.
//!
//! A child dies with upgraderd (`PR_SET_PDEATHSIG`), but not the processes it
//! started itself: `docker compose` runs the compose plugin as a child of the
//! docker CLI, and when the CLI dies the plugin cancels and winds down on its
//! own for a moment, still sending the engine stops and removals. A recovery
//! that runs its own `up` meanwhile races it. Every child therefore carries in
//! its environment which upgrader started it ([`UPGRADER_VAR`]: pid and start
//! time), passed on to everything it starts; recovery looks for processes
//! whose upgrader is gone, waits a while for them to end, then kills them.

use std::fs;
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// The variable every child carries: `<pid>:<start time>` of the upgrader that started it.
pub(crate) const UPGRADER_VAR: &str = "UPGRADERD_UPGRADER";

/// How often a left process is looked at while it winds down.
const POLL: Duration = Duration::from_millis(50);

/// This upgrader as its children name it.
pub(crate) fn this_upgrader() -> &'static str {
    static ME: OnceLock<String> = OnceLock::new();
    ME.get_or_init(|| {
        let pid = std::process::id() as i32;
        format!("{pid}:{}", Stat::of(pid).map(|s| s.start_time).unwrap_or(0))
    })
}

/// A process left running by an upgrader that is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeftRunning {
    pub pid: i32,
    /// The name of its program (not its arguments: a release step's shell text may hold a secret).
    pub program: String,
    /// Its start time, so a pid reused meanwhile is never signalled.
    start_time: u64,
}

/// Every process this user may see that the upgrader with pid `upgrader`
/// (named in its environment) started and left running: that upgrader is
/// gone. Only its own: another deployment's upgrader, killed too, is put right
/// by its own recovery.
pub(crate) fn find(upgrader: i32) -> Vec<LeftRunning> {
    let Ok(entries) = fs::read_dir("/proc") else { return Vec::new() };
    let mut left: Vec<LeftRunning> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| left_by_a_gone_upgrader(pid, upgrader))
        .collect();
    left.sort_by_key(|l| l.pid);
    left
}

/// Waits up to `patience` for `left` to end, then kills those still running
/// (SIGKILL: their upgrader is gone, and a wind-down that takes this long is
/// stuck); those it killed. The others ended by themselves.
pub(crate) fn end(left: &[LeftRunning], patience: Duration) -> Vec<LeftRunning> {
    let deadline = Instant::now() + patience;
    while left.iter().any(LeftRunning::runs) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    let killed: Vec<LeftRunning> = left.iter().filter(|process| process.runs()).cloned().collect();
    for process in &killed {
        process.kill();
    }
    // A killed process is gone (or a zombie: its new parent may reap nothing) at once, barring D state.
    let deadline = Instant::now() + Duration::from_secs(2);
    while killed.iter().any(LeftRunning::runs) && Instant::now() < deadline {
        thread::sleep(POLL);
    }
    killed
}

impl LeftRunning {
    /// Whether this very process still runs (a zombie has ended: it only waits to be reaped).
    fn runs(&self) -> bool {
        Stat::of(self.pid).is_some_and(|s| s.start_time == self.start_time && s.lives())
    }

    fn kill(&self) {
        if self.runs() {
            // SAFETY: kill(2) with a pid checked to be this process a moment ago.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

/// `pid` when its environment names the upgrader with pid `wanted`, and that one is gone.
fn left_by_a_gone_upgrader(pid: i32, wanted: i32) -> Option<LeftRunning> {
    let environ = fs::read(format!("/proc/{pid}/environ")).ok()?;
    let upgrader = upgrader_in(&environ)?;
    let named = upgrader.split_once(':').and_then(|(pid, _)| pid.parse::<i32>().ok());
    if named != Some(wanted) || upgrader == this_upgrader() || upgrader_lives(&upgrader) {
        return None;
    }
    let stat = Stat::of(pid).filter(Stat::lives)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
    let program = String::from_utf8_lossy(argv0).rsplit('/').next().unwrap_or_default().to_string();
    Some(LeftRunning { pid, program, start_time: stat.start_time })
}

/// The value of [`UPGRADER_VAR`] in a `/proc/<pid>/environ` image.
fn upgrader_in(environ: &[u8]) -> Option<String> {
    let prefix = format!("{UPGRADER_VAR}=");
    environ
        .split(|b| *b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| String::from_utf8_lossy(value).into_owned())
}

/// Whether the upgrader `<pid>:<start time>` still runs: the same pid started at the same time, not a zombie.
fn upgrader_lives(upgrader: &str) -> bool {
    let Some((pid, start_time)) = upgrader.split_once(':') else { return false };
    let (Ok(pid), Ok(start_time)) = (pid.parse::<i32>(), start_time.parse::<u64>()) else { return false };
    Stat::of(pid).is_some_and(|s| s.start_time == start_time && s.lives())
}

/// What `/proc/<pid>/stat` says of a process.
struct Stat {
    state: char,
    /// Clock ticks since boot (field 22): with the pid, names one process for good.
    start_time: u64,
}

impl Stat {
    fn of(pid: i32) -> Option<Stat> {
        parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
    }

    /// Not a zombie (`Z`) nor dead (`X`).
    fn lives(&self) -> bool {
        !matches!(self.state, 'Z' | 'X')
    }
}

/// Parses a `/proc/<pid>/stat` line. The name (field 2) is in parentheses and
/// may hold spaces and parentheses itself: the fields after it follow the last `)`.
fn parse_stat(line: &str) -> Option<Stat> {
    let after_name = &line[line.rfind(')')? + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // After the name come fields 3 (state), 4, …: field 22 is the 20th.
    let state = fields.first()?.chars().next()?;
    let start_time = fields.get(19)?.parse().ok()?;
    Some(Stat { state, start_time })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn the_start_time_is_field_22_even_when_the_name_has_spaces_and_parentheses() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_stat(line).unwrap();
        assert_eq!((stat.state, stat.start_time), ('S', 987654));
        assert!(!parse_stat("4242 (z) Z 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 5").unwrap().lives());
        assert!(parse_stat("4242 (truncated) S 1").is_none());
    }

    #[test]
    fn the_upgrader_is_read_from_the_environment_image() {
        let environ = b"PATH=/bin\0UPGRADERD_UPGRADER=12:345\0HOME=/\0";
        assert_eq!(upgrader_in(environ).as_deref(), Some("12:345"));
        assert_eq!(upgrader_in(b"UPGRADERD_UPGRADERX=1:2\0"), None);
        assert_eq!(upgrader_in(b""), None);
    }

    #[test]
    fn this_upgrader_lives_and_one_with_another_start_time_or_no_pid_does_not() {
        assert!(upgrader_lives(this_upgrader()));
        let pid = std::process::id();
        assert!(!upgrader_lives(&format!("{pid}:1")));
        assert!(!upgrader_lives("0:1"));
        assert!(!upgrader_lives("not-a-pid"));
    }

    /// What `find(upgrader)` returns once it holds `pid`: a child shows its own
    /// environment only once it has exec'd (until then, its parent's).
    fn find_once_started(upgrader: i32, pid: i32) -> Vec<LeftRunning> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let found = find(upgrader);
            if found.iter().any(|l| l.pid == pid) || Instant::now() > deadline {
                return found;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A process naming a gone upgrader is found; one naming this upgrader or
    /// another upgrader is not; the found one is killed when it outlives the
    /// patience given.
    #[test]
    fn a_process_of_a_gone_upgrader_is_found_and_killed_past_the_patience() {
        let spawn = |upgrader: &str| {
            Command::new("sleep").arg("600").env(UPGRADER_VAR, upgrader).stdin(Stdio::null()).spawn().unwrap()
        };
        let me = std::process::id() as i32;
        let mut gone = spawn(&format!("{me}:1"));
        let ours = spawn(this_upgrader());
        let elses = spawn("1:1");
        let gone_pid = gone.id() as i32;
        let found = find_once_started(me, gone_pid);
        assert!(found.iter().any(|l| l.pid == gone_pid && l.program == "sleep"), "{found:?}");
        assert!(!found.iter().any(|l| l.pid == ours.id() as i32), "{found:?}");
        assert!(!found.iter().any(|l| l.pid == elses.id() as i32), "another upgrader's: {found:?}");
        assert!(find(1).iter().any(|l| l.pid == elses.id() as i32));

        let mine: Vec<LeftRunning> = found.into_iter().filter(|l| l.pid == gone_pid).collect();
        let killed = end(&mine, Duration::from_millis(100));
        assert_eq!(killed, mine, "every one left was killed, none ended by itself");
        assert!(gone.wait().unwrap().code().is_none(), "killed by a signal");
        for mut child in [ours, elses] {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }

    #[test]
    fn a_process_that_ends_within_the_patience_is_not_killed() {
        let mut child =
            Command::new("sleep").arg("1").env(UPGRADER_VAR, format!("{}:1", std::process::id())).spawn().unwrap();
        let pid = child.id() as i32;
        let left: Vec<LeftRunning> =
            find_once_started(std::process::id() as i32, pid).into_iter().filter(|l| l.pid == pid).collect();
        assert_eq!(left.len(), 1);
        // Reaped on a thread, as a parent would: a zombie has ended too, but this shows the real case.
        let reaper = thread::spawn(move || child.wait().unwrap());
        let killed = end(&left, Duration::from_secs(30));
        assert!(killed.is_empty(), "it ended by itself: {killed:?}");
        assert!(reaper.join().unwrap().success());
    }
}
