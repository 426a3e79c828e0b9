//! The Swarm strategy's decisions, on Docker's JSON (its fixtures are shared with the placement rules' tests).

use super::*;
use crate::engine::data::placement::{data_problems, Use};
use crate::ops::process::Runner;
use crate::ops::swarm::{Task, ThisNode};
use crate::store::db::Db;
use crate::ui::Ui;

pub(crate) fn service(json: &str) -> Service {
    serde_json::from_str(json).unwrap()
}

pub(crate) fn web(update: &str, ports: &str) -> Service {
    service(&format!(
        r#"{{"ID":"s1","Spec":{{"Name":"shop_web","Labels":{{"com.docker.stack.namespace":"shop"}},
           "TaskTemplate":{{"ContainerSpec":{{"Image":"reg/app:1@sha256:a",
             "Mounts":[{{"Type":"volume","Source":"shop_data","Target":"/data"}}]}}}},
           "Mode":{{"Replicated":{{"Replicas":1}}}},"UpdateConfig":{update},
           "EndpointSpec":{{"Ports":{ports}}}}}}}"#
    ))
}

pub(crate) fn task(node: &str, desired: &str) -> Task {
    serde_json::from_str(&format!(
        r#"{{"ID":"t-{node}","NodeID":"{node}","DesiredState":"{desired}",
            "Spec":{{"ContainerSpec":{{"Image":"reg/app:1@sha256:a"}}}},"Status":{{"State":"{desired}"}}}}"#
    ))
    .unwrap()
}

pub(crate) const HOST_PORT: &str = r#"[{"TargetPort":3001,"PublishedPort":8080,"PublishMode":"host"}]"#;

pub(crate) const MOVED: Use = Use { moved: true, restores: true };
pub(crate) const KEPT: Use = Use { moved: false, restores: true };

pub(crate) fn node(nodes: u64) -> ThisNode {
    ThisNode { id: "n1".into(), hostname: "host1".into(), nodes }
}

