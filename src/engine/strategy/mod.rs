//! How a new version is fetched and switched to, and how the old one is put
//! back. The pipeline owns the order, the journal and the data; a strategy
//! owns the images (and, for rebuild, the checkout).
//!
//! A strategy's `fetch` returns a [`Fetched`] value that only a strategy can
//! make and that `switch` consumes: there is nothing to switch to before a
//! fetch succeeded, and the type says so.

pub(crate) mod pull;
pub(crate) mod rebuild;
pub(crate) mod swarm;

use std::collections::HashMap;

use anyhow::Result;

use crate::config::Config;
use crate::engine::discover::{discover, git_for, registry_may_be_insecure, Deployment};
use crate::engine::journal::Journal;
use crate::engine::pin::names_a_version;
use crate::engine::preflight::Problem;
use crate::exit::usage;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::{Docker, ImageRef};
use crate::ops::process::{Cmd, Runner};
use crate::states::Strategy as Kind;
use crate::store::db::UpgradeRecord;
use crate::version::Target;
use crate::version::{flavour, without_flavour};

/// What the engine answers a create whose container name is taken.
const NAME_TAKEN: &str = "is already in use by container";

/// Runs a compose `up`, and once more when it failed on a container name
/// already taken: compose v2 creates the new container under a temporary
/// name (`<old id>_<name>`) and renames it last, so a recreate cut off by a
/// kill leaves that container behind, and the next `up` removes it while
/// creating the same temporary name again. That `up` fails; the one after
/// it finds one container and converges.
pub(crate) fn run_up(journal: &mut Journal, runner: &Runner, up: &Cmd) -> Result<()> {
    match journal.run(runner, up) {
        Err(e) if format!("{e:#}").contains(NAME_TAKEN) => {
            journal
                .log("Compose met a container left by a recreate that was cut off (a name in use); running it again");
            journal.run(runner, up)
        }
        other => other,
    }
}

/// The tag that keeps an image an upgrade replaced: `REPOSITORY:upgraderd-rollback-<upgrade id>`.
pub(crate) const ROLLBACK_TAG_PREFIX: &str = "upgraderd-rollback-";

/// What a fetch brought in, ready to switch to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fetched {
    /// What the switch moves to: an image reference (pull) or a commit (rebuild).
    pub target: String,
    /// The version the fetched target says it is (image label, tag at the commit), when it says.
    pub version: Option<String>,
    /// The primary's new image id, when the fetch pulled one.
    pub image_id: Option<String>,
    /// Every moved service would run the very image it runs now (`latest` pulled while `latest` runs).
    pub unchanged: bool,
}

impl Fetched {
    /// Only strategies fetch.
    fn new(target: impl Into<String>, version: Option<String>) -> Fetched {
        Fetched { target: target.into(), version, image_id: None, unchanged: false }
    }

    fn pulled(mut self, image_id: String, unchanged: bool) -> Fetched {
        self.image_id = Some(image_id);
        self.unchanged = unchanged;
        self
    }
}

pub(crate) trait Strategy {
    fn kind(&self) -> Kind;
    /// The compose project, and the service the gate watches.
    fn project(&self) -> &Project;
    /// Strategy-specific preflight checks; every problem is returned, none stops the others.
    fn preflight(&mut self, target: &Target, force: bool) -> Vec<Problem>;
    /// Downloads or builds the target and keeps the running version restorable.
    fn fetch(&mut self, journal: &mut Journal) -> Result<Fetched>;
    /// Before the switch, puts back what `fetch` and `prepare_switch` changed
    /// besides images (the rebuild checkout, a moved tag, a written pin), so an
    /// abandoned upgrade leaves the host as it was.
    fn undo_fetch(&mut self, _journal: &mut Journal) -> Result<()> {
        Ok(())
    }
    /// What the switch needs that can be done while the previous version
    /// still serves (a pinned version written into the project's files and
    /// proven), so that the outage holds only the switch itself; put back by
    /// `undo_fetch` when the attempt ends before the switch.
    fn prepare_switch(&mut self, _journal: &mut Journal) -> Result<()> {
        Ok(())
    }
    /// As the backup's first pass begins: starts what the switch can start
    /// ahead (compose, whose own start would otherwise fall in the outage),
    /// held back from the engine until `switch`. What fails here leaves the
    /// switch to start it as before.
    fn start_switch_early(&mut self, _journal: &mut Journal) {}
    /// Just before the backup stops the moved services: makes what was
    /// started ahead ready (started again when held too long, waited for
    /// until its own start is done), so that the outage holds none of it.
    fn ready_switch_early(&mut self, _journal: &mut Journal) {}
    /// Replaces the running version with the fetched one.
    fn switch(&mut self, fetched: Fetched, journal: &mut Journal) -> Result<()>;
    /// Stops the new version so its data can be restored.
    fn stop(&mut self, journal: &mut Journal) -> Result<()>;
    /// After a `stop` that failed part-way: starts again what it halted (the
    /// new version), so that a failed rollback never leaves the app down by accident.
    fn start_again(&mut self, journal: &mut Journal) -> Result<()>;
    /// Starts the previous version again.
    fn revert(&mut self, journal: &mut Journal) -> Result<()>;
    /// How each moved service's version is written and will move, one line
    /// each, for the log and `--dry-run` (after preflight).
    fn describe_moves(&self) -> Vec<String> {
        Vec::new()
    }
    /// Per Swarm service, the tasks there were before the last `switch` or
    /// `revert`: the gate takes them as history, and judges the ones made since.
    fn tasks_before_switch(&self) -> HashMap<String, Vec<String>> {
        HashMap::new()
    }
    /// After success: drop rollback material beyond retention (never a global prune).
    fn cleanup(&mut self, journal: &mut Journal, keep: usize);
    /// After an attempt that never switched: drop this upgrade's own rollback
    /// tags, which nothing will ever need. Failures are logged, never raised.
    fn discard(&mut self, journal: &mut Journal);
}

