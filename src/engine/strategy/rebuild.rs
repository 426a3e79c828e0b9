//! The rebuild strategy (OpenTrace's `git pull` + `docker compose up
//! --build`): move the checkout to the target commit, build as its own step,
//! then `up -d` without building. The images every built service ran before
//! are kept under `upgraderd-rollback-<id>` tags, so a rollback moves the
//! checkout back and retags them: no rebuild of the old version is needed.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::journal::Journal;
use crate::engine::strategy::{prune_rollback_tags, Strategy, ROLLBACK_TAG_PREFIX};
use crate::ops::compose::{Compose, Project};
use crate::ops::docker::{Docker, ImageRef};
use crate::ops::git::Git;
use crate::store::db::UpgradeRecord;

/// An image a built service ran before the upgrade.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeptImage {
    /// The reference compose gives the service's image (what the container was created from).
    pub name: String,
    pub id: String,
}

pub struct Rebuild {
    pub docker: Docker,
    pub compose: Compose,
    pub project: Project,
    pub git: Git,
    pub remote: String,
    pub branch: String,
    pub upgrade_id: String,
    pub current_version: Option<String>,
    previous_commit: Option<String>,
    target_commit: Option<String>,
    kept: Vec<KeptImage>,
    fetched_version: Option<String>,
}

impl Rebuild {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        docker: Docker,
        compose: Compose,
        project: Project,
        git: Git,
        remote: &str,
        branch: &str,
        current_version: Option<String>,
        upgrade_id: &str,
    ) -> Rebuild {
        Rebuild {
            docker,
            compose,
            project,
            git,
            remote: remote.to_string(),
            branch: branch.to_string(),
            upgrade_id: upgrade_id.to_string(),
            current_version,
            previous_commit: None,
            target_commit: None,
            kept: Vec::new(),
            fetched_version: None,
        }
    }

    /// The strategy of an interrupted rebuild upgrade, from its journal row.
    pub fn resume(
        docker: Docker,
        compose: Compose,
        project: Project,
        git: Git,
        record: &UpgradeRecord,
    ) -> Result<Rebuild> {
        let previous = record.previous_commit.clone().ok_or_else(|| {
            anyhow!("upgrade {} recorded no previous commit; it cannot be put back automatically", record.id)
        })?;
        let kept: Vec<KeptImage> = match &record.rollback_images {
            Some(json) => serde_json::from_str(json).context("reading the recorded rollback images")?,
            None => Vec::new(),
        };
        let mut rebuild = Rebuild::new(docker, compose, project, git, "", "", record.from_version.clone(), &record.id);
        rebuild.previous_commit = Some(previous);
        rebuild.target_commit = record.target_commit.clone();
        rebuild.kept = kept;
        Ok(rebuild)
    }

    fn rollback_tag(&self, image: &KeptImage) -> String {
        ImageRef::parse(&image.name).with_tag(&format!("{ROLLBACK_TAG_PREFIX}{}", self.upgrade_id))
    }

    /// The image each built service's container runs now.
    fn images_in_use(&self, problems: &mut Vec<String>) -> Vec<KeptImage> {
        let services = match self.compose.built_services(&self.project) {
            Ok(services) => services,
            Err(e) => {
                problems.push(format!("the compose configuration does not render: {e:#}"));
                return Vec::new();
            }
        };
        let mut kept = Vec::new();
        for service in services {
            let container = self
                .docker
                .service_container(&self.project.name, &service)
                .and_then(|id| id.ok_or_else(|| anyhow!("no container")))
                .and_then(|id| self.docker.inspect_container(&id));
            match container {
                Ok(c) => kept.push(KeptImage { name: c.config.image.clone(), id: c.image.clone() }),
                Err(e) => problems.push(format!(
                    "service {service} is built by compose but its running image cannot be found ({e:#}); \
                     start the deployment first so a rollback has images to go back to"
                )),
            }
        }
        kept
    }
}

