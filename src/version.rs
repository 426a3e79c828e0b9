//! The version grammar every requested version must match before it goes
//! near an argv, and semver ordering of two versions. A leaf module: the
//! trigger protocol, the engine and the version checks all use it.

/// Checks a requested version against the strict tag grammar before it goes
/// near an argv: `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
pub fn validate_version(version: &str) -> Result<(), String> {
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
pub fn compare_versions(a: &str, b: &str) -> Option<std::cmp::Ordering> {
    let parse = |v: &str| semver::Version::parse(v.strip_prefix('v').unwrap_or(v)).ok();
    Some(parse(a)?.cmp(&parse(b)?))
}

/// Whether two tags name the same version, a leading `v` aside (`v4.3.19` and `4.3.19`).
pub fn same_version(a: &str, b: &str) -> bool {
    a.strip_prefix('v').unwrap_or(a) == b.strip_prefix('v').unwrap_or(b)
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
    fn a_leading_v_does_not_make_another_version() {
        assert!(same_version("v4.3.19", "4.3.19") && same_version("4.3.19", "v4.3.19"));
        assert!(same_version("2025.2.1", "2025.2.1") && !same_version("v1.2", "v1.3"));
        assert!(!same_version("vv1", "1"));
    }
}