#[test]
fn a_sane_replicated_service_on_this_node_has_no_problem() {
    let web = web(r#"{"Order":"stop-first","FailureAction":"pause"}"#, HOST_PORT);
    assert!(service_problems(&web).is_empty());
    assert!(data_problems(&web, &[task("n1", "running"), task("n2", "shutdown")], &node(1), &[], MOVED).is_empty());
}

#[test]
fn start_first_with_a_host_port_and_an_update_under_way_are_refused() {
    let mut web = web(r#"{"Order":"start-first"}"#, HOST_PORT);
    web.update_status =
        Some(crate::ops::swarm::UpdateStatus { state: "paused".into(), message: "update paused".into() });
    let problems: Vec<String> = service_problems(&web).into_iter().map(|p| p.message).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    assert!(problems[0].contains("update of shop_web is paused"), "{}", problems[0]);
    assert!(problems[1].contains("start-first but publishes port 8080 in host mode"), "{}", problems[1]);
}

#[test]
fn a_one_shot_job_must_let_swarms_update_continue_past_its_exit() {
    let mut job = web(r#"{"FailureAction":"pause"}"#, "[]");
    job.spec.task_template.restart_policy = Some(crate::ops::swarm::RestartPolicy { condition: "none".into() });
    let problems = service_problems(&job);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("one-shot job"), "{problems:?}");
    job.spec.update_config =
        Some(crate::ops::swarm::UpdateConfig { failure_action: "continue".into(), ..Default::default() });
    assert!(service_problems(&job).is_empty());
}

#[test]
fn a_global_service_is_refused_and_an_ingress_port_with_start_first_is_fine() {
    let mut web = web(r#"{"Order":"start-first"}"#, r#"[{"PublishedPort":8080,"PublishMode":"ingress"}]"#);
    // `Mode: {"Global": {}}`: no replicated mode.
    web.spec.mode = crate::ops::swarm::ServiceMode { replicated: None };
    let problems = service_problems(&web);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(problems[0].message.contains("global service"));
    // Its data cannot be held still either; said once, by the moved service's own checks.
    assert!(data_problems(&web, &[], &node(1), &[], MOVED).is_empty());
    let kept = data_problems(&web, &[], &node(1), &[], KEPT);
    // `backup create` runs no moved service's checks: it says so itself.
    let backup = data_problems(&web, &[], &node(1), &[], Use { moved: true, restores: false });
    assert!(backup[0].message.contains("global service that keeps data"), "{backup:?}");
    assert!(kept[0].message.contains("global service that keeps data"), "{kept:?}");
}

#[test]
fn an_update_is_done_on_the_nodes_that_are_up_once_their_slots_run_its_image() {
    let mut web = web(r#"{"Parallelism":1}"#, "[]");
    web.spec.mode.replicated = Some(crate::ops::swarm::Replicated { replicas: 2 });
    assert_eq!(parallelism(&web), 1);
    let down = vec![("n2".to_string(), "dk2".to_string())];
    let mut stale = task("n1", "running");
    stale.spec.container_spec.image = "reg/app:2@sha256:b".into();
    // Swarm's rolling update is stuck on the lost node's slot: the slot here still runs the other image.
    assert!(!up_slots_run(&web, &[stale, task("n2", "running")], &down));
    assert!(up_slots_run(&web, &[task("n1", "running"), task("n2", "running")], &down));
    // With every node up, every slot counts, and a task on a lost node stands in for none.
    assert!(!up_slots_run(&web, &[task("n1", "running")], &[]));
    assert!(!up_slots_run(&web, &[task("n2", "running")], &[("n2".into(), "dk2".into()), ("n3".into(), "dk3".into())]));
    // The engine leaves out a parallelism of 0: every slot at once.
    assert_eq!(parallelism(&crate::engine::strategy::swarm::tests::web(r#"{}"#, "[]")), 0);
}

#[test]
fn the_runbook_records_the_specs_pulls_updates_scales_to_zero_and_updates_back_to_the_digest() {
    let runner = Runner::new(true);
    let ui = Ui::new(false, -1);
    let project = Project::stack("shop", "web", vec!["web".into(), "worker".into()]);
    let mut strategy = SwarmUpdate::new(Docker::new("docker", runner.clone()), project, Duration::from_secs(60));
    strategy.before = vec![
        Before { service: "shop_web".into(), image: "reg/app:1.0.0@sha256:old".into(), replicas: 2, parallelism: None },
        Before {
            service: "shop_worker".into(),
            image: "reg/app:1.0.0@sha256:old".into(),
            replicas: 1,
            parallelism: None,
        },
    ];
    strategy.target = Some(ImageRef::parse("reg/app:2.0.0"));
    let mut journal = Journal::new(Db::in_memory().unwrap(), "u1", &ui, None, "2.0.0");
    let fetched = strategy.fetch(&mut journal).unwrap();
    strategy.switch(fetched, &mut journal).unwrap();
    strategy.stop(&mut journal).unwrap();
    strategy.revert(&mut journal).unwrap();
    let update = "docker service update --detach --with-registry-auth --image";
    assert_eq!(
        runner.planned(),
        vec![
            "docker pull reg/app:2.0.0".to_string(),
            format!("{update} reg/app:2.0.0 --replicas 2 -- shop_web"),
            format!("{update} reg/app:2.0.0 --replicas 1 -- shop_worker"),
            "docker service update --detach --replicas 0 -- shop_web".to_string(),
            "docker service update --detach --replicas 0 -- shop_worker".to_string(),
            format!("{update} reg/app:1.0.0@sha256:old --replicas 2 -- shop_web"),
            format!("{update} reg/app:1.0.0@sha256:old --replicas 1 -- shop_worker"),
        ]
    );
}

#[test]
fn a_paused_update_says_whether_its_task_failed_or_exited_0() {
    let message = "update paused due to failure or early termination of task t-n1";
    let mut crashed = task("n1", "failed");
    crashed.status.err = Some("task: non-zero exit (1)".into());
    assert_eq!(why_paused(message, &[crashed]), " (it failed: task: non-zero exit (1))");
    let done = task("n1", "complete");
    assert!(why_paused(message, &[done]).contains("needs `update_config: failure_action: continue`"));
    // A task Swarm has already dropped, or another message: nothing is guessed.
    assert_eq!(why_paused(message, &[task("n2", "failed")]), "");
    assert_eq!(why_paused("update paused", &[task("n1", "complete")]), "");
}
