//! The version grammar every requested version must match before it goes
//! near an argv, and semver ordering of two versions. A leaf module: the
//! trigger protocol, the engine and the version checks all use it.

/// Checks a requested version against the strict tag grammar before it goes
/// near an argv: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
/// What an upgrade goes to: the newest release, or one version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// `latest`: the newest release the strategy finds (a channel's tag, a
    /// registry's newest release, the remote branch's tip).
    Latest,
    /// A version tag, valid by [`validate_version`].
    Version(String),
}

impl Target {
    /// `latest`, or a version tag checked by [`validate_version`].
    pub(crate) fn parse(text: &str) -> Result<Target, String> {
        validate_version(text)?;
        Ok(match text {
            "latest" => Target::Latest,
            version => Target::Version(version.to_string()),
        })
    }

    pub(crate) fn is_latest(&self) -> bool {
        *self == Target::Latest
    }

    /// As the operator wrote it, and as strategies and the record take it.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            Target::Latest => "latest",
            Target::Version(version) => version,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn validate_version(version: &str) -> Result<(), String> {
    let mut chars = version.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if valid_first && valid_rest && version.len() <= 128 {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid version tag: use letters, digits, `_`, `.` and `-`, not starting with `.` or `-`, at most 128 characters",
            version.escape_debug()
        ))
    }
}

/// Orders two versions when both are semver (a leading `v` allowed).
pub(crate) fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    Some(parse(a)?.cmp(&parse(b)?))
}

/// The words that make what follows a version's `-` a prerelease, not a flavour.
const PRERELEASE_WORDS: &[&str] =
    &["alpha", "beta", "rc", "pre", "preview", "dev", "snapshot", "canary", "nightly", "next", "m"];

/// A tag's flavour: what follows its version after a `-` when that is not a
/// prerelease (`1.2.3-alpine` is the `alpine` flavour of 1.2.3; `2025.2.1-rc1`
/// and `1.0.0-rc.1` are prereleases, with no flavour). A release family keeps its flavour.
pub(crate) fn flavour(tag: &str) -> Option<&str> {
    let (version, rest) = tag.split_once('-')?;
    let version = version.strip_prefix('v').unwrap_or(version);
    if rest.is_empty() || !version.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let word: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect::<String>().to_ascii_lowercase();
    let prerelease = word.is_empty() || PRERELEASE_WORDS.contains(&word.as_str());
    (!prerelease).then_some(rest)
}

/// The tag without its flavour: `1.2.3-alpine` is `1.2.3`.
pub(crate) fn without_flavour(tag: &str) -> &str {
    match flavour(tag) {
        Some(flavour) => &tag[..tag.len() - flavour.len() - 1],
        None => tag,
    }
}

/// Whether two tags name the same version, a leading `v` and a flavour aside
/// (`v4.3.19`, `4.3.19` and `4.3.19-alpine`).
pub(crate) fn same_version(a: &str, b: &str) -> bool {
    let core = |tag: &str| {
        let tag = without_flavour(tag);
        tag.strip_prefix('v').unwrap_or(tag).to_string()
    };
    core(a) == core(b)
}

/// `new_tag`'s version in `old`'s flavour: what a service on `1.2.3-alpine` moves to for `1.3.0`.
pub(crate) fn in_flavour_of(new_tag: &str, old: &str) -> String {
    let core = without_flavour(new_tag);
    match flavour(old) {
        Some(flavour) => format!("{core}-{flavour}"),
        None => core.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_grammar_refuses_what_could_become_an_option_or_a_path() {
        for good in ["2.14.0", "latest", "v1.2.3-rc.1", "_x"] {
            assert!(validate_version(good).is_ok(), "{good}");
        }
        for bad in ["", "-rf", "--help", "../x", "a/b", "$(id)", "1.0 ", ".hidden", "2.０.0", &"x".repeat(129)] {
            assert!(validate_version(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn semver_ordering() {
        use std::cmp::Ordering::*;
        assert_eq!(compare_versions("2.0.0", "1.10.0"), Some(Greater));
        assert_eq!(compare_versions("v1.0.0", "1.0.0"), Some(Equal));
        assert_eq!(compare_versions("latest", "1.0.0"), None);
    }

    #[test]
    fn a_flavour_is_a_suffix_that_is_not_a_prerelease() {
        assert_eq!(flavour("1.2.3-alpine"), Some("alpine"));
        assert_eq!(flavour("v8.0.1-bookworm"), Some("bookworm"));
        assert_eq!(flavour("16.4-alpine3.20"), Some("alpine3.20"));
        for none in ["2025.2.1-rc1", "1.0.0-rc.1", "1.0.0-beta", "1.0.0-1", "v4.3.19", "latest", "release-1"] {
            assert_eq!(flavour(none), None, "{none}");
        }
        assert_eq!(without_flavour("1.2.3-alpine"), "1.2.3");
        assert_eq!(without_flavour("2025.2.1-rc1"), "2025.2.1-rc1");
    }

    #[test]
    fn a_leading_v_does_not_make_another_version() {
        assert!(same_version("v4.3.19", "4.3.19") && same_version("4.3.19", "v4.3.19"));
        assert!(same_version("2025.2.1", "2025.2.1") && !same_version("v1.2", "v1.3"));
        assert!(!same_version("vv1", "1"));
        assert!(same_version("1.2.3-alpine", "v1.2.3"));
        assert_eq!(in_flavour_of("v1.3.0", "v1.2.0-cuda"), "v1.3.0-cuda");
        assert_eq!(in_flavour_of("v1.3.0-cuda", "v1.2.0"), "v1.3.0");
    }
}
