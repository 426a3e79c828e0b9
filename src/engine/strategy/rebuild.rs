//! The rebuild strategy (OpenTrace's `git pull` + `docker compose up
//! --build`): move the checkout to the target commit, build as its own step,
//! then `up -d` without building. The images every built service ran before
//! are kept under `upgraderd-rollback-<id>` tags, so a rollback moves the
//! checkout back and retags them: no rebuild of the old version is needed.

use anyhow::{anyhow, Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::journal::Journal;
use crate::engine::preflight::Problem;
use crate::engine::strategy::run_up;
use crate::engine::strategy::{
    confirm_stopped, drop_rollback_tag, prune_rollback_tags, Fetched, Kind, Strategy, ROLLBACK_TAG_PREFIX,
};
use crate::ops::compose::{Compose, Project};
use crate::ops::docker::{Docker, ImageRef};
use crate::ops::git::Git;
use crate::store::db::{CommitsRecord, UpgradeRecord};
use crate::version::Target;

/// An image a built service ran before the upgrade.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct KeptImage {
    /// The reference compose gives the service's image (what the container was created from).
    pub name: String,
    pub id: String,
}

pub(crate) struct Rebuild {
    pub docker: Docker,
    pub compose: Compose,
    pub project: Project,
    pub git: Git,
    pub remote: String,
    pub branch: String,
    pub upgrade_id: String,
    previous_commit: Option<String>,
    target_commit: Option<String>,
    kept: Vec<KeptImage>,
}

impl Rebuild {
    pub(crate) fn new(
        docker: Docker,
        compose: Compose,
        project: Project,
        git: Git,
        (remote, branch): (&str, &str),
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
            previous_commit: None,
            target_commit: None,
            kept: Vec::new(),
        }
    }

    /// The strategy of an interrupted rebuild upgrade, from its journal row.
    pub(crate) fn resume(
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
        let mut rebuild = Rebuild::new(docker, compose, project, git, ("", ""), &record.id);
        rebuild.previous_commit = Some(previous);
        rebuild.target_commit = record.target_commit.clone();
        rebuild.kept = kept;
        Ok(rebuild)
    }

    fn rollback_tag(&self, image: &KeptImage) -> String {
        ImageRef::parse(&image.name).with_tag(&format!("{ROLLBACK_TAG_PREFIX}{}", self.upgrade_id))
    }

    /// The image each built service's container runs now.
    fn images_in_use(&self, built: &[String], problems: &mut Vec<Problem>) -> Vec<KeptImage> {
        let mut kept = Vec::new();
        for service in built {
            let container = self
                .docker
                .service_container(&self.project.name, service)
                .and_then(|id| id.ok_or_else(|| anyhow!("no container")))
                .and_then(|id| self.docker.inspect_container(&id));
            match container {
                Ok(c) => kept.push(KeptImage { name: c.config.image.clone(), id: c.image.clone() }),
                Err(e) => problems.push(Problem::new(
                    "images",
                    format!(
                        "service {service} is built by compose but its running image cannot be found ({e:#}); \
                         start the deployment first so a rollback has images to go back to"
                    ),
                )),
            }
        }
        kept
    }

    /// Every service compose builds moves with the primary: the gate and the rollback cover them all.
    fn move_built_services(&mut self, built: Vec<String>) {
        for service in built {
            if !self.project.services.contains(&service) {
                self.project.services.push(service);
            }
        }
    }

    /// The checkout can move: a clean work tree on the expected branch, the
    /// remote reachable, the target a fast-forward (or forced).
    fn check_checkout(&mut self, target: &Target, force: bool, problems: &mut Vec<Problem>) {
        let dir = self.git.dir().display().to_string();
        let mut problem = |message: String| problems.push(Problem::new("git", message));
        if !self.git.is_work_tree() {
            return problem(format!("{dir} is not a git checkout; set UPGRADERD_GIT_DIR to the app's repository"));
        }
        match self.git.branch() {
            Ok(Some(branch)) if branch == self.branch => {}
            Ok(Some(branch)) => problem(format!(
                "{dir} is on branch {branch}, not {} (UPGRADERD_GIT_BRANCH); check out {} or change the setting",
                self.branch, self.branch
            )),
            Ok(None) => problem(format!("{dir} has a detached HEAD; check out {}", self.branch)),
            Err(e) => problem(format!("{e:#}")),
        }
        match self.git.modified_files() {
            Ok(files) if files.is_empty() => {}
            Ok(files) => problem(format!(
                "{dir} has local modifications to tracked files: {}. Commit them, `git stash` them, or move \
                 host-specific settings into a file git ignores (an .env or a compose override) so upgrades \
                 can move the checkout",
                files.join(", ")
            )),
            Err(e) => problem(format!("{e:#}")),
        }
        let head = match self.git.head() {
            Ok(head) => head,
            Err(e) => return problem(format!("{e:#}")),
        };
        self.previous_commit = Some(head.clone());
        if let Err(e) = self.git.fetch(&self.remote, &self.branch) {
            return problem(format!("the remote {} cannot be reached: {e:#}", self.remote));
        }
        let target_commit = match self.git.resolve(&self.remote, &self.branch, target) {
            Ok(commit) => commit,
            Err(e) => return problem(format!("{e:#}")),
        };
        if target_commit == head && !force {
            problem(format!("{dir} is already at {}; use --force to rebuild anyway", self.git.summary(&head)));
        }
        match self.git.is_ancestor(&head, &target_commit) {
            Ok(true) => {}
            Ok(false) if force => {}
            Ok(false) => problem(format!(
                "{} is not a fast-forward of the checkout: {} has commits that {} lacks (a diverged branch or an older \
                 release); push or drop the local commits, or use --force to move anyway",
                self.git.summary(&target_commit),
                self.git.summary(&head),
                self.git.summary(&target_commit)
            )),
            Err(e) => problem(format!("{e:#}")),
        }
        self.target_commit = Some(target_commit);
    }
}

