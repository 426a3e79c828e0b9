//! Notifications against a local HTTP server standing in for each service:
//! an upgrade that rolls back tells upgraderd's JSON endpoint, ntfy, Gotify,
//! Discord and Slack at once, each body in the shape the service documents
//! and each saying the outcome, the versions, the failed step and the last
//! log lines; endpoints that fail do not stop the others, and every URL's
//! secret stays hidden in the output, the history and `config`.

use crate::common::fake_engine::Deployment;
use crate::common::http::{Reply, Seen, Server};
use serde_json::Value;

/// Answers like the services do: Discord 204, the others 200; `/broken/…` answers 500.
fn services() -> Server {
    Server::start(|seen| {
        if seen.path.starts_with("/broken/") {
            Reply::json(500, r#"{"message": "upstream broke"}"#)
        } else if seen.path.starts_with("/api/webhooks/") {
            Reply { status: 204, headers: vec![], body: Vec::new() }
        } else {
            Reply::json(200, r#"{"ok": true}"#)
        }
    })
}

fn the_request<'a>(seen: &'a [Seen], path: &str) -> &'a Seen {
    seen.iter().find(|s| s.path == path).unwrap_or_else(|| panic!("nothing POSTed to {path}: {seen:#?}"))
}

/// The facts every body must carry, wherever it carries them.
#[track_caller]
fn says_what_happened(body: &Value, what: &str) {
    let text = body.to_string();
    for needle in [
        "rolled back",
        "1.0.0",
        "2.0.0",
        "health_check",
        "Running health checks",
        "Rolled back to the previous version",
    ] {
        assert!(text.contains(needle), "the {what} body lacks {needle:?}: {body:#}");
    }
}

