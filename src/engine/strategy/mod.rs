//! How a new version is fetched and switched to, and how the old one is put
//! back. The pipeline owns the order, the journal and the data; a strategy
//! owns the images (and, for rebuild, the checkout).

pub mod pull;
pub mod rebuild;

use anyhow::Result;

use crate::engine::journal::Journal;
use crate::ops::docker::{Docker, ImageRef};

/// The tag that keeps an image an upgrade replaced: `REPOSITORY:upgraderd-rollback-<upgrade id>`.
pub const ROLLBACK_TAG_PREFIX: &str = "upgraderd-rollback-";

pub trait Strategy {
    /// `pull` or `rebuild`, as recorded in history.
    fn name(&self) -> &'static str;
    /// The compose project and service the gate watches.
    fn project_and_service(&self) -> (&str, &str);
    /// The running version, when it can be told.
    fn current_version(&self) -> Option<String>;
    /// Strategy-specific preflight checks; every problem is pushed, none returned early.
    fn preflight(&mut self, target: &str, force: bool, problems: &mut Vec<String>);
    /// Downloads or builds the target and keeps the running version restorable.
    fn fetch(&mut self, journal: &mut Journal) -> Result<()>;
    /// Before the switch, puts back what `fetch` changed besides images (the
    /// rebuild checkout), so an abandoned upgrade leaves the host as it was.
    fn undo_fetch(&mut self, _journal: &mut Journal) -> Result<()> {
        Ok(())
    }
    /// The version the fetched target reports, when it says (image label).
    fn fetched_version(&self) -> Option<String>;
    /// Replaces the running version with the fetched one.
    fn switch(&mut self, journal: &mut Journal) -> Result<()>;
    /// Stops the new version so its data can be restored.
    fn stop(&mut self, journal: &mut Journal) -> Result<()>;
    /// Starts the previous version again.
    fn revert(&mut self, journal: &mut Journal) -> Result<()>;
    /// After success: drop rollback material beyond retention (never a global prune).
    fn cleanup(&mut self, journal: &mut Journal, keep: usize);
}

/// Removes this repository's rollback tags except the current upgrade's and
/// those of the newest `keep` upgrades; never a global prune.
pub fn prune_rollback_tags(docker: &Docker, repository: &str, upgrade_id: &str, keep: usize, journal: &mut Journal) {
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
