//! `upgraderd config`: every effective value and where it came from, secrets
//! masked, when the auto-upgrade window opens next if one is configured, and,
//! in a container (a compose sidecar), what of the host it can see.

use anyhow::Result;
use serde_json::json;

use crate::cmd::Ctx;
use crate::config::{display_value, KEYS};
use crate::engine::sidecar::{self, Sidecar};
use crate::exit::Exit;
use crate::ops::docker::Docker;
use crate::ops::process::Runner;
use crate::window::{self, Clock};

pub(super) fn run(ctx: &Ctx, clock: &Clock) -> Result<Exit> {
    let mut rows = Vec::new();
    let mut entries = Vec::new();
    for spec in KEYS {
        let (value, source) = match ctx.layers.get(spec.name) {
            Some(v) => (display_value(spec, &v.text), v.source.to_string()),
            None => (String::new(), "unset".to_string()),
        };
        entries.push(json!({"key": spec.name, "value": value, "source": source, "help": spec.help}));
        rows.push(vec![spec.name.to_string(), if value.is_empty() { "-".into() } else { value }, source]);
    }
    let windows = &ctx.config.auto_upgrade_window;
    let verdict = (!windows.is_unrestricted()).then(|| clock.verdict(windows));
    if ctx.ui.json() {
        let mut data = json!({"config": entries});
        if let Some(verdict) = &verdict {
            data["autoUpgradeWindow"] = window::to_json(windows, verdict);
        }
        if let Some(seen) = container_view(ctx) {
            data["container"] = json!(seen);
        }
        ctx.ui.data(&data);
    } else {
        ctx.ui.table(&["KEY", "VALUE", "SOURCE"], &rows);
        if let Some(verdict) = &verdict {
            ctx.ui.print(window::summary(windows, verdict));
        }
        for line in container_view(ctx).unwrap_or_default() {
            ctx.ui.print(line);
        }
    }
    Ok(Exit::Success)
}

/// In a container: which one, and each host path mounted into it (where, and
/// whether writable), or why that cannot be told. `None` outside one.
fn container_view(ctx: &Ctx) -> Option<Vec<String>> {
    let id = sidecar::own_container_id()?;
    if let Some(missing) = sidecar::missing_socket() {
        return Some(vec![missing]);
    }
    let docker = Docker::new(&ctx.config.docker, Runner::new(false));
    let Some(me) = Sidecar::find(&docker) else {
        return Some(vec![format!(
            "runs in container {}, which the Docker engine does not know",
            sidecar::short_id(id)
        )]);
    };
    let mut lines = vec![format!(
        "runs in container {} ({}): it sees these host paths, and nothing else of the host",
        me.name(),
        sidecar::short_id(id)
    )];
    for mount in &me.container.mounts {
        let access = if mount.rw { "rw" } else { "ro" };
        let at = match mount.source == mount.destination {
            true => "at the same path".to_string(),
            false => format!("at {}", mount.destination.display()),
        };
        lines.push(format!("  {} {} ({access}, {})", mount.source.display(), at, mount.kind));
    }
    Some(lines)
}
