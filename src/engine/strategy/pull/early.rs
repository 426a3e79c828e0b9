//! Compose started ahead of the switch. Compose v1 is a Python program that
//! spends a third of a second starting before its first request; after the
//! backup's final pass, with the app stopped, that third is outage. So
//! compose's `up` is started as the backup begins, with its engine
//! connections held at a [`SocketGate`] in the state directory, and released
//! when the switch begins: by then it has read its files and waits only on
//! the engine.
//!
//! Nothing held reaches the engine unless released; a hold that ends any
//! other way (a failed or abandoned backup, a stop request, upgraderd killed:
//! its children die with it) resets the held connections. A compose held
//! longer than its client waits for an engine is started anew, and whatever
//! goes wrong with the early start leaves the switch to run compose as
//! before: the gate saves time, it never decides an outcome.

use std::time::Duration;

use anyhow::{Context, Result};

use super::Pull;
use crate::engine::journal::Journal;
use crate::engine::pin;
use crate::ops::compose::HeldUp;
use crate::ops::process::is_unreachable;
use crate::ops::socket_gate::{local_engine, SocketGate};

/// The gate's socket, in the state directory.
pub(super) const GATE_SOCKET: &str = "compose-gate.sock";

/// How long a compose change may be held: well inside compose v1's HTTP
/// timeout (`COMPOSE_HTTP_TIMEOUT`, 60 s unless set), which runs from the
/// request; compose v2 sets none. A backup that outlasts it has compose started anew.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

impl Pull {
    /// Makes sure a compose `up` is held for the switch, fresh enough to
    /// outlast the rest of the backup: started now, or again when the one
    /// held has used up half its time. Not in a dry run, not with release
    /// steps (which run between the pass and the `up`), only for a local
    /// engine socket and a compose command that names no engine of its own.
    pub(super) fn hold_up_early(&mut self, journal: &mut Journal) {
        let Some(dir) = self.gate_dir.clone() else { return };
        if self.docker.runner().dry_run() || !self.release_steps.is_empty() || self.compose.names_an_engine() {
            return;
        }
        if let Some(held) = &self.held_up {
            if held.held_for() < self.hold_limit() / 2 {
                return;
            }
            journal.log(&format!(
                "Compose held {:.1}s is started again for the final pass",
                held.held_for().as_secs_f64()
            ));
            self.held_up = None;
        }
        // The files compose reads as it starts: a changed pin is the switch's to report.
        if pin::still_written(&self.edits).is_err() {
            return;
        }
        let engine = match local_engine() {
            Ok(engine) => engine,
            Err(why) => return journal.log(&format!("Compose starts at the switch: {why}")),
        };
        let held = SocketGate::hold(&dir.join(GATE_SOCKET), &engine)
            .and_then(|gate| self.compose.up_held(&self.project, gate));
        match held {
            Ok(held) => {
                journal.log(&format!("$ {} (started ahead, held from the engine until the switch)", held.line()));
                self.held_up = Some(held);
            }
            Err(e) => journal.log(&format!("Compose starts at the switch: it could not be started ahead ({e})")),
        }
    }

    /// Waits until the held compose is at the gate with its first request,
    /// so that its own start is over before the app stops. The app serves
    /// meanwhile: the upgrade takes longer by it, the outage does not.
    pub(super) fn wait_for_held_up(&mut self, journal: &mut Journal) {
        let Some(held) = &self.held_up else { return };
        let waited = std::time::Instant::now();
        let ready = held.wait_at_gate(self.hold_limit() / 4);
        let waited = waited.elapsed().as_secs_f64();
        if waited >= 0.05 || !ready {
            journal.log(&match ready {
                true => format!("Waited {waited:.2}s for compose to be at the gate before stopping the app"),
                false => format!("Compose is not at the gate after {waited:.2}s; the app is stopped anyway"),
            });
        }
    }

    /// Lets the held `up` reach the engine and waits for it; runs a plain
    /// `up` instead when it was held too long or never reached the engine.
    pub(super) fn release_up(&mut self, held: HeldUp, journal: &mut Journal) -> Result<()> {
        let held_for = held.held_for();
        if held_for > self.hold_limit() {
            drop(held);
            journal.log(&format!(
                "Compose was held {:.1}s, longer than it waits for the engine; started again",
                held_for.as_secs_f64()
            ));
            return self.up(journal);
        }
        let released = held.release();
        // Logged after: each line is a journal write, and this one need not fall in the outage.
        journal.log(&format!("Released the compose started {:.2}s before the switch", held_for.as_secs_f64()));
        match released.ran {
            Ok(_) => Ok(()),
            Err(e) if !released.reached_engine || e.output().is_some_and(|o| is_unreachable(&o.stderr)) => {
                journal.log(&format!("Compose started ahead did not reach the engine ({e}); running it again"));
                self.up(journal)
            }
            Err(e) => Err(anyhow::Error::new(e)).context("recreating the service"),
        }
    }

    /// Recreates the moved services with what the files and tags now say.
    pub(super) fn up(&self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.compose.up(&self.project)).context("recreating the service")
    }

    fn hold_limit(&self) -> Duration {
        hold_limit(std::env::var("COMPOSE_HTTP_TIMEOUT").ok().as_deref())
    }
}

/// The hold limit under a `COMPOSE_HTTP_TIMEOUT` (seconds): half of a timeout set below 20 s.
fn hold_limit(http_timeout: Option<&str>) -> Duration {
    let timeout = http_timeout.and_then(|t| t.trim().parse::<u64>().ok()).map(Duration::from_secs);
    match timeout {
        Some(timeout) => HOLD_LIMIT.min(timeout / 2),
        None => HOLD_LIMIT,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compose_is_held_at_most_half_its_http_timeout() {
        assert_eq!(hold_limit(None), HOLD_LIMIT);
        assert_eq!(hold_limit(Some("120")), HOLD_LIMIT);
        assert_eq!(hold_limit(Some("8")), Duration::from_secs(4));
        assert_eq!(hold_limit(Some("soon")), HOLD_LIMIT);
    }
}
