//! The body each service documents for a [`Message`], within its limits:
//!
//! - upgraderd's JSON: the outcome as `--json` shows it, plus `host`,
//!   `failedStep`, `logs`, `title` and `message`;
//! - ntfy: `POST` of `{topic, title, message, priority, tags}` to the server's
//!   root (ntfy's JSON publishing), the message at most 4,096 bytes;
//! - Gotify: `POST /message?token=…` with `{title, message, priority}`;
//! - Discord: an execute-webhook body, `{content, embeds, allowed_mentions}`
//!   (content 2,000 characters, embed title 256, description 4,096, field
//!   value 1,024, 6,000 in all), mentions switched off so a log line cannot ping anyone;
//! - Slack: an incoming-webhook body, `{text, blocks}` (header text 150
//!   characters, section text 3,000), `text` being what notifications show.

use anyhow::{anyhow, Result};
use serde_json::{json, Value};
use url::Url;

use super::Message;
use crate::states::{NotifyFormat, Terminal};

const NTFY_MESSAGE_BYTES: usize = 4096;
const DISCORD_CONTENT: usize = 2000;
const DISCORD_TITLE: usize = 256;
/// Below Discord's 4,096 so the embed stays under its 6,000 characters in all.
const DISCORD_DESCRIPTION: usize = 3000;
const DISCORD_FIELD: usize = 1024;
const SLACK_HEADER: usize = 150;
const SLACK_SECTION: usize = 3000;

/// Where to POST and what, for `format`.
pub(super) fn request(format: NotifyFormat, url: &str, message: &Message) -> Result<(String, Value)> {
    Ok(match format {
        NotifyFormat::Json => (url.to_string(), json_body(message)),
        NotifyFormat::Ntfy => ntfy(url, message)?,
        NotifyFormat::Gotify => (url.to_string(), gotify(message)),
        NotifyFormat::Discord => (url.to_string(), discord(message)),
        NotifyFormat::Slack => (url.to_string(), slack(message)),
    })
}

fn json_body(message: &Message) -> Value {
    json!({
        "upgradeId": message.upgrade_id,
        "status": message.terminal.as_str(),
        "fromVersion": message.from_version,
        "toVersion": message.to_version,
        "error": message.error,
        "backupPath": message.backup,
        "host": message.host,
        "failedStep": message.failed_step.as_ref().map(|(status, _)| status.as_str()),
        "failedStepMessage": message.failed_step.as_ref().map(|(_, doing)| doing),
        "logs": message.logs,
        "title": message.title(),
        "message": plain_text(message),
    })
}

/// The facts, then the last log lines, as plain text.
fn plain_text(message: &Message) -> String {
    let mut text: Vec<String> = message.facts().into_iter().map(|(label, value)| format!("{label}: {value}")).collect();
    if !message.logs.is_empty() {
        text.push(String::new());
        text.push("Last log lines:".into());
        text.extend(message.logs.iter().cloned());
    }
    text.join("\n")
}

/// ntfy's JSON form goes to the root URL, with the URL's last path segment as the topic.
fn ntfy(url: &str, message: &Message) -> Result<(String, Value)> {
    let mut root = Url::parse(url).map_err(|e| anyhow!("the ntfy URL does not parse: {e}"))?;
    let topic = root
        .path_segments()
        .and_then(|mut segments| segments.rfind(|s| !s.is_empty()))
        .map(str::to_string)
        .ok_or_else(|| anyhow!("the ntfy URL names no topic"))?;
    let path = root.path().trim_end_matches('/');
    let path = path[..path.len() - topic.len()].to_string();
    root.set_path(&path);
    let (priority, tag) = match message.terminal {
        Terminal::Complete => (3, "white_check_mark"),
        Terminal::RolledBack => (4, "warning"),
        Terminal::Failed => (5, "rotating_light"),
    };
    let body = json!({
        "topic": topic,
        "title": message.title(),
        "message": fit_bytes(&plain_text(message), NTFY_MESSAGE_BYTES),
        "priority": priority,
        "tags": [tag, "upgraderd"],
    });
    Ok((root.to_string(), body))
}

fn gotify(message: &Message) -> Value {
    let priority = match message.terminal {
        Terminal::Complete => 2,
        Terminal::RolledBack => 5,
        Terminal::Failed => 8,
    };
    json!({
        "title": message.title(),
        "message": plain_text(message),
        "priority": priority,
        "extras": {"client::display": {"contentType": "text/plain"}},
    })
}

