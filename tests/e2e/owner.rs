//! Which e2e run owns an engine resource, and whether that run is still
//! alive. Every container, volume, network and image a run creates carries its
//! marker `upgraderd-e2e-<pid>-<start>`: the pid and the process's start time
//! (clock ticks since boot, field 22 of `/proc/<pid>/stat`), so a pid the
//! kernel has since given to another process is not mistaken for the run.
//! A run removes only the leftovers of runs whose process is gone; two runs on
//! one engine leave each other alone. (Runs in different pid namespaces cannot
//! see each other's processes: they must not share an engine.)

use std::fs;

/// What every marker starts with.
pub const MARKER: &str = "upgraderd-e2e-";

/// One test process: its pid and when it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunId {
    pub pid: u32,
    pub started: u64,
}

/// The owner a marker names: a run, or (markers of older harnesses) a bare pid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    Run(RunId),
    Pid(u32),
}

impl RunId {
    /// This test process.
    pub fn current() -> RunId {
        let pid = std::process::id();
        RunId::of(pid).unwrap_or_else(|| panic!("cannot read the start time of this process in /proc/{pid}/stat"))
    }

    /// The process with this pid as it is now, `None` when there is none.
    pub fn of(pid: u32) -> Option<RunId> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some(RunId { pid, started: start_time(&stat)? })
    }

    /// `upgraderd-e2e-<pid>-<start>`, the prefix of everything this run names.
    pub fn marker(&self) -> String {
        format!("{MARKER}{}-{}", self.pid, self.started)
    }
}

/// Field 22 of a `/proc/<pid>/stat` line. The command name (field 2) may hold
/// spaces and parentheses, so fields are counted from its closing one.
pub fn start_time(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name come fields 3, 4, …: field 22 is the 20th.
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// The first owner named in a resource's name or labels.
pub fn owner_in(text: &str) -> Option<Owner> {
    text.match_indices(MARKER).find_map(|(at, _)| parse_owner(&text[at + MARKER.len()..]))
}

/// `<pid>-<start>` followed by a non-digit, or an older `<pid>-<name>`.
fn parse_owner(rest: &str) -> Option<Owner> {
    let digits = |s: &str| s.len() - s.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let pid_len = digits(rest);
    let pid: u32 = rest[..pid_len].parse().ok()?;
    let after_pid = &rest[pid_len..];
    let Some(after_dash) = after_pid.strip_prefix('-') else { return Some(Owner::Pid(pid)) };
    let start_len = digits(after_dash);
    match after_dash[..start_len].parse() {
        Ok(started) => Some(Owner::Run(RunId { pid, started })),
        Err(_) => Some(Owner::Pid(pid)),
    }
}

/// Whether the owner's process still runs (the same process, not a reused pid).
pub fn is_alive(owner: Owner) -> bool {
    match owner {
        Owner::Run(run) => RunId::of(run.pid) == Some(run),
        Owner::Pid(pid) => RunId::of(pid).is_some(),
    }
}

/// Whether a resource is a leftover to remove: marked by another run whose process is gone.
pub fn is_leftover(text: &str, me: RunId) -> bool {
    match owner_in(text) {
        None => false,
        Some(Owner::Run(run)) if run == me => false,
        Some(owner) => !is_alive(owner),
    }
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// A child that lives until its stdin closes.
    fn live_child() -> std::process::Child {
        Command::new("cat").stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap()
    }

    #[test]
    fn the_start_time_is_field_22_even_when_the_name_has_spaces_and_parentheses() {
        let stat = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 10000 200";
        assert_eq!(start_time(stat), Some(987654));
        assert_eq!(RunId::current().pid, std::process::id());
    }

    #[test]
    fn markers_are_found_in_names_and_label_lists() {
        let me = RunId { pid: 12, started: 555 };
        assert_eq!(owner_in(&format!("{}-happy_appdata", me.marker())), Some(Owner::Run(me)));
        assert_eq!(
            owner_in(&format!("c0ffee upgraderd-e2e={m},com.docker.compose.project={m}-happy", m = me.marker())),
            Some(Owner::Run(me))
        );
        assert_eq!(
            owner_in("127.0.0.1:5000/upgraderd-e2e-12-5551-tags/app:latest"),
            Some(Owner::Run(RunId { pid: 12, started: 5551 }))
        );
        assert_eq!(owner_in("upgraderd-e2e-77-happy_appdata"), Some(Owner::Pid(77)), "an older harness's marker");
        assert_eq!(owner_in("/tmp/upgraderd-e2e-registry-x1"), None);
        assert_eq!(owner_in("postgres:16"), None);
    }

    #[test]
    fn a_resource_of_a_live_run_is_kept_and_one_of_a_dead_run_is_removed() {
        let me = RunId::current();
        let mut child = live_child();
        let other = RunId::of(child.id()).expect("the child runs");
        let name = format!("{}-happy_appdata", other.marker());
        assert!(!is_leftover(&name, me), "{name}: its run is alive");
        assert!(!is_leftover(&format!("{}-happy", me.marker()), me), "this run's own");

        drop(child.stdin.take());
        child.wait().unwrap();
        assert!(is_leftover(&name, me), "{name}: its run is gone");
        assert!(is_leftover(&format!("{MARKER}{}-happy", child.id()), me), "an older harness's, its pid gone");
    }

    #[test]
    fn a_reused_pid_is_not_mistaken_for_the_run_that_had_it() {
        let me = RunId::current();
        let mut child = live_child();
        let now = RunId::of(child.id()).unwrap();
        // The same pid, started at another time: an earlier process that had this pid.
        let earlier = RunId { pid: now.pid, started: now.started - 1 };
        assert!(is_leftover(&format!("{}-twice", earlier.marker()), me));
        assert!(!is_leftover(&format!("{}-twice", now.marker()), me));
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    #[test]
    fn things_without_a_marker_are_never_touched() {
        assert!(!is_leftover("registry:2 a1b2c3", RunId::current()));
    }
}
