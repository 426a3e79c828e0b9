//! Pre-flight: named checks that run before anything changes. Each check
//! returns the problems it found, each saying what to do; every check runs
//! (none stops at the first problem), so the operator fixes everything in one
//! go. Strategies contribute their own checks the same way.

use std::cmp::Ordering;
use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::store::backup::{self, Source};
use crate::store::{disk, files};
use crate::units::human_bytes;
use crate::version::compare_versions;

/// Something that must be put right before the upgrade may start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    /// Which check found it (`free-space`, `version`, `registry`, …).
    pub check: &'static str,
    /// What is wrong and what to do about it.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(check: &'static str, message: impl Into<String>) -> Problem {
        Problem { check, message: message.into() }
    }

    /// A problem whose message is an error's full chain.
    pub(crate) fn from_error(check: &'static str, err: &anyhow::Error) -> Problem {
        Problem::new(check, format!("{err:#}"))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// How the recorded reason of a refusal begins.
pub(crate) const REFUSED: &str = "refused in preflight, nothing was changed";

/// The recorded reason of a refusal: the first problem on the first line (what `history` shows), all below.
pub(crate) fn refusal(problems: &[Problem]) -> String {
    let all: Vec<String> = problems.iter().map(|p| format!("- {p}")).collect();
    match problems {
        [] => REFUSED.to_string(),
        [only] => format!("{REFUSED}: {only}"),
        [first, ..] => format!("{REFUSED}: {first} (and {} more)\n{}", problems.len() - 1, all.join("\n")),
    }
}

/// The cause of a recorded refusal (its first problem), for a table's narrow cell.
pub(crate) fn refusal_cause(reason: &str) -> Option<&str> {
    reason.strip_prefix(REFUSED)?.strip_prefix(": ")
}

/// Downgrade protection and the already-there check, as a pure decision.
pub(crate) fn version_direction(
    target: &str,
    current: Option<&str>,
    force: bool,
    allow_downgrade: bool,
) -> Vec<Problem> {
    let Some(current) = current else { return Vec::new() };
    match compare_versions(target, current) {
        Some(Ordering::Less) if !(force || allow_downgrade) => vec![Problem::new(
            "version",
            format!("{target} is older than the running {current}; set UPGRADERD_ALLOW_DOWNGRADE=true or use --force"),
        )],
        Some(Ordering::Equal) if !force => {
            vec![Problem::new("version", format!("the service already runs {current}; use --force to upgrade anyway"))]
        }
        _ => Vec::new(),
    }
}

/// At least `UPGRADERD_MIN_FREE` free where `what` lives.
pub(crate) fn free_space(path: &Path, needed: u64, what: &str) -> Option<Problem> {
    let free = match disk::free_bytes(path) {
        Ok(free) => free,
        Err(e) => {
            return Some(Problem::new("free-space", format!("cannot read free space of {}: {e:#}", path.display())))
        }
    };
    (free < needed).then(|| {
        Problem::new(
            "free-space",
            format!(
                "{what} ({}) has {} free, less than UPGRADERD_MIN_FREE={}; free some space or lower the setting",
                path.display(),
                human_bytes(free),
                human_bytes(needed)
            ),
        )
    })
}

/// The data exists, the backup directory is writable with room for the
/// backup, and each data filesystem has room for a rollback's restore: both
/// counted from one walk of the data, as the restore counts it (what the files
/// occupy: holes not at all, a hard-linked file once).
pub(crate) fn backup_target(config: &Config, sources: &[Source]) -> Vec<Problem> {
    let mut problems = Vec::new();
    if sources.is_empty() {
        problems.push(Problem::new(
            "backup",
            "the container has no writable mounts to back up; set UPGRADERD_DATA_DIR or use --no-backup",
        ));
    }
    for source in sources {
        let path = &source.path;
        if !path.exists() {
            problems.push(Problem::new(
                "backup",
                format!(
                    "data path {} does not exist; check UPGRADERD_DATA_DIR or the container's mounts",
                    path.display()
                ),
            ));
        } else {
            problems.extend(free_space(path, config.min_free, "the data filesystem"));
        }
    }
    let existing: Vec<Source> = sources.iter().filter(|s| s.path.symlink_metadata().is_ok()).cloned().collect();
    let footprint = match backup::footprint(&existing, &config.backup_dir, config.backup_format) {
        Ok(footprint) => footprint,
        Err(e) => {
            problems.push(Problem::from_error("backup", &e));
            backup::Footprint { restore: Vec::new(), backup: 0 }
        }
    };
    problems.extend(restore_room(&footprint.restore));
    let dir = &config.backup_dir;
    match probe_writable(dir) {
        Err(e) => problems.push(Problem::new(
            "backup",
            format!(
                "the backup directory {} is not writable: {e}; fix its permissions or set UPGRADERD_BACKUP_DIR",
                dir.display()
            ),
        )),
        Ok(existing) => {
            problems.extend(room_for_backup(config, &existing, footprint.backup));
        }
    }
    problems
}

/// Room in the backup directory for what the data occupies, with
/// `UPGRADERD_MIN_FREE` to spare, known before the backup writes a byte.
fn room_for_backup(config: &Config, dir: &Path, estimate: u64) -> Option<Problem> {
    let free = match disk::free_bytes(dir) {
        Ok(free) => free,
        Err(e) => return Some(Problem::new("free-space", format!("cannot read free space of {}: {e}", dir.display()))),
    };
    let needed = estimate.saturating_add(config.min_free);
    (free < needed).then(|| {
        Problem::new(
            "free-space",
            format!(
                "the backup directory ({}) has {} free; the backup needs up to {} (what the data occupies, less what \
                 the previous snapshot shares) with \
                 UPGRADERD_MIN_FREE={} to spare, {} in all: free some space, or set UPGRADERD_BACKUP_DIR to a larger \
                 filesystem",
                dir.display(),
                human_bytes(free),
                human_bytes(estimate),
                human_bytes(config.min_free),
                human_bytes(needed)
            ),
        )
    })
}

/// A rollback can put the data back: each data filesystem has room for what
/// restoring its data paths allocates (`footprint`: per data path; a restore
/// stages beside the data before it swaps). Without that room a rollback
/// would stop the new version and then fail to restore.
fn restore_room(footprint: &[(PathBuf, u64)]) -> Vec<Problem> {
    disk::rooms(footprint)
        .into_iter()
        .filter(|room| !room.fits())
        .map(|short| {
            Problem::new(
                "free-space",
                format!(
                    "a rollback could not restore {}: {} needed there (what the data occupies, holes not \
                     counted), {} free; free some space, or upgrade with --no-backup (a rollback then keeps the \
                     new version's data)",
                    short.shown_paths(),
                    human_bytes(short.needed),
                    human_bytes(short.free)
                ),
            )
        })
        .collect()
}

/// Whether the backup directory, or the directory it will be created in, takes a
/// file; returns that directory. Nothing is created: the backup creates its
/// directory, and a dry run leaves nothing behind.
fn probe_writable(dir: &Path) -> std::io::Result<PathBuf> {
    let existing = dir.ancestors().find(|d| d.symlink_metadata().is_ok()).unwrap_or(dir).to_path_buf();
    let probe = existing.join(format!(".upgraderd-probe-{}", files::unique_suffix()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)?;
    Ok(existing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downgrades_and_reinstalls_need_a_reason() {
        assert!(version_direction("2.0.0", Some("1.0.0"), false, false).is_empty());
        assert!(version_direction("2.0.0", None, false, false).is_empty());
        assert!(version_direction("latest", Some("1.0.0"), false, false).is_empty());
        let down = version_direction("1.0.0", Some("2.0.0"), false, false);
        assert!(down[0].message.contains("older than the running 2.0.0"), "{down:?}");
        assert!(version_direction("1.0.0", Some("2.0.0"), true, false).is_empty());
        assert!(version_direction("1.0.0", Some("2.0.0"), false, true).is_empty());
        let same = version_direction("v2.0.0", Some("2.0.0"), false, true);
        assert!(same[0].message.contains("already runs"), "{same:?}");
        assert!(version_direction("2.0.0", Some("2.0.0"), true, false).is_empty());
    }

    #[test]
    fn a_refusal_leads_with_its_first_problem() {
        let one = refusal(&[Problem::new("version", "too old")]);
        assert_eq!(one, "refused in preflight, nothing was changed: too old");
        let two = refusal(&[Problem::new("a", "first"), Problem::new("b", "second")]);
        assert!(two.starts_with("refused in preflight, nothing was changed: first (and 1 more)\n"), "{two}");
        assert!(two.ends_with("- first\n- second"), "{two}");
        assert_eq!(refusal_cause(&two), Some("first (and 1 more)\n- first\n- second"));
        assert_eq!(refusal_cause("the pull failed"), None);
    }

    #[test]
    fn a_missing_data_path_and_an_unwritable_backup_dir_are_both_reported() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"x").unwrap();
        let layers = crate::config::Layers::resolve(&[], &crate::config::Env::default(), None);
        let mut config = Config::from_layers(&layers).unwrap();
        config.min_free = 0;
        config.backup_dir = blocker.join("backups");
        let problems = backup_target(&config, &[Source::path(dir.path().join("missing"))]);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].message.contains("does not exist"));
        assert!(problems[1].message.contains("not writable"));
    }

    #[test]
    fn a_backup_dir_still_to_be_made_is_checked_where_it_will_be_made_and_not_created() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        std::fs::create_dir(&data).unwrap();
        let layers = crate::config::Layers::resolve(&[], &crate::config::Env::default(), None);
        let mut config = Config::from_layers(&layers).unwrap();
        config.min_free = 0;
        config.backup_dir = dir.path().join("state/backups");
        assert!(backup_target(&config, &[Source::path(data)]).is_empty());
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left, vec![std::ffi::OsString::from("data")], "nothing was created");
    }
}
