//! `upgraderd upgrade --to VERSION|latest`: one upgrade attempt, to its terminal state.

use anyhow::Result;
use serde_json::json;

use crate::cli::UpgradeArgs;
use crate::cmd::Ctx;
use crate::engine::{pipeline, Outcome, Request, Terminal};
use crate::exit::{usage, Exit};
use crate::states::Strategy;

pub fn run(ctx: &Ctx, args: &UpgradeArgs) -> Result<Exit> {
    let strategy = match args.strategy.as_deref() {
        None => ctx.config.strategy,
        Some(name) => Strategy::parse(name)
            .ok_or_else(|| usage(format!("unknown --strategy {name}: use {}", Strategy::choices())))?,
    };
    let request = Request {
        target: args.to.clone(),
        backup: !args.no_backup,
        force: args.force,
        dry_run: args.dry_run,
        initiated_by: "cli".into(),
        from_app: false,
        strategy,
        upgrade_id: None,
        shutdown: (!args.dry_run).then(crate::signals::install),
    };
    let outcome = pipeline::run(&ctx.config, ctx.ui, &request)?;
    if args.dry_run && outcome.terminal == Terminal::Complete {
        ctx.ui.print("dry run: nothing was changed");
        return Ok(Exit::Success);
    }
    report(ctx, &outcome);
    Ok(if outcome.terminal == Terminal::Complete { Exit::Success } else { Exit::Failed })
}

pub fn report(ctx: &Ctx, outcome: &Outcome) {
    if ctx.ui.json() {
        let mut result = outcome.to_json();
        result["event"] = json!("result");
        ctx.ui.emit(&result);
        return;
    }
    let versions = format!("{} -> {}", outcome.from_version.as_deref().unwrap_or("?"), outcome.to_version);
    match (&outcome.terminal, &outcome.error) {
        (Terminal::Complete, _) => ctx.ui.print(format!("complete: {versions} (upgrade {})", outcome.upgrade_id)),
        (terminal, error) => {
            ctx.ui.print(format!("{}: {versions} (upgrade {})", terminal.as_str(), outcome.upgrade_id));
            if let Some(error) = error {
                ctx.ui.info(format!("reason: {error}"));
            }
        }
    }
}
