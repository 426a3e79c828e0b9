//! The image-pull strategy, for a release family: every moved service keeps
//! its own repository and goes to the same version. A service whose version
//! is written down (a literal tag, a variable in `.env`, a default in the
//! expression) has that pin edited, exactly the tag's bytes; a service on a
//! channel (`latest`, `release`) has its tag moved to the new image, the
//! MeshMonitor way. The images it ran are kept under
//! `REPOSITORY:upgraderd-rollback-<id>`, and rollback puts the files back
//! byte for byte, the old images under their old references, and recreates.
//!
//! Here: the runbook (`impl Strategy for Pull`); `family` finds the moved
//! services and what keeps them from moving, for preflight; `early` starts
//! the switch's compose while the backup's final pass runs.

mod early;
mod family;

pub(crate) use early::remove_leftover_gate;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::config::steps::ReleaseStep;
use crate::engine::journal::Journal;
use crate::engine::pin::{self, Place};
use crate::engine::preflight::Problem;
use crate::engine::strategy::run_up;
use crate::engine::strategy::{
    confirm_stopped, drop_rollback_tag, prune_rollback_tags, resolve_tag, target_exists, Fetched, Kind, Strategy,
    ROLLBACK_TAG_PREFIX,
};
use crate::ops::compose::{Compose, HeldUp, Project};
use crate::ops::docker::{Container, Docker, ImageRef};
use crate::store::db::UpgradeRecord;
use crate::store::edited::EditedFile;
use crate::version::Target;
use crate::version::{in_flavour_of, same_version};

/// One service of the release family: what it ran, and where the upgrade takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Member {
    pub service: String,
    /// The reference its compose files gave it before the upgrade.
    pub previous_ref: String,
    /// The image it ran; none for a service without a container (a job removed after it ran).
    pub previous_image_id: Option<String>,
    /// Its own repository with the target tag.
    pub target_ref: String,
    /// Its tag is a channel that is moved to the new image, not a pin that is edited.
    pub retag: bool,
}

impl Member {
    fn repository(&self) -> String {
        ImageRef::parse(&self.previous_ref).repository
    }
}

pub(crate) struct Pull {
    pub docker: Docker,
    pub compose: Compose,
    pub project: Project,
    pub upgrade_id: String,
    /// The primary's container, as discovery found it (none when resumed).
    primary: Option<Container>,
    /// `UPGRADERD_IMAGE`: the primary's repository, when the container's reference does not name it.
    configured_image: Option<String>,
    /// `UPGRADERD_PIN_CHANNELS`: write the version over a channel's name instead of moving the channel.
    pin_channels: bool,
    /// Set by preflight (or the journal, when resumed): the family, primary first.
    members: Vec<Member>,
    /// Set by preflight: the edits the switch writes, and each pinned service's place.
    edits: Vec<EditedFile>,
    pinned: Vec<(String, Place)>,
    /// `UPGRADERD_RELEASE_STEPS`: run with the new images before anything serves them.
    release_steps: Vec<ReleaseStep>,
    /// `UPGRADERD_ALLOW_PRERELEASE`: whether `latest` of a pinned family may be a prerelease.
    allow_prerelease: bool,
    /// `UPGRADERD_EARLY_COMPOSE`: where the gate before the engine listens (the state directory), when enabled.
    gate_dir: Option<PathBuf>,
    /// The switch's `up`, started with the backup's first pass and held until the switch.
    held_up: Option<HeldUp>,
    /// Compose was found not to go through the gate (or the gate not to lead to upgraderd's engine).
    gate_refused: bool,
}

/// What a new pull upgrade is told by the configuration.
pub(crate) struct Settings<'a> {
    pub configured_image: Option<&'a str>,
    pub pin_channels: bool,
    pub release_steps: &'a [ReleaseStep],
    pub allow_prerelease: bool,
    /// The state directory, when compose may be started ahead of the switch (`UPGRADERD_EARLY_COMPOSE`).
    pub early_compose: Option<&'a Path>,
}

