//! Version sources, as lists of releases: a version.json URL read through a
//! JSON pointer, GitHub releases (with ETag revalidation, so polling an
//! unchanged release costs no rate limit), and the tags of an image in its
//! registry (the distribution API, with the anonymous bearer-token handshake).
//! Every bad answer is an error naming the source and what was wrong; which
//! release to take is decided in `engine::check`.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::ops::docker::ImageRef;
use crate::version::{flavour, without_flavour};

/// The most of an answer read; a bigger one is an error, not a silent cut.
pub(crate) const BODY_CAP: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const TOTAL_TIMEOUT: Duration = Duration::from_secs(20);
const MAX_TAG_PAGES: usize = 20;

/// One version a source offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    /// Without a leading `v`.
    pub version: String,
    /// Where people read about it (GitHub's release page).
    pub url: Option<String>,
    /// Milliseconds since the epoch, when the source says.
    pub published_at: Option<i64>,
    pub prerelease: bool,
}

/// Where ETag-validated answers are kept between checks (the caller decides where).
pub(crate) trait EtagCache {
    /// The ETag and body remembered for `url`.
    fn get(&self, url: &str) -> Option<(String, Vec<u8>)>;
    /// Remembers an answer; failing to is not an error (the next check asks in full).
    fn put(&self, url: &str, etag: &str, body: &[u8]);
}

/// HTTP for version sources: bounded times and sizes, and an optional ETag cache.
pub(crate) struct Http {
    agent: ureq::Agent,
    cache: Option<Box<dyn EtagCache>>,
}

struct Answer {
    status: u16,
    body: Vec<u8>,
    header: BTreeMap<String, String>,
}

impl Http {
    pub(crate) fn new(cache: Option<Box<dyn EtagCache>>) -> Http {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout(TOTAL_TIMEOUT)
            .user_agent(concat!("upgraderd/", env!("CARGO_PKG_VERSION")))
            .build();
        Http { agent, cache }
    }

    fn get(&self, what: &str, url: &str, headers: &[(&str, String)]) -> Result<Answer> {
        let mut request = self.agent.get(url);
        for (name, value) in headers {
            request = request.set(name, value);
        }
        let response = match request.call() {
            Ok(response) => response,
            Err(ureq::Error::Status(_, response)) => response,
            Err(ureq::Error::Transport(e)) => {
                bail!("{what}: no answer from {url}: {e} (connect and total time are bounded to 5s and 20s)")
            }
        };
        let status = response.status();
        let header = response
            .headers_names()
            .into_iter()
            .filter_map(|name| Some((name.to_ascii_lowercase(), response.header(&name)?.to_string())))
            .collect();
        let mut body = Vec::new();
        response
            .into_reader()
            .take(BODY_CAP as u64 + 1)
            .read_to_end(&mut body)
            .with_context(|| format!("{what}: reading the answer from {url}"))?;
        if body.len() > BODY_CAP {
            bail!("{what}: the answer from {url} is larger than {} KiB; is this the right URL?", BODY_CAP / 1024);
        }
        Ok(Answer { status, body, header })
    }

    fn cached(&self, url: &str) -> Option<(String, Vec<u8>)> {
        self.cache.as_ref()?.get(url)
    }

    fn remember(&self, url: &str, etag: &str, body: &[u8]) {
        if let Some(cache) = &self.cache {
            cache.put(url, etag, body);
        }
    }
}

fn parse_json(what: &str, url: &str, body: &[u8]) -> Result<Value> {
    let text = String::from_utf8_lossy(body);
    if text.trim_start().starts_with('<') {
        bail!("{what}: {url} answered HTML, not JSON (a login page or a proxy's error page?)");
    }
    serde_json::from_slice(body).map_err(|e| {
        anyhow!("{what}: {url} did not answer JSON ({e}); it began: {}", text.chars().take(80).collect::<String>())
    })
}

fn expect_ok(what: &str, url: &str, answer: &Answer) -> Result<()> {
    if answer.status == 200 {
        Ok(())
    } else {
        Err(status_error(what, url, answer))
    }
}

fn status_error(what: &str, url: &str, answer: &Answer) -> anyhow::Error {
    let text = String::from_utf8_lossy(&answer.body);
    anyhow!("{what}: {url} answered HTTP {}: {}", answer.status, text.trim().chars().take(200).collect::<String>())
}

