//! The health gate: the service's container must be running with a stable
//! restart count, healthy by its own HEALTHCHECK when it has one, answer the
//! HTTP probe with 2xx (and the expected version when asked), and stay so for
//! the stable period. A container that exits or restarts fails the gate at
//! once rather than at the timeout.

use std::time::{Duration, Instant};

use crate::ops::docker::Docker;
use crate::ops::health::{json_pointer, probe_http, Probe};

/// What healthy means for this deployment.
#[derive(Debug, Clone)]
pub struct GateSpec {
    pub url: String,
    pub timeout: Duration,
    pub stable: Duration,
    /// JSON pointer into the health body and the version it must show.
    pub expect_version: Option<(String, String)>,
}

const INTERVAL: Duration = Duration::from_millis(250);

/// Waits until the service is healthy; the error says why it is not.
pub fn wait_healthy(docker: &Docker, project: &str, service: &str, spec: &GateSpec) -> Result<Duration, String> {
    let started = Instant::now();
    let deadline = started + spec.timeout;
    let mut baseline_restarts: Option<(String, i64)> = None;
    let mut healthy_since: Option<Instant> = None;
    let mut last = String::from("no probe yet");
    loop {
        match check_once(docker, project, service, spec, &mut baseline_restarts) {
            Check::Fatal(reason) => return Err(reason),
            Check::Healthy => {
                let since = *healthy_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= spec.stable {
                    return Ok(started.elapsed());
                }
            }
            Check::NotYet(why) => {
                healthy_since = None;
                last = why;
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("not healthy after {}s; last check: {last}", spec.timeout.as_secs()));
        }
        std::thread::sleep(INTERVAL);
    }
}

enum Check {
    Healthy,
    NotYet(String),
    Fatal(String),
}

fn check_once(
    docker: &Docker,
    project: &str,
    service: &str,
    spec: &GateSpec,
    baseline: &mut Option<(String, i64)>,
) -> Check {
    let id = match docker.service_container(project, service) {
        Ok(Some(id)) => id,
        Ok(None) => return Check::NotYet(format!("no container for service {service} yet")),
        Err(e) => return Check::NotYet(format!("cannot list containers: {e}")),
    };
    let container = match docker.inspect_container(&id) {
        Ok(c) => c,
        Err(e) => return Check::NotYet(format!("cannot inspect the container: {e:#}")),
    };
    let state = &container.state;
    let (_, restarts_at_start) = baseline.get_or_insert_with(|| (container.id.clone(), container.restart_count));
    if state.status == "exited" || state.status == "dead" {
        return Check::Fatal(with_logs(docker, &id, format!("the container exited with code {}", state.exit_code)));
    }
    if state.restarting || container.restart_count > *restarts_at_start {
        return Check::Fatal(with_logs(
            docker,
            &id,
            format!(
                "the container is crash-looping (restarted {} times)",
                container.restart_count - *restarts_at_start
            ),
        ));
    }
    if !state.running {
        return Check::NotYet(format!("the container is {}", state.status));
    }
    match state.health.as_ref().map(|h| h.status.as_str()) {
        Some("unhealthy") => {
            return Check::Fatal(with_logs(docker, &id, "the container's HEALTHCHECK reports unhealthy".into()))
        }
        Some("healthy") | None => {}
        Some(other) => return Check::NotYet(format!("the container's HEALTHCHECK is {other}")),
    }
    match probe_http(&spec.url, Duration::from_secs(2)) {
        Probe::NoAnswer(why) => Check::NotYet(format!("{} did not answer: {why}", spec.url)),
        Probe::Answered { status, body } if !(200..300).contains(&status) => Check::NotYet(format!(
            "{} answered HTTP {status}: {}",
            spec.url,
            body.chars().take(200).collect::<String>()
        )),
        Probe::Answered { body, .. } => match &spec.expect_version {
            None => Check::Healthy,
            Some((pointer, expected)) => match json_pointer(&body, pointer) {
                Some(reported) if reported == *expected || reported.strip_prefix('v') == Some(expected) => {
                    Check::Healthy
                }
                Some(reported) => {
                    Check::Fatal(format!("{} reports version {reported} at {pointer}, expected {expected}", spec.url))
                }
                None => Check::NotYet(format!("{} has no version at {pointer}", spec.url)),
            },
        },
    }
}

fn with_logs(docker: &Docker, id: &str, reason: String) -> String {
    let logs = docker.logs_tail(id, 10);
    if logs.is_empty() {
        reason
    } else {
        format!("{reason}; its last log lines:\n{logs}")
    }
}
