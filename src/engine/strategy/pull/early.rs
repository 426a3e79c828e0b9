//! Compose v1 started ahead of the switch. Compose v1 is a Python program that
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

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, ensure, Context, Result};

use super::Pull;
use crate::config::EnvFile;
use crate::engine::journal::Journal;
use crate::engine::pin;
use crate::engine::strategy::run_up;
use crate::ops::compose::HeldUp;
use crate::ops::process::Ended;
use crate::ops::socket_gate::{self, local_engine, SocketGate};

/// The gate's directory, in the state directory.
pub(crate) const GATE_DIR: &str = "compose-gate";

/// How long a compose change may be held: well inside compose v1's HTTP
/// timeout (`COMPOSE_HTTP_TIMEOUT`, 60 s unless set), which runs from the
/// request; compose v2 sets none. A backup that outlasts it has compose started anew.
const HOLD_LIMIT: Duration = Duration::from_secs(10);

/// Below this a hold is not worth it: compose's own start takes a good part of it.
const SHORTEST_HOLD: Duration = Duration::from_secs(2);

impl Pull {
    /// Makes sure a compose `up` is held for the switch, fresh enough to
    /// outlast the rest of the backup: started now, or again when the one
    /// held has used up half its time. Not in a dry run, not with release
    /// steps (which run between the pass and the `up`), and only once it is
    /// proven that compose goes through the gate and the gate to upgraderd's engine.
    pub(super) fn hold_up_early(&mut self, journal: &mut Journal) {
        let Some(dir) = self.gate_dir.clone() else { return };
        if self.docker.runner().dry_run() || !self.release_steps.is_empty() || self.gate_refused {
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
        match self.start_held(&dir.join(GATE_DIR)) {
            Ok(held) => {
                journal.log(&format!("$ {} (started ahead, held from the engine until the switch)", held.line()));
                self.held_up = Some(held);
            }
            Err(why) => {
                self.gate_refused = true;
                journal.log(&format!("Compose starts at the switch: {why:#}"));
            }
        }
    }

    /// A held `up` behind a new gate in `dir`, once the gate leads to the
    /// engine upgraderd's docker commands reach and compose is seen to come through it.
    fn start_held(&self, dir: &Path) -> Result<HeldUp> {
        // v2 starts in tens of milliseconds: nothing to gain. And held, compose acts the instant the switch
        // begins, so an upgrader killed at the switch cuts it off mid-recreate far more often; v2 does not
        // converge from that in one `up` (it removes the container it left under its temporary name while
        // it recreates under that same name, and fails), where v1 does.
        ensure!(!self.compose.speaks_v2(), "compose v2 starts in tens of milliseconds and is not held");
        ensure!(self.hold_limit() >= SHORTEST_HOLD, "COMPOSE_HTTP_TIMEOUT is too short to hold compose");
        ensure!(!self.compose.names_an_engine(), "the compose command names its engine itself (-H, --context)");
        let engine = local_engine().map_err(|why| anyhow!(why))?;
        let gate = SocketGate::hold(dir, &engine).with_context(|| format!("a gate in {}", dir.display()))?;
        let through = self.docker.engine_id(Some(&gate.docker_host())).context("asking the engine behind the gate")?;
        let direct = self.docker.engine_id(None).context("asking the engine upgraderd uses")?;
        ensure!(
            through == direct,
            "the docker CLI's settings (a context) lead to another engine than {}",
            engine.display()
        );
        let before = gate.connections();
        self.compose.ps_at(&self.project, &gate.docker_host()).context("`compose ps` through the gate")?;
        ensure!(
            gate.connections() > before,
            "the compose command does not talk to the engine DOCKER_HOST names (a wrapper that sets its own?)"
        );
        Ok(self.compose.up_held(&self.project, gate)?)
    }

    /// Waits until the held compose is at the gate with its first change,
    /// so that its own start and its reads are over before the app stops.
    /// The app serves meanwhile: the upgrade takes longer by it, the outage does not.
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

    /// Lets the held `up` reach the engine and waits for it. A compose held
    /// too long, or one that failed before any change reached the engine,
    /// gives way to a plain `up`; one that failed after is judged as a plain
    /// `up` would be (an engine that was away is waited for, and it runs again).
    pub(super) fn release_up(&mut self, held: HeldUp, journal: &mut Journal) -> Result<()> {
        let held_for = held.held_for();
        if held_for > self.hold_limit() {
            // Ended off the outage's path: nothing of it reached the engine, and the gate stays shut until it is gone.
            let _ = std::thread::Builder::new().name("compose-held-end".into()).spawn(move || drop(held));
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
            Ok(_) if released.ended_before_release => Err(anyhow!(
                "the compose started ahead ended before the switch without its changes passing the gate: it went \
                 around it; set UPGRADERD_EARLY_COMPOSE=false for this compose command"
            )),
            Ok(_) => Ok(()),
            Err(e) if !released.reached_engine => {
                journal.log(&format!("Compose started ahead did not reach the engine ({e}); running it again"));
                self.up(journal)
            }
            Err(e) => match e.output().cloned() {
                Some(mut output) => {
                    if output.ended == Ended::Signal(libc::SIGPIPE) {
                        // Its connection through the gate broke under it as it wrote: the engine closed the
                        // one the gate relayed, as an engine going away does. Waited out as that, below.
                        output
                            .stderr
                            .push_str("\nconnection aborted: the engine closed the connection the gate relayed");
                    }
                    let up = self.compose.up(&self.project);
                    self.docker.runner().run_after(&up, output).map(drop).context("recreating the service")
                }
                None => Err(anyhow::Error::new(e)).context("recreating the service"),
            },
        }
    }

    /// Recreates the moved services with what the files and tags now say.
    pub(super) fn up(&self, journal: &mut Journal) -> Result<()> {
        run_up(journal, self.docker.runner(), &self.compose.up(&self.project)).context("recreating the service")
    }

    /// The hold limit under the `COMPOSE_HTTP_TIMEOUT` compose will see: upgraderd's own, else the project's env file's.
    fn hold_limit(&self) -> Duration {
        let env_file = self.project.env_file.clone().unwrap_or_else(|| self.project.working_dir.join(".env"));
        let timeout = std::env::var("COMPOSE_HTTP_TIMEOUT").ok().or_else(|| {
            EnvFile::read(&env_file).ok()?.entries.get("COMPOSE_HTTP_TIMEOUT").map(|entry| entry.value.clone())
        });
        hold_limit(timeout.as_deref())
    }
}

/// Removes a gate's socket an upgrader that was killed left in `state_dir`.
pub(crate) fn remove_leftover_gate(state_dir: &Path) -> std::io::Result<()> {
    socket_gate::remove_leftover(&state_dir.join(GATE_DIR))
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
