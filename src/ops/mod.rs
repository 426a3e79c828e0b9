//! Thin wrappers over the outside world (child processes, docker, compose,
//! git, HTTP, notifications, inotify, systemd, Swarm). No policy lives here: callers
//! decide what a result means.

pub mod compose;
pub mod compose_file;
pub mod docker;
pub mod git;
pub mod health;
pub mod hooks;
pub mod inotify;
pub mod notify;
pub mod process;
pub mod swarm;
pub mod systemd;
pub mod versions;