impl Pull {
    pub(crate) fn new(
        docker: Docker,
        compose: Compose,
        project: Project,
        container: &Container,
        settings: Settings,
        upgrade_id: &str,
    ) -> Pull {
        Pull {
            docker,
            compose,
            project,
            upgrade_id: upgrade_id.to_string(),
            primary: Some(container.clone()),
            configured_image: settings.configured_image.map(str::to_string),
            pin_channels: settings.pin_channels,
            members: Vec::new(),
            edits: Vec::new(),
            pinned: Vec::new(),
            release_steps: settings.release_steps.to_vec(),
            allow_prerelease: settings.allow_prerelease,
            gate_dir: settings.early_compose.map(Path::to_path_buf),
            held_up: None,
            gate_refused: false,
        }
    }

    /// The strategy of an interrupted upgrade, rebuilt from its journal row to put it back.
    pub(crate) fn resume(docker: Docker, compose: Compose, project: Project, record: &UpgradeRecord) -> Result<Pull> {
        let members = match &record.family {
            Some(json) => serde_json::from_str(json)
                .with_context(|| format!("reading the release family recorded for upgrade {}", record.id))?,
            None => legacy_members(&project, record)?,
        };
        Ok(Pull {
            docker,
            compose,
            project,
            upgrade_id: record.id.clone(),
            primary: None,
            configured_image: None,
            pin_channels: false,
            members,
            edits: Vec::new(),
            pinned: Vec::new(),
            release_steps: Vec::new(),
            allow_prerelease: false,
            gate_dir: None,
            held_up: None,
            gate_refused: false,
        })
    }

    /// The moved members' distinct images, each with the rollback tag that keeps it.
    fn rollback_tags(&self) -> Vec<(String, String)> {
        let mut tags: Vec<(String, String)> = Vec::new();
        for member in &self.members {
            let Some(id) = &member.previous_image_id else { continue };
            let repository = member.repository();
            if tags.iter().any(|(kept, tag)| kept == id && ImageRef::parse(tag).repository == repository) {
                continue;
            }
            let taken = tags.iter().any(|(_, tag)| ImageRef::parse(tag).repository == repository);
            let suffix = if taken { format!("-{}", member.service) } else { String::new() };
            let tag = format!("{repository}:{ROLLBACK_TAG_PREFIX}{}{suffix}", self.upgrade_id);
            tags.push((id.clone(), tag));
        }
        tags
    }

    fn primary_member(&self) -> Result<&Member> {
        self.members.first().ok_or_else(|| anyhow!("fetch before preflight"))
    }
}

/// Rows written before release families: every moved service ran one reference.
fn legacy_members(project: &Project, record: &UpgradeRecord) -> Result<Vec<Member>> {
    let missing = |what: &str| anyhow!("upgrade {} recorded no {what}; it cannot be put back automatically", record.id);
    let previous_ref = record.image_ref.clone().ok_or_else(|| missing("image reference"))?;
    let previous_image_id = Some(record.previous_image_id.clone().ok_or_else(|| missing("previous image"))?);
    Ok(project
        .services
        .iter()
        .map(|service| Member {
            service: service.clone(),
            previous_ref: previous_ref.clone(),
            previous_image_id: previous_image_id.clone(),
            target_ref: previous_ref.clone(),
            retag: true,
        })
        .collect())
}

impl Strategy for Pull {
    fn kind(&self) -> Kind {
        Kind::Pull
    }

    fn project(&self) -> &Project {
        &self.project
    }

