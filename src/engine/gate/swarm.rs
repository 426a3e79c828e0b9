//! The gate for Swarm services: what the manager says of each task (its
//! state, its node, its health), judged so that a task on a node that is
//! down is never counted as running, and a lost node that holds a task of
//! the update fails the gate by name rather than by timeout.

use std::collections::HashMap;
use std::time::Duration;

use super::{http_verdict, with_logs, Check, GateSpec};
use crate::ops::health::probe_http;
use crate::ops::swarm::{without_digest, Service, Swarm, Task};

/// One Swarm service's state: its tasks (a task that fails after the gate
/// began fails it), their containers' HEALTHCHECK on this node, and HTTP for the primary.
pub(super) fn observe_swarm(
    swarm: &Swarm,
    service: &str,
    http: Option<&GateSpec>,
    history: &mut HashMap<String, Vec<String>>,
) -> Check {
    let state = swarm.service(service).and_then(|s| Ok((s, swarm.tasks(service)?)));
    let (current, tasks) = match state {
        Ok((Some(current), tasks)) => (current, tasks),
        Ok((None, _)) => return Check::Fatal(format!("Swarm service {service} does not exist any more")),
        Err(e) => return Check::NotYet(format!("cannot inspect Swarm service {service}: {e:#}")),
    };
    // Without the tasks recorded before the switch (a gate after crash recovery that could not
    // list them), the failures the first look finds are history.
    let known = history
        .entry(service.to_string())
        .or_insert_with(|| tasks.iter().filter(|t| t.failed()).map(|t| t.id.clone()).collect());
    let docker = swarm.docker();
    let health = |id: &str| docker.inspect_container(id).ok().and_then(|c| c.state.health.map(|h| h.status));
    // Nodes that cannot be listed count as up: the tasks' own states still tell.
    let down = swarm.unready_nodes().unwrap_or_default();
    match (tasks_verdict_on(&current, &tasks, known, &health, &down), http) {
        (Check::Healthy, Some(spec)) => {
            http_verdict(&spec.url, &probe_http(&spec.url, Duration::from_secs(2)), spec.expect_version.as_ref())
        }
        (Check::Fatal(reason), _) => {
            let failed = new_failure(&tasks, current.image(), known).and_then(|t| t.container());
            Check::Fatal(match failed {
                Some(id) => with_logs(docker, id, reason),
                None => reason,
            })
        }
        (other, _) => other,
    }
}

/// A Swarm service's side of the verdict: Swarm's own update not paused or
/// rolled back, no task failed but those of `history` (the tasks there were
/// before the switch), and as many tasks running its current image as it asks
/// for, none failing its HEALTHCHECK (`health` reads a task container's, when
/// it runs on this node).
#[cfg(test)]
pub(crate) fn tasks_verdict(
    service: &Service,
    tasks: &[Task],
    history: &[String],
    health: &dyn Fn(&str) -> Option<String>,
) -> Check {
    tasks_verdict_on(service, tasks, history, health, &[])
}