fn discord(message: &Message) -> Value {
    let color = match message.terminal {
        Terminal::Complete => 0x2e_cc_71,
        Terminal::RolledBack => 0xe6_7e_22,
        Terminal::Failed => 0xe7_4c_3c,
    };
    let description: Vec<String> =
        message.facts().into_iter().map(|(label, value)| format!("**{label}:** {}", no_code_fence(&value))).collect();
    let mut embed = json!({
        "title": fit_utf16(&message.title(), DISCORD_TITLE),
        "description": fit_utf16(&description.join("\n"), DISCORD_DESCRIPTION),
        "color": color,
    });
    if !message.logs.is_empty() {
        embed["fields"] = json!([{"name": "Last log lines", "value": code_block(&message.logs, DISCORD_FIELD)}]);
    }
    json!({
        "content": fit_utf16(&message.title(), DISCORD_CONTENT),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    })
}

fn slack(message: &Message) -> Value {
    let facts: Vec<String> = message
        .facts()
        .into_iter()
        .map(|(label, value)| format!("*{label}:* {}", slack_escape(&no_code_fence(&value))))
        .collect();
    let mut blocks = vec![
        json!({"type": "header", "text": {"type": "plain_text", "text": fit_utf16(&message.title(), SLACK_HEADER)}}),
        json!({"type": "section", "text": {"type": "mrkdwn", "text": fit_utf16(&facts.join("\n"), SLACK_SECTION)}}),
    ];
    if !message.logs.is_empty() {
        let escaped: Vec<String> = message.logs.iter().map(|l| slack_escape(l)).collect();
        let heading = "*Last log lines*\n";
        let logs = format!("{heading}{}", code_block(&escaped, SLACK_SECTION - heading.len()));
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": logs}}));
    }
    json!({
        "text": format!("{}: {}", message.title(), message.meaning()),
        "blocks": blocks,
    })
}

/// Slack's mrkdwn needs `&`, `<` and `>` escaped.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Three backticks in a value would end the code block around it.
fn no_code_fence(text: &str) -> String {
    text.replace("```", "'''")
}

/// The newest lines that fit, in a fenced code block of at most `max` UTF-16 units.
fn code_block(lines: &[String], max: usize) -> String {
    const FENCES: usize = "```\n\n```".len();
    let room = max.saturating_sub(FENCES);
    let mut kept: Vec<String> = Vec::new();
    let mut used = 0;
    for line in lines.iter().rev() {
        let line = no_code_fence(line);
        let cost = line.encode_utf16().count() + 1;
        if used + cost > room {
            if kept.is_empty() {
                kept.push(fit_utf16(&line, room));
            }
            break;
        }
        used += cost;
        kept.push(line);
    }
    kept.reverse();
    format!("```\n{}\n```", kept.join("\n"))
}

/// At most `max` UTF-16 units (how Discord and Slack count), `…` marking a cut.
fn fit_utf16(text: &str, max: usize) -> String {
    if text.encode_utf16().count() <= max {
        return text.to_string();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        if used + c.len_utf16() > max.saturating_sub(1) {
            break;
        }
        used += c.len_utf16();
        out.push(c);
    }
    out.push('…');
    out
}

