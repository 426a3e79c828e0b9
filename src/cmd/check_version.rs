//! `upgraderd check-version [--exit-code] [--trigger | --upgrade]`: is there a
//! newer version, may an automatic upgrade take it, and (optionally) ask the
//! daemon for it or run it here.
//!
//! `--trigger` and `--upgrade` are automatic upgrades: outside
//! `UPGRADERD_AUTO_UPGRADE_WINDOW` they do nothing but say when the window
//! opens, and exit as a check without them would, so a cron job that runs
//! again inside the window takes the update then.

use anyhow::{Context, Result};
use serde_json::json;

use crate::cli::CheckVersionArgs;
use crate::cmd::Ctx;
use crate::engine::check::{self, Report};
use crate::engine::{new_upgrade_id, pipeline, Request, Terminal};
use crate::exit::{usage, Exit};
use crate::store::shared_dir::SharedDir;
use crate::window::{self, Clock, Verdict};

pub(super) fn run(ctx: &Ctx, args: &CheckVersionArgs, clock: &Clock) -> Result<Exit> {
    if ctx.config.version_check_disabled {
        // No network call at all, and the banner is left as it is.
        if ctx.ui.json() {
            ctx.ui.data(&json!({"disabled": true}));
        } else {
            ctx.ui.print("version checks are disabled (UPGRADERD_VERSION_CHECK_DISABLED=true); nothing was asked");
        }
        return Ok(Exit::Success);
    }
    if args.trigger && ctx.config.trigger_dir.is_none() {
        return Err(usage("--trigger needs UPGRADERD_TRIGGER_DIR: the directory the running `watch` reads"));
    }
    let report = check::run(&ctx.config)?;
    match check::write_banner(&ctx.config, &report) {
        Ok(Some(path)) => ctx.ui.detail(format!("wrote {}", path.display())),
        Ok(None) => {}
        Err(e) => ctx.ui.warn(format!("{e:#}")),
    }
    crate::engine::metrics::after_check(&ctx.config, ctx.ui, &report);
    let verdict = clock.verdict(&ctx.config.auto_upgrade_window);
    let waits = wait_for_window(&verdict, report.allowed_version.is_some() && (args.trigger || args.upgrade));
    print(ctx, &report, &verdict, waits);
    let Some(target) = report.allowed_version.clone() else { return Ok(Exit::Success) };
    if let Some(opens) = waits {
        let what = if args.upgrade { format!("upgrading to {target}") } else { format!("asking watch for {target}") };
        let line = format!(
            "not {what} now: outside the auto-upgrade window {}; it opens {}",
            ctx.config.auto_upgrade_window,
            window::show(&opens)
        );
        if ctx.ui.json() {
            ctx.ui.info(line);
        } else {
            ctx.ui.print(line);
        }
        return Ok(if args.exit_code { Exit::UpdateAvailable } else { Exit::Success });
    }
    if args.trigger {
        let id = write_trigger(ctx, &target)?;
        ctx.ui.info(format!("wrote a trigger for {target} (upgrade {id}); the running watch takes it from here"));
    }
    if args.upgrade {
        let request = Request {
            // The version source's answer: checked like an operator's `--to`.
            target: crate::version::Target::parse(&target).map_err(anyhow::Error::msg)?,
            backup: true,
            force: false,
            dry_run: false,
            // Not the app's: the check already applied policy, quarantine and release age to this version.
            initiated_by: crate::states::Initiator::CheckVersion,
            strategy: ctx.config.strategy,
            upgrade_id: None,
            shutdown: Some(crate::signals::install()),
        };
        let outcome = pipeline::run(&ctx.config, ctx.ui, &request)?;
        crate::cmd::upgrade::report(ctx, &outcome, false);
        return Ok(if outcome.terminal == Terminal::Complete { Exit::Success } else { Exit::Failed });
    }
    Ok(if args.exit_code { Exit::UpdateAvailable } else { Exit::Success })
}

/// When an automatic upgrade that would run now must wait: the window's opening.
fn wait_for_window(verdict: &Verdict, would_run: bool) -> Option<chrono::DateTime<chrono::FixedOffset>> {
    match verdict {
        Verdict::Closed { opens } if would_run => Some(*opens),
        _ => None,
    }
}

fn print(ctx: &Ctx, report: &Report, verdict: &Verdict, waits: Option<chrono::DateTime<chrono::FixedOffset>>) {
    let windows = &ctx.config.auto_upgrade_window;
    if ctx.ui.json() {
        let mut data = serde_json::to_value(report).unwrap_or_default();
        if !windows.is_unrestricted() {
            data["autoUpgradeWindow"] = window::to_json(windows, verdict);
        }
        if let Some(opens) = waits {
            data["waitsForWindowUntil"] = json!(opens.to_rfc3339());
        }
        ctx.ui.data(&data);
        return;
    }
    let latest = report.latest_version.as_deref().unwrap_or("none");
    let line = match (&report.allowed_version, report.update_available) {
        (Some(allowed), _) => format!(
            "update available: {} -> {allowed}{}",
            report.current_version,
            report.release_url.as_deref().map(|u| format!(" ({u})")).unwrap_or_default()
        ),
        (None, true) => {
            format!("{latest} is available but not for automatic upgrades; running {}", report.current_version)
        }
        (None, false) => format!("up to date: {} (latest {latest}, from {})", report.current_version, report.source),
    };
    ctx.ui.print(line);
    if !windows.is_unrestricted() {
        ctx.ui.print(window::summary(windows, verdict));
    }
    for reason in &report.held_back {
        ctx.ui.info(format!("held back: {reason}"));
    }
}

/// Writes the trigger the way an app should: atomically, in the watched directory.
fn write_trigger(ctx: &Ctx, version: &str) -> Result<String> {
    let dir = ctx.config.trigger_dir.as_ref().expect("checked before the network call");
    let id = new_upgrade_id();
    let body = json!({
        "upgradeId": id,
        "version": version,
        "backup": true,
        "timestamp": crate::store::db::now_ms(),
    });
    let path = dir.join(&ctx.config.trigger_file);
    let shared = SharedDir::open(dir).with_context(|| format!("cannot write the trigger {}", path.display()))?;
    // Never replace a trigger the app wrote and the daemon has not taken yet.
    match shared.write_atomic_new(&ctx.config.trigger_file, &serde_json::to_vec(&body)?, 0o644) {
        Ok(()) => Ok(id),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(anyhow::anyhow!(
            "a trigger is already waiting at {}; it was left for the running watch",
            path.display()
        )),
        Err(e) => Err(e).with_context(|| format!("cannot write the trigger {}", path.display())),
    }
}
