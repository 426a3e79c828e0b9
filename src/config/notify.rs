//! `UPGRADERD_NOTIFY_URL`: the notification URLs (comma separated), the
//! format each is sent in, and how each is shown with its secrets hidden.
//!
//! The format is chosen by the URL:
//! - a scheme prefix forces it: `json+`, `ntfy+`, `gotify+`, `discord+` or
//!   `slack+` before `http://`/`https://` (self-hosted or proxied endpoints);
//! - `discord.com`/`discordapp.com` with `/api/webhooks/ID/TOKEN`: Discord;
//! - `hooks.slack.com/services/…`: Slack;
//! - `ntfy.sh/<topic>`: ntfy;
//! - a path ending in `/message` with a `token=` query: Gotify;
//! - anything else: upgraderd's JSON.
//!
//! Masked, a URL keeps its format prefix, scheme, user, host, port and the
//! public part of its path; the password, the query and the secret part of the
//! path (a Discord or Slack webhook's id and token, an ntfy topic, a generic
//! webhook's whole path) become `********`.

use url::Url;

use crate::states::NotifyFormat;

/// A valid value, for error messages.
pub(super) const EXAMPLE: &str = "https://ntfy.sh/my-upgrades,https://hooks.slack.com/services/T0/B0/XXXX";

const HIDDEN: &str = "********";

/// One notification URL and the format it is sent in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NotifyTarget {
    pub format: NotifyFormat,
    /// Where the notification goes, without a format prefix.
    pub url: String,
    /// The format was forced by a scheme prefix.
    forced: bool,
}

/// Parses the comma-separated list; every URL must be valid.
pub(super) fn parse_list(text: &str) -> Result<Vec<NotifyTarget>, String> {
    split_list(text).iter().map(|one| NotifyTarget::parse(one)).collect()
}

/// The list as `config` shows it: each URL masked, even one that does not parse.
pub(super) fn mask_list(text: &str) -> String {
    let masked: Vec<String> = split_list(text)
        .iter()
        .map(|one| NotifyTarget::parse(one).map(|t| t.masked()).unwrap_or_else(|_| mask_unparsed(one)))
        .collect();
    masked.join(",")
}

/// Splits at the commas that start a new URL: a comma inside a URL's query stays in it.
fn split_list(text: &str) -> Vec<String> {
    let mut urls: Vec<String> = Vec::new();
    for piece in text.split(',') {
        match urls.last_mut() {
            Some(last) if !starts_like_a_url(piece.trim()) => {
                last.push(',');
                last.push_str(piece);
            }
            _ => urls.push(piece.to_string()),
        }
    }
    urls.into_iter().map(|u| u.trim().to_string()).filter(|u| !u.is_empty()).collect()
}

fn starts_like_a_url(text: &str) -> bool {
    text.split_once("://").is_some_and(|(scheme, _)| {
        !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
    })
}

/// Without a parse: scheme and host shown, everything after them hidden.
fn mask_unparsed(text: &str) -> String {
    match text.split_once("://") {
        Some((scheme, rest)) => {
            let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
            let host = authority.rsplit('@').next().unwrap_or_default();
            format!("{scheme}://{host}/{HIDDEN}")
        }
        None => HIDDEN.to_string(),
    }
}

