//! `check-version` against local HTTP servers standing in for a version.json
//! URL, GitHub's API (ETag, token, rate limit) and a registry that wants the
//! anonymous token handshake; every bad answer is exit 1 naming the source,
//! and the banner file is never turned into a false "up to date".

use std::fs;

use crate::common::http::{Reply, Server};
use crate::common::Sandbox;
use serde_json::Value;

fn sandbox() -> Sandbox {
    let mut sb = Sandbox::new();
    fs::create_dir_all(sb.path().join("shared")).unwrap();
    let shared = sb.path().join("shared").display().to_string();
    sb.env("UPGRADERD_CURRENT_VERSION", "1.0.0").env("UPGRADERD_TRIGGER_DIR", shared);
    sb
}

fn banner(sb: &Sandbox) -> Option<Value> {
    serde_json::from_slice(&fs::read(sb.path().join("shared/.upgrade-available.json")).ok()?).ok()
}

#[test]
fn an_opentrace_version_json_through_a_pointer() {
    let server = Server::start(|_| Reply::json(200, r#"{"opentrace": {"version": "v2.0.0"}}"#));
    let mut sb = sandbox();
    sb.env("UPGRADERD_VERSION_URL", server.url("/version.json"))
        .env("UPGRADERD_VERSION_POINTER", "/opentrace/version")
        .env("UPGRADERD_POLICY", "major");
    sb.test().args(["check-version"]).stdout_contains("update available: 1.0.0 -> 2.0.0").run();
    let b = banner(&sb).expect("banner written");
    assert_eq!(b["currentVersion"], "1.0.0");
    assert_eq!(b["latestVersion"], "2.0.0");
    assert_eq!(b["updateAvailable"], true);
    assert!(b["checkedAt"].as_str().unwrap().ends_with('Z'));
    sb.test().args(["check-version", "--exit-code"]).status(10).run();
    let json = sb.test().args(["--json", "check-version"]).run().json();
    assert_eq!((json["allowedVersion"].as_str(), json["source"].as_str()), (Some("2.0.0"), Some("url")));
    // The default policy (minor) does not take a new major version automatically.
    sb.env("UPGRADERD_POLICY", "minor");
    sb.test()
        .args(["check-version", "--exit-code"])
        .status(0)
        .stdout_contains("2.0.0 is available but not for automatic upgrades")
        .stderr_contains("beyond UPGRADERD_POLICY=minor")
        .run();
}

#[test]
fn github_releases_with_etag_token_and_release_url() {
    let server = Server::start(|seen| {
        if seen.headers.get("if-none-match").map(String::as_str) == Some("\"r1\"") {
            return Reply::json(304, "");
        }
        Reply::json(
            200,
            r#"{"tag_name": "v1.4.0", "html_url": "https://github.example/o/r/releases/v1.4.0", "prerelease": false,
                "draft": false, "published_at": "2026-01-01T00:00:00Z"}"#,
        )
        .header("ETag", "\"r1\"")
    });
    let mut sb = sandbox();
    sb.env("UPGRADERD_GITHUB_REPO", "o/r")
        .env("UPGRADERD_GITHUB_API", server.url(""))
        .env("UPGRADERD_GITHUB_TOKEN", "t0k");
    sb.test()
        .args(["check-version"])
        .stdout_contains("update available: 1.0.0 -> 1.4.0 (https://github.example/o/r/releases/v1.4.0)")
        .run();
    // Unchanged: answered 304 from the cache, still the same result.
    sb.test().args(["check-version"]).stdout_contains("-> 1.4.0").run();
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0].path, "/repos/o/r/releases/latest");
    assert_eq!(requests[0].headers["authorization"], "Bearer t0k");
    assert_eq!(requests[1].headers.get("if-none-match").map(String::as_str), Some("\"r1\""));
    assert_eq!(banner(&sb).unwrap()["releaseUrl"], "https://github.example/o/r/releases/v1.4.0");
    // The token never shows in `config`.
    let config = sb.test().args(["config"]).run();
    assert!(!config.stdout.contains("t0k"), "{}", config.stdout);
}

