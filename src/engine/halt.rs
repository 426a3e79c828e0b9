//! What is stopped to hold a service's data still, and how it runs again: a
//! compose container is stopped and started; a Swarm service is scaled to 0
//! and back, because Swarm replaces a task container that is merely stopped.
//!
//! A halt is recorded in the journal row as a token (the container id, or
//! `swarm:SERVICE=REPLICAS`), so that recovery can start again what a killed
//! upgrader left stopped.

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::ops::docker::Docker;
use crate::ops::process_exit::ProcessExit;
use crate::ops::swarm::{self, Swarm};
pub(crate) use crate::states::Halt;

/// The commands an operator runs to start these (recorded, in stop order) by
/// hand, in the order to run them.
pub(crate) fn start_commands(held: &[Halt]) -> String {
    let command = |halt: &Halt| match halt {
        Halt::Container(id) => format!("`docker start {id}`"),
        Halt::SwarmService { name, replicas } => format!("`docker service scale {name}={replicas}`"),
    };
    held.iter().rev().map(command).collect::<Vec<_>>().join(", then ")
}

/// Stops it within `grace` (then it is killed); a container already stopped
/// is what was wanted. A Swarm service is given its own `stop_grace_period`,
/// which is what Swarm waits before it kills a task.
pub(crate) fn stop(docker: &Docker, halt: &Halt, grace: Duration) -> Result<()> {
    match halt {
        Halt::Container(id) => {
            if let Err(e) = docker.runner().run(&docker.stop(id, grace)) {
                if !docker.inspect_container(id).is_ok_and(|c| !c.state.running) {
                    bail!("{e}");
                }
            }
            Ok(())
        }
        Halt::SwarmService { name, .. } => {
            let swarm = Swarm::new(docker.clone());
            let grace = if docker.runner().dry_run() { grace } else { swarm.existing(name)?.stop_grace() };
            docker.runner().run(&swarm.scale(name, 0))?;
            wait_until_stopped(docker, name, grace + STOP_MARGIN)
        }
    }
}

/// A stop whose container's processes have ended while the engine still
/// tears it down (`docker stop` runs on): the data is still; the stop's own
/// end is waited for by [`PendingStop::finish`], or on drop.
pub(crate) struct PendingStop {
    halt: Halt,
    stop: Option<JoinHandle<Result<()>>>,
}

impl PendingStop {
    pub(crate) fn halt(&self) -> &Halt {
        &self.halt
    }

    /// Waits for `docker stop` to end; its failure, as [`stop`] reports it.
    pub(crate) fn finish(mut self) -> Result<()> {
        let stop = self.stop.take().expect("a pending stop is finished once");
        stop.join().unwrap_or_else(|_| Err(anyhow!("stopping {} failed unexpectedly", self.halt.describe())))
    }
}

impl Drop for PendingStop {
    /// Never left running behind the caller's back: a start or a recreate must not race it.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.join();
        }
    }
}

/// How a stop ended for the caller: done, or with the processes ended and the engine's teardown going on.
pub(crate) enum Stopping {
    Stopped,
    ProcessesEnded(PendingStop),
}

/// Stops `halt` as [`stop`] does, but returns as soon as a container's
/// processes have ended, when their end can be watched from here
/// ([`ProcessExit`]); the engine's teardown (about 0.1 s) then goes on behind
/// the caller, who can work on the still data meanwhile. Otherwise, and for a
/// Swarm service, it returns when the stop has.
pub(crate) fn stop_until_processes_end(docker: &Docker, halt: &Halt, grace: Duration) -> Result<Stopping> {
    let watch = match halt {
        Halt::Container(id) if !docker.runner().dry_run() => docker
            .inspect_container(id)
            .ok()
            .filter(|c| c.state.running)
            .and_then(|c| ProcessExit::of_container(&c.id, c.state.pid)),
        _ => None,
    };
    let Some(watch) = watch else {
        return stop(docker, halt, grace).map(|()| Stopping::Stopped);
    };
    let (docker_for_stop, halt_for_stop) = (docker.clone(), halt.clone());
    let stop = std::thread::spawn(move || stop(&docker_for_stop, &halt_for_stop, grace));
    loop {
        if watch.ended(PROCESS_EXIT_POLL) {
            return Ok(Stopping::ProcessesEnded(PendingStop { halt: halt.clone(), stop: Some(stop) }));
        }
        if stop.is_finished() {
            let pending = PendingStop { halt: halt.clone(), stop: Some(stop) };
            return pending.finish().map(|()| Stopping::Stopped);
        }
    }
}

