//! The Swarm strategy: every moved service of a stack goes to `REPO:VERSION`
//! through `docker service update --image … --with-registry-auth`, after its
//! spec (image digest and replicas) is recorded, and goes back by an update to
//! that recorded digest. `docker service rollback` is not used: stopping a
//! service for its backup or restore is itself an update (scale to 0), after
//! which Swarm's "previous spec" is no longer the version to go back to.
//!
//! Only managers change services, and only data on this node can be backed up
//! or restored: the rules for where a stack's data may be are the data set's
//! (`engine::data::placement`), asked by this strategy's preflight.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::halt::{self, Halt};
use crate::engine::journal::Journal;
use crate::engine::pin::{self, EnvFiles, Located, Pin, Place};
use crate::engine::preflight::Problem;
use crate::engine::strategy::{resolve_tag, Fetched, Kind, Strategy};
use crate::ops::compose::Project;
use crate::ops::compose_file::scan;
use crate::ops::docker::{Docker, ImageRef};
use crate::ops::swarm::{without_digest, Service, Swarm};
use crate::store::db::UpgradeRecord;
use crate::store::edited::EditedFile;
use crate::version::Target;

/// One moved service as it ran before the upgrade: what a rollback updates it back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Before {
    /// The Swarm service (`STACK_SERVICE`).
    pub service: String,
    /// Its image with the digest Swarm pinned (`REPO:TAG@sha256:…`).
    pub image: String,
    pub replicas: u64,
    /// Its update parallelism, which an update that finds a node lost raises
    /// for a while (see `settled`) and then sets back to this; unrecorded by
    /// upgraders before it, and then left as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallelism: Option<u64>,
}

pub(crate) struct SwarmUpdate {
    swarm: Swarm,
    project: Project,
    /// The repository the versions are tags of (the primary's image).
    repository: String,
    /// The moved services before the upgrade: found in preflight, or read from the journal row.
    before: Vec<Before>,
    target: Option<ImageRef>,
    /// How long Swarm may take to roll an update out.
    settle: Duration,
    /// Per moved service, its tasks before the last update.
    tasks_before: HashMap<String, Vec<String>>,
    /// `UPGRADERD_STACK_FILES`: the stack files whose pins move with the services.
    stack_files: Vec<PathBuf>,
    /// Set by preflight: the stack files' edits, and where.
    edits: Vec<EditedFile>,
    places: Vec<Place>,
}

/// The stack of a recorded Swarm upgrade, as its journal row names it: the
/// stack, the primary and the services that moved.
pub(crate) fn recorded_project(record: &UpgradeRecord) -> Result<Project> {
    let missing = |what: &str| anyhow!("upgrade {} recorded no {what}; it cannot be put back automatically", record.id);
    let service = record.service.clone().ok_or_else(|| missing("service"))?;
    let stack = record.compose_project.clone().ok_or_else(|| missing("stack"))?;
    Ok(Project::stack(stack, service, record.services.clone()))
}

impl SwarmUpdate {
    pub(crate) fn new(docker: Docker, project: Project, settle: Duration) -> SwarmUpdate {
        SwarmUpdate {
            swarm: Swarm::new(docker),
            project,
            repository: String::new(),
            before: Vec::new(),
            target: None,
            settle,
            tasks_before: HashMap::new(),
            stack_files: Vec::new(),
            edits: Vec::new(),
            places: Vec::new(),
        }
    }

    /// The stack files `docker stack deploy` reads: their pins are edited with the services.
    pub(crate) fn with_stack_files(mut self, files: &[PathBuf]) -> SwarmUpdate {
        self.stack_files = files.to_vec();
        self
    }

