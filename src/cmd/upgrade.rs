//! `upgraderd upgrade --to VERSION|latest`: one upgrade attempt, to its terminal state.

use anyhow::Result;
use serde_json::json;

use crate::cli::UpgradeArgs;
use crate::cmd::Ctx;
use crate::engine::{pipeline, Outcome, Request, Terminal};
use crate::exit::{usage, Exit};
use crate::version::Target;

pub(crate) fn run(ctx: &Ctx, args: &UpgradeArgs) -> Result<Exit> {
    let strategy = args.strategy.unwrap_or(ctx.config.strategy);
    let request = Request {
        target: Target::parse(&args.to).map_err(usage)?,
        backup: !args.no_backup,
        force: args.force,
        dry_run: args.dry_run,
        initiated_by: crate::states::Initiator::Cli,
        strategy,
        upgrade_id: None,
        shutdown: (!args.dry_run).then(crate::signals::install),
    };
    let outcome = pipeline::run(&ctx.config, ctx.ui, &request)?;
    report(ctx, &outcome, args.dry_run);
    Ok(if outcome.terminal == Terminal::Complete { Exit::Success } else { Exit::Failed })
}

/// The result line (or JSON object) of an upgrade or a rollback. A dry run is
/// recorded nowhere, so its result names no upgrade id.
pub(crate) fn report(ctx: &Ctx, outcome: &Outcome, dry_run: bool) {
    if ctx.ui.json() {
        let mut result = outcome.to_json();
        result["event"] = json!("result");
        if dry_run {
            if let Some(fields) = result.as_object_mut() {
                fields.remove("upgradeId");
                fields.remove("backupPath");
            }
            result["dryRun"] = json!(true);
        }
        ctx.ui.emit(&result);
        return;
    }
    let versions = format!("{} -> {}", outcome.from_version.as_deref().unwrap_or("?"), outcome.to_version);
    let which =
        if dry_run { "dry run: nothing was changed".to_string() } else { format!("upgrade {}", outcome.upgrade_id) };
    match (&outcome.terminal, &outcome.error) {
        (Terminal::Complete, _) if dry_run => ctx.ui.print(which),
        (Terminal::Complete, _) => ctx.ui.print(format!("complete: {versions} ({which})")),
        (terminal, error) => {
            ctx.ui.print(format!("{}: {versions} ({which})", terminal.as_str()));
            if let Some(error) = error {
                ctx.ui.info(format!("reason: {error}"));
            }
        }
    }
}