/// Strips a leading `v` and requires semver.
pub(crate) fn normalize(tag: &str) -> Option<String> {
    let version = tag.strip_prefix('v').unwrap_or(tag);
    semver::Version::parse(version).ok().map(|_| version.to_string())
}

/// How the caller names a source in messages, and what it tells the operator to change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Naming<'a> {
    /// The source as the operator configured it: `version URL (UPGRADERD_VERSION_URL)`.
    pub source: &'a str,
    /// The setting that fixes a wrong pointer (url) or raises the rate limit (GitHub).
    pub fix: &'a str,
}

/// A version.json URL: the version at `pointer` (OpenTrace: `/opentrace/version`).
pub(crate) fn from_url(http: &Http, naming: Naming, url: &str, pointer: &str) -> Result<Vec<Release>> {
    let what = naming.source;
    let answer = http.get(what, url, &[])?;
    expect_ok(what, url, &answer)?;
    let json = parse_json(what, url, &answer.body)?;
    let raw = match json.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(other) => bail!("{what}: {url} has {other} at {pointer}, not a version string"),
        None => bail!("{what}: {url} has nothing at {pointer}; {}", naming.fix),
    };
    let version = normalize(&raw)
        .ok_or_else(|| anyhow!("{what}: {url} gives `{raw}` at {pointer}, which is not a semver version"))?;
    let prerelease = semver::Version::parse(&version).is_ok_and(|v| !v.pre.is_empty());
    Ok(vec![Release { version, url: None, published_at: None, prerelease }])
}

