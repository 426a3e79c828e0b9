//! Docker Swarm through the `docker` CLI: whether this node manages the
//! swarm, a service's spec and update status, its tasks, and the
//! `service update` commands that move it. Parsing only; callers decide what
//! it means.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use serde::Deserialize;

pub(crate) use crate::ops::docker::without_digest;
use crate::ops::docker::Docker;
use crate::ops::process::Cmd;

/// The label `docker stack deploy` puts on a stack's services and task containers.
pub(crate) const STACK_LABEL: &str = "com.docker.stack.namespace";
/// The label Swarm puts on a task's container: the service it belongs to.
pub(crate) const SERVICE_LABEL: &str = "com.docker.swarm.service.name";
/// What Swarm gives a task to stop when its service sets no `stop_grace_period`.
pub(crate) const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// The parts of `docker service inspect` upgraderd uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Service {
    pub spec: ServiceSpec,
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    pub task_template: TaskTemplate,
    pub mode: ServiceMode,
    #[serde(default)]
    pub update_config: Option<UpdateConfig>,
    #[serde(default)]
    pub endpoint_spec: Option<EndpointSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TaskTemplate {
    pub container_spec: ContainerSpec,
    #[serde(default)]
    pub restart_policy: Option<RestartPolicy>,
    #[serde(default)]
    pub placement: Option<Placement>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RestartPolicy {
    /// `any` (the default), `on-failure` or `none`.
    #[serde(default)]
    pub condition: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Placement {
    /// `node.id==…`, `node.hostname!=…`, `node.labels.x==y`, as the stack file gave them.
    #[serde(default)]
    pub constraints: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerSpec {
    /// `REPOSITORY:TAG@sha256:…` once Swarm resolved the digest.
    pub image: String,
    #[serde(default)]
    pub mounts: Vec<SpecMount>,
    /// The task containers' labels, as the stack file's service `labels:` set them.
    #[serde(default)]
    pub labels: Option<BTreeMap<String, String>>,
    /// How long Swarm waits after SIGTERM before it kills a task, in nanoseconds (unset: 10 s).
    #[serde(default)]
    pub stop_grace_period: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct SpecMount {
    /// `volume`, `bind`, `tmpfs`, `npipe`.
    #[serde(rename = "Type", default)]
    pub kind: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ServiceMode {
    #[serde(default)]
    pub replicated: Option<Replicated>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Replicated {
    #[serde(default)]
    pub replicas: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateConfig {
    /// `stop-first` (the default) or `start-first`.
    #[serde(default)]
    pub order: String,
    /// `pause` (the default), `continue` or `rollback`.
    #[serde(default)]
    pub failure_action: String,
    /// How many slots an update changes at once; 0 (which the engine leaves out) is all of them.
    #[serde(default)]
    pub parallelism: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct EndpointSpec {
    #[serde(default)]
    pub ports: Vec<PortConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct PortConfig {
    #[serde(default)]
    pub published_port: u32,
    /// `ingress` (the default) or `host`.
    #[serde(default)]
    pub publish_mode: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct UpdateStatus {
    /// `updating`, `paused`, `completed`, `rollback_started`, `rollback_paused`, `rollback_completed`.
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub message: String,
}

/// The parts of `docker inspect <task>` upgraderd uses.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: String,
    /// The replica it fills (1…replicas); 0 for a global service's task.
    #[serde(default)]
    pub slot: u64,
    #[serde(default)]
    pub desired_state: String,
    pub status: TaskStatus,
    pub spec: TaskSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TaskSpec {
    pub container_spec: ContainerSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct TaskStatus {
    /// `new` … `running`, then `complete`, `shutdown`, `failed`, `rejected`, `orphaned`.
    pub state: String,
    #[serde(default)]
    pub err: Option<String>,
    #[serde(default)]
    pub container_status: Option<ContainerStatus>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct ContainerStatus {
    #[serde(rename = "ContainerID", default)]
    pub container_id: String,
}

impl Service {
    /// Replicas asked for; `None` for a global service.
    pub(crate) fn replicas(&self) -> Option<u64> {
        self.spec.mode.replicated.as_ref().map(|r| r.replicas)
    }

    /// The stack that deployed it (`docker stack deploy`), when one did.
    pub(crate) fn stack(&self) -> Option<&str> {
        self.spec.labels.as_ref()?.get(STACK_LABEL).map(String::as_str)
    }

    pub(crate) fn image(&self) -> &str {
        &self.spec.task_template.container_spec.image
    }

    /// How long Swarm gives a task to stop before it kills it.
    pub(crate) fn stop_grace(&self) -> Duration {
        let nanos = self.spec.task_template.container_spec.stop_grace_period;
        nanos.map_or(DEFAULT_STOP_GRACE, Duration::from_nanos)
    }

    /// Whether Swarm never restarts its tasks (`restart_policy: condition:
    /// none`): a one-shot job, done when its task completes.
    pub(crate) fn is_one_shot(&self) -> bool {
        self.restart_condition() == "none"
    }

    /// Whether a task that exits 0 is done rather than restarted (`none`, and
    /// `on-failure`, which servers use too).
    pub(crate) fn exit_zero_is_done(&self) -> bool {
        matches!(self.restart_condition(), "none" | "on-failure")
    }

    fn restart_condition(&self) -> &str {
        self.spec.task_template.restart_policy.as_ref().map_or("any", |p| p.condition.as_str())
    }

    /// Whether its placement constraints pin its tasks to one node: by id, or by hostname.
    pub(crate) fn pinned_to(&self, node_id: &str, hostname: &str) -> bool {
        let constraints = self.spec.task_template.placement.iter().flat_map(|p| &p.constraints);
        constraints.into_iter().any(|c| {
            // Swarm matches constraint keys and values regardless of case.
            let Some((key, value)) = c.split_once("==") else { return false };
            let (key, value) = (key.trim().to_ascii_lowercase(), value.trim());
            match key.as_str() {
                "node.id" => value.eq_ignore_ascii_case(node_id),
                "node.hostname" => value.eq_ignore_ascii_case(hostname),
                _ => false,
            }
        })
    }

    /// Its name in its stack (`web` for `shop_web`).
    pub(crate) fn short_name(&self) -> &str {
        let name = self.spec.name.as_str();
        self.stack().and_then(|stack| name.strip_prefix(stack)?.strip_prefix('_')).unwrap_or(name)
    }

    /// A label its task containers get from the stack file.
    pub(crate) fn container_label(&self, key: &str) -> Option<&str> {
        self.spec.task_template.container_spec.labels.as_ref()?.get(key).map(String::as_str)
    }

    /// Whether its tasks keep data: a writable volume or bind mount.
    pub(crate) fn keeps_data(&self) -> bool {
        self.spec
            .task_template
            .container_spec
            .mounts
            .iter()
            .any(|m| (m.kind == "volume" || m.kind == "bind") && !m.read_only && !m.source.ends_with("docker.sock"))
    }
}

impl Task {
    /// The container running the task, once it has one.
    pub(crate) fn container(&self) -> Option<&str> {
        self.status.container_status.as_ref().map(|c| c.container_id.as_str()).filter(|id| !id.is_empty())
    }

    /// Whether Swarm holds it unplaced for want of a node ("no suitable node"):
    /// while a node is down, the task that node would take waits for it.
    pub(crate) fn waits_for_a_node(&self) -> bool {
        self.status.state == "pending" && self.status.err.as_deref().is_some_and(|e| e.contains("no suitable node"))
    }

    pub(crate) fn failed(&self) -> bool {
        matches!(self.status.state.as_str(), "failed" | "rejected")
    }
    /// Whether it runs or is on its way to running: any state before `complete`,
    /// `shutdown`, `failed`, `rejected`, `remove` or `orphaned`.
    pub(crate) fn is_live(&self) -> bool {
        !matches!(self.status.state.as_str(), "complete" | "shutdown" | "failed" | "rejected" | "remove" | "orphaned")
    }
}

/// This node, as placement constraints name it, and the size of its swarm.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ThisNode {
    pub id: String,
    pub hostname: String,
    /// Managers and workers (0 when this node is not a manager).
    pub nodes: u64,
}

/// One node of the swarm, from `docker node ls --format '{{json .}}'`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub hostname: String,
    /// `Ready`, `Down`, `Unknown`, `Disconnected`.
    #[serde(default)]
    pub status: String,
    /// `Leader`, `Reachable`, `Unreachable` for a manager; empty for a worker.
    #[serde(default)]
    pub manager_status: String,
}

impl Node {
    pub(crate) fn is_ready(&self) -> bool {
        self.status.eq_ignore_ascii_case("ready")
    }

    /// Whether it is a manager: only there can upgraderd change services.
    pub(crate) fn is_manager(&self) -> bool {
        !self.manager_status.is_empty()
    }
}

/// The nodes in `docker node ls --format '{{json .}}'` output, one JSON object a line.
pub(crate) fn parse_nodes(text: &str) -> Result<Vec<Node>> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).with_context(|| format!("unexpected `docker node ls` line: {l}")))
        .collect()
}

/// Swarm's side of the `docker` CLI.
#[derive(Debug, Clone)]
pub(crate) struct Swarm {
    docker: Docker,
}

impl Swarm {
    pub(crate) fn new(docker: Docker) -> Swarm {
        Swarm { docker }
    }

    pub(crate) fn docker(&self) -> &Docker {
        &self.docker
    }

    fn info(&self, format: &str) -> Result<String> {
        let out = self.docker.runner().run(&self.docker.cmd(["info", "--format", format]))?;
        Ok(out.stdout_text().trim().to_string())
    }

    /// Whether this node is a manager of an active swarm (only managers change services).
    pub(crate) fn is_manager(&self) -> Result<bool> {
        Ok(self.info("{{.Swarm.ControlAvailable}}")? == "true")
    }

    /// This node as placement constraints name it, and the size of its swarm.
    pub(crate) fn this_node(&self) -> Result<ThisNode> {
        let text = self.info("{{.Swarm.NodeID}}|{{.Name}}|{{.Swarm.Nodes}}")?;
        let fields: Vec<&str> = text.split('|').collect();
        let [id, hostname, nodes] = fields[..] else {
            return Err(anyhow!("unexpected `docker info` output for this Swarm node: {text:?}"));
        };
        let nodes = nodes.parse().with_context(|| format!("`docker info` gave {nodes:?} Swarm nodes"))?;
        Ok(ThisNode { id: id.to_string(), hostname: hostname.to_string(), nodes })
    }

    /// The nodes that are not `ready` (down, unknown, disconnected), by id and
    /// hostname: their tasks cannot stop, start or be judged until they come back.
    pub(crate) fn unready_nodes(&self) -> Result<Vec<(String, String)>> {
        Ok(self.nodes()?.into_iter().filter(|n| !n.is_ready()).map(|n| (n.id, n.hostname)).collect())
    }

    /// Every node of the swarm (only a manager can list them).
    pub(crate) fn nodes(&self) -> Result<Vec<Node>> {
        let cmd = self.docker.cmd(["node", "ls", "--format", "{{json .}}"]);
        parse_nodes(&self.docker.runner().run(&cmd)?.stdout_text())
    }

    /// A service by name or id; `None` when the swarm has none by that name.
    pub(crate) fn service(&self, name: &str) -> Result<Option<Service>> {
        let cmd = self.docker.cmd(["service", "inspect", "--", name]);
        let out = match self.docker.runner().run(&cmd) {
            Ok(out) => out,
            Err(e) if e.output().is_some_and(|o| o.stderr.to_lowercase().contains("no such service")) => {
                return Ok(None)
            }
            Err(e) => return Err(anyhow::Error::new(e).context(format!("inspecting Swarm service {name}"))),
        };
        let mut parsed: Vec<Service> = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker service inspect {name}` output"))?;
        Ok(parsed.pop())
    }

    /// A service that must exist.
    pub(crate) fn existing(&self, name: &str) -> Result<Service> {
        self.service(name)?
            .ok_or_else(|| anyhow!("Swarm service {name} does not exist (`docker service ls` lists the services)"))
    }

    /// The services a stack deployed.
    pub(crate) fn stack_services(&self, stack: &str) -> Result<Vec<Service>> {
        let list = self.docker.cmd(["service", "ls", "-q", "--filter", &format!("label={STACK_LABEL}={stack}")]);
        let ids: Vec<String> = self.docker.runner().run(&list)?.stdout_text().lines().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let out = self.docker.runner().run(&self.docker.cmd(["service", "inspect", "--"]).args(&ids))?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("unexpected `docker service inspect` output for stack {stack}"))
    }

    /// Every task of a service Swarm still remembers, current and past.
    pub(crate) fn tasks(&self, service: &str) -> Result<Vec<Task>> {
        let list = self.docker.cmd(["service", "ps", "-q", "--no-trunc", "--", service]);
        let ids: Vec<String> = self.docker.runner().run(&list)?.stdout_text().lines().map(str::to_string).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        // Swarm drops old tasks as it goes (scaling down, its task history limit): one listed a
        // moment ago may be gone. `docker inspect` still prints the others, and says which it lacks.
        let cmd = self.docker.cmd(["inspect", "--type", "task", "--"]).args(&ids);
        let out = self.docker.runner().output(&cmd)?;
        let only_gone = out.stderr.lines().filter(|l| !l.trim().is_empty()).all(|l| l.contains("not found"));
        if !out.ended.success() && !only_gone {
            return Err(anyhow!("`{}` failed: {}", cmd.display(), out.stderr.trim()));
        }
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("unexpected task inspect output for {service}"))
    }

    /// `docker service update --image IMAGE --replicas N`: one update, which
    /// Swarm rolls out by its update config, or `parallelism` slots at once when given.
    pub(crate) fn update(&self, service: &str, image: &str, replicas: u64, parallelism: Option<u64>) -> Cmd {
        let at_once: Vec<String> =
            parallelism.map(|p| vec!["--update-parallelism".to_string(), p.to_string()]).unwrap_or_default();
        self.docker
            .cmd(["service", "update", "--detach", "--with-registry-auth", "--image", image])
            .args(&at_once)
            .args(["--replicas", &replicas.to_string(), "--", service])
            .timeout(Duration::from_secs(120))
            .mutating()
    }

    /// `docker service update --update-parallelism N`: how many slots its
    /// updates change at once. A change of the update config alone starts no
    /// task; it replaces an update under way by one that goes on from where it is.
    pub(crate) fn set_update_parallelism(&self, service: &str, parallelism: u64) -> Cmd {
        self.docker
            .cmd(["service", "update", "--detach", "--update-parallelism", &parallelism.to_string(), "--", service])
            .timeout(Duration::from_secs(120))
            .mutating()
    }

    /// `docker service update --replicas N`: scales the service (0 stops every task).
    pub(crate) fn scale(&self, service: &str, replicas: u64) -> Cmd {
        self.docker
            .cmd(["service", "update", "--detach", "--replicas", &replicas.to_string(), "--", service])
            .timeout(Duration::from_secs(120))
            .mutating()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVICE: &str = r#"[{"ID":"s1","Spec":{"Name":"shop_app","Labels":{"com.docker.stack.namespace":"shop"},
        "TaskTemplate":{"ContainerSpec":{"Image":"127.0.0.1:5000/app:1.0.0@sha256:abc"}},
        "Mode":{"Replicated":{"Replicas":2}},
        "UpdateConfig":{"Parallelism":1,"FailureAction":"pause","Order":"stop-first"},
        "EndpointSpec":{"Ports":[{"TargetPort":3001,"PublishedPort":8080,"PublishMode":"host"}]}},
        "UpdateStatus":{"State":"completed","Message":"update completed"}}]"#;

    #[test]
    fn a_service_reads_its_stack_image_replicas_and_update_state() {
        let mut parsed: Vec<Service> = serde_json::from_str(SERVICE).unwrap();
        let service = parsed.pop().unwrap();
        assert_eq!(service.stack(), Some("shop"));
        assert_eq!(service.replicas(), Some(2));
        assert_eq!(without_digest(service.image()), "127.0.0.1:5000/app:1.0.0");
        assert_eq!(service.update_status.unwrap().state, "completed");
        assert_eq!(service.spec.update_config.unwrap().parallelism, Some(1));
        assert_eq!(service.spec.endpoint_spec.unwrap().ports[0].publish_mode, "host");
    }

    /// `docker service inspect` of a one-shot job as Docker 20.10 prints it (trimmed to one service).
    const JOB: &str = r#"{"ID":"181qdc","Spec":{"Name":"shop_db","Labels":{"com.docker.stack.namespace":"shop"},
        "TaskTemplate":{"ContainerSpec":{"Image":"jobexp:1","Labels":{"upgraderd.backup":"skip"},
          "Args":["sh","-c","sleep 1"],"Init":false,
          "Mounts":[{"Type":"volume","Source":"shop_pgdata","Target":"/var/lib/data"}],
          "StopGracePeriod":10000000000,"DNSConfig":{},"Isolation":"default"},
          "Resources":{"Limits":{},"Reservations":{}},
          "RestartPolicy":{"Condition":"none","Delay":5000000000,"MaxAttempts":0},
          "Placement":{"Constraints":["node.hostname == vm"]},"ForceUpdate":0,"Runtime":"container"},
        "Mode":{"Replicated":{"Replicas":1}},
        "UpdateConfig":{"Parallelism":1,"FailureAction":"continue","Monitor":5000000000,"MaxFailureRatio":0,
          "Order":"stop-first"},
        "EndpointSpec":{"Mode":"vip"}}}"#;

    /// Its task once it ran, from `docker inspect --type task`.
    const JOB_TASK: &str = r#"{"ID":"dyg5r0ogdx3r7rtzxbz8tptl8","Spec":{"ContainerSpec":{"Image":"jobexp:1"}},
        "NodeID":"0hddy7vyhlgr98f2yljdorg1q","Status":{"Timestamp":"2026-12-03T13:18:44.496882019Z",
          "State":"complete","Message":"finished","ContainerStatus":{"ContainerID":"b46bf7705d85","PID":0,
          "ExitCode":0},"PortStatus":{}},"DesiredState":"shutdown"}"#;

    #[test]
    fn a_job_reads_its_restart_policy_pin_labels_and_data_as_the_engine_prints_them() {
        let job: Service = serde_json::from_str(JOB).unwrap();
        assert_eq!(job.short_name(), "db");
        assert!(job.is_one_shot() && job.exit_zero_is_done());
        assert!(job.pinned_to("0hddy7vyhlgr98f2yljdorg1q", "vm"));
        assert!(!job.pinned_to("0hddy7vyhlgr98f2yljdorg1q", "vm2"));
        assert_eq!(job.container_label("upgraderd.backup"), Some("skip"));
        assert!(job.keeps_data());
        assert_eq!(job.stop_grace(), Duration::from_secs(10));
        assert_eq!(job.spec.update_config.unwrap().failure_action, "continue");
        let task: Task = serde_json::from_str(JOB_TASK).unwrap();
        assert_eq!((task.status.state.as_str(), task.desired_state.as_str()), ("complete", "shutdown"));
        assert!(!task.failed() && !task.is_live());
        let server: Service =
            serde_json::from_str(&JOB.replace(r#""Condition":"none""#, r#""Condition":"any""#)).unwrap();
        assert!(!server.is_one_shot() && !server.exit_zero_is_done());
    }

    /// `docker node ls --format '{{json .}}'` on a manager (Docker 20.10) whose worker is lost.
    const NODES: &str = r#"{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"dk1","ID":"m1x7ir0dkdz3vvf5d7o1h1dny","ManagerStatus":"Leader","Self":true,"Status":"Ready","TLSStatus":"Ready"}
{"Availability":"Active","EngineVersion":"20.10.24","Hostname":"dk2","ID":"w2kpx2c1v7wch8j1yq3xv1xmt","ManagerStatus":"","Self":false,"Status":"Down","TLSStatus":"Ready"}
"#;

    #[test]
    fn nodes_read_their_id_hostname_and_status() {
        let nodes = parse_nodes(NODES).unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!((nodes[0].hostname.as_str(), nodes[0].is_ready()), ("dk1", true));
        assert_eq!((nodes[1].id.as_str(), nodes[1].hostname.as_str()), ("w2kpx2c1v7wch8j1yq3xv1xmt", "dk2"));
        assert!(!nodes[1].is_ready());
        assert!(parse_nodes("").unwrap().is_empty());
    }

    #[test]
    fn a_task_names_its_container_once_it_has_one() {
        let task: Task = serde_json::from_str(
            r#"{"ID":"t1","NodeID":"n1","DesiredState":"running","Spec":{"ContainerSpec":{"Image":"app:2"}},
                "Status":{"State":"failed","Err":"task: non-zero exit (1)","ContainerStatus":{"ContainerID":"c9"}}}"#,
        )
        .unwrap();
        assert_eq!(task.container(), Some("c9"));
        assert!(task.failed());
        let pending: Task = serde_json::from_str(
            r#"{"ID":"t2","Spec":{"ContainerSpec":{"Image":"app:2"}},"Status":{"State":"pending"}}"#,
        )
        .unwrap();
        assert_eq!(pending.container(), None);
        assert!(!pending.failed());
    }
}