/// Whether the registry has `target`; a problem naming it when it does not.
pub(crate) fn target_exists(docker: &Docker, target: &ImageRef) -> Vec<Problem> {
    match docker.manifest_exists(target, registry_may_be_insecure(target)) {
        Ok(true) => Vec::new(),
        Ok(false) => {
            vec![Problem::new("registry", format!("{target} does not exist in the registry; check the version"))]
        }
        Err(e) => vec![Problem::from_error("registry", &e)],
    }
}

/// The tag of `target` as `running`'s registry spells it (`v1.1.0` for
/// `1.1.0` beside a running `v1.0.0`); when no spelling exists, the problem
/// names the tag as it was asked for.
pub(crate) fn resolve_tag(
    docker: &Docker,
    running: &ImageRef,
    target: &str,
) -> std::result::Result<String, Vec<Problem>> {
    let mut asked = Vec::new();
    for candidate in tag_candidates(target, &running.tag) {
        let reference = ImageRef { repository: running.repository.clone(), tag: candidate.clone() };
        let problems = target_exists(docker, &reference);
        if problems.is_empty() {
            return Ok(candidate);
        }
        if candidate == target {
            asked = problems;
        }
    }
    Err(asked)
}

/// The spellings of `target` to look for in the registry, the running tag's
/// first: `--to 1.1.0` while `v1.0.0` runs means the tag `v1.1.0`, when that exists.
pub(crate) fn tag_candidates(target: &str, running_tag: &str) -> Vec<String> {
    if !names_a_version(target) {
        return vec![target.to_string()];
    }
    if let (Some(flavour), None) = (flavour(running_tag), flavour(target)) {
        // `--to 1.2.4` beside `1.2.3-alpine` means the alpine flavour of 1.2.4, when it exists.
        let flavoured = format!("{target}-{flavour}");
        let mut candidates = tag_candidates(&flavoured, without_flavour(running_tag));
        candidates.extend(tag_candidates(target, without_flavour(running_tag)));
        return candidates;
    }
    let bare = target.strip_prefix('v').unwrap_or(target);
    let other = if target.starts_with('v') { bare.to_string() } else { format!("v{bare}") };
    let running_style_differs = names_a_version(running_tag) && running_tag.starts_with('v') != target.starts_with('v');
    if running_style_differs {
        vec![other, target.to_string()]
    } else {
        vec![target.to_string(), other]
    }
}

/// After `compose stop` failed: fine when none of `services`' containers runs
/// (a new version that crashed is already stopped), else the failure, naming
/// what still runs, so that nothing is restored under it. All services: `None`.
pub(crate) fn confirm_stopped(
    docker: &Docker,
    project: &Project,
    services: Option<&[String]>,
    stop: anyhow::Error,
    journal: &mut Journal,
) -> Result<()> {
    let containers = match docker.project_containers(&project.name) {
        Ok(containers) => containers,
        Err(e) => return Err(stop.context(format!("and whether it still runs is unknown: {e:#}"))),
    };
    let running: Vec<String> = containers
        .iter()
        .filter(|c| c.state.running)
        .filter_map(|c| project.service_of(c))
        .filter(|s| services.is_none_or(|moved| moved.contains(s)))
        .collect();
    if running.is_empty() {
        journal.log(&format!("Stopping the new version failed ({stop:#}); none of its containers runs"));
        return Ok(());
    }
    Err(stop.context(format!("still running: {}", running.join(", "))))
}

/// Removes one rollback tag (never the image a container runs: `docker image rm` without `-f`
/// only untags it); a tag that was never made is not an error.
pub(crate) fn drop_rollback_tag(docker: &Docker, reference: &str, journal: &mut Journal) {
    match docker.image_id(reference) {
        Ok(Some(_)) => {
            if let Err(e) = journal.run(docker.runner(), &docker.untag(reference)) {
                journal.log(&format!("could not remove the rollback tag {reference}: {e:#}"));
            }
        }
        Ok(None) => {}
        Err(e) => journal.log(&format!("could not look up the rollback tag {reference}: {e:#}")),
    }
}

