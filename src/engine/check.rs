//! The version check: ask the configured source what exists, tell the
//! running version, and decide with real semver ordering what an automatic
//! upgrade may take: capped by the policy (patch, minor, major), prereleases
//! only when allowed, releases younger than the minimum age held back, and a
//! version this host already rolled back quarantined until it is forced or
//! superseded. A manual `upgrade --to` is never capped.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use semver::Version;
use serde::Serialize;

use crate::config::{Config, Policy, BANNER_FILE};
use crate::engine::discover;
use crate::exit::usage;
use crate::ops::docker::{without_digest, Docker, ImageRef};
use crate::ops::process::Runner;
use crate::ops::versions::{self, EtagCache, Http, Naming, Release};
use crate::states::VersionSource;
use crate::store::db::{now_ms, Db};
use crate::store::files;
use crate::store::shared_dir::SharedDir;

/// The result of one check, as printed, returned by `--json` and written to the banner file.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Report {
    pub current_version: String,
    /// The newest version the source offers (prereleases only when allowed).
    pub latest_version: Option<String>,
    pub update_available: bool,
    /// The newest version an automatic upgrade may take, when it is newer than the current one.
    pub allowed_version: Option<String>,
    pub release_url: Option<String>,
    pub checked_at: String,
    pub source: String,
    /// Why newer versions are not allowed, one line each.
    pub held_back: Vec<String>,
}

/// What decides which releases an automatic upgrade may take.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub policy: Policy,
    pub allow_prerelease: bool,
    pub min_age: Duration,
    /// Versions rolled back on this host and not completed since.
    pub quarantined: Vec<String>,
}

/// Runs the check against the configured source.
pub(crate) fn run(config: &Config) -> Result<Report> {
    let source = source(config);
    let db = Db::open_read_only(&config.db_path())?;
    let current = current_version(config, db.as_ref())?;
    // The ETag cache lives in the state dir; without one (not writable) every check asks in full.
    let cache = files::ensure_private_dir(&config.state_dir)
        .ok()
        .map(|()| Box::new(FileCache(config.state_dir.join("http-cache.json"))) as Box<dyn EtagCache>);
    let http = Http::new(cache);
    let releases = match source {
        VersionSource::Url => versions::from_url(
            &http,
            Naming {
                source: "version URL (UPGRADERD_VERSION_URL)",
                fix: "set UPGRADERD_VERSION_POINTER to where the version is",
            },
            config
                .version_url
                .as_deref()
                .ok_or_else(|| usage("UPGRADERD_VERSION_SOURCE=url needs UPGRADERD_VERSION_URL"))?,
            &config.version_pointer,
        )?,
        VersionSource::Github => versions::from_github(
            &http,
            Naming {
                source: "GitHub releases (UPGRADERD_GITHUB_REPO)",
                fix: "set UPGRADERD_GITHUB_TOKEN for a higher limit",
            },
            &config.github_api,
            config
                .github_repo
                .as_deref()
                .ok_or_else(|| usage("UPGRADERD_VERSION_SOURCE=github needs UPGRADERD_GITHUB_REPO"))?,
            config.github_token.as_deref(),
            config.allow_prerelease,
        )?,
        VersionSource::Registry => versions::from_registry(&http, &image(config)?)?,
    };
    let rules = rules(config, db.as_ref())?;
    Ok(decide(&current, &releases, &rules, now_ms(), source))
}

/// The operator's rules for versions nobody picked by hand.
pub(crate) fn rules(config: &Config, db: Option<&Db>) -> Result<Rules> {
    Ok(Rules {
        policy: config.policy,
        allow_prerelease: config.allow_prerelease,
        min_age: config.min_release_age,
        quarantined: db.map(Db::quarantined_versions).transpose()?.unwrap_or_default(),
    })
}

