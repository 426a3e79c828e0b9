//! The Prometheus exposition of upgraderd's state: what [`Snapshot`] holds,
//! read from the state database ([`Snapshot::read_db`]), rendered as the
//! text format 0.0.4 that node_exporter's textfile collector and a scrape
//! read ([`render`]). Pure: data in, text out; when it is written is the
//! engine's (`engine::metrics`).
//!
//! Names follow the Prometheus conventions: base units (`_seconds`,
//! `_bytes`), `_total` for the counter, `_info` for the labels-only gauge,
//! every family with its HELP and TYPE, and every label combination of the
//! counter present from the start (at 0), so `increase()` sees the first one.

use std::fmt::Write as _;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::states::{RequestState, Status, Strategy, Terminal};
use crate::store::db::{Db, Event};

/// Every terminal state, in the order the metrics list them.
const TERMINALS: [Terminal; 3] = [Terminal::Complete, Terminal::RolledBack, Terminal::Failed];

/// What the metrics say.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Snapshot {
    /// This upgraderd's version.
    pub build_version: String,
    /// Upgrades that ended, by terminal state and strategy (missing ones count 0).
    pub upgrades: Vec<(Terminal, Strategy, u64)>,
    pub last: Option<LastUpgrade>,
    pub backups: Backups,
    /// Requests waiting for their upgrade (the running one not counted).
    pub requests_pending: u64,
    /// The last version check, when one is recorded.
    pub check: Option<VersionCheck>,
}

/// The upgrade that ended last.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct LastUpgrade {
    pub terminal: Terminal,
    pub strategy: Strategy,
    pub started_at_ms: i64,
    pub ended_at_ms: i64,
    /// From the switch (the `restarting` transition) to the terminal state; 0 when it ended before the switch.
    pub downtime_ms: i64,
}

/// The archives in the backup directory.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Backups {
    pub count: u64,
    pub bytes: u64,
    /// When the newest one was taken.
    pub newest_at_ms: Option<i64>,
}

/// What the last version check found, kept in the state directory between checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct VersionCheck {
    pub running: String,
    pub latest: Option<String>,
    /// The newest version an automatic upgrade may take, when newer than the running one.
    pub allowed: Option<String>,
    pub checked_at_ms: i64,
}

impl Snapshot {
    /// The upgrades, the last one and the pending requests, from the state database.
    pub(crate) fn read_db(&mut self, db: &Db) -> Result<()> {
        self.upgrades = db
            .terminal_counts()?
            .into_iter()
            .filter_map(|(status, strategy, n)| {
                Some((TERMINALS.into_iter().find(|t| t.status() == status)?, strategy, n))
            })
            .collect();
        self.last = match db.last_finished()? {
            Some(record) => {
                let terminal = TERMINALS.into_iter().find(|t| t.status() == record.status);
                let ended_at_ms = record.completed_at.unwrap_or(record.started_at);
                terminal.map(|terminal| LastUpgrade {
                    terminal,
                    strategy: record.strategy,
                    started_at_ms: record.started_at,
                    ended_at_ms,
                    // As the gate measured it when it passed; else (rolled back, failed, or
                    // recorded before schema 7) from the switch to the terminal state.
                    downtime_ms: record
                        .downtime_ms
                        .unwrap_or_else(|| downtime_ms(&db.events(&record.id).unwrap_or_default())),
                })
            }
            None => None,
        };
        self.requests_pending = db.count_requests(RequestState::Queued)?;
        Ok(())
    }
}

/// From the last attempt's switch (its first `restarting` transition) to its terminal state.
fn downtime_ms(events: &[Event]) -> i64 {
    let Some(end) = events.iter().rposition(|e| e.status.is_terminal()) else { return 0 };
    // An attempt run again under its id counts from its last start.
    let start = events[..end].iter().rposition(|e| e.status.is_terminal()).map_or(0, |i| i + 1);
    let switched = events[start..end].iter().find(|e| e.status == Status::Restarting);
    switched.map_or(0, |e| (events[end].at - e.at).max(0))
}

