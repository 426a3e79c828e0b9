//! `upgraderd status [ID]`: one upgrade (default: the latest) and its journal.

use anyhow::{anyhow, Result};
use serde_json::json;

use crate::cli::StatusArgs;
use crate::cmd::history::{format_duration, format_time};
use crate::cmd::Ctx;
use crate::exit::Exit;
use crate::store::db::Db;

pub(super) fn run(ctx: &Ctx, args: &StatusArgs) -> Result<Exit> {
    let Some(db) = Db::open_read_only(&ctx.config.db_path())? else {
        return no_upgrade(ctx, args);
    };
    let record = match &args.upgrade_id {
        Some(id) => db.get(id)?,
        None => db.history(1)?.pop(),
    };
    let Some(record) = record else { return no_upgrade(ctx, args) };
    let events = db.events(&record.id)?;
    if ctx.ui.json() {
        ctx.ui.data(&json!({"upgrade": record, "events": events}));
        return Ok(Exit::Success);
    }
    let mut lines = vec![
        format!("upgrade   {}", record.id),
        format!("status    {} ({}%)", record.status, record.progress),
        format!("step      {}", record.current_step.as_deref().unwrap_or("-")),
        format!(
            "versions  {} -> {}",
            record.from_version.as_deref().unwrap_or("?"),
            record.to_version.as_deref().unwrap_or("?")
        ),
        format!("strategy  {}", record.strategy),
        format!("started   {}", format_time(record.started_at)),
    ];
    if let Some(end) = record.completed_at {
        lines.push(format!("finished  {} (took {})", format_time(end), format_duration(end - record.started_at)));
    }
    if let Some(backup) = &record.backup_path {
        lines.push(format!("backup    {backup}"));
    }
    if let Some(error) = &record.error_message {
        lines.push(format!("error     {error}"));
    }
    lines.push(String::new());
    lines.push("journal:".into());
    for event in &events {
        lines.push(format!(
            "  {}  [{:>3}%] {:<12} {}",
            format_time(event.at),
            event.progress,
            event.status,
            event.message
        ));
    }
    ctx.ui.print(lines.join("\n"));
    Ok(Exit::Success)
}

fn no_upgrade(ctx: &Ctx, args: &StatusArgs) -> Result<Exit> {
    match &args.upgrade_id {
        Some(id) => Err(anyhow!(
            "no upgrade with id {id} in {} (`upgraderd history` lists them)",
            ctx.config.db_path().display()
        )),
        None => {
            if ctx.ui.json() {
                ctx.ui.data(&json!({"upgrade": null, "events": []}));
            } else {
                ctx.ui.info("no upgrades recorded yet");
            }
            Ok(Exit::Success)
        }
    }
}
