//! `upgraderd rollback [UPGRADE_ID]`: put back the version an upgrade replaced, and its data.

use anyhow::{anyhow, Result};

use crate::cli::RollbackArgs;
use crate::cmd::upgrade::report;
use crate::cmd::Ctx;
use crate::engine::{rollback, Terminal};
use crate::exit::Exit;
use crate::states::Status;
use crate::store::db::Db;

pub(super) fn run(ctx: &Ctx, args: &RollbackArgs) -> Result<Exit> {
    let db = Db::open_read_only(&ctx.config.db_path())?
        .ok_or_else(|| anyhow!("no upgrades recorded yet: nothing to roll back"))?;
    let record = match &args.upgrade_id {
        Some(id) => db.get(id)?.ok_or_else(|| anyhow!("no upgrade with id {id} (`upgraderd history` lists them)"))?,
        None => db.latest_with_status(Status::Complete)?.ok_or_else(|| anyhow!("no complete upgrade to roll back"))?,
    };
    drop(db);
    let outcome = rollback::manual_rollback(&ctx.config, ctx.ui, &record, !args.no_restore_data, args.dry_run)?;
    report(ctx, &outcome, args.dry_run);
    Ok(if outcome.terminal == Terminal::Complete { Exit::Success } else { Exit::Failed })
}