impl Strategy for Rebuild {
    fn name(&self) -> &'static str {
        "rebuild"
    }

    fn project_and_service(&self) -> (&str, &str) {
        (&self.project.name, &self.project.service)
    }

    fn current_version(&self) -> Option<String> {
        self.current_version.clone()
    }

    fn preflight(&mut self, target: &str, force: bool, problems: &mut Vec<String>) {
        let dir = self.git.dir().display().to_string();
        if !self.git.is_work_tree() {
            problems.push(format!("{dir} is not a git checkout; set UPGRADERD_GIT_DIR to the app's repository"));
            return;
        }
        match self.git.branch() {
            Ok(Some(branch)) if branch == self.branch => {}
            Ok(Some(branch)) => problems.push(format!(
                "{dir} is on branch {branch}, not {} (UPGRADERD_GIT_BRANCH); check out {} or change the setting",
                self.branch, self.branch
            )),
            Ok(None) => problems.push(format!("{dir} has a detached HEAD; check out {}", self.branch)),
            Err(e) => problems.push(format!("{e:#}")),
        }
        match self.git.modified_files() {
            Ok(files) if files.is_empty() => {}
            Ok(files) => problems.push(format!(
                "{dir} has local modifications to tracked files: {}. Commit them, `git stash` them, or move \
                 host-specific settings into a file git ignores (an .env or a compose override) so upgrades \
                 can move the checkout",
                files.join(", ")
            )),
            Err(e) => problems.push(format!("{e:#}")),
        }
        let head = match self.git.head() {
            Ok(head) => head,
            Err(e) => return problems.push(format!("{e:#}")),
        };
        self.previous_commit = Some(head.clone());
        if let Err(e) = self.git.fetch(&self.remote, &self.branch) {
            return problems.push(format!("the remote {} cannot be reached: {e:#}", self.remote));
        }
        let target_commit = match self.git.resolve(&self.remote, &self.branch, target) {
            Ok(commit) => commit,
            Err(e) => return problems.push(format!("{e:#}")),
        };
        if target_commit == head && !force {
            problems.push(format!("{dir} is already at {}; use --force to rebuild anyway", self.git.summary(&head)));
        }
        match self.git.is_ancestor(&head, &target_commit) {
            Ok(true) => {}
            Ok(false) if force => {}
            Ok(false) => problems.push(format!(
                "{} is not a fast-forward of the checkout: {} has commits that {} lacks (a diverged branch or an older \
                 release); push or drop the local commits, or use --force to move anyway",
                self.git.summary(&target_commit),
                self.git.summary(&head),
                self.git.summary(&target_commit)
            )),
            Err(e) => problems.push(format!("{e:#}")),
        }
        self.target_commit = Some(target_commit);
        self.kept = self.images_in_use(problems);
    }

    fn fetch(&mut self, journal: &mut Journal) -> Result<()> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        let target = self.target_commit.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        for image in self.kept.clone() {
            // Tagged first: from now on nothing prunes the images the services run.
            journal.run(self.docker.runner(), &self.docker.tag(&image.id, &self.rollback_tag(&image)))?;
        }
        let id = journal.upgrade_id.clone();
        journal.db.set_fields(
            &id,
            &[
                ("previousCommit", previous.clone().into()),
                ("targetCommit", target.clone().into()),
                ("previousSubject", self.git.summary(&previous).into()),
                ("targetSubject", self.git.summary(&target).into()),
                ("rollbackImages", serde_json::to_string(&self.kept)?.into()),
            ],
        )?;
        journal
            .run(self.docker.runner(), &self.git.move_to(&target))
            .context("moving the checkout to the target commit")?;
        journal.log(&format!("Building {}", self.git.summary(&target)));
        if let Err(build) = journal.run(self.docker.runner(), &self.compose.build(&self.project)) {
            // A failed build changed nothing that runs; put the checkout back too.
            let back = journal.run(self.docker.runner(), &self.git.move_to(&previous));
            return Err(build.context(match back {
                Ok(()) => "building the new version failed; the checkout is back at the previous commit".to_string(),
                Err(e) => format!("building the new version failed, and moving the checkout back failed too: {e:#}"),
            }));
        }
        self.fetched_version = self.git.version_at(&target);
        Ok(())
    }

    fn undo_fetch(&mut self, journal: &mut Journal) -> Result<()> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("no previous commit recorded"))?;
        if self.git.head()? != previous {
            journal.run(self.docker.runner(), &self.git.move_to(&previous)).context("moving the checkout back")?;
        }
        Ok(())
    }

    fn fetched_version(&self) -> Option<String> {
        self.fetched_version.clone()
    }

    fn switch(&mut self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.compose.up_all(&self.project)).context("starting the rebuilt services")
    }

    fn stop(&mut self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.compose.stop_all(&self.project)).context("stopping the new version")
    }

    fn revert(&mut self, journal: &mut Journal) -> Result<()> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("no previous commit recorded"))?;
        journal.run(self.docker.runner(), &self.git.move_to(&previous)).context("moving the checkout back")?;
        for image in self.kept.clone() {
            journal.run(self.docker.runner(), &self.docker.tag(&image.id, &image.name))?;
        }
        journal
            .run(self.docker.runner(), &self.compose.up_all(&self.project))
            .context("starting the previous version's images")
    }

    fn cleanup(&mut self, journal: &mut Journal, keep: usize) {
        for image in self.kept.clone() {
            let repository = ImageRef::parse(&image.name).repository;
            prune_rollback_tags(&self.docker, &repository, &self.upgrade_id, keep, journal);
        }
    }
}
