//! The integration tests that need no Docker engine, in one binary: each
//! module was once a test binary of its own. They run the real `upgraderd`
//! with fake `docker`, `compose` and `git` on its PATH (`tests/common/`), or
//! call the library through its hidden `upgraderd::testing` module.
//!
//! `cargo test --test cli` runs them all; `cargo test --test cli watch::`
//! runs one module. The end-to-end tests against a real engine are the other
//! binary, `tests/e2e/`.

#[path = "../common/mod.rs"]
mod common;

mod attacks;
mod backup;
mod check_version;
mod cli;
mod config_file;
mod daemon;
mod docs;
mod examples;
mod fake_docker;
mod fake_git;
mod generated;
mod harness;
mod install;
mod metrics;
mod notify;
mod watch;
mod watchdog_protocol;
mod window;
