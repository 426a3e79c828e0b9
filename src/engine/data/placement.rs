//! Where a Swarm stack's data may be: which stack services' data is backed
//! up, and what that asks of where they run. Only data on this node can be
//! backed up or restored, so preflight refuses a service whose backed-up data
//! runs on another node, may be moved to one (not pinned here on a swarm of
//! several nodes), or cannot be held still (a global service).

use crate::config::Config;
use crate::engine::data::MODE_LABEL;
use crate::engine::preflight::Problem;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::Docker;
use crate::ops::swarm::{Node, Service, Swarm, Task, ThisNode};
use crate::states::BackupMode;

/// Whether upgraderd backs up a stack service's data: it keeps some, and
/// neither `UPGRADERD_BACKUP_MODES` nor the stack file's `upgraderd.backup`
/// label (on the service's containers) says `skip`. The same order as for a
/// running container: the setting first, then the label. (The spec holds the
/// stack file's labels only: an image's own label, ignored there, is not in it.)
/// Conservative: a service whose mounts `UPGRADERD_DATA_DIR` or
/// `UPGRADERD_BACKUP_EXCLUDE` leave out still counts; `skip` says so plainly.
pub(crate) fn backed_up(config: &Config, service: &Service) -> bool {
    let configured = config.backup_modes.iter().find(|(s, _)| s == service.short_name()).map(|(_, mode)| *mode);
    let label = || service.container_label(MODE_LABEL).and_then(|text| BackupMode::parse(text.trim()));
    let mode = configured.or_else(label);
    service.keeps_data() && mode != Some(BackupMode::Skip)
}

/// What backing up (and, for an upgrade, restoring) a stack's data asks of
/// where its services run, for every service whose data is backed up (see
/// [`data_problems`]; `restores` asks for the pin too). Only data on this node
/// is backed up: refused rather than left out. Nothing for a compose project.
pub(crate) fn placement_problems(config: &Config, docker: &Docker, project: &Project, restores: bool) -> Vec<Problem> {
    if project.orchestrator != Orchestrator::Swarm {
        return Vec::new();
    }
    let swarm = Swarm::new(docker.clone());
    let node = match swarm.this_node() {
        Ok(node) => node,
        Err(e) => return vec![Problem::from_error("swarm", &e.context("reading this node's place in the swarm"))],
    };
    // Only to name the node a task runs on: without them it is named by id.
    let nodes = swarm.nodes().unwrap_or_default();
    let services = match swarm.stack_services(&project.name) {
        Ok(services) => services,
        Err(e) => return vec![Problem::from_error("swarm", &e)],
    };
    let mut problems = Vec::new();
    for service in services.iter().filter(|s| backed_up(config, s)) {
        // A moved service's own checks already refuse a global one.
        let moved = project.services.iter().any(|m| m == service.short_name());
        match swarm.tasks(&service.spec.name) {
            Ok(tasks) => problems.extend(data_problems(service, &tasks, &node, &nodes, Use { moved, restores })),
            Err(e) => problems.push(Problem::from_error("swarm", &e)),
        }
    }
    problems
}

/// What upgraderd does with a stack service whose data it backs up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Use {
    /// It moves to the new version (its own checks refuse a global one).
    pub moved: bool,
    /// Its data may be restored and the service scaled back (an upgrade, not `backup create`).
    pub restores: bool,
}