#[test]
fn prereleases_come_from_the_release_list_only_when_allowed() {
    let server = Server::start(|seen| {
        assert!(seen.path.starts_with("/repos/o/r/releases?per_page="), "{}", seen.path);
        Reply::json(
            200,
            r#"[{"tag_name": "v1.5.0-rc.1", "prerelease": true}, {"tag_name": "v1.4.0", "prerelease": false},
                {"tag_name": "v9.0.0", "draft": true}]"#,
        )
    });
    let mut sb = sandbox();
    sb.env("UPGRADERD_GITHUB_REPO", "o/r")
        .env("UPGRADERD_GITHUB_API", server.url(""))
        .env("UPGRADERD_ALLOW_PRERELEASE", "true");
    sb.test().args(["check-version"]).stdout_contains("-> 1.5.0-rc.1").run();
}

#[test]
fn a_rate_limit_says_when_to_retry_and_keeps_the_banner() {
    let server = Server::start(|_| {
        Reply::json(403, r#"{"message": "API rate limit exceeded"}"#)
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", "1900000000")
    });
    let mut sb = sandbox();
    sb.env("UPGRADERD_GITHUB_REPO", "o/r").env("UPGRADERD_GITHUB_API", server.url(""));
    fs::write(sb.path().join("shared/.upgrade-available.json"), r#"{"latestVersion": "1.3.0"}"#).unwrap();
    sb.test()
        .args(["check-version"])
        .status(1)
        .stderr_contains(
            "GitHub releases (UPGRADERD_GITHUB_REPO): GitHub's API rate limit is exhausted; retry after 2030-03-17",
        )
        .stderr_contains("set UPGRADERD_GITHUB_TOKEN")
        .run();
    assert_eq!(banner(&sb).unwrap(), serde_json::json!({"latestVersion": "1.3.0"}), "banner untouched");
}

#[test]
fn bad_answers_are_errors_naming_the_source() {
    let cases: &[(&str, Reply, &str)] = &[
        (
            "/html",
            Reply { status: 200, headers: vec![], body: b"<html><body>Sign in</body></html>".to_vec() },
            "answered HTML, not JSON",
        ),
        ("/500", Reply::json(500, r#"{"error": "boom"}"#), "answered HTTP 500"),
        (
            "/big",
            Reply::json(200, &format!(r#"{{"version": "1.0.0", "pad": "{}"}}"#, "x".repeat(2 << 20))),
            "larger than 1024 KiB",
        ),
        ("/nopointer", Reply::json(200, r#"{"name": "app"}"#), "has nothing at /version"),
        (
            "/banana",
            Reply::json(200, r#"{"version": "banana"}"#),
            "`banana` at /version, which is not a semver version",
        ),
        ("/garbage", Reply::json(200, "not json at all"), "did not answer JSON"),
    ];
    let replies: Vec<(String, Reply)> = cases.iter().map(|(p, r, _)| (p.to_string(), r.clone())).collect();
    let server = Server::start(move |seen| replies.iter().find(|(p, _)| *p == seen.path).unwrap().1.clone());
    let mut sb = sandbox();
    for (path, _, expected) in cases {
        sb.env("UPGRADERD_VERSION_URL", server.url(path));
        sb.test()
            .args(["check-version"])
            .status(1)
            .stderr_contains("version URL (UPGRADERD_VERSION_URL)")
            .stderr_contains(expected)
            .run();
        assert!(banner(&sb).is_none(), "no banner from a bad answer ({path})");
    }
    // Nothing listening: an error, not a hang.
    sb.env("UPGRADERD_VERSION_URL", "http://127.0.0.1:9/version.json");
    sb.test().args(["check-version"]).status(1).stderr_contains("no answer from http://127.0.0.1:9/version.json").run();
}

#[test]
fn disabled_checks_make_no_network_call() {
    let server = Server::start(|_| Reply::json(200, r#"{"version": "2.0.0"}"#));
    let mut sb = sandbox();
    sb.env("UPGRADERD_VERSION_URL", server.url("/v")).env("VERSION_CHECK_DISABLED", "true");
    sb.test().args(["check-version", "--exit-code"]).stdout_contains("version checks are disabled").run();
    assert!(server.requests().is_empty());
    assert!(banner(&sb).is_none());
}

#[test]
fn registry_tags_with_the_anonymous_token_handshake_and_pages() {
    let server = Server::start(|seen| {
        let port = seen.headers["host"].rsplit(':').next().unwrap().to_string();
        match (seen.path.as_str(), seen.headers.get("authorization").map(String::as_str)) {
            (p, None) if p.starts_with("/v2/team/app/tags/list") => Reply::json(401, r#"{"errors": []}"#).header(
                "WWW-Authenticate",
                &format!(
                    r#"Bearer realm="http://127.0.0.1:{port}/token",service="reg",scope="repository:team/app:pull""#
                ),
            ),
            ("/token?service=reg&scope=repository:team/app:pull", None) => Reply::json(200, r#"{"token": "tk"}"#),
            ("/v2/team/app/tags/list?n=1000", Some("Bearer tk")) => Reply::json(
                200,
                r#"{"name": "team/app", "tags": ["1.0.0", "1.1.0", "latest", "v1.2.0", "2.0.0", "1.3.0-rc.1"]}"#,
            )
            .header("Link", r#"</v2/team/app/tags/list?last=v1.2.0&n=1000>; rel="next""#),
            ("/v2/team/app/tags/list?last=v1.2.0&n=1000", Some("Bearer tk")) => {
                Reply::json(200, r#"{"name": "team/app", "tags": ["1.2.5", "main"]}"#)
            }
            (path, auth) => panic!("unexpected {path} {auth:?}"),
        }
    });
    let mut sb = sandbox();
    sb.env("UPGRADERD_IMAGE", format!("127.0.0.1:{}/team/app", server.port));
    let json = sb.test().args(["--json", "check-version"]).run().json();
    assert_eq!(json["source"], "registry");
    assert_eq!(json["latestVersion"], "2.0.0");
    assert_eq!(json["allowedVersion"], "1.2.5", "highest within the minor policy, prerelease excluded");
    assert!(json["heldBack"][0].as_str().unwrap().starts_with("2.0.0: beyond UPGRADERD_POLICY=minor"));
}

#[test]
fn trigger_writes_a_request_for_the_daemon_and_never_overwrites_one() {
    let server = Server::start(|_| Reply::json(200, r#"{"version": "1.1.0"}"#));
    let mut sb = sandbox();
    sb.env("UPGRADERD_VERSION_URL", server.url("/v"));
    sb.test().args(["check-version", "--trigger"]).stderr_contains("wrote a trigger for 1.1.0").run();
    let trigger: Value = serde_json::from_slice(&fs::read(sb.path().join("shared/.upgrade-trigger")).unwrap()).unwrap();
    assert_eq!(trigger["version"], "1.1.0");
    assert_eq!(trigger["upgradeId"].as_str().unwrap().len(), 36);
    sb.test().args(["check-version", "--trigger"]).status(1).stderr_contains("a trigger is already waiting").run();
    assert_eq!(
        serde_json::from_slice::<Value>(&fs::read(sb.path().join("shared/.upgrade-trigger")).unwrap()).unwrap(),
        trigger
    );
    sb.test().args(["check-version", "--trigger", "--upgrade"]).status(2).stderr_contains("cannot be used with").run();
}

#[test]
fn every_line_of_the_example_cron_file_runs() {
    let server = Server::start(|_| Reply::json(200, r#"{"version": "1.0.0"}"#));
    let mut sb = sandbox();
    sb.env("UPGRADERD_VERSION_URL", server.url("/v"));
    let cron = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/cron/upgraderd")).unwrap();
    let commands: Vec<Vec<String>> = cron
        .lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter(|l| l.split_whitespace().nth(6) == Some("upgraderd"))
        .map(|l| l.split_whitespace().skip(7).take_while(|w| !w.starts_with(">>")).map(str::to_string).collect())
        .collect();
    assert_eq!(commands.len(), 3, "{cron}");
    for args in commands {
        sb.test().args(args).run();
    }
    assert_eq!(banner(&sb).unwrap()["updateAvailable"], false);
}