    /// The strategy of a recorded upgrade, rebuilt from its journal row to put it back.
    pub(crate) fn resume(
        docker: Docker,
        project: Project,
        settle: Duration,
        record: &UpgradeRecord,
    ) -> Result<SwarmUpdate> {
        let before: Vec<Before> = record
            .swarm_services
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .context("the recorded Swarm services do not read")?
            .ok_or_else(|| {
                anyhow!("upgrade {} recorded no Swarm services; it cannot be put back automatically", record.id)
            })?;
        let mut strategy = SwarmUpdate::new(docker, project, settle);
        strategy.repository =
            before.first().map(|b| ImageRef::parse(without_digest(&b.image)).repository).unwrap_or_default();
        strategy.before = before;
        Ok(strategy)
    }

    fn docker(&self) -> &Docker {
        self.swarm.docker()
    }

    /// The moved services as Swarm knows them now; a problem for each one that is missing.
    fn moved_services(&self, problems: &mut Vec<Problem>) -> Vec<Service> {
        let mut found = Vec::new();
        for service in &self.project.services {
            let name = self.project.swarm_service(service);
            match self.swarm.service(&name) {
                Ok(Some(s)) => found.push(s),
                Ok(None) => problems.push(Problem::new("swarm", format!("Swarm service {name} does not exist"))),
                Err(e) => problems.push(Problem::from_error("swarm", &e)),
            }
        }
        found
    }

