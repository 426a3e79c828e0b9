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
//!
//! Every module is private: the binary calls [`main_with_args`], and the
//! integration tests in `tests/` reach the few items they need through the
//! hidden [`testing`] module. So the compiler reports any item nothing uses.

#![warn(unreachable_pub)]
// Output goes through `ui`, the one module allowed to print.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod cli;
mod cmd;
mod config;
mod daemon;
mod engine;
mod exit;
mod manpages;
mod ops;
mod signals;
mod states;
mod store;
mod trigger;
mod ui;
mod units;
mod version;
mod window;

/// What the integration tests in `tests/` use of the library, and nothing else; not an API.
#[doc(hidden)]
pub mod testing {
    pub use crate::cli::Cli;
    pub use crate::config::KEYS;
    pub use crate::manpages::pages;
    pub use crate::states::{Status, Strategy, Terminal};
    pub use crate::units::human_bytes;

    /// Backups (archives and snapshots): create, verify, restore, export, prune.
    pub mod backup {
        pub use crate::store::backup::{
            begin, create, create_as, create_paused, export, list_ids, prune_keeping, read_meta, restore,
            restore_paused, verify, Created, Destination, FirstPass, Form, Pause, Reason, Source,
        };
    }

    /// The state database.
    pub mod db {
        pub use crate::store::db::{schema_version, Db, UpgradeRecord};
    }

    pub use crate::store::disk::free_bytes;
    pub use crate::store::lock::Lock;

    /// The `watch` daemon run on a thread of the test, stopped through its [`daemon::Stop`].
    pub mod daemon {
        use crate::config::{self, Env, Selection};
        use crate::signals::Shutdown;
        use crate::ui::Ui;

        /// The daemon's stop request, as a first SIGTERM makes it; no signal handler is installed.
        #[derive(Debug, Clone)]
        pub struct Stop(Shutdown);

        impl Stop {
            #[allow(clippy::new_without_default)]
            pub fn new() -> Stop {
                Stop(Shutdown::manual())
            }

            pub fn request(&self) {
                self.0.request();
            }
        }

        /// `upgraderd watch` on this thread, configured from `env` alone as
        /// `upgraderd` would be from its environment (the process's is never
        /// read): returns once `stop` is requested and no upgrade is running.
        /// `verbosity` is `-q` (-1) to `-vvv` (3); the log goes to stderr.
        pub fn watch(
            env: impl IntoIterator<Item = (String, String)>,
            verbosity: i8,
            stop: &Stop,
        ) -> anyhow::Result<()> {
            let env = Env(env.into_iter().collect());
            let ui = Ui::new(false, verbosity);
            let (config, _) = config::load_reporting(Selection::default(), &[], &env, &mut |w| ui.warn(w))?;
            crate::daemon::run(&config, &ui, stop.0.clone(), &env)
        }
    }
}

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

use crate::exit::Exit;

/// Runs upgraderd with the given argv (program name first) and returns its exit code.
///
/// `main` calls it with the real argv.
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
