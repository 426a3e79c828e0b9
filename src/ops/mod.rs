//! Thin wrappers over the outside world (child processes, docker, compose,
//! git, HTTP, the filesystem's free space). No policy lives here: callers
//! decide what a result means.

pub mod compose;
pub mod disk;
pub mod docker;
pub mod git;
pub mod health;
pub mod hooks;
pub mod inotify;
pub mod notify;
pub mod process;
pub mod systemd;
pub mod versions;