/// The exposition text (format 0.0.4), ending in a newline.
pub(crate) fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    family(&mut out, "upgraderd_build_info", "gauge", "The running upgraderd's version, as a label.");
    sample(&mut out, "upgraderd_build_info", &[("version", &s.build_version)], "1");

    family(&mut out, "upgraderd_upgrades_total", "counter", "Upgrades that ended, by terminal state and strategy.");
    for terminal in TERMINALS {
        for strategy in Strategy::ALL {
            let n = s
                .upgrades
                .iter()
                .filter(|(t, st, _)| *t == terminal && *st == strategy)
                .map(|(_, _, n)| n)
                .sum::<u64>();
            sample(
                &mut out,
                "upgraderd_upgrades_total",
                &[("status", terminal.as_str()), ("strategy", strategy.as_str())],
                &n.to_string(),
            );
        }
    }

    if let Some(last) = &s.last {
        family(
            &mut out,
            "upgraderd_last_upgrade_end_timestamp_seconds",
            "gauge",
            "When the last upgrade reached its terminal state, in seconds since the epoch.",
        );
        sample(&mut out, "upgraderd_last_upgrade_end_timestamp_seconds", &[], &seconds(last.ended_at_ms));
        family(
            &mut out,
            "upgraderd_last_upgrade_status",
            "gauge",
            "The last upgrade's terminal state: 1 for the state it ended in, 0 for the others.",
        );
        for terminal in TERMINALS {
            let on = if terminal == last.terminal { "1" } else { "0" };
            sample(
                &mut out,
                "upgraderd_last_upgrade_status",
                &[("status", terminal.as_str()), ("strategy", last.strategy.as_str())],
                on,
            );
        }
        family(
            &mut out,
            "upgraderd_last_upgrade_duration_seconds",
            "gauge",
            "How long the last upgrade took, from its start to its terminal state.",
        );
        let duration = (last.ended_at_ms - last.started_at_ms).max(0);
        sample(&mut out, "upgraderd_last_upgrade_duration_seconds", &[], &seconds(duration));
        family(
            &mut out,
            "upgraderd_last_upgrade_downtime_seconds",
            "gauge",
            "The last upgrade's outage: from the switch to its gate's first healthy look (rolled back: to the \
             rollback's end); 0 before a switch.",
        );
        sample(&mut out, "upgraderd_last_upgrade_downtime_seconds", &[], &seconds(last.downtime_ms));
    }

    family(&mut out, "upgraderd_backups", "gauge", "Backup archives in the backup directory.");
    sample(&mut out, "upgraderd_backups", &[], &s.backups.count.to_string());
    family(&mut out, "upgraderd_backup_size_bytes", "gauge", "The backup archives' total size on disk.");
    sample(&mut out, "upgraderd_backup_size_bytes", &[], &s.backups.bytes.to_string());
    if let Some(at) = s.backups.newest_at_ms {
        family(
            &mut out,
            "upgraderd_last_backup_timestamp_seconds",
            "gauge",
            "When the newest backup was taken, in seconds since the epoch.",
        );
        sample(&mut out, "upgraderd_last_backup_timestamp_seconds", &[], &seconds(at));
    }

    family(&mut out, "upgraderd_requests_pending", "gauge", "Upgrade requests waiting for their upgrade.");
    sample(&mut out, "upgraderd_requests_pending", &[], &s.requests_pending.to_string());

    if let Some(check) = &s.check {
        family(
            &mut out,
            "upgraderd_version_info",
            "gauge",
            "The last version check: the running, the newest and the newest allowed version (empty: none), as labels.",
        );
        let labels = [
            ("running", check.running.as_str()),
            ("latest", check.latest.as_deref().unwrap_or("")),
            ("allowed", check.allowed.as_deref().unwrap_or("")),
        ];
        sample(&mut out, "upgraderd_version_info", &labels, "1");
        family(
            &mut out,
            "upgraderd_update_allowed",
            "gauge",
            "1 when the last version check found a newer version an automatic upgrade may take, else 0.",
        );
        sample(&mut out, "upgraderd_update_allowed", &[], if check.allowed.is_some() { "1" } else { "0" });
        family(
            &mut out,
            "upgraderd_last_version_check_timestamp_seconds",
            "gauge",
            "When the last version check ran, in seconds since the epoch.",
        );
        sample(&mut out, "upgraderd_last_version_check_timestamp_seconds", &[], &seconds(check.checked_at_ms));
    }
    out
}

