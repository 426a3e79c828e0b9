//! The image-pull strategy: `docker pull IMAGE:VERSION`, keep the running
//! image under `IMAGE:upgraderd-rollback-<id>`, point the service's moving tag
//! at the new image and recreate the service through compose with the
//! project's own files.

use anyhow::{anyhow, Context, Result};

use crate::engine::journal::Journal;
use crate::engine::preflight::Problem;
use crate::engine::strategy::{
    confirm_stopped, drop_rollback_tag, prune_rollback_tags, target_exists, Fetched, Kind, Strategy,
    ROLLBACK_TAG_PREFIX,
};
use crate::ops::compose::{locate_image_line, Compose, Project};
use crate::ops::docker::{Container, Docker, ImageRef};
use crate::store::db::UpgradeRecord;

pub struct Pull {
    pub docker: Docker,
    pub compose: Compose,
    pub project: Project,
    /// The reference the service runs (`IMAGE:latest`): the tag that is moved.
    pub service_ref: ImageRef,
    /// The image id running before the upgrade.
    pub previous_image_id: String,
    pub upgrade_id: String,
    /// Set by preflight: the reference to pull.
    target: Option<ImageRef>,
}

impl Pull {
    pub fn new(
        docker: Docker,
        compose: Compose,
        project: Project,
        container: &Container,
        configured_image: Option<&str>,
        upgrade_id: &str,
    ) -> Pull {
        let mut service_ref = ImageRef::parse(&container.config.image);
        if let Some(image) = configured_image {
            // IMAGE_NAME names the repository; the tag the service runs stays the one that moves.
            service_ref.repository = ImageRef::parse(image).repository;
        }
        Pull {
            docker,
            compose,
            project,
            service_ref,
            previous_image_id: container.image.clone(),
            upgrade_id: upgrade_id.to_string(),
            target: None,
        }
    }

    /// The strategy of an interrupted upgrade, rebuilt from its journal row to put it back.
    pub fn resume(docker: Docker, compose: Compose, project: Project, record: &UpgradeRecord) -> Result<Pull> {
        let missing =
            |what: &str| anyhow!("upgrade {} recorded no {what}; it cannot be put back automatically", record.id);
        Ok(Pull {
            docker,
            compose,
            project,
            service_ref: ImageRef::parse(record.image_ref.as_deref().ok_or_else(|| missing("image reference"))?),
            previous_image_id: record.previous_image_id.clone().ok_or_else(|| missing("previous image"))?,
            upgrade_id: record.id.clone(),
            target: None,
        })
    }

    fn rollback_tag(&self) -> String {
        self.service_ref.with_tag(&format!("{ROLLBACK_TAG_PREFIX}{}", self.upgrade_id))
    }
}

/// A tag that names a release rather than a channel.
fn looks_like_version(tag: &str) -> bool {
    let tag = tag.strip_prefix('v').unwrap_or(tag);
    tag.chars().next().is_some_and(|c| c.is_ascii_digit())
}

impl Pull {
    fn compose_files_exist(&self) -> Vec<Problem> {
        self.project
            .files
            .iter()
            .filter(|file| !file.is_file())
            .map(|file| {
                Problem::new(
                    "compose",
                    format!(
                        "compose file {} does not exist (from the container's labels or UPGRADERD_COMPOSE_FILES)",
                        file.display()
                    ),
                )
            })
            .collect()
    }

    /// Recreating must start what the moved tag points to, for every moved service:
    /// a compose file that pins another tag would not.
    fn compose_runs_the_moved_tag(&self, target: &str) -> Vec<Problem> {
        let rendered = match self.compose.service_images(&self.project) {
            Ok(rendered) => rendered,
            Err(e) => {
                return vec![Problem::new("compose", format!("the compose configuration does not render: {e:#}"))]
            }
        };
        rendered.iter().filter_map(|(service, image)| self.pinned_elsewhere(service, image, target)).collect()
    }

    fn pinned_elsewhere(&self, service: &str, rendered: &str, target: &str) -> Option<Problem> {
        let rendered_ref = ImageRef::parse(rendered);
        let pinned =
            rendered_ref != self.service_ref || (looks_like_version(&rendered_ref.tag) && rendered_ref.tag != target);
        if !pinned {
            return None;
        }
        let place = locate_image_line(&self.project.files, rendered)
            .map(|(file, line)| format!("{}:{line}", file.display()))
            .unwrap_or_else(|| "the compose files".to_string());
        Some(Problem::new(
            "compose",
            format!(
                "{place} sets the image of service {service} to {rendered}, but the upgrade moves the tag {} that the \
                 container runs; recreating would not start the new version. Change that line to `image: {}`",
                self.service_ref, self.service_ref
            ),
        ))
    }
}

impl Strategy for Pull {
    fn kind(&self) -> Kind {
        Kind::Pull
    }

    fn project(&self) -> &Project {
        &self.project
    }

    fn preflight(&mut self, target: &str, force: bool) -> Vec<Problem> {
        let target_ref = ImageRef { repository: self.service_ref.repository.clone(), tag: target.to_string() };
        let mut problems = self.compose_files_exist();
        problems.extend(self.compose_runs_the_moved_tag(target));
        problems.extend(target_exists(&self.docker, &target_ref));
        if !force && target_ref.tag == self.service_ref.tag && target != "latest" {
            problems.push(Problem::new(
                "version",
                format!("the service already runs {target_ref}; use --force to recreate it anyway"),
            ));
        }
        self.target = Some(target_ref);
        problems
    }