/// Why the app may not have `target` (policy, prerelease, quarantine), if it may not.
/// Downgrade protection is preflight's, for every request alike.
pub(crate) fn app_request_refusal(target: &str, current: Option<&str>, rules: &Rules) -> Option<String> {
    let parse = |v: &str| Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    let Some(version) = parse(target) else {
        return Some(format!(
            "the app asked for `{target}`, which is not a release version, so UPGRADERD_POLICY cannot be checked; \
             upgrade to it by hand with `upgraderd upgrade --to {target}`"
        ));
    };
    if !version.pre.is_empty() && !rules.allow_prerelease {
        return Some(format!("{version} is a prerelease and UPGRADERD_ALLOW_PRERELEASE is false"));
    }
    let current = current.and_then(parse);
    let release = Release { version: version.to_string(), url: None, published_at: None, prerelease: false };
    refusal(&version, &release, current.as_ref(), rules, now_ms()).map(|why| format!("{version}: {why}"))
}

/// The ETag cache as one JSON file in the state dir, `{url: {etag, body}}`, written atomically.
struct FileCache(PathBuf);

impl FileCache {
    fn read(&self) -> serde_json::Value {
        std::fs::read(&self.0)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(serde_json::Value::is_object)
            .unwrap_or_else(|| serde_json::json!({}))
    }
}

impl EtagCache for FileCache {
    fn get(&self, url: &str) -> Option<(String, Vec<u8>)> {
        let cache = self.read();
        let entry = cache.get(url)?;
        Some((entry["etag"].as_str()?.to_string(), entry["body"].as_str()?.as_bytes().to_vec()))
    }

    fn put(&self, url: &str, etag: &str, body: &[u8]) {
        let mut cache = self.read();
        cache[url] = serde_json::json!({"etag": etag, "body": String::from_utf8_lossy(body)});
        let _ = files::write_atomic(&self.0, &serde_json::to_vec(&cache).unwrap_or_default(), 0o600);
    }
}

/// The configured source, else the first one configured, else the registry.
fn source(config: &Config) -> VersionSource {
    match config.version_source {
        Some(source) => source,
        None if config.version_url.is_some() => VersionSource::Url,
        None if config.github_repo.is_some() => VersionSource::Github,
        None => VersionSource::Registry,
    }
}

/// The running version: configured, else the container's image label, else the last complete upgrade.
fn current_version(config: &Config, db: Option<&Db>) -> Result<String> {
    if let Some(version) = &config.current_version {
        return Ok(version.clone());
    }
    let docker = Docker::new(&config.docker, Runner::new(false));
    let container = discover::primary_container(config, &docker).map_err(|e| {
        e.context("cannot tell the running version; set UPGRADERD_CURRENT_VERSION or UPGRADERD_CONTAINER")
    })?;
    let version = discover::current_version(config, &docker, &container, db);
    version.ok_or_else(|| {
        anyhow!(
            "cannot tell the running version: the image has no org.opencontainers.image.version label and no upgrade \
             completed yet; set UPGRADERD_CURRENT_VERSION"
        )
    })
}

/// The image whose registry tags are the versions: configured, else the container's.
fn image(config: &Config) -> Result<ImageRef> {
    if let Some(image) = &config.image {
        return Ok(ImageRef::parse(image));
    }
    let docker = Docker::new(&config.docker, Runner::new(false));
    let container = discover::primary_container(config, &docker)
        .map_err(|e| e.context("cannot tell which image's tags to read; set UPGRADERD_IMAGE"))?;
    Ok(ImageRef::parse(without_digest(&container.config.image)))
}