#[test]
fn a_rolled_back_upgrade_is_told_to_every_service_in_its_own_format() {
    let server = services();
    let port = server.port;
    let urls = [
        format!("http://127.0.0.1:{port}/hooks/json-SECRET1"),
        format!("ntfy+http://127.0.0.1:{port}/ntfy/topic-SECRET2"),
        format!("http://127.0.0.1:{port}/gotify/message?token=SECRET3"),
        format!("discord+http://127.0.0.1:{port}/api/webhooks/1/SECRET4"),
        format!("slack+http://127.0.0.1:{port}/services/T0/B0/SECRET5"),
        // Two that fail: an error answer, and nothing listening.
        format!("http://127.0.0.1:{port}/broken/SECRET6"),
        "http://127.0.0.1:9/SECRET7".to_string(),
    ];
    let d = Deployment::new().with("CRASH", "2.0.0").with("UPGRADERD_NOTIFY_URL", &urls.join(","));
    let run = d.sb.test().args(["upgrade", "--to", "2.0.0"]).status(1).run();
    let seen = server.requests();
    assert!(seen.iter().all(|s| s.method == "POST"), "{seen:#?}");

    let json = the_request(&seen, "/hooks/json-SECRET1").json();
    says_what_happened(&json, "JSON");
    assert_eq!(json["status"], "rolled_back");
    assert_eq!((json["fromVersion"].as_str(), json["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    assert_eq!(json["failedStep"], "health_check");
    assert!(json["error"].as_str().unwrap().contains("exited with code 1"), "{json:#}");
    assert!(json["logs"].as_array().is_some_and(|l| !l.is_empty() && l.len() <= 10), "{json:#}");
    assert_eq!(json["upgradeId"], d.last_history()["upgradeId"]);

    // ntfy's JSON form: POSTed to the server's root, the topic in the body.
    let ntfy = the_request(&seen, "/ntfy/").json();
    says_what_happened(&ntfy, "ntfy");
    assert_eq!(ntfy["topic"], "topic-SECRET2");
    assert!(ntfy["title"].as_str().unwrap().ends_with("upgrade 1.0.0 → 2.0.0 rolled back"), "{ntfy:#}");
    assert_eq!((ntfy["priority"].as_i64(), ntfy["tags"][0].as_str()), (Some(4), Some("warning")));

    let gotify = the_request(&seen, "/gotify/message?token=SECRET3").json();
    says_what_happened(&gotify, "Gotify");
    assert!(gotify["title"].is_string() && gotify["message"].is_string(), "{gotify:#}");
    assert_eq!(gotify["priority"], 5);

    let discord = the_request(&seen, "/api/webhooks/1/SECRET4").json();
    says_what_happened(&discord, "Discord");
    let embed = &discord["embeds"][0];
    assert!(discord["content"].as_str().unwrap().contains("rolled back"), "{discord:#}");
    assert!(embed["description"].as_str().unwrap().contains("**Failed step:** health_check"), "{discord:#}");
    assert!(embed["fields"][0]["value"].as_str().unwrap().starts_with("```\n"), "{discord:#}");
    assert_eq!(discord["allowed_mentions"]["parse"], serde_json::json!([]));

    let slack = the_request(&seen, "/services/T0/B0/SECRET5").json();
    says_what_happened(&slack, "Slack");
    assert!(slack["text"].as_str().unwrap().contains("rolled back"), "{slack:#}");
    assert_eq!(slack["blocks"][0]["type"], "header");
    assert!(slack["blocks"][1]["text"]["text"].as_str().unwrap().contains("*Failed step:* health_check"));

    // The failures were tried, are warnings with the URL masked, and did not stop the others.
    the_request(&seen, "/broken/SECRET6");
    let stderr = &run.stderr;
    assert!(stderr.contains("Notification to json http://127.0.0.1:9/******** failed: no answer"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "Notification to json http://127.0.0.1:{port}/******** failed: the endpoint answered HTTP 500: \
             {{\"message\": \"upstream broke\"}}"
        )),
        "{stderr}"
    );
    // Each result is in the upgrade's log, masked.
    let history = d.sb.test().args(["--json", "status"]).run().stdout;
    for line in [
        format!("Notified ntfy ntfy+http://127.0.0.1:{port}/ntfy/********"),
        format!("Notified gotify http://127.0.0.1:{port}/gotify/message?********"),
        format!("Notified discord discord+http://127.0.0.1:{port}/api/webhooks/********"),
        format!("Notified slack slack+http://127.0.0.1:{port}/services/********"),
        "Notification to json http://127.0.0.1:9/******** failed".to_string(),
    ] {
        assert!(history.contains(&line), "the history lacks {line:?}: {history}");
    }
    let config = d.sb.test().args(["config"]).run().stdout;
    for place in [&run.stdout, &run.stderr, &history, &config] {
        assert!(!place.contains("SECRET"), "a secret leaked: {place}");
    }
}

#[test]
fn a_complete_upgrade_is_told_without_a_failed_step() {
    let server = services();
    let d = Deployment::new().with("UPGRADERD_NOTIFY_URL", &server.url("/hook"));
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let body = the_request(&server.requests(), "/hook").json();
    assert_eq!(body["status"], "complete");
    assert_eq!(body["failedStep"], Value::Null);
    assert!(body["message"].as_str().unwrap().contains("2.0.0 is running and healthy"), "{body:#}");
    assert!(body["logs"].to_string().contains("Healthy after"), "{body:#}");
}

#[test]
fn a_bad_notification_url_is_a_configuration_error_that_hides_the_secret() {
    let d = Deployment::new().with("UPGRADERD_NOTIFY_URL", "https://ntfy.sh/ok,https://discord.com/channels/SECRET");
    let run = d.sb.test().args(["config"]).status(2).run();
    assert!(run.stderr.contains("invalid UPGRADERD_NOTIFY_URL"), "{}", run.stderr);
    assert!(run.stderr.contains("api/webhooks/ID/TOKEN"), "{}", run.stderr);
    assert!(run.stderr.contains("for example UPGRADERD_NOTIFY_URL=https://ntfy.sh/"), "{}", run.stderr);
    assert!(!run.stderr.contains("SECRET"), "{}", run.stderr);
    let d = d.with("UPGRADERD_NOTIFY_URL", "teams+https://example.com/SECRET");
    let run =
        d.sb.test()
            .args(["upgrade", "--to", "2.0.0"])
            .status(2)
            .stderr_contains("`teams+` names no notification format")
            .run();
    assert!(!run.stderr.contains("SECRET"), "{}", run.stderr);
}
