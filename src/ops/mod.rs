//! Thin wrappers over the outside world (child processes, docker, compose,
//! git, HTTP, notifications, inotify, systemd, Swarm, a gate in front of the
//! engine's socket). No policy lives here: callers decide what a result means.

pub(crate) mod compose;
pub(crate) mod compose_file;
pub(crate) mod docker;
pub(crate) mod git;
pub(crate) mod health;
pub(crate) mod hooks;
pub(crate) mod inotify;
pub(crate) mod notify;
pub(crate) mod process;
pub(crate) mod process_exit;
pub(crate) mod socket_gate;
pub(crate) mod swarm;
pub(crate) mod systemd;
pub(crate) mod versions;