/// What one stack service whose data is backed up must be: held still by
/// scaling it to 0 (not global), running on this node (only its volumes are
/// here), and, when its data may be restored, kept here (pinned to this node,
/// on a swarm of several nodes, or Swarm may start it elsewhere, away from its
/// data, after a failure, a drain or the scale-up after a restore). `nodes`
/// (the swarm's, when they could be listed) name the node a task runs on.
pub(crate) fn data_problems(
    service: &Service,
    tasks: &[Task],
    node: &ThisNode,
    nodes: &[Node],
    by: Use,
) -> Vec<Problem> {
    let name = &service.spec.name;
    let leave_out = format!("or leave its data out with UPGRADERD_BACKUP_MODES={}=skip", service.short_name());
    let pin = format!("`deploy: placement: constraints: [node.hostname == {}]`", node.hostname);
    // A moved global service is refused by the upgrade's own checks already; `backup create` has none.
    if service.replicas().is_none() && !(by.moved && by.restores) {
        return vec![Problem::new(
            "swarm",
            format!(
                "{name} is a global service that keeps data: upgraderd holds a service's data still by scaling it \
                 to 0, which a global service cannot be. Deploy it with `mode: replicated` pinned to this node \
                 ({pin}), {leave_out}"
            ),
        )];
    }
    let elsewhere =
        tasks.iter().find(|t| t.desired_state == "running" && !t.node_id.is_empty() && t.node_id != node.id);
    if let Some(task) = elsewhere {
        let other = nodes.iter().find(|n| n.id == task.node_id && !n.hostname.is_empty());
        let there = match other {
            Some(other) => format!("node {} (id {})", other.hostname, other.id),
            None => format!("node id {} (`docker node ls` names it)", task.node_id),
        };
        // Only a manager changes services: running upgraderd on a worker is no way out.
        let or_there = match other {
            Some(other) if !other.is_manager() => {
                format!("; {} is a worker, where upgraderd cannot change services; {leave_out}", other.hostname)
            }
            _ => format!("; or run upgraderd on that node, {leave_out}"),
        };
        return vec![Problem::new(
            "swarm",
            format!(
                "{name} keeps data in volumes and runs a task on {there}, not on this node ({}, id {}): upgraderd \
                 backs up and restores only volumes on the node it runs on. Pin the service to this node: add \
                 {pin} to its stack file and deploy it again{or_there}",
                node.hostname, node.id
            ),
        )];
    }
    if by.restores && node.nodes > 1 && !service.pinned_to(&node.id, &node.hostname) {
        return vec![Problem::new(
            "swarm",
            format!(
                "{name} keeps data in volumes on this node, but nothing keeps its tasks here: on a swarm of {} \
                 nodes Swarm may start it on another node (after a failure, a drain or an update), away from its \
                 data and its backup. Pin it to this node ({pin}, or `node.id == {}`), {leave_out}",
                node.nodes, node.id
            ),
        )];
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::strategy::swarm::tests::{node, task, web, KEPT, MOVED};

    #[test]
    fn data_on_another_node_or_free_to_move_there_is_refused_and_data_pinned_here_is_fine() {
        let web = web(r#"{}"#, "[]");
        let elsewhere = data_problems(&web, &[task("n2", "running")], &node(1), &[], MOVED);
        assert_eq!(elsewhere.len(), 1, "{elsewhere:?}");
        let message = &elsewhere[0].message;
        assert!(
            message.contains("runs a task on node id n2 (`docker node ls` names it), not on this node (host1, id n1)"),
            "{message}"
        );
        assert!(message.contains("UPGRADERD_BACKUP_MODES=web=skip"), "{message}");
        // One node: nowhere else to go. Several: it must be pinned here.
        assert!(data_problems(&web, &[task("n1", "running")], &node(1), &[], MOVED).is_empty());
        let free = data_problems(&web, &[task("n1", "running")], &node(3), &[], MOVED);
        assert_eq!(free.len(), 1, "{free:?}");
        assert!(free[0].message.contains("on a swarm of 3 nodes Swarm may start it on another node"), "{free:?}");
        assert!(free[0].message.contains("node.hostname == host1"), "{free:?}");
        for constraint in ["node.hostname == host1", "node.id==n1"] {
            let mut pinned = web.clone();
            pinned.spec.task_template.placement =
                Some(crate::ops::swarm::Placement { constraints: vec![constraint.into()] });
            assert!(data_problems(&pinned, &[task("n1", "running")], &node(3), &[], MOVED).is_empty(), "{constraint}");
        }
        // `backup create` restores nothing: the data here now is all it needs.
        let backup = Use { moved: false, restores: false };
        assert!(data_problems(&web, &[task("n1", "running")], &node(3), &[], backup).is_empty());
        assert_eq!(data_problems(&web, &[task("n2", "running")], &node(3), &[], backup).len(), 1);
        // Swarm matches constraints regardless of case.
        let mut shouted = web.clone();
        shouted.spec.task_template.placement =
            Some(crate::ops::swarm::Placement { constraints: vec!["Node.Hostname==HOST1".into()] });
        assert!(data_problems(&shouted, &[task("n1", "running")], &node(3), &[], MOVED).is_empty());
        let mut other = web.clone();
        other.spec.task_template.placement =
            Some(crate::ops::swarm::Placement { constraints: vec!["node.hostname==host2".into()] });
        assert_eq!(data_problems(&other, &[], &node(3), &[], KEPT).len(), 1);
    }

    /// A task of a stack service, as `docker inspect --type task` prints it (Docker 20.10), on the worker.
    const TASK_ON_THE_WORKER: &str = r#"{"ID":"k3b1m9f0n2q4r6s8t0v2w4x6y","Version":{"Index":31},
        "Spec":{"ContainerSpec":{"Image":"127.0.0.1:5000/shop/web:1.0.0@sha256:0f72",
          "Mounts":[{"Type":"volume","Source":"shop_webdata","Target":"/data"}]}},
        "ServiceID":"s1","Slot":1,"NodeID":"w2kpx2c1v7wch8j1yq3xv1xmt",
        "Status":{"Timestamp":"2026-12-03T13:18:44.496882019Z","State":"running","Message":"started",
          "ContainerStatus":{"ContainerID":"b46bf7705d85","PID":4242,"ExitCode":0},"PortStatus":{}},
        "DesiredState":"running"}"#;

    /// `docker node ls --format '{{json .}}'` on the manager, dk1, of that swarm.
    const NODES: &str = r#"{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"dk1","ID":"n1","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Ready"}
{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"dk2","ID":"w2kpx2c1v7wch8j1yq3xv1xmt","ManagerStatus":"","Self":false,"Status":"Ready","TLSStatus":"Ready"}"#;

    #[test]
    fn data_on_the_worker_is_refused_naming_the_worker_and_the_constraint_to_add() {
        let web = web(r#"{}"#, "[]");
        let task: Task = serde_json::from_str(TASK_ON_THE_WORKER).unwrap();
        let nodes = crate::ops::swarm::parse_nodes(NODES).unwrap();
        let manager = ThisNode { id: "n1".into(), hostname: "dk1".into(), nodes: 2 };
        let problems = data_problems(&web, &[task], &manager, &nodes, MOVED);
        assert_eq!(problems.len(), 1, "{problems:?}");
        let message = &problems[0].message;
        assert!(
            message.contains("runs a task on node dk2 (id w2kpx2c1v7wch8j1yq3xv1xmt), not on this node (dk1, id n1)"),
            "{message}"
        );
        assert!(message.contains("add `deploy: placement: constraints: [node.hostname == dk1]`"), "{message}");
        assert!(message.contains("dk2 is a worker, where upgraderd cannot change services"), "{message}");
        assert!(!message.contains("run upgraderd on that node"), "{message}");
    }

    #[test]
    fn a_service_is_backed_up_unless_the_setting_or_its_stack_files_label_skips_it() {
        let layers = crate::config::Layers::resolve(&[], &crate::config::Env::default(), None);
        let mut config = Config::from_layers(&layers).unwrap();
        let mut web = web(r#"{}"#, "[]");
        assert!(backed_up(&config, &web));
        web.spec.task_template.container_spec.labels = Some([(MODE_LABEL.to_string(), "skip".to_string())].into());
        assert!(!backed_up(&config, &web));
        // The operator's setting wins over the label, as for a compose container.
        config.backup_modes = vec![("web".into(), BackupMode::Live)];
        assert!(backed_up(&config, &web));
        config.backup_modes = vec![("web".into(), BackupMode::Skip)];
        web.spec.task_template.container_spec.labels = None;
        assert!(!backed_up(&config, &web));
        config.backup_modes.clear();
        web.spec.task_template.container_spec.mounts.clear();
        assert!(!backed_up(&config, &web), "no mount, no data");
    }
}