/// Decides with semver ordering; pure, so every rule is tested without a network.
pub(crate) fn decide(current: &str, releases: &[Release], rules: &Rules, now: i64, source: VersionSource) -> Report {
    let current_semver = Version::parse(current.strip_prefix('v').unwrap_or(current)).ok();
    let mut offered: Vec<(Version, &Release)> = releases
        .iter()
        .filter(|r| rules.allow_prerelease || !r.prerelease)
        .filter_map(|r| Some((Version::parse(&r.version).ok()?, r)))
        .filter(|(v, _)| rules.allow_prerelease || v.pre.is_empty())
        .collect();
    offered.sort_by(|a, b| b.0.cmp(&a.0));
    let latest = offered.first();
    let newer: Vec<&(Version, &Release)> =
        offered.iter().filter(|(v, _)| current_semver.as_ref().is_none_or(|c| v > c)).collect();
    let mut held_back = Vec::new();
    let allowed = newer.iter().find(|(version, release)| {
        let reason = refusal(version, release, current_semver.as_ref(), rules, now);
        if let Some(reason) = &reason {
            held_back.push(format!("{version}: {reason}"));
        }
        reason.is_none()
    });
    Report {
        current_version: current.to_string(),
        latest_version: latest.map(|(v, _)| v.to_string()),
        update_available: !newer.is_empty(),
        allowed_version: allowed.map(|(v, _)| v.to_string()),
        release_url: allowed.or(newer.first()).and_then(|(_, r)| r.url.clone()),
        checked_at: chrono::DateTime::from_timestamp_millis(now)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            .unwrap_or_default(),
        source: source.as_str().to_string(),
        held_back,
    }
}

/// Why an automatic upgrade may not take `version`, if it may not.
fn refusal(version: &Version, release: &Release, current: Option<&Version>, rules: &Rules, now: i64) -> Option<String> {
    if let Some(current) = current {
        let beyond = match rules.policy {
            Policy::Patch => version.major != current.major || version.minor != current.minor,
            Policy::Minor => version.major != current.major,
            Policy::Major => false,
        };
        if beyond {
            let name = match rules.policy {
                Policy::Patch => "patch",
                Policy::Minor => "minor",
                Policy::Major => "major",
            };
            return Some(format!(
                "beyond UPGRADERD_POLICY={name} from {current} (upgrade to it by hand with `upgraderd upgrade --to {version}`)"
            ));
        }
    }
    if rules.quarantined.iter().any(|q| q == &version.to_string()) {
        return Some(
            "rolled back on this host; upgrade to it by hand with --force, or wait for a newer release".into(),
        );
    }
    if let Some(published) = release.published_at {
        let age = Duration::from_millis(now.saturating_sub(published).max(0) as u64);
        if age < rules.min_age {
            return Some(format!(
                "released {}h ago, younger than UPGRADERD_MIN_RELEASE_AGE ({}h)",
                age.as_secs() / 3600,
                rules.min_age.as_secs() / 3600
            ));
        }
    }
    None
}

