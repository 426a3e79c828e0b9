//! How a new version is fetched and switched to, and how the old one is put
//! back. The pipeline owns the order, the journal and the data; a strategy
//! owns the images (and, for rebuild, the checkout).

pub mod pull;

use anyhow::Result;

use crate::engine::journal::Journal;

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