/// GitHub releases of `owner/name`: the latest release, or every recent one when prereleases count.
pub(crate) fn from_github(
    http: &Http,
    naming: Naming,
    api: &str,
    repo: &str,
    token: Option<&str>,
    with_prereleases: bool,
) -> Result<Vec<Release>> {
    let what = naming.source;
    let api = api.trim_end_matches('/');
    let url = if with_prereleases {
        format!("{api}/repos/{repo}/releases?per_page=30")
    } else {
        format!("{api}/repos/{repo}/releases/latest")
    };
    let mut headers =
        vec![("Accept", "application/vnd.github+json".to_string()), ("X-GitHub-Api-Version", "2022-11-28".to_string())];
    if let Some(token) = token {
        headers.push(("Authorization", format!("Bearer {token}")));
    }
    let cached = http.cached(&url);
    if let Some((etag, _)) = &cached {
        headers.push(("If-None-Match", etag.clone()));
    }
    let answer = http.get(what, &url, &headers)?;
    let body = match answer.status {
        304 => cached.map(|(_, body)| body).ok_or_else(|| anyhow!("{what}: {url} answered 304 with nothing cached"))?,
        200 => {
            if let Some(etag) = answer.header.get("etag") {
                http.remember(&url, etag, &answer.body);
            }
            answer.body
        }
        403 | 429 if rate_limited(&answer) => {
            let hint = if token.is_some() { String::new() } else { format!("; {}", naming.fix) };
            bail!("{what}: {}{hint}", rate_limit_message(&answer))
        }
        404 => bail!("{what}: {url} answered 404: no such repository, or it has no release yet"),
        _ => return Err(status_error(what, &url, &answer)),
    };
    let json = parse_json(what, &url, &body)?;
    let items = match json {
        Value::Array(items) => items,
        object @ Value::Object(_) => vec![object],
        other => bail!("{what}: {url} answered {other}, not a release"),
    };
    let mut releases = Vec::new();
    for item in items {
        if item["draft"].as_bool() == Some(true) {
            continue;
        }
        let Some(tag) = item["tag_name"].as_str() else { bail!("{what}: a release in {url} has no tag_name") };
        let Some(version) = normalize(tag) else { continue };
        releases.push(Release {
            version,
            url: item["html_url"].as_str().map(str::to_string),
            published_at: item["published_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.timestamp_millis()),
            prerelease: item["prerelease"].as_bool().unwrap_or(false),
        });
    }
    Ok(releases)
}

fn rate_limited(answer: &Answer) -> bool {
    answer.status == 429
        || answer.header.get("x-ratelimit-remaining").is_some_and(|r| r == "0")
        || answer.header.contains_key("retry-after")
}

fn rate_limit_message(answer: &Answer) -> String {
    let when = if let Some(reset) = answer.header.get("x-ratelimit-reset").and_then(|r| r.parse::<i64>().ok()) {
        chrono::DateTime::from_timestamp(reset, 0)
            .map(|t| format!("after {}", t.with_timezone(&chrono::Local).format("%Y-%m-%d %H:%M:%S %Z")))
            .unwrap_or_else(|| "later".into())
    } else if let Some(seconds) = answer.header.get("retry-after") {
        format!("in {seconds}s")
    } else {
        "later".into()
    };
    format!("GitHub's API rate limit is exhausted; retry {when}")
}

/// The semver tags of `image`'s repository in its registry, of the running
/// tag's flavour (`1.2.4-alpine` beside `1.2.3-alpine`; none beside `1.2.3`).
pub(crate) fn from_registry(http: &Http, image: &ImageRef) -> Result<Vec<Release>> {
    let wanted = flavour(&image.tag);
    Ok(registry_tags(http, image)?
        .iter()
        .filter(|tag| flavour(tag) == wanted)
        .filter_map(|tag| normalize(without_flavour(tag)))
        .map(|version| {
            let prerelease = semver::Version::parse(&version).is_ok_and(|v| !v.pre.is_empty());
            Release { version, url: None, published_at: None, prerelease }
        })
        .collect())
}

/// Every tag of `image`'s repository in its registry, as the registry spells it.
pub(crate) fn registry_tags(http: &Http, image: &ImageRef) -> Result<Vec<String>> {
    let what = format!("registry tags of {}", image.repository);
    let (base, name) = registry_endpoint(image);
    let mut url = format!("{base}/v2/{name}/tags/list?n=1000");
    let mut token: Option<String> = None;
    let mut tags = Vec::new();
    for _ in 0..MAX_TAG_PAGES {
        let auth: Vec<(&str, String)> = token.iter().map(|t| ("Authorization", format!("Bearer {t}"))).collect();
        let mut answer = http.get(&what, &url, &auth)?;
        if answer.status == 401 && token.is_none() {
            token = Some(bearer_token(http, &what, &answer)?);
            let auth = vec![("Authorization", format!("Bearer {}", token.as_deref().unwrap_or_default()))];
            answer = http.get(&what, &url, &auth)?;
        }
        if answer.status == 404 {
            bail!("{what}: {url} answered 404: the registry has no repository {name}");
        }
        expect_ok(&what, &url, &answer)?;
        let json = parse_json(&what, &url, &answer.body)?;
        let page = json["tags"].as_array().cloned().unwrap_or_default();
        tags.extend(page.iter().filter_map(Value::as_str).map(str::to_string));
        match answer.header.get("link").and_then(|link| next_link(link)) {
            Some(next) => url = format!("{base}{next}"),
            None => break,
        }
    }
    Ok(tags)
}

/// The newest release among `tags` of `running`'s flavour (semver after an
/// optional `v`; prereleases only when allowed), spelled as the registry spells it.
pub(crate) fn newest_tag(tags: &[String], running: &str, allow_prerelease: bool) -> Option<String> {
    let wanted = flavour(running);
    tags.iter()
        .filter(|tag| flavour(tag) == wanted)
        .filter_map(|tag| Some((semver::Version::parse(&normalize(without_flavour(tag))?).ok()?, tag)))
        .filter(|(version, _)| allow_prerelease || version.pre.is_empty())
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, tag)| tag.clone())
}

/// The registry's base URL and the repository's name in it (Docker Hub's `library/` included).
fn registry_endpoint(image: &ImageRef) -> (String, String) {
    match image.registry() {
        Some(host) => {
            let scheme = if image.registry_is_loopback() { "http" } else { "https" };
            let name = image.repository[host.len() + 1..].to_string();
            (format!("{scheme}://{host}"), name)
        }
        None => {
            let name = if image.repository.contains('/') {
                image.repository.clone()
            } else {
                format!("library/{}", image.repository)
            };
            ("https://registry-1.docker.io".to_string(), name)
        }
    }
}

