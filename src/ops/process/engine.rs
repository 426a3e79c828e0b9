//! Waiting out a Docker engine that is briefly gone (a package upgrade
//! restarting `dockerd`, a host under pressure): a command that talks to the
//! engine and fails because it cannot reach it is not the app failing. The
//! runner waits for the engine, bounded, and runs the same command again; the
//! time spent waiting is counted so the health gate can leave it off its clock.
//! Past the limit the runner remembers that the engine is gone, so the attempt
//! is left interrupted (resumable) rather than ended on a guess.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{child, Cmd, Failure, Output};

/// What the Docker CLI and compose (v1 and v2) print when there is no engine
/// behind the socket: refused, missing, or reset while the daemon restarts.
const UNREACHABLE: &[&str] = &[
    "cannot connect to the docker daemon",
    "is the docker daemon running",
    "couldn't connect to docker daemon",
    "error while fetching server api version",
    "error during connect",
    "docker.sock: connect: no such file or directory",
    "docker.sock: connect: connection refused",
    "connection aborted",
];

/// How often the engine is asked whether it is back.
const PROBE_EVERY: Duration = Duration::from_secs(1);

/// How many outages one command waits out before its failure stands.
const MAX_OUTAGES: usize = 5;

/// Whether a failed engine command's stderr says the engine could not be reached.
pub(crate) fn is_unreachable(stderr: &str) -> bool {
    let lower = stderr.to_lowercase();
    UNREACHABLE.iter().any(|sign| lower.contains(sign))
}

/// Receives what the runner says about the engine while it waits.
pub(crate) type Announce = Arc<dyn Fn(&str) + Send + Sync>;

/// How a runner waits for the engine: the limit, the probe that answers once
/// the engine is back, where to say so, and what it has waited so far.
#[derive(Clone)]
pub(crate) struct EngineWait {
    limit: Duration,
    probe: Cmd,
    announce: Announce,
    /// Milliseconds spent waiting, over the runner's life.
    away_ms: Arc<AtomicU64>,
    /// Set once the engine stayed away past the limit.
    gone: Arc<AtomicBool>,
}

impl EngineWait {
    /// Waits up to `limit` per outage; `docker` is the CLI whose `version` answers when the engine is back.
    pub(crate) fn new(limit: Duration, docker: impl AsRef<std::ffi::OsStr>, announce: Announce) -> EngineWait {
        let probe = Cmd::new(docker).args(["version", "--format", "{{.Server.Version}}"]);
        EngineWait::with_probe(limit, probe, announce)
    }

