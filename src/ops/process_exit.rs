//! Watching a container's processes end, from the host, ahead of the engine.
//!
//! `docker stop` returns once the engine has torn the container down (its
//! task deleted, its network and mounts released): about a tenth of a second
//! after the last process ended. What holds data still is the end of the
//! processes, not the teardown. A container's main process is the init of
//! its own PID namespace, and the kernel ends every other process of that
//! namespace before the init's end is reported: once the main process has
//! ended, nothing of the container runs.
//!
//! The main process is watched through a pidfd (the pid `State.Pid` names,
//! pinned so a reused pid is never mistaken for it), and proven to be the
//! container's before it is trusted: its cgroup names the container's id and
//! it is pid 1 of a namespace of its own. Where that cannot be proven
//! (upgraderd in a container of its own, an engine on another host, a
//! container sharing the host's PID namespace) there is no watch, and the
//! caller waits for `docker stop` as before.

use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// The end of one container's processes, watched.
pub(crate) struct ProcessExit {
    pidfd: OwnedFd,
}

impl ProcessExit {
    /// A watch on the main process `pid` of the running container `id` (its
    /// full id); `None` when it cannot be proven to be that container's here.
    pub(crate) fn of_container(id: &str, pid: i64) -> Option<ProcessExit> {
        let pid = libc::pid_t::try_from(pid).ok().filter(|pid| *pid > 0)?;
        if id.len() < 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: a descriptor pidfd_open just returned, owned by nothing else.
        let watch = ProcessExit { pidfd: unsafe { OwnedFd::from_raw_fd(fd) } };
        let proven = in_cgroup_of(pid, id) && init_of_own_namespace(pid);
        // Read while it still ran: what /proc said was of the pinned process, not of a pid reused since.
        (proven && !watch.ended(Duration::ZERO)).then_some(watch)
    }

    /// Waits up to `within` for the process to end; whether it has.
    pub(crate) fn ended(&self, within: Duration) -> bool {
        let mut poll = libc::pollfd { fd: self.pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let millis = libc::c_int::try_from(within.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one pollfd, valid for the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        ready > 0 && poll.revents & libc::POLLIN != 0
    }
}

/// Whether `/proc/<pid>/cgroup` names the container `id` (`/docker/<id>`,
/// `docker-<id>.scope`, or a cgroup parent's `…/<id>`).
fn in_cgroup_of(pid: libc::pid_t, id: &str) -> bool {
    fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|text| names_container(&text, id))
}

fn names_container(cgroup: &str, id: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .any(|path| path.rsplit('/').next().is_some_and(|leaf| leaf == id || leaf == format!("docker-{id}.scope")))
}

/// Whether `pid` is pid 1 of a PID namespace below this one (`NSpid: <pid> 1`).
fn init_of_own_namespace(pid: libc::pid_t) -> bool {
    fs::read_to_string(format!("/proc/{pid}/status")).is_ok_and(|text| is_namespace_init(&text))
}

fn is_namespace_init(status: &str) -> bool {
    let Some(line) = status.lines().find_map(|l| l.strip_prefix("NSpid:")) else { return false };
    let ids: Vec<&str> = line.split_whitespace().collect();
    ids.len() >= 2 && ids.last() == Some(&"1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    const ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn a_cgroup_names_the_container_under_either_driver_or_a_parent() {
        assert!(names_container(&format!("0::/docker/{ID}\n"), ID));
        assert!(names_container(&format!("0::/system.slice/docker-{ID}.scope\n"), ID));
        assert!(names_container(&format!("12:pids:/my-parent/{ID}\n0::/my-parent/{ID}\n"), ID));
        assert!(!names_container("0::/user.slice/session-1.scope\n", ID));
        assert!(!names_container(&format!("0::/docker/{ID}/child\n"), ID), "a nested cgroup is not the container's");
        assert!(!names_container(&format!("0::/docker/{}\n", &ID[..12]), ID));
    }

    #[test]
    fn only_pid_1_of_a_namespace_of_its_own_is_an_init() {
        assert!(is_namespace_init("Name:\tapp\nNSpid:\t4242\t1\n"));
        assert!(is_namespace_init("NSpid:\t4242\t77\t1\n"));
        assert!(!is_namespace_init("NSpid:\t4242\n"), "the host's namespace: `pid: host`");
        assert!(!is_namespace_init("NSpid:\t4242\t15\n"), "a process of the container, not its init");
        assert!(!is_namespace_init("Name:\tapp\n"));
    }

    #[test]
    fn a_process_that_is_no_containers_init_gets_no_watch() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        assert!(ProcessExit::of_container(ID, i64::from(child.id())).is_none());
        assert!(ProcessExit::of_container(ID, 0).is_none());
        assert!(ProcessExit::of_container("not-an-id", i64::from(child.id())).is_none());
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// The watch itself, on a process proven by hand: the pidfd reports its end, not before.
    #[test]
    fn a_watched_process_is_seen_to_end() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        // SAFETY: as in `of_container`.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        let watch = ProcessExit { pidfd: unsafe { OwnedFd::from_raw_fd(fd as i32) } };
        assert!(!watch.ended(Duration::from_millis(50)));
        child.kill().unwrap();
        assert!(watch.ended(Duration::from_secs(10)));
        child.wait().unwrap();
    }
}