impl Strategy for Rebuild {
    fn kind(&self) -> Kind {
        Kind::Rebuild
    }

    fn project(&self) -> &Project {
        &self.project
    }

    fn preflight(&mut self, target: &Target, force: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        self.check_checkout(target, force, &mut problems);
        match self.compose.built_services(&self.project) {
            Ok(built) => {
                self.kept = self.images_in_use(&built, &mut problems);
                self.move_built_services(built);
            }
            Err(e) => {
                problems.push(Problem::new("compose", format!("the compose configuration does not render: {e:#}")))
            }
        }
        problems
    }

    fn fetch(&mut self, journal: &mut Journal) -> Result<Fetched> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        let target = self.target_commit.clone().ok_or_else(|| anyhow!("fetch before preflight"))?;
        // Journaled before the tags exist and the checkout moves, so recovery can put both back.
        journal.db.record_commits(
            &journal.upgrade_id,
            &CommitsRecord {
                previous: previous.clone(),
                target: target.clone(),
                previous_subject: self.git.summary(&previous),
                target_subject: self.git.summary(&target),
                rollback_images_json: serde_json::to_string(&self.kept)?,
            },
        )?;
        for image in self.kept.clone() {
            // Tagged before the build: from now on nothing prunes the images the services run.
            journal.run(self.docker.runner(), &self.docker.tag(&image.id, &self.rollback_tag(&image)))?;
        }
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
        let version = self.git.version_at(&target);
        Ok(Fetched::new(target, version))
    }

    fn undo_fetch(&mut self, journal: &mut Journal) -> Result<()> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("no previous commit recorded"))?;
        if self.git.head()? != previous {
            journal.run(self.docker.runner(), &self.git.move_to(&previous)).context("moving the checkout back")?;
        }
        Ok(())
    }

    fn switch(&mut self, _fetched: Fetched, journal: &mut Journal) -> Result<()> {
        run_up(journal, self.docker.runner(), &self.compose.up_all(&self.project))
            .context("starting the rebuilt services")
    }

    fn stop(&mut self, journal: &mut Journal) -> Result<()> {
        match journal.run(self.docker.runner(), &self.compose.stop_all(&self.project)) {
            Ok(_) => Ok(()),
            Err(e) => confirm_stopped(&self.docker, &self.project, None, e, journal),
        }
    }

    fn start_again(&mut self, journal: &mut Journal) -> Result<()> {
        journal.run(self.docker.runner(), &self.compose.start_all(&self.project))
    }

    fn revert(&mut self, journal: &mut Journal) -> Result<()> {
        let previous = self.previous_commit.clone().ok_or_else(|| anyhow!("no previous commit recorded"))?;
        journal.run(self.docker.runner(), &self.git.move_to(&previous)).context("moving the checkout back")?;
        for image in self.kept.clone() {
            journal.run(self.docker.runner(), &self.docker.tag(&image.id, &image.name))?;
        }
        run_up(journal, self.docker.runner(), &self.compose.up_all(&self.project))
            .context("starting the previous version's images")
    }

    fn cleanup(&mut self, journal: &mut Journal, keep: usize) {
        for image in self.kept.clone() {
            let repository = ImageRef::parse(&image.name).repository;
            prune_rollback_tags(&self.docker, &repository, &self.upgrade_id, keep, journal);
        }
    }

    fn discard(&mut self, journal: &mut Journal) {
        for image in self.kept.clone() {
            drop_rollback_tag(&self.docker, &self.rollback_tag(&image), journal);
        }
    }
}