/// The HELP and TYPE lines of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', r"\\").replace('\n', r"\n");
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One sample line: `name{label="value",...} value`.
fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", escape_label(v))).collect();
        let _ = write!(out, "{{{}}}", labels.join(","));
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the exposition format quotes it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str(r"\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str(r"\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// Milliseconds as seconds, exactly (to the millisecond).
fn seconds(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    match ms % 1000 {
        0 => format!("{sign}{}", ms / 1000),
        frac => format!("{sign}{}.{}", ms / 1000, format!("{frac:03}").trim_end_matches('0')),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::db::UpgradeRecord;

    fn lines(text: &str) -> Vec<&str> {
        text.lines().filter(|l| !l.starts_with('#')).collect()
    }

    #[test]
    fn label_values_and_help_are_escaped() {
        assert_eq!(escape_label(r#"a\b"c"#), r#"a\\b\"c"#);
        assert_eq!(escape_label("one\ntwo"), r"one\ntwo");
        let s = Snapshot {
            build_version: "1.0.0".into(),
            check: Some(VersionCheck {
                running: "v\"1\"\\".into(),
                latest: None,
                allowed: None,
                checked_at_ms: 1_736_000_000_500,
            }),
            ..Snapshot::default()
        };
        let text = render(&s);
        assert!(text.contains(r#"upgraderd_version_info{running="v\"1\"\\",latest="",allowed=""} 1"#), "{text}");
        assert!(text.contains("upgraderd_update_allowed 0\n"), "{text}");
        assert!(text.contains("upgraderd_last_version_check_timestamp_seconds 1736000000.5\n"), "{text}");
        let mut out = String::new();
        family(&mut out, "x", "gauge", "a\\b\nc");
        assert_eq!(out, "# HELP x a\\\\b\\nc\n# TYPE x gauge\n");
    }

    #[test]
    fn every_state_and_strategy_is_counted_from_zero() {
        let s = Snapshot {
            build_version: "0.9.0".into(),
            upgrades: vec![(Terminal::Complete, Strategy::Pull, 2), (Terminal::RolledBack, Strategy::Pull, 1)],
            ..Snapshot::default()
        };
        let text = render(&s);
        let counts: Vec<&str> =
            lines(&text).into_iter().filter(|l| l.starts_with("upgraderd_upgrades_total")).collect();
        assert_eq!(counts.len(), 9, "{text}");
        assert!(counts.contains(&r#"upgraderd_upgrades_total{status="complete",strategy="pull"} 2"#));
        assert!(counts.contains(&r#"upgraderd_upgrades_total{status="rolled_back",strategy="pull"} 1"#));
        assert!(counts.contains(&r#"upgraderd_upgrades_total{status="failed",strategy="swarm"} 0"#));
        assert!(text.starts_with("# HELP upgraderd_build_info"), "{text}");
        assert!(text.contains("upgraderd_build_info{version=\"0.9.0\"} 1\n"));
        assert!(text.contains("upgraderd_requests_pending 0\n"));
        // Nothing is said of what has not happened yet.
        assert!(!text.contains("upgraderd_last_upgrade") && !text.contains("upgraderd_version_info"), "{text}");
        // Every sample's family has its HELP and TYPE.
        for line in lines(&text) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has no HELP");
        }
    }

    #[test]
    fn the_last_upgrade_its_timings_and_the_backups() {
        let s = Snapshot {
            build_version: "1".into(),
            last: Some(LastUpgrade {
                terminal: Terminal::RolledBack,
                strategy: Strategy::Rebuild,
                started_at_ms: 1_000,
                ended_at_ms: 61_250,
                downtime_ms: 4_020,
            }),
            backups: Backups { count: 2, bytes: 4096, newest_at_ms: Some(1_736_000_000_000) },
            requests_pending: 3,
            ..Snapshot::default()
        };
        let text = render(&s);
        for want in [
            "upgraderd_last_upgrade_end_timestamp_seconds 61.25",
            r#"upgraderd_last_upgrade_status{status="rolled_back",strategy="rebuild"} 1"#,
            r#"upgraderd_last_upgrade_status{status="complete",strategy="rebuild"} 0"#,
            "upgraderd_last_upgrade_duration_seconds 60.25",
            "upgraderd_last_upgrade_downtime_seconds 4.02",
            "upgraderd_backups 2",
            "upgraderd_backup_size_bytes 4096",
            "upgraderd_last_backup_timestamp_seconds 1736000000",
            "upgraderd_requests_pending 3",
        ] {
            assert!(lines(&text).contains(&want), "{want} missing:\n{text}");
        }
    }

    #[test]
    fn seconds_are_exact() {
        assert_eq!(seconds(0), "0");
        assert_eq!(seconds(1_500), "1.5");
        assert_eq!(seconds(1_736_000_000_123), "1736000000.123");
        assert_eq!(seconds(-20), "-0.02");
    }

    #[test]
    fn the_database_gives_the_counts_the_last_upgrade_and_its_downtime() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Db::open(&dir.path().join("s.db")).unwrap();
        for (id, started_at, strategy) in
            [("a", 1, Strategy::Pull), ("b", 2, Strategy::Pull), ("c", 3, Strategy::Rebuild)]
        {
            let record =
                UpgradeRecord { id: id.into(), status: Status::Pending, started_at, strategy, ..Default::default() };
            db.insert_upgrade(&record).unwrap();
        }
        db.finish("a", Terminal::Complete, "done", None).unwrap();
        db.transition("b", Status::Restarting, "Restarting services").unwrap();
        db.finish("b", Terminal::RolledBack, "Rolled back", Some("unhealthy")).unwrap();
        let mut s = Snapshot::default();
        s.read_db(&db).unwrap();
        let mut counts = s.upgrades.clone();
        counts.sort_by_key(|(t, _, _)| t.as_str());
        assert_eq!(counts, vec![(Terminal::Complete, Strategy::Pull, 1), (Terminal::RolledBack, Strategy::Pull, 1)]);
        let last = s.last.unwrap();
        assert_eq!((last.terminal, last.strategy), (Terminal::RolledBack, Strategy::Pull));
        assert!(last.downtime_ms >= 0 && last.ended_at_ms >= last.started_at_ms);
        assert_eq!(s.requests_pending, 0);
    }

    #[test]
    fn downtime_counts_from_the_last_attempts_switch() {
        let event = |at, status| Event { seq: 0, at, status, progress: 0, message: String::new() };
        assert_eq!(downtime_ms(&[]), 0);
        assert_eq!(downtime_ms(&[event(1, Status::Pending), event(5, Status::Failed)]), 0);
        let journal = [
            event(1, Status::Restarting),
            event(2, Status::Failed),
            event(10, Status::Pending),
            event(20, Status::Restarting),
            event(25, Status::HealthCheck),
            event(32, Status::Complete),
        ];
        assert_eq!(downtime_ms(&journal), 12);
    }
}
