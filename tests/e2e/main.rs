//! End-to-end upgrades against the real Docker engine: a local registry on
//! 127.0.0.1 (Debian's `docker-registry`), test images built FROM scratch
//! around `examples/testapp`, compose projects, and the real binary. What goes
//! through compose runs under compose v1 and v2 ([`compose`]; each such test
//! is `NAME::compose_v1` and `NAME::compose_v2`), the rest under v1.
//!
//! Without an engine these tests print SKIP and pass, unless
//! `UPGRADERD_E2E_REQUIRED=1` (CI), which makes a missing engine (or compose
//! v2, from `tests/support/compose-v2.sh`) a failure.
//! Everything they create carries the run's marker `upgraderd-e2e-<pid>-<start>`
//! ([`owner`]); leftovers of runs whose process is gone are removed first,
//! other live runs' resources are left alone, and a watcher removes this run's
//! when it exits.
//! The images are built once per test binary ([`world::world`]) and shared by
//! every scenario.

#[path = "../common/mod.rs"]
mod common;

mod apps;
mod compose;
mod database;
mod engine_app;
mod engine_loss;
mod fleet;
mod hardening;
mod kill;
mod meshmonitor;
mod multinode;
mod opentrace;
mod owner;
mod pinned;
mod private_engine;
mod pull;
mod rebuild;
mod scenario;
mod servers;
mod sidecar;
mod stack;
mod stack_data;
mod swarm;
mod world;
