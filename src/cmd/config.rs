//! `upgraderd config`: every effective value and where it came from, secrets
//! masked, and when the auto-upgrade window opens next if one is configured.

use anyhow::Result;
use serde_json::json;

use crate::cmd::Ctx;
use crate::config::{display_value, KEYS};
use crate::exit::Exit;
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
        ctx.ui.data(&data);
    } else {
        ctx.ui.table(&["KEY", "VALUE", "SOURCE"], &rows);
        if let Some(verdict) = &verdict {
            ctx.ui.print(window::summary(windows, verdict));
        }
    }
    Ok(Exit::Success)
}