    fn preflight(&mut self, asked: &Target, force: bool) -> Vec<Problem> {
        let mut problems = self.compose_files_exist();
        problems.extend(self.release_step_problems());
        if !problems.is_empty() {
            return problems;
        }
        let found = match self.find_members() {
            Ok(found) => found,
            Err(found_problems) => return found_problems,
        };
        let Some(primary) = found.first().map(|f| f.member.clone()) else {
            return vec![Problem::new("compose", format!("service {} has no image to move", self.project.service))];
        };
        let target = if asked.is_latest() && !primary.retag {
            // A pinned family has no `latest` to pull: the newest release in its registry is what it asks for.
            match self.newest_release(&primary) {
                Ok(tag) => tag,
                Err(problem) => return vec![problem],
            }
        } else {
            asked.to_string()
        };
        let target = target.as_str();
        // One registry problem says enough: the other members are not asked after it.
        let mut registry_failed = false;
        let tag = match resolve_tag(&self.docker, &ImageRef::parse(&primary.previous_ref), target) {
            Ok(tag) => tag,
            Err(registry) => {
                registry_failed = true;
                problems.extend(registry);
                target.to_string()
            }
        };
        let mut members: Vec<Member> = found.iter().map(|f| f.member.clone()).collect();
        for member in &mut members {
            // Each keeps its repository and its flavour (`…-cuda`); only the version moves.
            let previous = ImageRef::parse(&member.previous_ref);
            member.target_ref = previous.with_tag(&in_flavour_of(&tag, &previous.tag));
        }
        problems.extend(self.one_version(&members));
        for member in members.iter().skip(1) {
            if registry_failed {
                break;
            }
            let missing = target_exists(&self.docker, &ImageRef::parse(&member.target_ref));
            registry_failed = !missing.is_empty();
            problems.extend(missing);
        }
        let running_tag = ImageRef::parse(&primary.previous_ref).tag;
        // A channel asked for by its own name (`latest`) may have moved; a pin names one version.
        let runs_it = match primary.retag {
            true => running_tag == tag && !asked.is_latest(),
            false => same_version(&running_tag, &tag),
        };
        if runs_it && !force {
            problems.push(Problem::new(
                "version",
                format!("the service already runs {}; use --force to recreate it anyway", primary.previous_ref),
            ));
        }
        let pinned: Vec<(String, Place)> =
            found.iter().filter_map(|f| Some((f.member.service.clone(), f.place.clone()?))).collect();
        let places: Vec<Place> = pinned.iter().map(|(_, place)| place.clone()).collect();
        problems.extend(self.variables_used_elsewhere(&places));
        match pin::plan_edits(&places.iter().collect::<Vec<_>>(), &tag) {
            Ok(edits) => self.edits = edits,
            Err(why) => problems.push(Problem::new("pin", why)),
        }
        self.pinned = pinned;
        self.members = members;
        problems
    }

    fn fetch(&mut self, journal: &mut Journal) -> Result<Fetched> {
        let primary = self.primary_member()?.clone();
        let family = serde_json::to_string(&self.members)?;
        let tags = self.rollback_tags();
        // Journaled before any tag exists, so recovery can always find (and drop) them.
        journal.db.record_family(&journal.upgrade_id, &family)?;
        if let (Some(id), Some((_, tag))) = (&primary.previous_image_id, tags.first()) {
            journal.db.record_previous_image(&journal.upgrade_id, id, tag, &primary.previous_ref)?;
        }
        // Tagged before the pull: from now on nothing prunes the images the family runs.
        for (id, tag) in &tags {
            journal.run(self.docker.runner(), &self.docker.tag(id, tag))?;
        }
        let mut pulled: Vec<&str> = Vec::new();
        for member in &self.members {
            if pulled.contains(&member.target_ref.as_str()) {
                continue;
            }
            pulled.push(&member.target_ref);
            journal
                .run(self.docker.runner(), &self.docker.pull(&member.target_ref).interruptible())
                .with_context(|| format!("pulling {}", member.target_ref))?;
        }
        let target = primary.target_ref.clone();
        if self.docker.runner().dry_run() {
            return Ok(Fetched::new(target, None));
        }
        let new_id = self.docker.image_id(&target)?.ok_or_else(|| anyhow!("{target} is not present after the pull"))?;
        let digest = self.docker.repo_digest(&target)?;
        let version = self.docker.image_version_label(&target)?;
        journal.db.record_new_image(&journal.upgrade_id, &new_id, digest.as_deref())?;
        journal.log(&format!("Pulled {target} ({})", digest.unwrap_or_else(|| new_id.clone())));
        let unchanged = self.members.iter().all(|m| {
            m.previous_image_id.is_some() && self.docker.image_id(&m.target_ref).ok().flatten() == m.previous_image_id
        });
        Ok(Fetched::new(target, version).pulled(new_id, unchanged))
    }

