//! Holding services still: the containers (or Swarm services) stopped for a
//! final pass or a restore, and started again in `depends_on` order, in
//! waves, each wave's readiness checked by its own HEALTHCHECK command.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use super::{Observer, ServiceData};
use crate::engine::halt::{self, Halt, PendingStop};
use crate::ops::docker::Docker;

/// The order to start `services` in: each after the services it depends on
/// (those in the list); otherwise as given.
pub(super) fn start_order(services: &[ServiceData]) -> Vec<ServiceData> {
    let mut left: Vec<ServiceData> = services.to_vec();
    let mut ordered: Vec<ServiceData> = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|s| {
            s.depends_on.iter().all(|d| !left.iter().any(|other| &other.service == d && other.service != s.service))
        });
        // A cycle (compose refuses them) would leave none ready: take the first as given.
        ordered.push(left.remove(ready.unwrap_or(0)));
    }
    ordered
}

/// Stops these services' containers (or Swarm services), dependents first
/// (the reverse of their start order), adding each one to `stopped` (as its
/// [`Halt`] token) and telling the observer before it is asked to stop, so
/// that the caller, or recovery after a kill, can start them again whatever
/// happens. A failure stops nothing more.
pub(crate) fn stop_containers(
    docker: &Docker,
    services: &[ServiceData],
    stopped: &mut Vec<Halt>,
    observer: &mut dyn Observer,
) -> Result<()> {
    let stop = |docker: &Docker, halt: &Halt| halt::stop(docker, halt, STOP_GRACE).map(|()| halt::Stopping::Stopped);
    stop_each(docker, services, stopped, observer, &stop).map(drop)
}

/// As [`stop_containers`], but a container whose processes can be watched
/// ends its part when they have ended ([`halt::stop_until_processes_end`]):
/// the stops the engine still finishes are returned, for the caller to
/// finish (or drop) once it has worked on the still data. On a failure
/// every stop begun has ended.
pub(crate) fn stop_containers_until_processes_end(
    docker: &Docker,
    services: &[ServiceData],
    stopped: &mut Vec<Halt>,
    observer: &mut dyn Observer,
) -> Result<Vec<PendingStop>> {
    let stop = |docker: &Docker, halt: &Halt| halt::stop_until_processes_end(docker, halt, STOP_GRACE);
    stop_each(docker, services, stopped, observer, &stop)
}

fn stop_each(
    docker: &Docker,
    services: &[ServiceData],
    stopped: &mut Vec<Halt>,
    observer: &mut dyn Observer,
    stop: &dyn Fn(&Docker, &Halt) -> Result<halt::Stopping>,
) -> Result<Vec<PendingStop>> {
    let mut pending = Vec::new();
    for service in start_order(services).iter().rev() {
        if stopped.contains(&service.halt) {
            continue;
        }
        observer.log(&format!("Stopping {} ({})", service.service, service.halt.describe()));
        // Counted as stopped before it is asked to stop: a stop that fails half-way (a Swarm
        // service scaled to 0 whose tasks did not drain in time) is started again all the same.
        // When recording it fails, the caller starts a service that never stopped: a start of a
        // running container, or a scale to the replicas it has, which changes nothing.
        stopped.push(service.halt.clone());
        observer.stopped(stopped)?;
        match stop(docker, &service.halt) {
            Ok(halt::Stopping::Stopped) => {}
            Ok(halt::Stopping::ProcessesEnded(stop)) => pending.push(stop),
            // The stops begun end (on drop) before the caller starts anything again.
            Err(e) => return Err(anyhow!("stopping {} failed: {e:#}", service.service)),
        }
    }
    Ok(pending)
}

/// How long a stopped service has to shut down cleanly before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// Starts what `held` names again and waits until each is ready (see
/// [`halt::wait_ready`]; `timeout` is `UPGRADERD_START_TIMEOUT`): all at once,
/// but a service after the ones it depends on, each group awaited together.
pub(crate) fn start_containers(
    docker: &Docker,
    held: &[Halt],
    services: &[ServiceData],
    timeout: Option<Duration>,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut known: Vec<ServiceData> = start_order(services).into_iter().filter(|s| held.contains(&s.halt)).collect();
    // Several replicas of one Swarm service share its halt: it is started once.
    known.dedup_by(|a, b| a.halt == b.halt);
    let mut waves: Vec<Vec<(String, Halt)>> =
        start_waves(&known).into_iter().map(|w| w.into_iter().map(|s| (s.service, s.halt)).collect()).collect();
    // What recovery found recorded but no longer in the project: started together, last.
    let unknown: Vec<(String, Halt)> = held
        .iter()
        .filter(|halt| !known.iter().any(|s| s.halt == **halt))
        .map(|halt| (halt.describe(), halt.clone()))
        .collect();
    if !unknown.is_empty() {
        waves.push(unknown);
    }
    let mut failures = Vec::new();
    for wave in waves {
        let names: Vec<&str> = wave.iter().map(|(name, _)| name.as_str()).collect();
        log(&format!("Starting {} again", names.join(", ")));
        let began = Instant::now();
        let mut started = Vec::new();
        for (name, halt) in &wave {
            match halt::start(docker, halt) {
                Ok(()) => started.push((name, halt)),
                Err(e) => failures.push(format!("{name}: {e:#}")),
            }
        }
        let results: Vec<(String, Result<halt::Ready>)> = std::thread::scope(|scope| {
            let waits: Vec<_> = started
                .iter()
                .map(|(name, halt)| (name.to_string(), scope.spawn(|| halt::wait_ready(docker, halt, timeout))))
                .collect();
            waits.into_iter().map(|(name, wait)| (name, wait.join().unwrap_or_else(|_| bail!("panicked")))).collect()
        });
        for (name, result) in results {
            match result {
                Ok(ready) => {
                    log(&format!("{name} ready ({}) after {:.1}s", ready.describe(), began.elapsed().as_secs_f64()))
                }
                Err(e) => failures.push(format!("{name}: {e:#}")),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("starting again failed: {}", failures.join("; "))
    }
}

/// `services` in groups that can start together: each group's services
/// depend on none of the ones in later groups.
fn start_waves(services: &[ServiceData]) -> Vec<Vec<ServiceData>> {
    let mut left: Vec<ServiceData> = services.to_vec();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let waits = |s: &ServiceData| {
            s.depends_on.iter().any(|d| left.iter().any(|other| &other.service == d && other.service != s.service))
        };
        let (mut wave, rest): (Vec<ServiceData>, Vec<ServiceData>) = left.iter().cloned().partition(|s| !waits(s));
        if wave.is_empty() {
            // A cycle (compose refuses them) would leave none ready: take the first as given.
            wave = vec![left[0].clone()];
            left.remove(0);
        } else {
            left = rest;
        }
        waves.push(wave);
    }
    waves
}