/// [`tasks_verdict`] on a swarm where the nodes `down` (id, hostname) are not
/// ready. A task still live there cannot report: one on the image gated that
/// this update made cannot be judged, which fails the gate, naming the node
/// (the version is not proven everywhere it runs); one on another image (the
/// version a revert leaves), or one that was there before the update (the
/// previous version's own, in a revert), holds a slot Swarm fills once the
/// node is back, so it is neither waited for nor counted, and Swarm's update,
/// which cannot finish without that node, is not waited for either: the
/// version is judged on the nodes that are up.
pub(crate) fn tasks_verdict_on(
    service: &Service,
    tasks: &[Task],
    history: &[String],
    health: &dyn Fn(&str) -> Option<String>,
    down: &[(String, String)],
) -> Check {
    let name = &service.spec.name;
    let stranded = stranded_tasks(tasks, down);
    let made_here = |t: &Task| t.spec.container_spec.image == service.image() && !history.contains(&t.id);
    if let Some((task, node)) = stranded.iter().find(|(t, _)| made_here(t)) {
        return Check::Fatal(format!(
            "node {node} is down; its task cannot be judged (task {} of {name}, {})",
            task.id,
            without_digest(service.image())
        ));
    }
    if let Some(update) = &service.update_status {
        if matches!(update.state.as_str(), "paused" | "rollback_started" | "rollback_paused" | "rollback_completed") {
            return Check::Fatal(format!("Swarm's update of {name} is {}: {}", update.state, update.message));
        }
        // Until Swarm's own monitor period is over it may still pause or roll back the update.
        if update.state == "updating" && stranded.is_empty() {
            return Check::NotYet(format!("Swarm is still updating {name}"));
        }
    }
    if let Some(task) = new_failure(tasks, service.image(), history) {
        return Check::Fatal(format!(
            "a task of {name} {}: {}",
            task.status.state,
            task.status.err.as_deref().unwrap_or("no reason given")
        ));
    }
    let on_current_image: Vec<&Task> =
        tasks.iter().filter(|t| t.spec.container_spec.image == service.image()).collect();
    // A task that exited 0 on the new image and that Swarm does not restart is done, not
    // missing: one made by this switch (a revert to the image a job ran before finds that
    // run's task still listed), or any, when the switch changed nothing for the service.
    let made_by_switch = on_current_image.iter().any(|t| !history.contains(&t.id));
    let completed = match service.exit_zero_is_done() {
        true => on_current_image
            .iter()
            .filter(|t| t.status.state == "complete" && !(made_by_switch && history.contains(&t.id)))
            .count() as u64,
        false => 0,
    };
    let on_up_node = |t: &&Task| !down.iter().any(|(id, _)| *id == t.node_id);
    let current: Vec<&Task> = on_current_image
        .into_iter()
        .filter(|t| t.desired_state == "running" && t.status.state == "running")
        .filter(on_up_node)
        .collect();
    for task in &current {
        match task.container().and_then(health).as_deref() {
            Some("unhealthy") => return Check::Fatal(format!("a task of {name} reports unhealthy by its HEALTHCHECK")),
            Some("healthy") | None => {}
            Some(other) => return Check::NotYet(format!("a task of {name}: its HEALTHCHECK is {other}")),
        }
    }
    // A moved service scaled to 0 on purpose asks for nothing, and has it; a slot on a lost node waits for it.
    let wanted = service.replicas().unwrap_or(1).saturating_sub(lost_slots(tasks, down));
    // A one-shot job (a migration) that still runs has not proved anything yet.
    if service.is_one_shot() && !current.is_empty() && completed < wanted {
        return Check::NotYet(format!("the job {name} still runs"));
    }
    if current.len() as u64 + completed >= wanted {
        Check::Healthy
    } else {
        Check::NotYet(format!("{} of {wanted} tasks of {name} run {}", current.len(), without_digest(service.image())))
    }
}

/// The tasks still live (as last reported) on a node that is not ready, with that node's hostname.
pub(crate) fn stranded_tasks<'a>(tasks: &'a [Task], down: &'a [(String, String)]) -> Vec<(&'a Task, &'a str)> {
    tasks
        .iter()
        .filter(|t| t.is_live())
        .filter_map(|t| Some((t, down.iter().find(|(id, _)| !id.is_empty() && *id == t.node_id)?.1.as_str())))
        .collect()
}

/// How many slots wait for the nodes `down`: those of the tasks still live
/// there (a stop-first update may leave two tasks of one slot there, the old
/// one stopping, the new one assigned), and those whose only live task is one
/// Swarm cannot place until a node is back (one task a node, the others
/// taken). A slot whose old task still runs on a node that is up is not
/// waiting for a node: its new task is placed once the old one has stopped.
pub(crate) fn lost_slots(tasks: &[Task], down: &[(String, String)]) -> u64 {
    if down.is_empty() {
        return 0;
    }
    let on_up_node = |t: &Task| !t.node_id.is_empty() && !down.iter().any(|(id, _)| *id == t.node_id);
    let held_here = |slot: u64| tasks.iter().any(|t| t.slot == slot && t.is_live() && on_up_node(t));
    let stranded = stranded_tasks(tasks, down).into_iter().map(|(t, _)| t);
    let unplaced = tasks.iter().filter(|t| t.is_live() && t.waits_for_a_node() && (t.slot == 0 || !held_here(t.slot)));
    let waiting: Vec<&Task> = stranded.chain(unplaced).collect();
    let mut slots: Vec<u64> = waiting.iter().map(|t| t.slot).filter(|s| *s != 0).collect();
    slots.sort_unstable();
    slots.dedup();
    slots.len() as u64 + waiting.iter().filter(|t| t.slot == 0).count() as u64
}

