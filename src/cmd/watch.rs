//! `upgraderd watch`: the daemon systemd runs (see `upgraderd.service`).

use anyhow::Result;

use crate::cmd::Ctx;
use crate::config::Env;
use crate::exit::Exit;

pub(super) fn run(ctx: &Ctx, env: &Env) -> Result<Exit> {
    crate::daemon::run(&ctx.config, ctx.ui, crate::signals::install(), env)?;
    Ok(Exit::Success)
}
