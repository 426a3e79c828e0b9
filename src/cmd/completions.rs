//! `upgraderd completions SHELL`: prints a completion script generated from the clap definitions.

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell as Generator;

use crate::cli::{Cli, CompletionsArgs, Shell};
use crate::exit::Exit;
use crate::ui::Output;

pub(super) fn run(args: &CompletionsArgs) -> Result<Exit> {
    // The generator panics on a write error: a reader that went away must end it quietly.
    let mut out = Output::Stdout;
    clap_complete::generate(generator(args.shell), &mut Cli::command(), "upgraderd", &mut out);
    Ok(Exit::Success)
}

pub(super) fn generator(shell: Shell) -> Generator {
    match shell {
        Shell::Bash => Generator::Bash,
        Shell::Zsh => Generator::Zsh,
        Shell::Fish => Generator::Fish,
        Shell::Elvish => Generator::Elvish,
        Shell::Powershell => Generator::PowerShell,
    }
}