/// At most `max` bytes of UTF-8, `…` marking a cut.
fn fit_bytes(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::states::Status;

    fn rolled_back() -> Message {
        Message {
            upgrade_id: "u-1".into(),
            terminal: Terminal::RolledBack,
            from_version: Some("1.0.0".into()),
            to_version: "2.0.0".into(),
            failed_step: Some((Status::HealthCheck, "Running health checks".into())),
            error: Some("app exited with code 1 <@everyone> & ```".into()),
            logs: vec!["Rolling back: app exited".into(), "Rollback complete".into()],
            host: "web1".into(),
            backup: Some("/b/x.tar.gz".into()),
        }
    }

    #[test]
    fn every_format_says_outcome_versions_step_and_logs() {
        let m = rolled_back();
        assert_eq!(m.title(), "web1: upgrade 1.0.0 → 2.0.0 rolled back");
        for format in NotifyFormat::ALL {
            let (_, body) = request(format, "https://ntfy.sh/t", &m).unwrap();
            let text = body.to_string();
            for needle in
                ["rolled back", "1.0.0", "2.0.0", "health_check", "Running health checks", "Rollback complete"]
            {
                assert!(text.contains(needle), "{format} lacks {needle:?}: {text}");
            }
        }
    }

    #[test]
    fn json_keeps_the_fields_of_before() {
        let (url, body) = request(NotifyFormat::Json, "http://h/x", &rolled_back()).unwrap();
        assert_eq!(url, "http://h/x");
        assert_eq!(body["status"], "rolled_back");
        assert_eq!((body["fromVersion"].as_str(), body["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
        assert_eq!(body["upgradeId"], "u-1");
        assert_eq!(body["backupPath"], "/b/x.tar.gz");
        assert_eq!(body["failedStep"], "health_check");
        assert_eq!(body["logs"][1], "Rollback complete");
    }

    #[test]
    fn ntfy_posts_to_the_root_with_the_topic_in_the_body() {
        let (url, body) =
            request(NotifyFormat::Ntfy, "https://ntfy.example.com/sub/alerts?auth=x", &rolled_back()).unwrap();
        assert_eq!(url, "https://ntfy.example.com/sub/?auth=x");
        assert_eq!(body["topic"], "alerts");
        assert_eq!(body["priority"], 4);
        assert_eq!(body["tags"][0], "warning");
        let (url, _) = request(NotifyFormat::Ntfy, "https://ntfy.sh/alerts", &rolled_back()).unwrap();
        assert_eq!(url, "https://ntfy.sh/");
        let mut long = rolled_back();
        long.logs = vec!["é".repeat(3000); 10];
        let (_, body) = request(NotifyFormat::Ntfy, "https://ntfy.sh/alerts", &long).unwrap();
        let text = body["message"].as_str().unwrap();
        assert!(text.len() <= NTFY_MESSAGE_BYTES && text.ends_with('…'), "{}", text.len());
    }

    #[test]
    fn gotify_has_title_message_and_a_numeric_priority() {
        let (_, body) = request(NotifyFormat::Gotify, "https://g/message?token=t", &rolled_back()).unwrap();
        assert_eq!(body["priority"], 5);
        assert!(body["message"].as_str().unwrap().contains("Failed step: health_check (Running health checks)"));
    }

    #[test]
    fn discord_stays_within_its_limits_and_pings_nobody() {
        let mut m = rolled_back();
        m.error = Some("x".repeat(10_000));
        m.logs = (0..500).map(|i| format!("line {i} {}", "y".repeat(100))).collect();
        m.host = "h".repeat(3000);
        let (_, body) = request(NotifyFormat::Discord, "https://discord.com/api/webhooks/1/t", &m).unwrap();
        let units = |v: &Value| v.as_str().unwrap().encode_utf16().count();
        assert!(units(&body["content"]) <= 2000);
        let embed = &body["embeds"][0];
        assert!(units(&embed["title"]) <= 256);
        assert!(units(&embed["description"]) <= 4096);
        let logs = &embed["fields"][0]["value"];
        assert!(units(logs) <= 1024, "{}", units(logs));
        assert!(logs.as_str().unwrap().contains("line 499"), "the newest lines are kept");
        let total =
            units(&embed["title"]) + units(&embed["description"]) + units(&embed["fields"][0]["name"]) + units(logs);
        assert!(total <= 6000, "{total}");
        assert_eq!(body["allowed_mentions"]["parse"], json!([]));
        assert!(!body["embeds"][0]["description"].as_str().unwrap().contains("```"));
    }

    #[test]
    fn slack_escapes_mrkdwn_and_stays_within_its_limits() {
        let (_, body) = request(NotifyFormat::Slack, "https://hooks.slack.com/services/a/b/c", &rolled_back()).unwrap();
        assert_eq!(body["text"], "web1: upgrade 1.0.0 → 2.0.0 rolled back: 1.0.0 and its data are back and healthy");
        assert_eq!(body["blocks"][0]["type"], "header");
        let facts = body["blocks"][1]["text"]["text"].as_str().unwrap();
        assert!(facts.contains("&lt;@everyone&gt; &amp;"), "{facts}");
        assert!(facts.contains("*Failed step:* health_check"), "{facts}");
        let mut long = rolled_back();
        long.host = "h".repeat(500);
        long.logs = vec!["z".repeat(5000)];
        let (_, body) = request(NotifyFormat::Slack, "https://hooks.slack.com/services/a/b/c", &long).unwrap();
        for block in body["blocks"].as_array().unwrap() {
            let text = block["text"]["text"].as_str().unwrap();
            let max = if block["type"] == "header" { SLACK_HEADER } else { SLACK_SECTION };
            assert!(text.encode_utf16().count() <= max, "{}", block["type"]);
        }
    }

    #[test]
    fn a_complete_upgrade_names_no_failed_step() {
        let m = Message { terminal: Terminal::Complete, failed_step: None, error: None, ..rolled_back() };
        let (_, body) = request(NotifyFormat::Json, "http://h/x", &m).unwrap();
        assert_eq!(body["failedStep"], Value::Null);
        assert!(!body["message"].as_str().unwrap().contains("Failed step"));
        assert!(body["message"].as_str().unwrap().contains("2.0.0 is running and healthy"));
    }
}
