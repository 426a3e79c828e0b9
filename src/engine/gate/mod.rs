//! The health gate: the service's container must be running with a stable
//! restart count, healthy by its own HEALTHCHECK when it has one, answer the
//! HTTP probe with 2xx (and the expected version when asked), and stay so for
//! the stable period. A container that exits or restarts fails the gate at
//! once rather than at the timeout.
//!
//! The verdicts are pure functions of what was observed (container state,
//! HTTP answer, the clock), so each rule is unit-tested without an engine;
//! `wait_healthy` only gathers observations and sleeps between them. How a
//! Swarm service's tasks are judged is `swarm`'s.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::shown;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::{Container, Docker};
use crate::ops::health::{json_pointer, probe_http, Probe};
use crate::ops::swarm::Swarm;

mod swarm;

use swarm::observe_swarm;
pub(crate) use swarm::{lost_slots, stranded_tasks};

/// What healthy means for this deployment.
#[derive(Debug, Clone)]
pub(crate) struct GateSpec {
    pub url: String,
    pub timeout: Duration,
    pub stable: Duration,
    /// JSON pointer into the health body and the version it must show.
    pub expect_version: Option<(String, String)>,
    /// Per Swarm service, the tasks that had failed before the switch (or
    /// revert) being gated: history, not a verdict. A service missing here
    /// takes the failures the gate's first look finds.
    pub tasks_before: HashMap<String, Vec<String>>,
}

const INTERVAL: Duration = Duration::from_millis(250);

/// One look at the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Check {
    Healthy,
    /// Not healthy yet; the reason is shown if the timeout comes first.
    NotYet(String),
    /// Will not become healthy: fail now.
    Fatal(String),
}

/// Waits until every moved service is healthy (the primary also by HTTP); the error says which is not, and why.
pub(crate) fn wait_healthy(docker: &Docker, project: &Project, spec: &GateSpec) -> Result<Passed, String> {
    let started = Instant::now();
    let mut gate = Gate::new(started, spec);
    // The gate's clock does not run while docker calls wait for an engine that is away.
    let away_at_start = docker.runner().engine_away();
    let gate_clock = || {
        let away = docker.runner().engine_away().saturating_sub(away_at_start);
        Instant::now().checked_sub(away).unwrap_or(started)
    };
    let mut restarts_at_start: HashMap<String, i64> = HashMap::new();
    let mut history = spec.tasks_before.clone();
    let swarm = Swarm::new(docker.clone());
    loop {
        let away_before_look = docker.runner().engine_away();
        let checks = project.services.iter().map(|service| {
            let http = (*service == project.service).then_some(spec);
            let check = match project.orchestrator {
                Orchestrator::Compose => observe(docker, &project.name, service, http, &mut restarts_at_start),
                Orchestrator::Swarm => observe_swarm(&swarm, &project.swarm_service(service), http, &mut history),
            };
            (service.as_str(), check)
        });
        let mut check = all_of(checks.collect(), project.services.len() > 1);
        if docker.runner().engine_away() > away_before_look {
            // The services restarted with their engine: healthy before the outage proves nothing after it.
            check = Check::NotYet("the Docker engine was unreachable; looking again".into());
        }
        if docker.runner().engine_gone() {
            return Err("the Docker engine is unreachable: the new version cannot be judged".into());
        }
        if let Some(verdict) = gate.after(check, gate_clock()) {
            return verdict;
        }
        std::thread::sleep(INTERVAL);
    }
}

/// The set is as healthy as its least healthy service: a fatal one fails it at once.
pub(crate) fn all_of(checks: Vec<(&str, Check)>, name_them: bool) -> Check {
    let named = |service: &str, why: String| if name_them { format!("service {service}: {why}") } else { why };
    let mut waiting = None;
    for (service, check) in checks {
        match check {
            Check::Fatal(why) => return Check::Fatal(named(service, why)),
            Check::NotYet(why) if waiting.is_none() => waiting = Some(named(service, why)),
            _ => {}
        }
    }
    waiting.map_or(Check::Healthy, Check::NotYet)
}

