//! `upgraderd config`: every effective value and where it came from, secrets masked.

use anyhow::Result;
use serde_json::json;

use crate::cmd::Ctx;
use crate::config::{display_value, KEYS};
use crate::exit::Exit;

pub fn run(ctx: &Ctx) -> Result<Exit> {
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
    if ctx.ui.json() {
        ctx.ui.data(&json!({"config": entries}));
    } else {
        ctx.ui.table(&["KEY", "VALUE", "SOURCE"], &rows);
    }
    Ok(Exit::Success)
}