    fn fetch(&mut self, journal: &mut Journal) -> Result<Fetched> {
        let target = self.target.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        let tag = self.rollback_tag();
        // Journaled before the tag exists, so recovery can always find (and drop) it.
        journal.db.record_previous_image(
            &journal.upgrade_id,
            &self.previous_image_id,
            &tag,
            &self.service_ref.to_string(),
        )?;
        // Tagged before the pull: from now on nothing prunes the image the service runs.
        journal.run(self.docker.runner(), &self.docker.tag(&self.previous_image_id, &tag))?;
        journal
            .run(self.docker.runner(), &self.docker.pull(&target.to_string()).interruptible())
            .with_context(|| format!("pulling {target}"))?;
        if self.docker.runner().dry_run() {
            return Ok(Fetched::new(target.to_string(), None));
        }
        let new_id = self
            .docker
            .image_id(&target.to_string())?
            .ok_or_else(|| anyhow!("{target} is not present after the pull"))?;
        let digest = self.docker.repo_digest(&target.to_string())?;
        let version = self.docker.image_version_label(&target.to_string())?;
        journal.db.record_new_image(&journal.upgrade_id, &new_id, digest.as_deref())?;
        journal.log(&format!("Pulled {target} ({})", digest.unwrap_or(new_id)));
        Ok(Fetched::new(target.to_string(), version))
    }

    /// Pulling the service's own moving tag (`latest`) moved it already: point it
    /// back at the image the service runs, so no later `up` starts what was not switched to.
    fn undo_fetch(&mut self, journal: &mut Journal) -> Result<()> {
        let back = self.docker.tag(&self.previous_image_id, &self.service_ref.to_string());
        journal.run(self.docker.runner(), &back).context("pointing the service's tag back at the running image")
    }

    fn switch(&mut self, fetched: Fetched, journal: &mut Journal) -> Result<()> {
        if fetched.target != self.service_ref.to_string() {
            journal.run(self.docker.runner(), &self.docker.tag(&fetched.target, &self.service_ref.to_string()))?;
        }
        journal.run(self.docker.runner(), &self.compose.up(&self.project)).context("recreating the service")
    }

    fn stop(&mut self, journal: &mut Journal) -> Result<()> {
        match journal.run(self.docker.runner(), &self.compose.stop(&self.project)) {
            Ok(_) => Ok(()),
            Err(e) => confirm_stopped(&self.docker, &self.project, Some(&self.project.services), e, journal),
        }
    }

    fn revert(&mut self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.docker.tag(&self.previous_image_id, &self.service_ref.to_string()))?;
        journal
            .run(self.docker.runner(), &self.compose.up(&self.project))
            .context("recreating the service with the previous image")
    }

    fn cleanup(&mut self, journal: &mut Journal, keep: usize) {
        prune_rollback_tags(&self.docker, &self.service_ref.repository, &self.upgrade_id, keep, journal);
    }

    fn discard(&mut self, journal: &mut Journal) {
        drop_rollback_tag(&self.docker, &self.rollback_tag(), journal);
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ops::process::Runner;
    use crate::store::db::Db;
    use crate::ui::Ui;

    fn pull(runner: &Runner) -> Pull {
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
            services: vec!["app".into(), "worker".into()],
            orchestrator: Default::default(),
        };
        let compose = Compose::assume(vec!["docker".into(), "compose".into()], true, runner);
        Pull::new(Docker::new("docker", runner.clone()), compose, project, &container, None, "u1")
    }

    fn journal(ui: &Ui) -> Journal<'_> {
        Journal::new(Db::in_memory().unwrap(), "u1", ui, None, "2.0.0")
    }

    #[test]
    fn the_runbook_keeps_the_old_image_first_then_pulls_then_moves_the_tag_and_recreates_the_whole_set() {
        let runner = Runner::new(true);
        let ui = Ui::new(false, -1);
        let mut journal = journal(&ui);
        let mut strategy = pull(&runner);
        strategy.target = Some(ImageRef::parse("127.0.0.1:5000/app:2.0.0"));
        let fetched = strategy.fetch(&mut journal).unwrap();
        assert_eq!(fetched.target, "127.0.0.1:5000/app:2.0.0");
        strategy.switch(fetched, &mut journal).unwrap();
        strategy.stop(&mut journal).unwrap();
        strategy.revert(&mut journal).unwrap();
        let compose = "docker compose -p shop --project-directory /srv/shop -f /srv/shop/docker-compose.yml";
        assert_eq!(
            runner.planned(),
            vec![
                "docker tag sha256:old 127.0.0.1:5000/app:upgraderd-rollback-u1".to_string(),
                "docker pull 127.0.0.1:5000/app:2.0.0".to_string(),
                "docker tag 127.0.0.1:5000/app:2.0.0 127.0.0.1:5000/app:latest".to_string(),
                format!("{compose} up -d --no-deps --force-recreate --pull never app worker"),
                format!("{compose} stop -t 10 app worker"),
                "docker tag sha256:old 127.0.0.1:5000/app:latest".to_string(),
                format!("{compose} up -d --no-deps --force-recreate --pull never app worker"),
            ]
        );
    }

    #[test]
    fn nothing_is_fetched_before_preflight_chose_a_target() {
        let runner = Runner::new(true);
        let ui = Ui::new(false, -1);
        let err = pull(&runner).fetch(&mut journal(&ui)).unwrap_err();
        assert!(err.to_string().contains("fetch before preflight"), "{err}");
        assert!(runner.planned().is_empty());
    }

    #[test]
    fn release_tags_are_told_from_channels() {
        assert!(looks_like_version("2.0.0"));
        assert!(looks_like_version("v1.2"));
        assert!(!looks_like_version("latest"));
        assert!(!looks_like_version("stable"));
    }
}