/// The anonymous token handshake: `WWW-Authenticate: Bearer realm=…,service=…,scope=…`.
fn bearer_token(http: &Http, what: &str, challenge: &Answer) -> Result<String> {
    let header = challenge
        .header
        .get("www-authenticate")
        .ok_or_else(|| anyhow!("{what}: the registry wants authentication but says not how"))?;
    let params = header.strip_prefix("Bearer ").ok_or_else(|| {
        anyhow!("{what}: the registry wants `{header}`, which upgraderd does not speak (only anonymous bearer tokens)")
    })?;
    let mut realm = None;
    let mut query = Vec::new();
    for part in split_params(params) {
        let Some((key, value)) = part.split_once('=') else { continue };
        let value = value.trim_matches('"');
        match key.trim() {
            "realm" => realm = Some(value.to_string()),
            key @ ("service" | "scope") => query.push(format!("{key}={}", encode_query(value))),
            _ => {}
        }
    }
    let realm = realm.ok_or_else(|| anyhow!("{what}: the registry's challenge `{header}` names no realm"))?;
    let url = if query.is_empty() { realm } else { format!("{realm}?{}", query.join("&")) };
    let answer = http.get(what, &url, &[])?;
    expect_ok(what, &url, &answer)?;
    let json = parse_json(what, &url, &answer.body)?;
    json["token"]
        .as_str()
        .or(json["access_token"].as_str())
        .map(str::to_string)
        .ok_or_else(|| anyhow!("{what}: the token service {url} gave no token"))
}

/// Splits `a="x,y",b=z` on the commas outside quotes.
fn split_params(text: &str) -> Vec<String> {
    let mut parts = vec![String::new()];
    let mut quoted = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                parts.last_mut().expect("never empty").push(c);
            }
            ',' if !quoted => parts.push(String::new()),
            _ => parts.last_mut().expect("never empty").push(c),
        }
    }
    parts
}

fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b':' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The `rel="next"` target of a `Link` header.
fn next_link(link: &str) -> Option<String> {
    link.split(',').find(|part| part.contains("rel=\"next\"")).and_then(|part| {
        let start = part.find('<')? + 1;
        let end = part.find('>')?;
        Some(part[start..end].to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_semver_with_an_optional_v() {
        assert_eq!(normalize("v2.14.0").as_deref(), Some("2.14.0"));
        assert_eq!(normalize("2.14.0-rc.1").as_deref(), Some("2.14.0-rc.1"));
        assert_eq!(normalize("latest"), None);
        assert_eq!(normalize("2.14"), None);
    }

    #[test]
    fn the_newest_tag_keeps_its_spelling() {
        let tags: Vec<String> =
            ["v1.9.0", "v1.10.0", "release", "v2.0.0-rc.1", "latest", "v1.11.0-alpine"].map(String::from).into();
        assert_eq!(newest_tag(&tags, "v1.9.0", false).as_deref(), Some("v1.10.0"));
        assert_eq!(newest_tag(&tags, "v1.9.0", true).as_deref(), Some("v2.0.0-rc.1"));
        assert_eq!(newest_tag(&tags, "v1.9.0-alpine", false).as_deref(), Some("v1.11.0-alpine"), "its flavour");
        assert_eq!(newest_tag(&["latest".to_string()], "latest", false), None);
    }

    #[test]
    fn registry_endpoints() {
        let (base, name) = registry_endpoint(&ImageRef::parse("127.0.0.1:5000/team/app:1"));
        assert_eq!((base.as_str(), name.as_str()), ("http://127.0.0.1:5000", "team/app"));
        let (base, name) = registry_endpoint(&ImageRef::parse("ghcr.io/yeraze/meshmonitor:latest"));
        assert_eq!((base.as_str(), name.as_str()), ("https://ghcr.io", "yeraze/meshmonitor"));
        let (base, name) = registry_endpoint(&ImageRef::parse("nginx:1.25"));
        assert_eq!((base.as_str(), name.as_str()), ("https://registry-1.docker.io", "library/nginx"));
    }

    #[test]
    fn challenge_and_link_parsing() {
        let parts =
            split_params(r#"realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#);
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[2], r#"scope="repository:a/b:pull,push""#);
        assert_eq!(
            next_link(r#"</v2/a/tags/list?last=x&n=2>; rel="next""#).as_deref(),
            Some("/v2/a/tags/list?last=x&n=2")
        );
        assert_eq!(encode_query("repository:a/b:pull,push"), "repository:a/b:pull%2Cpush");
    }
}