/// Removes this repository's rollback tags except the current upgrade's and
/// those of the newest `keep` upgrades; never a global prune.
pub(crate) fn prune_rollback_tags(
    docker: &Docker,
    repository: &str,
    upgrade_id: &str,
    keep: usize,
    journal: &mut Journal,
) {
    let tags = match docker.tags_with_prefix(repository, ROLLBACK_TAG_PREFIX) {
        Ok(tags) => tags,
        Err(e) => return journal.log(&format!("could not list rollback tags: {e}")),
    };
    let protected: Vec<String> =
        journal.db.history(keep).map(|rows| rows.into_iter().map(|r| r.id).collect()).unwrap_or_default();
    for tag in tags {
        let id = tag.trim_start_matches(ROLLBACK_TAG_PREFIX);
        if id == upgrade_id || protected.iter().any(|p| p == id) {
            continue;
        }
        let reference = ImageRef::parse(repository).with_tag(&tag);
        if let Err(e) = docker.runner().run(&docker.untag(&reference)) {
            journal.log(&format!("could not remove {reference}: {e}"));
        }
    }
}

/// The strategy for a new upgrade of this deployment: a Swarm service is
/// always updated through Swarm; `rebuild` (and `swarm` for a compose
/// deployment) that cannot apply is a configuration error.
pub(crate) fn for_upgrade(
    config: &Config,
    kind: Kind,
    deployment: Deployment,
    upgrade_id: &str,
    runner: &Runner,
) -> Result<Box<dyn Strategy>> {
    let swarm = deployment.project.orchestrator == Orchestrator::Swarm;
    if !config.release_steps.is_empty() && (swarm || kind == Kind::Rebuild) {
        return Err(usage(
            "UPGRADERD_RELEASE_STEPS run through `compose run` with the pull strategy on compose; a Swarm stack or a \
             rebuild runs its migrations as a one-shot service of its own",
        ));
    }
    Ok(match (kind, swarm) {
        (Kind::Rebuild, true) => {
            return Err(usage(
                "the rebuild strategy builds through compose on this host, not for a Swarm service; use the \
                 default strategy (pull), which updates Swarm services",
            ))
        }
        (Kind::Swarm, false) => {
            return Err(usage(
                "UPGRADERD_STRATEGY=swarm needs a Swarm service: set UPGRADERD_SWARM_SERVICE=STACK_SERVICE, or \
                 UPGRADERD_CONTAINER to one of its task containers",
            ))
        }
        (_, true) => Box::new(
            swarm::SwarmUpdate::new(deployment.docker, deployment.project, config.health_timeout)
                .with_stack_files(&config.stack_files),
        ),
        (Kind::Pull, false) => Box::new(pull::Pull::new(
            deployment.docker,
            deployment.compose,
            deployment.project,
            &deployment.container,
            pull::Settings {
                configured_image: config.image.as_deref(),
                pin_channels: config.pin_channels,
                release_steps: &config.release_steps,
                allow_prerelease: config.allow_prerelease,
                early_compose: config.early_compose.then_some(config.state_dir.as_path()),
            },
            upgrade_id,
        )),
        (Kind::Rebuild, false) => {
            let git = git_for(config, &deployment.project, runner);
            Box::new(rebuild::Rebuild::new(
                deployment.docker,
                deployment.compose,
                deployment.project,
                git,
                (&config.git_remote, &config.git_branch),
                upgrade_id,
            ))
        }
    })
}

/// The strategy of a recorded upgrade, rebuilt from its journal row to put the previous version back.
pub(crate) fn resume(config: &Config, runner: &Runner, record: &UpgradeRecord) -> Result<Box<dyn Strategy>> {
    if record.strategy == Kind::Swarm {
        // Not rediscovered: a stack an interrupted upgrade left at 0 replicas has no task container to find.
        let docker = Docker::new(&config.docker, runner.clone());
        let project = swarm::recorded_project(record)?;
        return Ok(Box::new(swarm::SwarmUpdate::resume(docker, project, config.health_timeout, record)?));
    }
    let mut deployment = discover(config, runner)?;
    if !record.services.is_empty() {
        // What moved is what goes back, whatever runs now.
        deployment.project.services = record.services.clone();
    }
    let Deployment { docker, compose, project, .. } = deployment;
    Ok(if record.strategy == Kind::Rebuild {
        let git = git_for(config, &project, runner);
        Box::new(rebuild::Rebuild::resume(docker, compose, project, git, record)?)
    } else {
        Box::new(pull::Pull::resume(docker, compose, project, record)?)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_is_spelled_as_the_running_tag_is_first() {
        assert_eq!(tag_candidates("1.1.0", "v1.0.0"), vec!["v1.1.0", "1.1.0"]);
        assert_eq!(tag_candidates("v1.1.0", "v1.0.0"), vec!["v1.1.0", "1.1.0"]);
        assert_eq!(tag_candidates("v1.1.0", "1.0.0"), vec!["1.1.0", "v1.1.0"]);
        assert_eq!(tag_candidates("2.0.0", "latest"), vec!["2.0.0", "v2.0.0"]);
        assert_eq!(tag_candidates("latest", "v1.0.0"), vec!["latest"]);
        assert_eq!(tag_candidates("1.2.4", "1.2.3-alpine"), vec!["1.2.4-alpine", "v1.2.4-alpine", "1.2.4", "v1.2.4"]);
    }
}