    /// Pulling a service's own channel (`latest`) moved it already: point it
    /// back at the image the service runs, so no later `up` starts what was
    /// not switched to. A pin written for the switch is put back too.
    fn undo_fetch(&mut self, journal: &mut Journal) -> Result<()> {
        // A compose held for the switch ends first, before it could read the files put back.
        self.held_up = None;
        // Each is tried whatever the other does (a pin cannot go back once an operator edited its file).
        let pins = pin::restore(journal, &self.docker.runner().clone(), &self.upgrade_id);
        let tags = self.point_tags_back(journal);
        crate::engine::joined([pins, tags])
    }

    /// A channel's tag is moved to the new image, and the pins are written and
    /// proven by `compose config` (a compose start of its own), while the
    /// previous version serves: its containers run by image id, and compose
    /// reads the tag and the files only at the switch.
    fn prepare_switch(&mut self, journal: &mut Journal) -> Result<()> {
        let mut moved: Vec<&str> = Vec::new();
        for member in self.members.iter().filter(|m| m.retag && m.target_ref != m.previous_ref) {
            if !moved.contains(&member.previous_ref.as_str()) {
                moved.push(&member.previous_ref);
                journal.run(self.docker.runner(), &self.docker.tag(&member.target_ref, &member.previous_ref))?;
            }
        }
        self.write_pins(journal)
    }

    fn start_switch_early(&mut self, journal: &mut Journal) {
        self.hold_up_early(journal);
    }

    fn ready_switch_early(&mut self, journal: &mut Journal) {
        self.hold_up_early(journal);
        self.wait_for_held_up(journal);
    }

    fn switch(&mut self, _fetched: Fetched, journal: &mut Journal) -> Result<()> {
        // Taken first: an error below drops (ends) a held compose unreleased.
        let held = self.held_up.take();
        if !self.docker.runner().dry_run() {
            pin::still_written(&self.edits)?;
        }
        if let Some(held) = held {
            return self.release_up(held, journal);
        }
        self.run_release_steps(journal)?;
        self.up(journal)
    }

    fn stop(&mut self, journal: &mut Journal) -> Result<()> {
        match journal.run(self.docker.runner(), &self.compose.stop(&self.project)) {
            Ok(_) => Ok(()),
            Err(e) => confirm_stopped(&self.docker, &self.project, Some(&self.project.services), e, journal),
        }
    }

    fn start_again(&mut self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.compose.start(&self.project))
    }

    fn revert(&mut self, journal: &mut Journal) -> Result<()> {
        pin::restore(journal, &self.docker.runner().clone(), &self.upgrade_id)?;
        let mut back: Vec<&str> = Vec::new();
        for member in &self.members {
            let Some(id) = &member.previous_image_id else { continue };
            if !back.contains(&member.previous_ref.as_str()) {
                back.push(&member.previous_ref);
                journal.run(self.docker.runner(), &self.docker.tag(id, &member.previous_ref))?;
            }
        }
        run_up(journal, self.docker.runner(), &self.compose.up(&self.project))
            .context("recreating the service with the previous image")
    }

    fn cleanup(&mut self, journal: &mut Journal, keep: usize) {
        let mut repositories: Vec<String> = self.members.iter().map(Member::repository).collect();
        repositories.dedup();
        for repository in repositories {
            prune_rollback_tags(&self.docker, &repository, &self.upgrade_id, keep, journal);
        }
    }

    fn describe_moves(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|member| {
                let how = match self.pinned.iter().find(|(service, _)| *service == member.service) {
                    Some((_, place)) => format!("pinned: {}", place.describe()),
                    None => "a channel: the tag is moved to the new image".to_string(),
                };
                format!("{}: {} -> {} ({how})", member.service, member.previous_ref, member.target_ref)
            })
            .collect()
    }

    fn discard(&mut self, journal: &mut Journal) {
        self.held_up = None;
        for (_, tag) in self.rollback_tags() {
            drop_rollback_tag(&self.docker, &tag, journal);
        }
    }
}

impl Pull {
    /// Each release step in a one-off container of its service's new image,
    /// its output in the log; the first that fails fails the switch, before anything serves.
    fn run_release_steps(&mut self, journal: &mut Journal) -> Result<()> {
        for step in &self.release_steps {
            let cmd = self.compose.run_once(&self.project, &step.service, &step.argv);
            journal.log(&format!("Release step ({}): $ {}", step.describe(), cmd.display()));
            let output = self
                .docker
                .runner()
                .run(&cmd)
                .map_err(|e| anyhow!("the release step `{}` failed: {e}", step.describe()))?;
            let text = output.stdout_text();
            let tail: Vec<&str> = text.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect();
            if !tail.is_empty() {
                journal.log(&format!("Release step ({}) finished; its output:\n{}", step.describe(), tail.join("\n")));
            }
        }
        Ok(())
    }