    /// Waits up to `limit` per outage; the engine is back when `probe` succeeds.
    fn with_probe(limit: Duration, probe: Cmd, announce: Announce) -> EngineWait {
        let probe = probe.timeout(Duration::from_secs(10));
        EngineWait {
            limit,
            probe,
            announce,
            away_ms: Arc::new(AtomicU64::new(0)),
            gone: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The time spent waiting for the engine so far.
    pub(crate) fn away(&self) -> Duration {
        Duration::from_millis(self.away_ms.load(Ordering::Relaxed))
    }

    /// Whether the engine stayed away past the limit at some point.
    pub(crate) fn gone(&self) -> bool {
        self.gone.load(Ordering::Relaxed)
    }

    /// Runs `cmd` (through `execute`), waiting out the engine's absences: the
    /// command is run again each time the engine is back.
    pub(crate) fn run(&self, cmd: &Cmd, execute: &dyn Fn(&Cmd) -> Result<Output, Failure>) -> Result<Output, Failure> {
        self.run_from(execute(cmd), cmd, execute)
    }

    /// As [`EngineWait::run`], for a first run of `cmd` that ended as `outcome` elsewhere.
    pub(crate) fn run_from(
        &self,
        mut outcome: Result<Output, Failure>,
        cmd: &Cmd,
        execute: &dyn Fn(&Cmd) -> Result<Output, Failure>,
    ) -> Result<Output, Failure> {
        for _ in 0..MAX_OUTAGES {
            let stderr = match &outcome {
                Ok(output) if !output.ended.success() && is_unreachable(&output.stderr) => output.stderr.clone(),
                _ => return outcome,
            };
            match self.wait(&stderr) {
                // The engine answered at once: the error was something else (a registry, say).
                Waited::NotAway => return outcome,
                Waited::Back => outcome = execute(cmd),
                Waited::Gone(waited) => return Err(Failure::EngineUnreachable { waited, stderr }),
            }
        }
        outcome
    }

    fn wait(&self, stderr: &str) -> Waited {
        let started = Instant::now();
        let answers = || child::execute(&self.probe, None, None).is_ok_and(|o| o.ended.success());
        if answers() {
            return Waited::NotAway;
        }
        if self.gone() {
            // Waited out once already: what the attempt does now (leave itself
            // interrupted) must not wait the whole limit again at every call.
            return Waited::Gone(Duration::ZERO);
        }
        let first_line = stderr.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or_default();
        (self.announce)(&format!(
            "the Docker engine is unreachable; waiting up to {}s for it (UPGRADERD_ENGINE_WAIT): {first_line}",
            self.limit.as_secs()
        ));
        let outcome = loop {
            if started.elapsed() >= self.limit {
                break Waited::Gone(started.elapsed());
            }
            std::thread::sleep(PROBE_EVERY);
            if answers() {
                break Waited::Back;
            }
        };
        let waited = started.elapsed();
        self.away_ms.fetch_add(u64::try_from(waited.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
        match outcome {
            Waited::Back => (self.announce)(&format!(
                "the Docker engine answers again after {:.1}s; going on from the same step",
                waited.as_secs_f64()
            )),
            _ => {
                self.gone.store(true, Ordering::Relaxed);
                (self.announce)(&format!("the Docker engine stayed unreachable for {}s", waited.as_secs()));
            }
        }
        outcome
    }
}

enum Waited {
    NotAway,
    Back,
    Gone(Duration),
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::sync::Mutex;

    use super::*;
    use crate::ops::process::Ended;

    fn ended(code: i32, stderr: &str) -> Result<Output, Failure> {
        Ok(Output { stdout: Vec::new(), stderr: stderr.into(), ended: Ended::Code(code) })
    }

    const REFUSED: &str = "Cannot connect to the Docker daemon at unix:///run/x.sock. Is the docker daemon running?";

    /// An engine that answers once `flag` exists; what the wait announced.
    fn engine_behind(flag: &std::path::Path, limit: Duration) -> (EngineWait, Arc<Mutex<Vec<String>>>) {
        let probe = Cmd::new("/bin/sh").arg("-c").arg(format!("[ -e '{}' ]", flag.display()));
        let said = Arc::new(Mutex::new(Vec::new()));
        let sink = said.clone();
        let announce: Announce = Arc::new(move |line: &str| sink.lock().unwrap().push(line.into()));
        (EngineWait::with_probe(limit, probe, announce), said)
    }

    #[test]
    fn a_command_that_found_no_engine_runs_again_once_it_is_back_and_the_wait_is_counted() {
        let flag_dir = tempfile::tempdir().unwrap();
        let flag = flag_dir.path().join("up");
        let (wait, said) = engine_behind(&flag, Duration::from_secs(30));
        let runs = Cell::new(0);
        let execute = |_: &Cmd| {
            runs.set(runs.get() + 1);
            if flag.exists() {
                ended(0, "")
            } else {
                ended(1, REFUSED)
            }
        };
        let back = flag.clone();
        let restarter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(1500));
            std::fs::write(back, "").unwrap();
        });
        let output = wait.run(&Cmd::new("docker").talks_to_engine(), &execute).unwrap();
        restarter.join().unwrap();
        assert!(output.ended.success());
        assert_eq!(runs.get(), 2, "run again once, when the engine answered");
        assert!(wait.away() >= Duration::from_secs(1), "{:?}", wait.away());
        assert!(!wait.gone());
        let said = said.lock().unwrap().join("\n");
        assert!(said.contains("the Docker engine is unreachable; waiting up to 30s"), "{said}");
        assert!(said.contains("answers again"), "{said}");
    }

    #[test]
    fn an_engine_away_past_the_limit_is_gone_and_later_calls_do_not_wait_again() {
        let flag_dir = tempfile::tempdir().unwrap();
        let (wait, _said) = engine_behind(&flag_dir.path().join("never"), Duration::from_secs(1));
        let execute = |_: &Cmd| ended(1, REFUSED);
        let failure = wait.run(&Cmd::new("docker"), &execute).unwrap_err();
        assert!(matches!(failure, Failure::EngineUnreachable { waited, .. } if waited >= Duration::from_secs(1)));
        assert!(wait.gone());
        let started = Instant::now();
        assert!(matches!(wait.run(&Cmd::new("docker"), &execute), Err(Failure::EngineUnreachable { .. })));
        assert!(started.elapsed() < Duration::from_secs(1), "no second wait: {:?}", started.elapsed());
    }

    #[test]
    fn a_failure_while_the_engine_answers_stands_as_it_is() {
        let flag_dir = tempfile::tempdir().unwrap();
        let flag = flag_dir.path().join("up");
        std::fs::write(&flag, "").unwrap();
        let (wait, said) = engine_behind(&flag, Duration::from_secs(30));
        let runs = Cell::new(0);
        // A registry that resets the connection reads much like an engine that does.
        let execute = |_: &Cmd| {
            runs.set(runs.get() + 1);
            ended(1, "error pulling: ('Connection aborted.', ConnectionResetError(104))")
        };
        let output = wait.run(&Cmd::new("docker"), &execute).unwrap();
        assert_eq!(output.ended, Ended::Code(1));
        assert_eq!(runs.get(), 1);
        assert!(said.lock().unwrap().is_empty());
        assert_eq!(wait.away(), Duration::ZERO);
    }

    #[test]
    fn the_engine_being_away_is_told_from_other_failures() {
        for stderr in [
            "Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?",
            "Couldn't connect to Docker daemon at http+docker://localhost - is it running?",
            "docker.errors.DockerException: Error while fetching server API version: ('Connection aborted.', FileNotFoundError(2, 'No such file or directory'))",
            "error during connect: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.41/containers/json\": EOF",
        ] {
            assert!(is_unreachable(stderr), "{stderr}");
        }
        for stderr in [
            "Error response from daemon: No such container: web",
            "Error response from daemon: manifest for app:9.9.9 not found",
            "Get \"https://registry.example/v2/\": dial tcp: connection refused",
        ] {
            assert!(!is_unreachable(stderr), "{stderr}");
        }
    }
}
