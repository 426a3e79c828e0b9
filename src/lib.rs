//! upgraderd: safe upgrades for Docker Compose deployments.
//!
//! The crate is laid out as `docs/ARCHITECTURE.md` describes: `cli` parses, `config`
//! resolves one validated [`config::Config`], `cmd` holds one module per
//! subcommand, `engine` is the upgrade transaction (pipeline, strategies,
//! health gate, recovery, version checks), `daemon` is `watch`, `trigger` the
//! protocol with the app, `signals` the stop request, `ops` wraps the outside
//! world, `store` owns everything on disk, `ui` is the one place that prints,
//! `manpages` renders the man pages from `cli` and the configuration keys,
//! `units` formats sizes for people and `window` decides automatic-upgrade
//! windows (leaves, usable from any layer).

pub mod cli;
pub mod cmd;
pub mod config;
pub mod daemon;
pub mod engine;
pub mod exit;
pub mod manpages;
pub mod ops;
pub mod signals;
pub mod states;
pub mod store;
pub mod trigger;
pub mod ui;
pub mod units;
pub mod version;
pub mod window;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::exit::Exit;

/// Runs upgraderd with the given argv (program name first) and returns its exit code.
///
/// Tests call this in-process; `main` calls it with the real argv.
pub fn main_with_args<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match cli::Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(err) => {
            // clap prints help/version to stdout and usage errors to stderr itself.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() { Exit::Usage as u8 } else { 0 });
        }
    };
    let ui = ui::Ui::new(cli.json, cli.verbosity());
    let env = config::Env::from_process();
    match cmd::run(&cli, &env, &ui) {
        Ok(exit) => ExitCode::from(exit as u8),
        Err(err) => {
            let exit = exit::classify(&err);
            ui.error(&err);
            ExitCode::from(exit as u8)
        }
    }
}