impl NotifyTarget {
    /// Parses one URL, with or without a format prefix.
    pub(crate) fn parse(text: &str) -> Result<NotifyTarget, String> {
        let (prefix, rest) = match text.split_once("://") {
            Some((scheme, rest)) => match scheme.split_once('+') {
                Some((format, scheme)) => (Some(format), format!("{scheme}://{rest}")),
                None => (None, text.to_string()),
            },
            None => return Err(format!("expected an http:// or https:// URL, like {EXAMPLE}")),
        };
        let forced = prefix
            .map(|name| {
                NotifyFormat::parse(&name.to_ascii_lowercase())
                    .ok_or_else(|| format!("`{name}+` names no notification format; use {}", NotifyFormat::choices()))
            })
            .transpose()?;
        let mut url = Url::parse(&rest).map_err(|e| format!("not a URL ({e})"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(format!("expected an http:// or https:// URL with a host, like {EXAMPLE}"));
        }
        url.set_fragment(None);
        let format = forced.unwrap_or_else(|| detect(&url));
        check(format, forced.is_some(), &mut url)?;
        Ok(NotifyTarget { format, url: url.to_string(), forced: forced.is_some() })
    }

    /// The URL with its secrets hidden, for `config`, logs and history.
    pub(crate) fn masked(&self) -> String {
        let Ok(url) = Url::parse(&self.url) else { return mask_unparsed(&self.url) };
        let mut out = String::new();
        if self.forced {
            out.push_str(self.format.as_str());
            out.push('+');
        }
        out.push_str(url.scheme());
        out.push_str("://");
        if !url.username().is_empty() || url.password().is_some() {
            out.push_str(url.username());
            if url.password().is_some() {
                out.push(':');
                out.push_str(HIDDEN);
            }
            out.push('@');
        }
        out.push_str(url.host_str().unwrap_or_default());
        if let Some(port) = url.port() {
            out.push_str(&format!(":{port}"));
        }
        let path = url.path();
        let public = public_path(self.format, path);
        out.push_str(public);
        if public.len() < path.len() {
            out.push_str(HIDDEN);
        }
        if url.query().is_some() {
            out.push('?');
            out.push_str(HIDDEN);
        }
        out
    }
}

/// The format a URL without a prefix is sent in.
fn detect(url: &Url) -> NotifyFormat {
    let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
    let on = |domain: &str| host == domain || host.ends_with(&format!(".{domain}"));
    if on("discord.com") || on("discordapp.com") {
        NotifyFormat::Discord
    } else if host == "hooks.slack.com" {
        NotifyFormat::Slack
    } else if host == "ntfy.sh" {
        NotifyFormat::Ntfy
    } else if url.path().ends_with("/message") && gotify_token(url).is_some() {
        NotifyFormat::Gotify
    } else {
        NotifyFormat::Json
    }
}

fn gotify_token(url: &Url) -> Option<String> {
    url.query_pairs().find(|(k, v)| k == "token" && !v.is_empty()).map(|(_, v)| v.into_owned())
}

/// Checks what the format needs from the URL; a forced Gotify URL gets its `/message` path.
fn check(format: NotifyFormat, forced: bool, url: &mut Url) -> Result<(), String> {
    let segments: Vec<String> =
        url.path_segments().map(|s| s.filter(|p| !p.is_empty()).map(str::to_string).collect()).unwrap_or_default();
    match format {
        NotifyFormat::Discord if !forced && (segments.len() < 4 || segments[..2] != ["api", "webhooks"]) => {
            return Err("a Discord webhook URL is https://discord.com/api/webhooks/ID/TOKEN (Discord's channel \
                        settings, Integrations, Webhooks, Copy Webhook URL)"
                .into());
        }
        NotifyFormat::Slack if !forced && (segments.len() < 2 || segments[0] != "services") => {
            return Err("a Slack incoming webhook URL is https://hooks.slack.com/services/T…/B…/…".into());
        }
        NotifyFormat::Ntfy => {
            let topic = segments.last().map(String::as_str).unwrap_or_default();
            let valid = !topic.is_empty()
                && topic.len() <= 64
                && topic.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
            if !valid {
                return Err("an ntfy URL ends in its topic (letters, digits, `-` and `_`, at most 64): \
                            https://ntfy.sh/my-upgrades, or ntfy+https://ntfy.example.com/my-upgrades"
                    .into());
            }
        }
        NotifyFormat::Gotify => {
            if gotify_token(url).is_none() {
                return Err("a Gotify URL carries the application token: \
                            https://push.example.com/message?token=APP_TOKEN"
                    .into());
            }
            if !url.path().ends_with("/message") {
                let path = format!("{}/message", url.path().trim_end_matches('/'));
                url.set_path(&path);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The part of the path that is no secret and stays visible.
fn public_path(format: NotifyFormat, path: &str) -> &str {
    let shown = match format {
        NotifyFormat::Discord if path.starts_with("/api/webhooks/") => "/api/webhooks/".len(),
        NotifyFormat::Slack if path.starts_with("/services/") => "/services/".len(),
        NotifyFormat::Ntfy => path.rfind('/').map_or(0, |i| i + 1),
        NotifyFormat::Gotify => path.len(),
        _ => 1,
    };
    &path[..shown.min(path.len())]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> NotifyTarget {
        NotifyTarget::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn the_url_chooses_the_format() {
        let cases = [
            ("https://discord.com/api/webhooks/123/abcSECRET", NotifyFormat::Discord),
            ("https://discordapp.com/api/webhooks/123/abcSECRET", NotifyFormat::Discord),
            ("https://ptb.discord.com/api/webhooks/123/abcSECRET", NotifyFormat::Discord),
            ("https://hooks.slack.com/services/T0/B0/SECRET", NotifyFormat::Slack),
            ("https://ntfy.sh/my-upgrades", NotifyFormat::Ntfy),
            ("https://push.example.com/message?token=SECRET", NotifyFormat::Gotify),
            ("https://push.example.com/gotify/message?token=SECRET", NotifyFormat::Gotify),
            ("https://hooks.example.com/message", NotifyFormat::Json),
            ("http://127.0.0.1:8080/notify", NotifyFormat::Json),
        ];
        for (url, format) in cases {
            let target = one(url);
            assert_eq!(target.format, format, "{url}");
            assert_eq!(target.url, url, "sent as given");
        }
    }

    #[test]
    fn a_prefix_forces_the_format_and_is_not_sent() {
        let discord = one("discord+http://127.0.0.1:9000/api/webhooks/1/tok");
        assert_eq!(
            (discord.format, discord.url.as_str()),
            (NotifyFormat::Discord, "http://127.0.0.1:9000/api/webhooks/1/tok")
        );
        let slack = one("slack+https://chat.example.com/hooks/abc");
        assert_eq!(slack.format, NotifyFormat::Slack);
        let ntfy = one("ntfy+https://ntfy.example.com/sub/alerts");
        assert_eq!((ntfy.format, ntfy.url.as_str()), (NotifyFormat::Ntfy, "https://ntfy.example.com/sub/alerts"));
        let gotify = one("gotify+https://push.example.com/?token=T");
        assert_eq!(gotify.url, "https://push.example.com/message?token=T", "the API path is added");
        let json = one("JSON+https://discord.com/api/webhooks/1/x");
        assert_eq!(json.format, NotifyFormat::Json);
    }

    #[test]
    fn a_list_keeps_a_comma_inside_a_query() {
        let list =
            parse_list(" https://ntfy.sh/a , https://h.example/x?tags=a,b,discord+http://127.0.0.1:1/h").unwrap();
        let urls: Vec<&str> = list.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(urls, ["https://ntfy.sh/a", "https://h.example/x?tags=a,b", "http://127.0.0.1:1/h"]);
        assert!(parse_list("").unwrap().is_empty());
    }

    #[test]
    fn bad_urls_say_what_each_service_expects() {
        let err = |text: &str| NotifyTarget::parse(text).unwrap_err();
        assert!(err("https://discord.com/channels/1").contains("api/webhooks/ID/TOKEN"));
        assert!(err("https://hooks.slack.com/x").contains("hooks.slack.com/services/"));
        assert!(err("https://ntfy.sh/").contains("ends in its topic"));
        assert!(err("https://ntfy.sh/bad.topic").contains("ends in its topic"));
        assert!(err("gotify+https://push.example.com/message").contains("application token"));
        assert!(err("teams+https://x.example/h").contains("`teams+` names no notification format"));
        assert!(err("ftp://x.example/h").contains("http:// or https://"));
        assert!(err("hooks.example.com/x").contains("http:// or https://"));
    }

    #[test]
    fn secrets_are_masked_in_every_format() {
        let cases = [
            ("https://discord.com/api/webhooks/123/abcSECRET", "https://discord.com/api/webhooks/********"),
            ("https://hooks.slack.com/services/T0/B0/SECRET", "https://hooks.slack.com/services/********"),
            ("https://ntfy.sh/SECRET-topic", "https://ntfy.sh/********"),
            (
                "ntfy+https://u:SECRET@ntfy.example.com/sub/SECRET",
                "ntfy+https://u:********@ntfy.example.com/sub/********",
            ),
            ("https://push.example.com/message?token=SECRET", "https://push.example.com/message?********"),
            ("https://bot:SECRET@hooks.local/x?token=SECRET", "https://bot:********@hooks.local/********?********"),
            ("discord+http://127.0.0.1:9000/SECRET", "discord+http://127.0.0.1:9000/********"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080/"),
        ];
        for (url, masked) in cases {
            assert_eq!(one(url).masked(), masked, "{url}");
            assert!(!mask_list(url).contains("SECRET"), "{url}");
        }
        assert_eq!(
            mask_list("https://ntfy.sh/a,https://x.example/SECRET"),
            "https://ntfy.sh/********,https://x.example/********"
        );
        assert_eq!(mask_list("nonsense SECRET"), "********");
        assert_eq!(mask_list("https://ntfy.sh/bad.SECRET"), "https://ntfy.sh/********");
    }
}