/// How often a stop that runs on its own thread is looked at while the processes are watched.
const PROCESS_EXIT_POLL: Duration = Duration::from_millis(20);

/// What a Swarm task may take beyond its grace period: the kill, the
/// container's removal, the task's report to the manager.
const STOP_MARGIN: Duration = Duration::from_secs(30);

/// Starts it again (a container is started, a Swarm service scaled back), without waiting.
pub(crate) fn start(docker: &Docker, halt: &Halt) -> Result<()> {
    match halt {
        Halt::Container(id) => docker.runner().run(&docker.start(id))?,
        Halt::SwarmService { name, replicas } => {
            docker.runner().run(&Swarm::new(docker.clone()).scale(name, *replicas))?
        }
    };
    Ok(())
}

/// How a started service was found ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ready {
    /// Its own HEALTHCHECK command, run by upgraderd, exited 0 (or Docker already said healthy).
    Healthcheck,
    /// It has no HEALTHCHECK, and runs and stays up.
    Running,
    /// A Swarm service's tasks run again.
    Tasks,
    /// A dry run starts nothing.
    DryRun,
}

impl Ready {
    /// How readiness was told, for the log.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Ready::Healthcheck => "its HEALTHCHECK passes",
            Ready::Running => "running, no HEALTHCHECK",
            Ready::Tasks => "its tasks run",
            Ready::DryRun => "dry run",
        }
    }
}

/// Waits until what [`start`] started is ready, within `timeout` (when none is
/// given, the container's own: its HEALTHCHECK's start period + 60s, at
/// least 60s). A container with a HEALTHCHECK is ready when its check command,
/// run with `docker exec` every quarter second, exits 0: Docker's own schedule
/// (30s by default) is not waited for. One without is ready when it runs and
/// stays up. One that exits is a failure at once.
pub(crate) fn wait_ready(docker: &Docker, halt: &Halt, timeout: Option<Duration>) -> Result<Ready> {
    if docker.runner().dry_run() {
        return Ok(Ready::DryRun);
    }
    match halt {
        Halt::Container(id) => wait_container_ready(docker, id, timeout),
        Halt::SwarmService { name, replicas } => {
            let timeout = timeout.unwrap_or(DEFAULT_START_TIMEOUT);
            wait_for_tasks(docker, name, *replicas, timeout).map(|()| Ready::Tasks)
        }
    }
}

/// How long a held service has to be ready again when neither the setting nor its HEALTHCHECK says.
const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a container without a HEALTHCHECK must run before it counts as up.
const STAYS_UP: Duration = Duration::from_secs(1);