    /// Release steps run in a moved service: one that does not move would run its old image.
    fn release_step_problems(&self) -> Vec<Problem> {
        self.release_steps
            .iter()
            .filter(|step| !self.project.services.contains(&step.service))
            .map(|step| {
                Problem::new(
                    "release-step",
                    format!(
                        "UPGRADERD_RELEASE_STEPS runs `{}` in service {}, which does not move with this upgrade (it \
                         moves {}): a release step runs with the new image of a moved service",
                        step.argv.join(" "),
                        step.service,
                        self.project.services.join(", ")
                    ),
                )
            })
            .collect()
    }

    /// Points each moved channel tag back at the image its service runs.
    fn point_tags_back(&self, journal: &mut Journal) -> Result<()> {
        for member in self.members.iter().filter(|m| m.retag) {
            if let Some(id) = &member.previous_image_id {
                let back = self.docker.tag(id, &member.previous_ref);
                journal
                    .run(self.docker.runner(), &back)
                    .context("pointing the service's tag back at the running image")?;
            }
        }
        Ok(())
    }

    /// Writes the new version into every pin, then proves with `compose
    /// config` that each pinned service now renders its target.
    fn write_pins(&mut self, journal: &mut Journal) -> Result<()> {
        let runner = self.docker.runner().clone();
        let tag = ImageRef::parse(&self.primary_member()?.target_ref).tag;
        // One place may pin several services (Immich's one variable): written, and logged, once.
        let mut places: Vec<Place> = Vec::new();
        for (_, place) in &self.pinned {
            if !places.contains(place) {
                places.push(place.clone());
            }
        }
        pin::write(journal, &runner, &self.edits, &places, &tag)?;
        if self.edits.is_empty() || runner.dry_run() {
            return Ok(());
        }
        let rendered: BTreeMap<String, String> = self
            .compose
            .service_images(&self.project)
            .context("rendering the compose configuration after writing the new version")?
            .into_iter()
            .collect();
        for member in self.members.iter().filter(|m| !m.retag) {
            let got = rendered.get(&member.service).map(String::as_str).unwrap_or("no image");
            anyhow::ensure!(
                got == member.target_ref,
                "after writing the new version, compose renders {got} for service {}, not {}",
                member.service,
                member.target_ref
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ops::process::Runner;
    use crate::store::db::Db;
    use crate::ui::Ui;

    fn pull(runner: &Runner, members: Vec<Member>) -> Pull {
        let container: Container = serde_json::from_str(
            r#"{"Id":"c1","Name":"/shop-app-1","Image":"sha256:old","Config":{"Image":"127.0.0.1:5000/app:latest"},
                "State":{"Status":"running","Running":true}}"#,
        )
        .unwrap();
        let project = Project {
            name: "shop".into(),
            working_dir: PathBuf::from("/srv/shop"),
            files: vec![PathBuf::from("/srv/shop/docker-compose.yml")],
            env_file: None,
            service: "app".into(),
            services: members.iter().map(|m| m.service.clone()).collect(),
            orchestrator: Default::default(),
        };
        let compose = Compose::assume(vec!["docker".into(), "compose".into()], true, runner);
        let settings = Settings {
            configured_image: None,
            pin_channels: false,
            release_steps: &[],
            allow_prerelease: false,
            early_compose: None,
        };
        let mut pull = Pull::new(Docker::new("docker", runner.clone()), compose, project, &container, settings, "u1");
        pull.members = members;
        pull
    }

    fn member(service: &str, previous: &str, id: &str, target: &str, retag: bool) -> Member {
        Member {
            service: service.into(),
            previous_ref: previous.into(),
            previous_image_id: Some(id.into()),
            target_ref: target.into(),
            retag,
        }
    }

    fn journal(ui: &Ui) -> Journal<'_> {
        let db = Db::in_memory().unwrap();
        db.insert_upgrade(&UpgradeRecord { id: "u1".into(), ..Default::default() }).unwrap();
        Journal::new(db, "u1", ui, None, "2.0.0")
    }

    const COMPOSE: &str = "docker compose -p shop --project-directory /srv/shop -f /srv/shop/docker-compose.yml";

    #[test]
    fn the_runbook_keeps_the_old_image_first_then_pulls_then_moves_the_tag_and_recreates_the_whole_set() {
        let runner = Runner::new(true);
        let ui = Ui::new(false, -1);
        let mut journal = journal(&ui);
        let (latest, target) = ("127.0.0.1:5000/app:latest", "127.0.0.1:5000/app:2.0.0");
        let mut strategy = pull(
            &runner,
            vec![
                member("app", latest, "sha256:old", target, true),
                member("worker", latest, "sha256:old", target, true),
            ],
        );
        let fetched = strategy.fetch(&mut journal).unwrap();
        assert_eq!(fetched.target, "127.0.0.1:5000/app:2.0.0");
        strategy.prepare_switch(&mut journal).unwrap();
        strategy.switch(fetched, &mut journal).unwrap();
        strategy.stop(&mut journal).unwrap();
        strategy.revert(&mut journal).unwrap();
        assert_eq!(
            runner.planned(),
            vec![
                "docker tag sha256:old 127.0.0.1:5000/app:upgraderd-rollback-u1".to_string(),
                "docker pull 127.0.0.1:5000/app:2.0.0".to_string(),
                "docker tag 127.0.0.1:5000/app:2.0.0 127.0.0.1:5000/app:latest".to_string(),
                format!("{COMPOSE} up -d --no-deps --force-recreate --pull never app worker"),
                format!("{COMPOSE} stop -t 10 app worker"),
                "docker tag sha256:old 127.0.0.1:5000/app:latest".to_string(),
                format!("{COMPOSE} up -d --no-deps --force-recreate --pull never app worker"),
            ]
        );
    }

    #[test]
    fn a_pinned_family_on_two_repositories_pulls_both_and_keeps_both_old_images() {
        let runner = Runner::new(true);
        let ui = Ui::new(false, -1);
        let mut journal = journal(&ui);
        let mut strategy = pull(
            &runner,
            vec![
                member("app", "r/server:v1.0.0", "sha256:s1", "r/server:v1.1.0", false),
                member("ml", "r/ml:v1.0.0", "sha256:m1", "r/ml:v1.1.0", false),
            ],
        );
        let fetched = strategy.fetch(&mut journal).unwrap();
        strategy.prepare_switch(&mut journal).unwrap();
        strategy.switch(fetched, &mut journal).unwrap();
        strategy.revert(&mut journal).unwrap();
        assert_eq!(
            runner.planned(),
            vec![
                "docker tag sha256:s1 r/server:upgraderd-rollback-u1".to_string(),
                "docker tag sha256:m1 r/ml:upgraderd-rollback-u1".to_string(),
                "docker pull r/server:v1.1.0".to_string(),
                "docker pull r/ml:v1.1.0".to_string(),
                format!("{COMPOSE} up -d --no-deps --force-recreate --pull never app ml"),
                "docker tag sha256:s1 r/server:v1.0.0".to_string(),
                "docker tag sha256:m1 r/ml:v1.0.0".to_string(),
                format!("{COMPOSE} up -d --no-deps --force-recreate --pull never app ml"),
            ],
            "nothing is retagged over a pin: its file is edited instead"
        );
        let recorded: Vec<Member> =
            serde_json::from_str(&journal.db.get("u1").unwrap().unwrap().family.unwrap()).unwrap();
        assert_eq!(recorded, strategy.members, "the family is journaled before anything is tagged");
    }

    #[test]
    fn nothing_is_fetched_before_preflight_chose_a_target() {
        let runner = Runner::new(true);
        let ui = Ui::new(false, -1);
        let err = pull(&runner, Vec::new()).fetch(&mut journal(&ui)).unwrap_err();
        assert!(err.to_string().contains("fetch before preflight"), "{err}");
        assert!(runner.planned().is_empty());
    }
}
