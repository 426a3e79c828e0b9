//! One module per subcommand. Each turns the [`Config`] and its arguments into
//! calls to `engine`, `store` and `ops`; none builds a child process.

mod backup;
mod check_version;
mod completions;
mod config;
mod history;
mod rollback;
mod status;
pub(crate) mod upgrade;
mod watch;

use anyhow::Result;

use crate::cli::{Cli, Command};
use crate::config::{Config, Env, Layers, Selection};
use crate::exit::Exit;
use crate::store::files;
use crate::ui::Ui;
use crate::window::Clock;

/// What every command works with.
pub(crate) struct Ctx<'a> {
    pub config: Config,
    pub layers: Layers,
    pub ui: &'a Ui,
}

impl Ctx<'_> {
    /// Creates the state directory (0700) for commands that write state.
    pub(crate) fn ensure_state_dir(&self) -> Result<()> {
        use anyhow::Context;
        files::ensure_private_dir(&self.config.state_dir).with_context(|| {
            format!(
                "cannot create the state directory {}; create it or pass --state-dir",
                self.config.state_dir.display()
            )
        })
    }
}

/// The host's clock (a debug build may fix it for tests, see `window::TEST_NOW`).
fn clock(env: &Env) -> Result<Clock> {
    Clock::from_env(|name| env.get(name).map(str::to_string)).map_err(crate::exit::usage)
}

/// Dispatches a parsed command line.
pub(crate) fn run(cli: &Cli, env: &Env, ui: &Ui) -> Result<Exit> {
    if let Command::Completions(args) = &cli.command {
        return completions::run(args);
    }
    let selection = Selection {
        app: cli.app.as_deref(),
        config_file: cli.config_file.as_deref(),
        state_dir: cli.state_dir.as_deref(),
    };
    let (config, layers) =
        crate::config::load_reporting(selection, &cli.settings.given(), env, &mut |warning| ui.warn(warning))?;
    let ctx = Ctx { config, layers, ui };
    match &cli.command {
        Command::Watch(args) => watch::run(&ctx, args, env),
        Command::Upgrade(args) => upgrade::run(&ctx, args),
        Command::Rollback(args) => rollback::run(&ctx, args),
        Command::Backup(command) => backup::run(&ctx, command),
        Command::CheckVersion(args) => check_version::run(&ctx, args, &clock(env)?),
        Command::History(args) => history::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Config => config::run(&ctx, &clock(env)?),
        Command::Completions(_) => unreachable!("handled before configuration is read"),
    }
}