/// How a gate was passed, on the gate's clock (which stops while the engine is away).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Passed {
    /// From the gate's start to its verdict.
    pub took: Duration,
    /// From the gate's start to the first look of the healthy streak that passed it.
    pub healthy_after: Duration,
}

/// The gate's memory between looks: since when it has been healthy, and the last reason it was not.
#[derive(Debug)]
pub(crate) struct Gate {
    started: Instant,
    deadline: Instant,
    stable: Duration,
    timeout: Duration,
    healthy_since: Option<Instant>,
    last: String,
}

impl Gate {
    pub(crate) fn new(started: Instant, spec: &GateSpec) -> Gate {
        Gate {
            started,
            deadline: started + spec.timeout,
            stable: spec.stable,
            timeout: spec.timeout,
            healthy_since: None,
            last: String::from("no probe yet"),
        }
    }

    /// The verdict after one look at `now`: `None` to look again.
    pub(crate) fn after(&mut self, check: Check, now: Instant) -> Option<Result<Passed, String>> {
        match check {
            Check::Fatal(reason) => return Some(Err(reason)),
            Check::Healthy => {
                let since = *self.healthy_since.get_or_insert(now);
                if now.duration_since(since) >= self.stable {
                    let healthy_after = since.duration_since(self.started);
                    return Some(Ok(Passed { took: now.duration_since(self.started), healthy_after }));
                }
            }
            Check::NotYet(why) => {
                self.healthy_since = None;
                self.last = why;
            }
        }
        (now >= self.deadline)
            .then(|| Err(format!("not healthy after {}s; last check: {}", self.timeout.as_secs(), self.last)))
    }
}

/// One service's state; `http` is the spec to probe for the primary, none for the others.
fn observe(
    docker: &Docker,
    project: &str,
    service: &str,
    http: Option<&GateSpec>,
    restarts_at_start: &mut HashMap<String, i64>,
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
    let baseline = *restarts_at_start.entry(service.to_string()).or_insert(container.restart_count);
    match (container_verdict(&container, baseline), http) {
        (Check::Healthy, Some(spec)) => {
            http_verdict(&spec.url, &probe_http(&spec.url, Duration::from_secs(2)), spec.expect_version.as_ref())
        }
        (Check::Fatal(_), None) if finished_job(&container) => Check::Healthy,
        (Check::Fatal(reason), _) => Check::Fatal(with_logs(docker, &id, reason)),
        (other, _) => other,
    }
}

/// A one-shot service (no restart policy) that ran to completion: a migration job done.
pub(crate) fn finished_job(container: &Container) -> bool {
    let policy = container.host_config.restart_policy.name.as_str();
    (policy.is_empty() || policy == "no") && container.state.status == "exited" && container.state.exit_code == 0
}

/// The container's side of the verdict: running, not restarting, HEALTHCHECK not failing.
pub(crate) fn container_verdict(container: &Container, restarts_at_start: i64) -> Check {
    let state = &container.state;
    if state.status == "exited" || state.status == "dead" {
        return Check::Fatal(format!("the container exited with code {}", state.exit_code));
    }
    if state.restarting || container.restart_count > restarts_at_start {
        return Check::Fatal(format!(
            "the container is crash-looping (restarted {} times)",
            container.restart_count - restarts_at_start
        ));
    }
    if !state.running {
        return Check::NotYet(format!("the container is {}", state.status));
    }
    match state.health.as_ref().map(|h| h.status.as_str()) {
        Some("unhealthy") => Check::Fatal("the container's HEALTHCHECK reports unhealthy".into()),
        Some("healthy") | None => Check::Healthy,
        Some(other) => Check::NotYet(format!("the container's HEALTHCHECK is {other}")),
    }
}