    /// Waits until Swarm has rolled out the last update of `before`'s
    /// service; its own rollback or a paused update is a failure, with
    /// Swarm's message. An update that cannot finish because a slot of the
    /// service is on a node that is down is done once every slot on a node
    /// that is up runs the image: Swarm places the rest when the node is
    /// back, and the gate judges the nodes that are up (what it says is
    /// returned). The update parallelism that [`Self::update_all`] raised for
    /// it is set back only when no slot waits for a lost node: a change of the
    /// service that does not replace the task waiting there makes Swarm's
    /// scheduler forget it, so it is never placed (moby/moby#53722).
    fn settled(&self, journal: &mut Journal, before: &Before) -> Result<Option<String>> {
        if self.docker().runner().dry_run() {
            return Ok(None);
        }
        let service = before.service.as_str();
        let started = Instant::now();
        let deadline = started + self.settle;
        loop {
            let current = self.swarm.existing(service)?;
            let state = current.update_status.clone().unwrap_or_default();
            let stranded = match state.state.as_str() {
                "updating" => self.stranded_on(service),
                _ => Vec::new(),
            };
            match state.state.as_str() {
                // Swarm clears the status of the service it updates until its updater starts, and
                // leaves it clear when the update changes no task: clear at once is not yet done.
                "" if started.elapsed() < UPDATER_START && !self.up_slots_run_the_image(&current) => {}
                "" | "completed" => {
                    self.set_parallelism_back(journal, before, &current)?;
                    return Ok(None);
                }
                "updating" if !stranded.is_empty() && self.up_slots_run_the_image(&current) => {
                    let (nodes, runs) = (stranded.join(", "), without_digest(current.image()));
                    let back = match before.parallelism {
                        Some(recorded) if recorded != parallelism(&current) => format!(
                            "; its update parallelism stays {} until then (set back now, Swarm would forget that \
                             slot): `docker service update --update-parallelism {recorded} {service}` sets it back",
                            parallelism(&current)
                        ),
                        _ => String::new(),
                    };
                    return Ok(Some(format!(
                        "Swarm's update of {service} waits for node {nodes}, which is down: every slot on the nodes \
                         that are up runs {runs}, and Swarm places the one there when the node is back{back}; going \
                         on with the nodes that are up"
                    )));
                }
                "paused" | "rollback_started" | "rollback_paused" | "rollback_completed" => {
                    let tasks = self.swarm.tasks(service).unwrap_or_default();
                    let why = why_paused(&state.message, &tasks);
                    bail!("Swarm's update of {service} is {}: {}{why}", state.state, state.message)
                }
                _ => {}
            }
            if Instant::now() >= deadline {
                let waits = match stranded.is_empty() {
                    true => String::new(),
                    false => format!(" (node {} is down)", stranded.join(", ")),
                };
                bail!("Swarm's update of {service} is still {} after {}s{waits}", state.state, self.settle.as_secs())
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Whether every slot of `service` on a node that is up runs its image
    /// (the slots held by tasks on lost nodes wait for them).
    fn up_slots_run_the_image(&self, service: &Service) -> bool {
        let (Ok(down), Ok(tasks)) = (self.swarm.unready_nodes(), self.swarm.tasks(&service.spec.name)) else {
            return false;
        };
        up_slots_run(service, &tasks, &down)
    }

    /// Sets the update parallelism recorded before the upgrade back, when the
    /// service's differs (raised by [`Self::settled`], here or by an upgrader that was stopped).
    fn set_parallelism_back(&self, journal: &mut Journal, before: &Before, current: &Service) -> Result<()> {
        match before.parallelism {
            Some(recorded) if recorded != parallelism(current) => {
                let cmd = self.swarm.set_update_parallelism(&before.service, recorded);
                journal.run(self.docker().runner(), &cmd).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Updates every moved service to `image_of(before)` with the replicas it ran
    /// with, then waits for each. One that fails does not stop the others: a
    /// stack half on each version is worse than one with a service left behind.
    fn update_all(&mut self, journal: &mut Journal, image_of: &dyn Fn(&Before) -> String) -> Result<()> {
        self.record_tasks();
        let mut failures = Vec::new();
        let mut updated = Vec::new();
        for before in &self.before {
            // A rolling update (some slots at a time) may wait forever on the slot of a node that is
            // down, whose new task cannot be placed, and never reach the others: all at once, then.
            // Only in the update itself: raised later, Swarm would forget the task waiting there.
            let lost = match self.docker().runner().dry_run() {
                true => Vec::new(),
                false => self.stranded_on(&before.service),
            };
            let at_once = (!lost.is_empty() && before.parallelism != Some(0)).then_some(0);
            if at_once.is_some() {
                journal.log(&format!(
                    "Node {} is down with a task of {}: updating every slot at once",
                    lost.join(", "),
                    before.service
                ));
            }
            let update = self.swarm.update(&before.service, &image_of(before), before.replicas, at_once);
            match journal.run(self.docker().runner(), &update) {
                Ok(_) => updated.push(&before.service),
                Err(e) => failures.push(format!("updating {}: {e:#}", before.service)),
            }
        }
        for before in self.before.iter().filter(|b| updated.contains(&&b.service)) {
            match self.settled(journal, before) {
                Ok(Some(note)) => journal.log(&note),
                Ok(None) => {}
                Err(e) => failures.push(format!("{e:#}")),
            }
        }
        all_done(failures)
    }

    /// The hostnames of the nodes that are down with a task of `service` still live there.
    fn stranded_on(&self, service: &str) -> Vec<String> {
        let (Ok(down), Ok(tasks)) = (self.swarm.unready_nodes(), self.swarm.tasks(service)) else { return Vec::new() };
        let mut nodes: Vec<String> =
            crate::engine::gate::stranded_tasks(&tasks, &down).into_iter().map(|(_, node)| node.to_string()).collect();
        nodes.dedup();
        nodes
    }
    /// The moved services' tasks now, before an update: the gate judges only
    /// the tasks made since. With `failure_action: continue` Swarm goes on past
    /// a new task that fails, which the gate's first look would take for
    /// history; an old task killed as the update stops it may end `failed`,
    /// which is no verdict on the new version. A service whose tasks cannot be
    /// listed is left to the gate's first look.
    fn record_tasks(&mut self) {
        self.tasks_before.clear();
        if self.docker().runner().dry_run() {
            return;
        }
        for before in &self.before {
            if let Ok(tasks) = self.swarm.tasks(&before.service) {
                self.tasks_before.insert(before.service.clone(), tasks.into_iter().map(|t| t.id).collect());
            }
        }
    }

    /// The stack files' edits that write `tag` for every moved service: each
    /// must name the image the service runs with a version written in one place.
    fn plan_stack_files(&mut self, services: &[Service], tag: &str) -> Vec<Problem> {
        self.edits.clear();
        self.places.clear();
        if self.stack_files.is_empty() {
            return Vec::new();
        }
        let scan = match scan(&self.stack_files) {
            Ok(scan) => scan,
            Err(e) => return vec![Problem::from_error("stack-file", &e)],
        };
        let mut problems = Vec::new();
        for service in services {
            let name = service.short_name();
            let runs = without_digest(service.image());
            match pin::locate(name, &scan, &EnvFiles::default(), &self.project) {
                Ok(Located { pin: Pin::Version(place), reference, .. }) if reference == runs => self.places.push(place),
                Ok(located) => problems.push(Problem::new(
                    "stack-file",
                    format!(
                        "the stack files (UPGRADERD_STACK_FILES) give service {name} the image {}, but it runs \
                         {runs}; write `image: {runs}` there, then upgraderd keeps it in step",
                        located.reference
                    ),
                )),
                Err(why) => problems.push(Problem::new("stack-file", why)),
            }
        }
        match pin::plan_edits(&self.places.iter().collect::<Vec<_>>(), tag) {
            Ok(edits) => self.edits = edits,
            Err(why) => problems.push(Problem::new("stack-file", why)),
        }
        problems
    }

    fn describe_before(&self) -> String {
        self.before.iter().map(|b| format!("{} {}", b.service, b.image)).collect::<Vec<_>>().join(", ")
    }
}

/// How long Swarm may take to start the update of a service it was just asked to update.
const UPDATER_START: Duration = Duration::from_secs(3);

/// A service's update parallelism; the engine leaves out 0, all slots at once.
fn parallelism(service: &Service) -> u64 {
    service.spec.update_config.as_ref().and_then(|c| c.parallelism).unwrap_or(0)
}

/// Whether every slot of `service` on a node that is up runs its image: as
/// many tasks run it on ready nodes as it has replicas, less the slots held by
/// tasks still live on the nodes `down` (which the gate does not wait for either).
pub(crate) fn up_slots_run(service: &Service, tasks: &[crate::ops::swarm::Task], down: &[(String, String)]) -> bool {
    let lost = crate::engine::gate::lost_slots(tasks, down);
    let wanted = service.replicas().unwrap_or(1).saturating_sub(lost);
    let running = tasks
        .iter()
        .filter(|t| t.spec.container_spec.image == service.image())
        .filter(|t| t.desired_state == "running" && t.status.state == "running")
        .filter(|t| !down.iter().any(|(id, _)| *id == t.node_id))
        .count() as u64;
    running >= wanted
}

/// What the task Swarm's pause `message` names did ("update paused due to
/// failure or early termination of task ID"), said after the message: its
/// error when it failed; when it exited 0, that a service whose task is meant
/// to exit needs `failure_action: continue`. Nothing when it cannot be told.
fn why_paused(message: &str, tasks: &[crate::ops::swarm::Task]) -> String {
    let named = message.rsplit(' ').next().unwrap_or_default();
    match tasks.iter().find(|t| !named.is_empty() && t.id == named) {
        Some(task) if task.failed() => {
            format!(" (it failed: {})", task.status.err.as_deref().unwrap_or(task.status.state.as_str()))
        }
        Some(task) if task.status.state == "complete" => {
            " (it exited 0 within the update's monitor period: a service whose task is meant to exit needs \
             `update_config: failure_action: continue`)"
                .to_string()
        }
        _ => String::new(),
    }
}

/// `Ok` when nothing failed, else every failure in one error.
fn all_done(failures: Vec<String>) -> Result<()> {
    match failures.is_empty() {
        true => Ok(()),
        false => bail!("{}", failures.join("; ")),
    }
}

/// What preflight asks of one moved service, from Swarm's own view of it.
pub(crate) fn service_problems(service: &Service) -> Vec<Problem> {
    let name = &service.spec.name;
    let mut problems = Vec::new();
    if service.replicas().is_none() {
        problems.push(Problem::new(
            "swarm",
            format!(
                "{name} is a global service; its data is held still by scaling it to 0, which a global service cannot \
                 be: deploy it with `mode: replicated`"
            ),
        ));
    }
    if let Some(status) = &service.update_status {
        if matches!(status.state.as_str(), "updating" | "paused" | "rollback_started" | "rollback_paused") {
            problems.push(Problem::new(
                "swarm",
                format!(
                    "an update of {name} is {} ({}); let it finish, or `docker service rollback {name}`, first",
                    status.state, status.message
                ),
            ));
        }
    }
    let failure_action = service.spec.update_config.as_ref().map_or("", |c| c.failure_action.as_str());
    if service.is_one_shot() && failure_action != "continue" {
        problems.push(Problem::new(
            "swarm",
            format!(
                "{name} is a one-shot job (`restart_policy: condition: none`): Swarm pauses an update of it when its \
                 task ends within the update's monitor period, even with exit 0. Set `update_config: \
                 failure_action: continue`; the gate still fails the upgrade when the job's task fails"
            ),
        ));
    }
    let start_first = service.spec.update_config.as_ref().is_some_and(|c| c.order == "start-first");
    let host_ports: Vec<u32> = service
        .spec
        .endpoint_spec
        .iter()
        .flat_map(|e| &e.ports)
        .filter(|p| p.publish_mode == "host")
        .map(|p| p.published_port)
        .collect();
    if start_first && !host_ports.is_empty() {
        problems.push(Problem::new(
            "swarm",
            format!(
                "{name} updates start-first but publishes port {} in host mode: a new task cannot bind it while the \
                 old one runs; set `update_config: order: stop-first`",
                host_ports[0]
            ),
        ));
    }
    problems
}

impl Strategy for SwarmUpdate {
    fn kind(&self) -> Kind {
        Kind::Swarm
    }

    fn project(&self) -> &Project {
        &self.project
    }

    fn preflight(&mut self, target: &Target, force: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        match self.swarm.is_manager() {
            Ok(true) => {}
            Ok(false) => problems.push(Problem::new(
                "swarm",
                "this node is not a Swarm manager, and only managers change services: run upgraderd on a manager \
                 (`docker node ls` lists them)",
            )),
            Err(e) => problems.push(Problem::from_error("swarm", &e)),
        }
        let services = self.moved_services(&mut problems);
        self.before.clear();
        for service in &services {
            problems.extend(service_problems(service));
            self.before.push(Before {
                service: service.spec.name.clone(),
                image: service.image().to_string(),
                replicas: service.replicas().unwrap_or(0),
                parallelism: Some(parallelism(service)),
            });
        }
        let Some(primary) = services.first() else { return problems };
        let running = ImageRef::parse(without_digest(primary.image()));
        self.repository = running.repository.clone();
        let tag = match resolve_tag(self.docker(), &running, target.as_str()) {
            Ok(tag) => tag,
            Err(registry) => {
                problems.extend(registry);
                target.to_string()
            }
        };
        let target_ref = ImageRef { repository: self.repository.clone(), tag };
        if !force && running.tag == target_ref.tag && !target.is_latest() {
            problems.push(Problem::new(
                "version",
                format!("{} already runs {target_ref}; use --force to update it anyway", primary.spec.name),
            ));
        }
        problems.extend(self.plan_stack_files(&services, &target_ref.tag));
        self.target = Some(target_ref);
        problems
    }

    fn fetch(&mut self, journal: &mut Journal) -> Result<Fetched> {
        let target = self.target.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        // Journaled before any service changes, so recovery can always update them back.
        journal.db.record_swarm_services(&journal.upgrade_id, &serde_json::to_string(&self.before)?)?;
        // Pulled here too, so the new tasks on this node need not wait for it, and its labels can be read.
        journal
            .run(self.docker().runner(), &self.docker().pull(&target.to_string()).interruptible())
            .with_context(|| format!("pulling {target}"))?;
        if self.docker().runner().dry_run() {
            return Ok(Fetched::new(target.to_string(), None));
        }
        let new_id = self
            .docker()
            .image_id(&target.to_string())?
            .ok_or_else(|| anyhow!("{target} is not present after the pull"))?;
        let digest = self.docker().repo_digest(&target.to_string())?;
        let version = self.docker().image_version_label(&target.to_string())?;
        journal.db.record_new_image(&journal.upgrade_id, &new_id, digest.as_deref())?;
        journal.log(&format!("Pulled {target} ({})", digest.clone().unwrap_or_else(|| new_id.clone())));
        // Pinned to the digest, when known, so every node runs exactly the image that was pulled here.
        let pinned = digest.as_deref().and_then(|d| d.split_once('@')).map(|(_, sha)| format!("{target}@{sha}"));
        Ok(Fetched::new(pinned.unwrap_or_else(|| target.to_string()), version).pulled(new_id, false))
    }

    fn switch(&mut self, fetched: Fetched, journal: &mut Journal) -> Result<()> {
        let tag = self.target.as_ref().map(|t| t.tag.clone()).unwrap_or_default();
        pin::write(journal, &self.docker().runner().clone(), &self.edits, &self.places, &tag)?;
        if self.stack_files.is_empty() {
            journal.log(
                "The stack file still names the version that ran before: the next `docker stack deploy` puts it \
                 back. Set UPGRADERD_STACK_FILES to the stack files, and upgraderd keeps them in step",
            );
        }
        self.update_all(journal, &|_| fetched.target.clone()).context("updating the Swarm services")
    }

    fn stop(&mut self, journal: &mut Journal) -> Result<()> {
        let mut failures = Vec::new();
        for before in &self.before {
            let halt = Halt::SwarmService { name: before.service.clone(), replicas: before.replicas };
            journal.log(&format!("Scaling {} to 0", before.service));
            if let Err(e) = halt::stop(self.docker(), &halt, crate::engine::data::STOP_GRACE) {
                failures.push(format!("stopping {}: {e:#}", before.service));
            }
        }
        all_done(failures)
    }

    /// Scales every moved service back to the replicas it ran with: a stop
    /// that failed part-way must not leave some at 0.
    fn start_again(&mut self, journal: &mut Journal) -> Result<()> {
        let mut failures = Vec::new();
        for before in &self.before {
            journal.log(&format!("Scaling {} back to {}", before.service, before.replicas));
            let halt = Halt::SwarmService { name: before.service.clone(), replicas: before.replicas };
            if let Err(e) = halt::start(self.docker(), &halt) {
                failures.push(format!("scaling {} back: {e:#}", before.service));
            }
        }
        all_done(failures)
    }

    fn revert(&mut self, journal: &mut Journal) -> Result<()> {
        let upgrade_id = journal.upgrade_id.clone();
        pin::restore(journal, &self.docker().runner().clone(), &upgrade_id)?;
        self.update_all(journal, &|before| before.image.clone()).context("updating the Swarm services back")
    }

    fn tasks_before_switch(&self) -> HashMap<String, Vec<String>> {
        self.tasks_before.clone()
    }

    fn cleanup(&mut self, journal: &mut Journal, _keep: usize) {
        // The previous image stays in its registry under its digest: nothing local to drop.
        journal.log(&format!("Previous images kept in the registry: {}", self.describe_before()));
    }

    fn discard(&mut self, _journal: &mut Journal) {}
}

#[cfg(test)]
pub(crate) mod tests;