/// A failed task that is a verdict on the version gated: one on its image
/// that was not there before the switch. An old task stopped by the update
/// may end `failed` (killed, exit 137), and in a revert the version left
/// behind may still fail while Swarm restarts it: that is history.
fn new_failure<'a>(tasks: &'a [Task], image: &str, history: &[String]) -> Option<&'a Task> {
    tasks.iter().find(|t| t.failed() && t.spec.container_spec.image == image && !history.contains(&t.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn swarm_service(update: Option<&str>, replicas: u64) -> Service {
        let update =
            update.map(|u| format!(r#","UpdateStatus":{{"State":"{u}","Message":"update {u}"}}"#)).unwrap_or_default();
        serde_json::from_str(&format!(
            r#"{{"ID":"s1","Spec":{{"Name":"shop_web","TaskTemplate":{{"ContainerSpec":{{"Image":"app:2@sha256:b"}}}},
                "Mode":{{"Replicated":{{"Replicas":{replicas}}}}}}}{update}}}"#
        ))
        .unwrap()
    }

    fn swarm_task(id: &str, image: &str, desired: &str, state: &str) -> Task {
        serde_json::from_str(&format!(
            r#"{{"ID":"{id}","NodeID":"n1","DesiredState":"{desired}","Spec":{{"ContainerSpec":{{"Image":"{image}"}}}},
                "Status":{{"State":"{state}","Err":"task: non-zero exit (1)","ContainerStatus":{{"ContainerID":"c-{id}"}}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_swarm_service_is_healthy_when_its_replicas_run_the_current_image() {
        let no_health = |_: &str| None;
        let old = swarm_task("t0", "app:1@sha256:a", "shutdown", "shutdown");
        let new = swarm_task("t1", "app:2@sha256:b", "running", "running");
        let service = swarm_service(Some("completed"), 1);
        assert_eq!(tasks_verdict(&service, &[old.clone(), new.clone()], &[], &no_health), Check::Healthy);
        let starting = swarm_task("t1", "app:2@sha256:b", "running", "starting");
        assert!(
            matches!(tasks_verdict(&service, &[old.clone(), starting], &[], &no_health), Check::NotYet(w) if w.contains("0 of 1 tasks"))
        );
        let two = swarm_service(Some("completed"), 2);
        assert!(matches!(tasks_verdict(&two, std::slice::from_ref(&new), &[], &no_health), Check::NotYet(_)));
        // A task still on the old image does not count for the new spec.
        let stale = swarm_task("t2", "app:1@sha256:a", "running", "running");
        assert!(matches!(tasks_verdict(&service, &[stale], &[], &no_health), Check::NotYet(_)));
        let healthcheck = |_: &str| Some("starting".to_string());
        assert!(matches!(tasks_verdict(&service, std::slice::from_ref(&new), &[], &healthcheck), Check::NotYet(_)));
        let unhealthy = |_: &str| Some("unhealthy".to_string());
        assert!(matches!(tasks_verdict(&service, std::slice::from_ref(&new), &[], &unhealthy), Check::Fatal(_)));
        // While Swarm's own update runs, its monitor may still roll it back: not healthy yet.
        let updating = swarm_service(Some("updating"), 1);
        assert!(
            matches!(tasks_verdict(&updating, &[new], &[], &no_health), Check::NotYet(w) if w.contains("still updating"))
        );
        // A moved service at 0 replicas asks for no task.
        assert_eq!(tasks_verdict(&swarm_service(None, 0), &[old], &[], &no_health), Check::Healthy);
    }

    #[test]
    fn a_one_shot_job_that_completed_on_the_new_image_is_done() {
        let no_health = |_: &str| None;
        let mut job = swarm_service(Some("completed"), 1);
        job.spec.task_template.restart_policy = Some(crate::ops::swarm::RestartPolicy { condition: "none".into() });
        let done = swarm_task("t1", "app:2@sha256:b", "shutdown", "complete");
        assert_eq!(tasks_verdict(&job, std::slice::from_ref(&done), &[], &no_health), Check::Healthy);
        // Still running, it has not finished its migration yet.
        let running = swarm_task("t1", "app:2@sha256:b", "running", "running");
        assert!(
            matches!(tasks_verdict(&job, std::slice::from_ref(&running), &[], &no_health), Check::NotYet(w) if w.contains("still runs"))
        );
        // `on-failure` does not restart an exit 0 either, but a server may use it: running counts.
        let mut on_failure = job.clone();
        on_failure.spec.task_template.restart_policy =
            Some(crate::ops::swarm::RestartPolicy { condition: "on-failure".into() });
        assert_eq!(tasks_verdict(&on_failure, std::slice::from_ref(&running), &[], &no_health), Check::Healthy);
        assert_eq!(tasks_verdict(&on_failure, std::slice::from_ref(&done), &[], &no_health), Check::Healthy);
        // One that completed on the old image says nothing of the new one.
        let old = swarm_task("t0", "app:1@sha256:a", "shutdown", "complete");
        assert!(matches!(tasks_verdict(&job, &[old], &[], &no_health), Check::NotYet(_)));
        // A service Swarm restarts whatever happens is never done by exiting.
        let server = swarm_service(Some("completed"), 1);
        assert!(matches!(tasks_verdict(&server, std::slice::from_ref(&done), &[], &no_health), Check::NotYet(_)));
        // Reverted to the image it ran before, the job's earlier run is history while the new one runs...
        let before = ["t1".to_string()];
        let rerun = swarm_task("t2", "app:2@sha256:b", "running", "running");
        assert!(matches!(tasks_verdict(&job, &[done.clone(), rerun], &before, &no_health), Check::NotYet(_)));
        // ...but when the switch made no task at all (nothing changed for it), that run stands.
        assert_eq!(tasks_verdict(&job, &[done], &before, &no_health), Check::Healthy);
    }

    #[test]
    fn a_task_that_fails_after_the_gate_began_or_swarms_own_rollback_fails_the_gate_at_once() {
        let no_health = |_: &str| None;
        let failed = swarm_task("t9", "app:2@sha256:b", "shutdown", "failed");
        let service = swarm_service(Some("completed"), 1);
        match tasks_verdict(&service, std::slice::from_ref(&failed), &[], &no_health) {
            Check::Fatal(why) => assert!(why.contains("a task of shop_web failed: task: non-zero exit (1)"), "{why}"),
            other => panic!("{other:?}"),
        }
        // A task there before the switch is history, also when it fails later (killed as the
        // update stops it); one made since fails the gate, also when it failed before the first look.
        let known = ["t9".to_string()];
        assert!(matches!(tasks_verdict(&service, std::slice::from_ref(&failed), &known, &no_health), Check::NotYet(_)));
        let killed_old = swarm_task("t8", "app:1@sha256:a", "shutdown", "failed");
        let new = swarm_task("t10", "app:2@sha256:b", "running", "running");
        let before = ["t8".to_string()];
        assert_eq!(tasks_verdict(&service, &[killed_old, new.clone()], &before, &no_health), Check::Healthy);
        assert!(matches!(tasks_verdict(&service, &[failed, new], &before, &no_health), Check::Fatal(_)));
        for state in ["paused", "rollback_completed"] {
            let service = swarm_service(Some(state), 1);
            assert!(matches!(tasks_verdict(&service, &[], &[], &no_health), Check::Fatal(w) if w.contains(state)));
        }
    }

    #[test]
    fn a_task_on_a_lost_node_fails_the_gate_on_its_image_and_holds_no_slot_on_another() {
        use crate::engine::strategy::swarm::tests::{task, web};
        let mut web = web(r#"{}"#, "[]");
        web.spec.mode.replicated = Some(crate::ops::swarm::Replicated { replicas: 2 });
        let no_health = |_: &str| None;
        let down = vec![("n2".to_string(), "dk2".to_string())];
        let tasks = [task("n1", "running"), task("n2", "running")];
        let check = tasks_verdict_on(&web, &tasks, &[], &no_health, &down);
        assert!(
            matches!(&check, Check::Fatal(w) if w.starts_with("node dk2 is down; its task cannot be judged")),
            "{check:?}"
        );
        // The revert: the lost node still runs the other version, and Swarm's update waits for it.
        let mut stale = task("n2", "running");
        stale.spec.container_spec.image = "reg/app:2@sha256:b".into();
        web.update_status = Some(crate::ops::swarm::UpdateStatus { state: "updating".into(), message: String::new() });
        let tasks = [task("n1", "running"), stale];
        assert_eq!(tasks_verdict_on(&web, &tasks, &[], &no_health, &down), Check::Healthy);
        // Up again, it is Swarm's update to wait for.
        assert!(matches!(tasks_verdict_on(&web, &tasks, &[], &no_health, &[]), Check::NotYet(_)));
    }

    #[test]
    fn a_revert_is_judged_on_the_nodes_that_are_up_and_not_failed_by_its_own_old_task_on_a_lost_one() {
        use crate::engine::strategy::swarm::tests::{task, web};
        let mut web = web(r#"{}"#, "[]");
        web.spec.mode.replicated = Some(crate::ops::swarm::Replicated { replicas: 2 });
        web.update_status = Some(crate::ops::swarm::UpdateStatus { state: "updating".into(), message: String::new() });
        let no_health = |_: &str| None;
        let down = vec![("n2".to_string(), "dk2".to_string())];
        // The lost node's task runs the previous version, as it did before the revert began: no
        // verdict on it, and its slot is not waited for; the slot on the node that is up decides.
        let (here, there) = (task("n1", "running"), task("n2", "running"));
        let before = [there.id.clone()];
        let tasks = [here.clone(), there.clone()];
        assert_eq!(tasks_verdict_on(&web, &tasks, &before, &no_health, &down), Check::Healthy);
        // Nor does it stand in for a slot on a node that is up.
        let mut old_here = here.clone();
        old_here.spec.container_spec.image = "reg/app:2@sha256:b".into();
        let check = tasks_verdict_on(&web, &[old_here, there.clone()], &before, &no_health, &down);
        assert!(matches!(&check, Check::NotYet(w) if w.starts_with("0 of 1 tasks of shop_web run")), "{check:?}");
        // Two tasks of one slot on the lost node (the old one stopping, the new one assigned) hold one slot.
        let mut old_there = there.clone();
        (old_there.id, old_there.slot) = ("t-old".into(), 2);
        let mut new_there = there;
        (new_there.slot, new_there.spec.container_spec.image) = (2, "reg/app:2@sha256:b".into());
        assert_eq!(lost_slots(&[here.clone(), old_there.clone(), new_there.clone()], &down), 1);
        let tasks = [here, old_there, new_there];
        assert_eq!(tasks_verdict_on(&web, &tasks, &["t-old".into()], &no_health, &down), Check::Healthy);
    }

    #[test]
    fn a_revert_waits_on_no_slot_swarm_cannot_place_and_no_failure_of_the_version_it_leaves() {
        use crate::engine::strategy::swarm::tests::{task, web};
        let mut web = web(r#"{}"#, "[]");
        web.spec.mode.replicated = Some(crate::ops::swarm::Replicated { replicas: 2 });
        let no_health = |_: &str| None;
        let down = vec![("n2".to_string(), "dk2".to_string())];
        let here = task("n1", "running");
        // The other slot's task, moved off the lost node, has nowhere to go (one task a node).
        let mut unplaced = task("", "running");
        (unplaced.id, unplaced.slot, unplaced.status.state) = ("t-unplaced".into(), 2, "pending".into());
        unplaced.status.err = Some("no suitable node (1 node not available for new tasks)".into());
        // And the version the revert leaves failed again on this node after the revert began.
        let mut crashed = task("n1", "failed");
        (crashed.id, crashed.spec.container_spec.image) = ("t-crashed".into(), "reg/app:2@sha256:b".into());
        crashed.status.err = Some("task: non-zero exit (1)".into());
        // Its slot's old task still running here (a stop-first update): not waiting for a node.
        let mut stopping = task("n1", "running");
        (stopping.id, stopping.slot, stopping.spec.container_spec.image) =
            ("t-stopping".into(), 2, "reg/app:2@sha256:b".into());
        assert_eq!(lost_slots(&[here.clone(), unplaced.clone(), stopping], &down), 0);
        let tasks = [here, unplaced, crashed.clone()];
        assert_eq!(lost_slots(&tasks, &down), 1);
        assert_eq!(tasks_verdict_on(&web, &tasks, &[], &no_health, &down), Check::Healthy);
        // With every node up, the unplaced task is waited for; a failure on the image gated is a verdict.
        assert!(matches!(tasks_verdict_on(&web, &tasks, &[], &no_health, &[]), Check::NotYet(_)));
        (crashed.spec.container_spec.image, crashed.id) = (web.image().to_string(), "t-new".into());
        assert!(matches!(tasks_verdict_on(&web, &[crashed], &[], &no_health, &down), Check::Fatal(_)));
    }
}