/// The HTTP side of the verdict: 2xx, and the expected version at the pointer when one is asked for.
/// The reason shows the URL as `upgraderd config` does: it reaches the status file the app reads.
pub(crate) fn http_verdict(url: &str, probe: &Probe, expect_version: Option<&(String, String)>) -> Check {
    let url = shown("UPGRADERD_HEALTH_URL", url);
    match probe {
        Probe::NoAnswer(why) => Check::NotYet(format!("{url} did not answer: {why}")),
        Probe::Answered { status, body } if !(200..300).contains(status) => {
            Check::NotYet(format!("{url} answered HTTP {status}: {}", body.chars().take(200).collect::<String>()))
        }
        Probe::Answered { body, .. } => match expect_version {
            None => Check::Healthy,
            Some((pointer, expected)) => match json_pointer(body, pointer) {
                Some(reported) if crate::version::same_version(&reported, expected) => Check::Healthy,
                Some(reported) => {
                    Check::Fatal(format!("{url} reports version {reported} at {pointer}, expected {expected}"))
                }
                None => Check::NotYet(format!("{url} has no version at {pointer}")),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn container(status: &str, running: bool, restarting: bool, restarts: i64, health: Option<&str>) -> Container {
        let health = health.map(|h| format!(r#","Health":{{"Status":"{h}"}}"#)).unwrap_or_default();
        let json = format!(
            r#"{{"Id":"c1","Name":"/app","Image":"sha256:1","RestartCount":{restarts},
            "Config":{{"Image":"app:1"}},
            "State":{{"Status":"{status}","Running":{running},"Restarting":{restarting},"ExitCode":3{health}}}}}"#
        );
        serde_json::from_str(&json).unwrap()
    }

    #[test]
    fn an_exited_or_restarting_container_fails_at_once() {
        let exited = container_verdict(&container("exited", false, false, 0, None), 0);
        assert_eq!(exited, Check::Fatal("the container exited with code 3".into()));
        let looping = container_verdict(&container("running", true, false, 2, None), 0);
        assert!(
            matches!(looping, Check::Fatal(ref r) if r.contains("crash-looping (restarted 2 times)")),
            "{looping:?}"
        );
        let restarting = container_verdict(&container("restarting", false, true, 0, None), 0);
        assert!(matches!(restarting, Check::Fatal(_)));
    }

    #[test]
    fn the_healthcheck_decides_when_the_image_has_one() {
        assert_eq!(container_verdict(&container("running", true, false, 1, None), 1), Check::Healthy);
        assert_eq!(container_verdict(&container("running", true, false, 0, Some("healthy")), 0), Check::Healthy);
        assert!(matches!(
            container_verdict(&container("running", true, false, 0, Some("starting")), 0),
            Check::NotYet(_)
        ));
        assert!(matches!(
            container_verdict(&container("running", true, false, 0, Some("unhealthy")), 0),
            Check::Fatal(_)
        ));
        assert!(matches!(container_verdict(&container("created", false, false, 0, None), 0), Check::NotYet(_)));
    }

    #[test]
    fn http_needs_2xx_and_the_expected_version() {
        let url = "http://127.0.0.1:1/health";
        let ok = |body: &str| Probe::Answered { status: 200, body: body.into() };
        assert!(matches!(http_verdict(url, &Probe::NoAnswer("refused".into()), None), Check::NotYet(_)));
        let failing = Probe::Answered { status: 500, body: "oops".into() };
        assert!(matches!(http_verdict(url, &failing, None), Check::NotYet(ref r) if r.contains("HTTP 500: oops")));
        assert_eq!(http_verdict(url, &ok("{}"), None), Check::Healthy);
        let expect = ("/version".to_string(), "2.0.0".to_string());
        assert_eq!(http_verdict(url, &ok(r#"{"version":"v2.0.0"}"#), Some(&expect)), Check::Healthy);
        let wrong = http_verdict(url, &ok(r#"{"version":"1.0.0"}"#), Some(&expect));
        assert!(matches!(wrong, Check::Fatal(ref r) if r.contains("reports version 1.0.0")), "{wrong:?}");
        assert!(matches!(http_verdict(url, &ok("{}"), Some(&expect)), Check::NotYet(_)));
    }

    /// The verdict's reason reaches the status file the app reads: the probe URL's credentials stay out.
    #[test]
    fn the_reason_shows_the_health_url_with_its_secrets_masked() {
        let url = "http://probe:pw-secret@127.0.0.1:1/health?token=tok-secret";
        let expect = ("/version".to_string(), "2.0.0".to_string());
        let reasons = [
            http_verdict(url, &Probe::NoAnswer("connection refused".into()), None),
            http_verdict(url, &Probe::Answered { status: 500, body: "oops".into() }, None),
            http_verdict(url, &Probe::Answered { status: 200, body: r#"{"version":"1.0.0"}"#.into() }, Some(&expect)),
            http_verdict(url, &Probe::Answered { status: 200, body: "{}".into() }, Some(&expect)),
        ];
        for reason in reasons {
            let (Check::NotYet(text) | Check::Fatal(text)) = reason else { panic!("{reason:?}") };
            assert!(text.contains("http://probe:********@127.0.0.1:1/health?********"), "{text}");
            assert!(!text.contains("secret"), "{text}");
        }
    }

    #[test]
    fn a_set_is_as_healthy_as_its_least_healthy_service() {
        let healthy = vec![("web", Check::Healthy), ("worker", Check::Healthy)];
        assert_eq!(all_of(healthy, true), Check::Healthy);
        let waiting = vec![("web", Check::Healthy), ("worker", Check::NotYet("starting".into()))];
        assert_eq!(all_of(waiting, true), Check::NotYet("service worker: starting".into()));
        let dead = vec![("web", Check::NotYet("503".into())), ("worker", Check::Fatal("exited with code 1".into()))];
        assert_eq!(all_of(dead, true), Check::Fatal("service worker: exited with code 1".into()));
        assert_eq!(all_of(vec![("web", Check::Fatal("x".into()))], false), Check::Fatal("x".into()));
    }

    #[test]
    fn a_one_shot_job_that_exited_0_is_done_and_one_that_failed_is_not() {
        let job = |code: i64, policy: &str| -> Container {
            let json = format!(
                r#"{{"Id":"j","Name":"/migrate","Image":"sha256:1","Config":{{"Image":"app:1"}},
                "State":{{"Status":"exited","Running":false,"ExitCode":{code}}},
                "HostConfig":{{"RestartPolicy":{{"Name":"{policy}"}}}}}}"#
            );
            serde_json::from_str(&json).unwrap()
        };
        assert!(finished_job(&job(0, "no")));
        assert!(finished_job(&job(0, "")));
        assert!(!finished_job(&job(1, "no")), "a failed migration fails the gate");
        assert!(!finished_job(&job(0, "unless-stopped")), "a service meant to run that stopped is not done");
    }

    #[test]
    fn healthy_must_last_the_stable_period_and_a_relapse_starts_it_again() {
        let spec = GateSpec {
            url: String::new(),
            timeout: Duration::from_secs(60),
            stable: Duration::from_secs(3),
            expect_version: None,
            tasks_before: HashMap::new(),
        };
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let mut gate = Gate::new(t0, &spec);
        assert_eq!(gate.after(Check::Healthy, at(1)), None);
        assert_eq!(gate.after(Check::NotYet("blip".into()), at(2)), None);
        assert_eq!(gate.after(Check::Healthy, at(3)), None);
        assert_eq!(gate.after(Check::Healthy, at(5)), None);
        // Passed at 6 s; healthy (for the downtime) since 3 s, the first look of the streak that passed.
        let passed = Passed { took: Duration::from_secs(6), healthy_after: Duration::from_secs(3) };
        assert_eq!(gate.after(Check::Healthy, at(6)), Some(Ok(passed)));
    }

    #[test]
    fn the_timeout_reports_the_last_reason_and_fatal_wins_at_once() {
        let spec = GateSpec {
            url: String::new(),
            timeout: Duration::from_secs(10),
            stable: Duration::from_secs(3),
            expect_version: None,
            tasks_before: HashMap::new(),
        };
        let t0 = Instant::now();
        let mut gate = Gate::new(t0, &spec);
        assert_eq!(gate.after(Check::NotYet("HTTP 503".into()), t0 + Duration::from_secs(5)), None);
        let timed_out = gate.after(Check::NotYet("HTTP 503".into()), t0 + Duration::from_secs(10));
        assert_eq!(timed_out, Some(Err("not healthy after 10s; last check: HTTP 503".into())));
        let mut gate = Gate::new(t0, &spec);
        assert_eq!(gate.after(Check::Fatal("exited".into()), t0), Some(Err("exited".into())));
    }
}
