//! `upgraderd watch`: the daemon systemd runs (see `upgraderd.service`), or a
//! container as a compose sidecar; `watch --alive` is that container's
//! HEALTHCHECK.

use anyhow::{anyhow, Result};

use crate::cli::WatchArgs;
use crate::cmd::Ctx;
use crate::config::Env;
use crate::daemon::heartbeat;
use crate::exit::Exit;

pub(super) fn run(ctx: &Ctx, args: &WatchArgs, env: &Env) -> Result<Exit> {
    if args.alive {
        return alive(ctx);
    }
    // In a container without the socket every docker call would wait for an engine that never comes.
    if let Some(missing) = crate::engine::sidecar::missing_socket() {
        return Err(crate::exit::UsageError(missing).into());
    }
    crate::daemon::run(&ctx.config, ctx.ui, crate::signals::install(), env)?;
    Ok(Exit::Success)
}

/// Whether a `watch` of this state directory has beaten lately: an error (exit 1) when not.
fn alive(ctx: &Ctx) -> Result<Exit> {
    let dir = &ctx.config.state_dir;
    match heartbeat::last(dir) {
        Ok((age, pid)) if age < heartbeat::STALE => {
            ctx.ui.print(format!("alive: watch (pid {pid}) beat {}s ago", age.as_secs()));
            Ok(Exit::Success)
        }
        Ok((age, pid)) => Err(anyhow!(
            "not alive: the last heartbeat of watch (pid {pid}) in {} is {}s old (it beats every {}s)",
            dir.display(),
            age.as_secs(),
            heartbeat::EVERY.as_secs()
        )),
        Err(e) => {
            Err(anyhow!("not alive: no heartbeat of watch in {} ({e}); is `upgraderd watch` running?", dir.display()))
        }
    }
}