fn wait_container_ready(docker: &Docker, id: &str, timeout: Option<Duration>) -> Result<Ready> {
    let first = docker.inspect_container(id)?;
    let check = first.config.healthcheck.as_ref().and_then(|h| h.argv());
    let own = first
        .config
        .healthcheck
        .as_ref()
        .map_or(DEFAULT_START_TIMEOUT, |h| Duration::from_nanos(h.start_period) + DEFAULT_START_TIMEOUT);
    let limit = timeout.unwrap_or(own);
    let check_timeout = first
        .config
        .healthcheck
        .as_ref()
        .map(|h| Duration::from_nanos(h.timeout))
        .filter(|t| !t.is_zero())
        .unwrap_or(Duration::from_secs(10));
    let deadline = Instant::now() + limit;
    let mut up_since: Option<(Instant, i64)> = None;
    let mut last_check = String::new();
    loop {
        let container = docker.inspect_container(id)?;
        let state = &container.state;
        if !state.running && !state.restarting {
            bail!("it exited ({}): {}", state.exit_code, docker.logs_tail(id, 5));
        }
        if state.running {
            if state.health.as_ref().is_some_and(|h| h.status == "healthy") {
                return Ok(Ready::Healthcheck);
            }
            match &check {
                Some(argv) => match docker.runner().run(&docker.exec_check(id, argv, check_timeout)) {
                    Ok(_) => return Ok(Ready::Healthcheck),
                    Err(e) => last_check = format!("; its HEALTHCHECK ({}) says: {e}", argv.join(" ")),
                },
                None => match up_since {
                    Some((since, restarts)) if restarts == container.restart_count && since.elapsed() >= STAYS_UP => {
                        return Ok(Ready::Running)
                    }
                    Some((_, restarts)) if restarts == container.restart_count => {}
                    _ => up_since = Some((Instant::now(), container.restart_count)),
                },
            }
        }
        if Instant::now() >= deadline {
            bail!("not ready after {}s{last_check}: {}", limit.as_secs(), docker.logs_tail(id, 5));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Waits until exactly `replicas` of the service's tasks run on nodes that
/// are up, each healthy by its HEALTHCHECK when its container is on this node
/// and has one; less those that wait for a node that is down (see [`ready_tasks`]).
fn wait_for_tasks(docker: &Docker, service: &str, replicas: u64, timeout: Duration) -> Result<()> {
    if docker.runner().dry_run() {
        return Ok(());
    }
    let swarm = Swarm::new(docker.clone());
    let deadline = Instant::now() + timeout;
    loop {
        let tasks = swarm.tasks(service)?;
        // Nodes that cannot be listed count as up: the tasks' own states still tell.
        let down: Vec<String> = swarm.unready_nodes().unwrap_or_default().into_iter().map(|(id, _)| id).collect();
        let healthy = |id: &str| {
            docker.inspect_container(id).map_or(true, |c| c.state.health.is_none_or(|h| h.status == "healthy"))
        };
        let (ready, wanted) = ready_tasks(&tasks, replicas, &down, &healthy);
        if ready == wanted {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let lost = match down.is_empty() {
                true => String::new(),
                false => format!(" ({} nodes down)", down.len()),
            };
            bail!(
                "Swarm service {service} has {ready} ready tasks on the nodes that are up after {}s, not \
                 {wanted}{lost}",
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// How many tasks run and are ready on nodes that are up, and how many are
/// wanted there: `replicas`, less the tasks that wait for a node in `down`. A
/// task on such a node cannot report, so it is not counted, and neither is it
/// waited for; nor is one Swarm cannot place while a node is down ("no
/// suitable node"): it is placed when the node is back.
fn ready_tasks(tasks: &[swarm::Task], replicas: u64, down: &[String], healthy: &dyn Fn(&str) -> bool) -> (u64, u64) {
    let on_down_node = |t: &swarm::Task| down.contains(&t.node_id);
    let wanted: Vec<&swarm::Task> = tasks.iter().filter(|t| t.desired_state == "running").collect();
    let ready = wanted
        .iter()
        .filter(|t| t.status.state == "running" && !on_down_node(t) && t.container().is_none_or(healthy))
        .count() as u64;
    let waiting = match down.is_empty() {
        true => 0,
        false => wanted.iter().filter(|t| t.is_live() && (on_down_node(t) || t.waits_for_a_node())).count() as u64,
    };
    (ready, replicas.saturating_sub(waiting))
}

/// Waits until no task of the service is live anywhere (none running, starting
/// or on its way) and no container of it runs on this node: only then is its
/// data still.
fn wait_until_stopped(docker: &Docker, service: &str, timeout: Duration) -> Result<()> {
    if docker.runner().dry_run() {
        return Ok(());
    }
    let swarm = Swarm::new(docker.clone());
    let deadline = Instant::now() + timeout;
    loop {
        // A task on a node that is down is not running anything here, and cannot report that it stopped.
        let unready: Vec<String> = swarm.unready_nodes().unwrap_or_default().into_iter().map(|(id, _)| id).collect();
        let live: Vec<String> = live_tasks(&swarm.tasks(service)?, &unready).map(|t| t.status.state.clone()).collect();
        let local = docker.containers_with_label(swarm::SERVICE_LABEL, service, false)?;
        if live.is_empty() && local.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!(
                "Swarm service {service} still has {} live tasks ({}) and {} running containers here after {}s",
                live.len(),
                live.join(", "),
                local.len(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The tasks that still hold the service's data: live, on a node that is up.
fn live_tasks<'a>(tasks: &'a [swarm::Task], unready_nodes: &'a [String]) -> impl Iterator<Item = &'a swarm::Task> {
    tasks.iter().filter(|t| t.is_live() && !unready_nodes.contains(&t.node_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_on_a_node_that_is_down_is_not_waited_for() {
        let task = |id: &str, node: &str, state: &str| -> swarm::Task {
            serde_json::from_value(serde_json::json!({
                "ID": id, "NodeID": node, "DesiredState": "shutdown",
                "Status": {"State": state}, "Spec": {"ContainerSpec": {"Image": "app:2"}}
            }))
            .unwrap()
        };
        let tasks = [task("t1", "here", "running"), task("t2", "dk2", "running"), task("t3", "here", "shutdown")];
        let down = ["dk2".to_string()];
        let live: Vec<&str> = live_tasks(&tasks, &down).map(|t| t.id.as_str()).collect();
        assert_eq!(live, vec!["t1"]);
        assert_eq!(live_tasks(&tasks, &[]).count(), 2);
    }

    #[test]
    fn a_start_counts_only_tasks_on_nodes_that_are_up_and_waits_for_none_on_a_lost_node() {
        let task = |id: &str, node: &str, state: &str, err: Option<&str>| -> swarm::Task {
            serde_json::from_value(serde_json::json!({
                "ID": id, "NodeID": node, "DesiredState": "running",
                "Status": {"State": state, "Err": err}, "Spec": {"ContainerSpec": {"Image": "app:2"}}
            }))
            .unwrap()
        };
        let all = |_: &str| true;
        let down = ["dk2".to_string()];
        // The lost node's task last reported running: it is not counted, nor waited for.
        let tasks = [task("t1", "here", "running", None), task("t2", "dk2", "running", None)];
        assert_eq!(ready_tasks(&tasks, 2, &down, &all), (1, 1));
        assert_eq!(ready_tasks(&tasks, 2, &[], &all), (2, 2));
        // One Swarm cannot place while the node is down (one task a node) waits for it.
        let no_node = "no suitable node (max replicas per node limit exceed)";
        let tasks = [task("t1", "here", "running", None), task("t3", "", "pending", Some(no_node))];
        assert_eq!(ready_tasks(&tasks, 2, &down, &all), (1, 1));
        // With every node up, it is waited for like any other; so is one still starting.
        assert_eq!(ready_tasks(&tasks, 2, &[], &all), (1, 2));
        let tasks = [task("t1", "here", "running", None), task("t4", "here", "starting", None)];
        assert_eq!(ready_tasks(&tasks, 2, &down, &all), (1, 2));
        // Not healthy yet is not ready.
        let mut unhealthy = task("t5", "here", "running", None);
        unhealthy.status.container_status = Some(swarm::ContainerStatus { container_id: "c5".into() });
        assert_eq!(ready_tasks(&[unhealthy], 1, &[], &|id| id != "c5"), (0, 1));
    }

    #[test]
    fn a_halt_is_recorded_as_a_token_and_read_back() {
        for halt in [
            Halt::Container("3f2a9c".into()),
            Halt::SwarmService { name: "shop_db".into(), replicas: 1 },
            Halt::SwarmService { name: "a=b".into(), replicas: 3 },
        ] {
            assert_eq!(Halt::from_token(&halt.token()), halt);
        }
        // A token written before Swarm support is a container id.
        assert_eq!(Halt::from_token("swarm:broken"), Halt::Container("swarm:broken".into()));
    }

    #[test]
    fn what_was_stopped_is_started_by_hand_in_start_order() {
        let stopped = [Halt::Container("web-id".into()), Halt::SwarmService { name: "shop_db".into(), replicas: 1 }];
        assert_eq!(start_commands(&stopped), "`docker service scale shop_db=1`, then `docker start web-id`");
    }
}