/// Writes `.upgrade-available.json` for the app's banner.
pub(crate) fn write_banner(config: &Config, report: &Report) -> Result<Option<PathBuf>> {
    let Some(dir) = &config.trigger_dir else { return Ok(None) };
    let path = dir.join(BANNER_FILE);
    let body = serde_json::json!({
        "currentVersion": report.current_version,
        "latestVersion": report.latest_version,
        "updateAvailable": report.update_available,
        "allowedVersion": report.allowed_version,
        "releaseUrl": report.release_url,
        "checkedAt": report.checked_at,
    });
    SharedDir::open(dir)
        .and_then(|shared| shared.write_atomic(BANNER_FILE, &serde_json::to_vec_pretty(&body)?, 0o644))
        .map_err(|e| anyhow!("cannot write the banner file {}: {e}", path.display()))?;
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(version: &str) -> Release {
        Release {
            version: version.into(),
            url: Some(format!("https://x/{version}")),
            published_at: None,
            prerelease: false,
        }
    }

    fn rules(policy: Policy) -> Rules {
        Rules { policy, allow_prerelease: false, min_age: Duration::ZERO, quarantined: Vec::new() }
    }

    fn list(versions: &[&str]) -> Vec<Release> {
        versions.iter().map(|v| release(v)).collect()
    }

    #[test]
    fn semver_order_not_string_order() {
        let report =
            decide("1.9.0", &list(&["1.10.0", "1.9.0", "1.2.0"]), &rules(Policy::Minor), 0, VersionSource::Registry);
        assert_eq!(report.latest_version.as_deref(), Some("1.10.0"));
        assert_eq!(report.allowed_version.as_deref(), Some("1.10.0"));
        assert!(report.update_available);
        assert_eq!(report.release_url.as_deref(), Some("https://x/1.10.0"));
    }

    #[test]
    fn the_policy_caps_automatic_upgrades() {
        let offered = list(&["1.2.4", "1.3.0", "2.0.0"]);
        let pick = |policy| decide("1.2.3", &offered, &rules(policy), 0, VersionSource::Url).allowed_version;
        assert_eq!(pick(Policy::Patch).as_deref(), Some("1.2.4"));
        assert_eq!(pick(Policy::Minor).as_deref(), Some("1.3.0"));
        assert_eq!(pick(Policy::Major).as_deref(), Some("2.0.0"));
        let report = decide("1.2.3", &offered, &rules(Policy::Patch), 0, VersionSource::Url);
        assert_eq!(report.latest_version.as_deref(), Some("2.0.0"));
        assert_eq!(report.held_back.len(), 2, "{:?}", report.held_back);
        assert!(report.held_back[0].contains("UPGRADERD_POLICY=patch"));
    }

    #[test]
    fn prereleases_only_when_allowed() {
        let mut offered = list(&["1.1.0"]);
        offered.push(Release { prerelease: true, ..release("1.2.0-rc.1") });
        offered.push(release("1.3.0-beta.1"));
        let report = decide("1.0.0", &offered, &rules(Policy::Minor), 0, VersionSource::Github);
        assert_eq!(report.allowed_version.as_deref(), Some("1.1.0"));
        assert_eq!(report.latest_version.as_deref(), Some("1.1.0"));
        let allowing = Rules { allow_prerelease: true, ..rules(Policy::Minor) };
        assert_eq!(
            decide("1.0.0", &offered, &allowing, 0, VersionSource::Github).allowed_version.as_deref(),
            Some("1.3.0-beta.1")
        );
    }

    #[test]
    fn a_rolled_back_version_is_quarantined_until_superseded() {
        let quarantine = Rules { quarantined: vec!["1.1.0".into()], ..rules(Policy::Minor) };
        let report = decide("1.0.0", &list(&["1.1.0"]), &quarantine, 0, VersionSource::Url);
        assert_eq!(report.allowed_version, None);
        assert!(report.update_available);
        assert!(report.held_back[0].contains("rolled back on this host"));
        let superseded = decide("1.0.0", &list(&["1.1.0", "1.1.1"]), &quarantine, 0, VersionSource::Url);
        assert_eq!(superseded.allowed_version.as_deref(), Some("1.1.1"));
    }

    #[test]
    fn young_releases_wait_for_the_minimum_age() {
        let day = 86_400_000;
        let offered = vec![
            Release { published_at: Some(10 * day - 3_600_000), ..release("1.2.0") },
            Release { published_at: Some(5 * day), ..release("1.1.0") },
        ];
        let aged = Rules { min_age: Duration::from_secs(2 * 86_400), ..rules(Policy::Minor) };
        let report = decide("1.0.0", &offered, &aged, 10 * day, VersionSource::Github);
        assert_eq!(report.allowed_version.as_deref(), Some("1.1.0"));
        assert!(report.held_back[0].contains("younger than UPGRADERD_MIN_RELEASE_AGE"));
    }

    #[test]
    fn up_to_date_and_non_semver_current() {
        let report = decide("2.0.0", &list(&["2.0.0", "1.9.9"]), &rules(Policy::Major), 0, VersionSource::Registry);
        assert!(!report.update_available);
        assert_eq!(report.allowed_version, None);
    }
}
