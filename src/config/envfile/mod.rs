//! Reading the configuration file exactly as systemd's `EnvironmentFile=`
//! reads it, so the daemon never refuses at start a file systemd accepted and
//! never sees a value systemd would not pass.
//!
//! `syntax` splits the file into assignments with systemd's own grammar. Then,
//! as systemd does: a NUL byte anywhere, or an assignment whose name or value is not valid UTF-8 makes
//! the whole file unreadable (systemd would not start the service); a later
//! assignment of a name replaces an earlier one; an invalid name (anything but
//! ASCII letters, digits and `_`, or a leading digit) or an over-long
//! assignment is ignored. What systemd ignores is ignored here with a warning
//! naming the line, and so is a name upgraderd does not know.

mod syntax;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::keys::{closest_known_name, is_known_name};
use crate::exit::usage;
use syntax::{Assignment, Note};

/// One `KEY=VALUE` line of an env-style file.
#[derive(Debug, Clone)]
pub(crate) struct FileEntry {
    pub value: String,
    pub line: usize,
}

/// A parsed env-style configuration file.
#[derive(Debug, Default)]
pub(crate) struct EnvFile {
    pub path: PathBuf,
    pub entries: HashMap<String, FileEntry>,
    /// Lines naming keys upgraderd does not know, for warnings.
    pub unknown: Vec<(usize, String)>,
    /// Lines systemd passes over (and upgraderd with it), with the reason, for warnings.
    pub ignored: Vec<(usize, String)>,
}

const BYTE_ORDER_MARK: char = '\u{feff}';

impl EnvFile {
    pub(crate) fn read(path: &Path) -> Result<EnvFile> {
        let bytes =
            std::fs::read(path).map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        EnvFile::parse_bytes(path, &bytes)
    }

    /// Parses a file's text; see [`EnvFile::parse_bytes`].
    #[cfg(test)]
    pub(crate) fn parse(path: &Path, text: &str) -> Result<EnvFile> {
        EnvFile::parse_bytes(path, text.as_bytes())
    }

    /// Reads what systemd's `EnvironmentFile=` reads from these bytes.
    pub(crate) fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<EnvFile> {
        if let Some(line) = syntax::nul_line(bytes) {
            return Err(usage(format!(
                "config file {}:{line}: a NUL byte; systemd refuses such a file, so the service would not start: \
                 remove it",
                path.display()
            )));
        }
        let lexed = syntax::lex(bytes);
        let mut file = EnvFile { path: path.to_path_buf(), ..EnvFile::default() };
        let mut latest: HashMap<String, FileEntry> = HashMap::new();
        for assignment in lexed.assignments {
            let (name, value) = file.decode(&assignment)?;
            latest.insert(name, FileEntry { value, line: assignment.line });
        }
        for (name, entry) in latest {
            if let Err(why) = systemd_accepts(&name, &entry.value) {
                file.ignored.push((entry.line, why));
                continue;
            }
            if !is_known_name(&name) {
                file.unknown.push((entry.line, name.clone()));
            }
            file.entries.insert(name, entry);
        }
        file.ignored.extend(lexed.notes.iter().map(explain));
        file.unknown.sort();
        file.ignored.sort();
        Ok(file)
    }

    /// Every warning about the file, in line order: lines ignored, unknown keys.
    pub(crate) fn warnings(&self) -> Vec<String> {
        let ignored = self.ignored.iter().map(|(line, why)| (*line, why.clone()));
        let unknown = self.unknown.iter().map(|(line, name)| {
            let hint = closest_known_name(name).map(|k| format!("; did you mean {k}?")).unwrap_or_default();
            (*line, format!("unknown key {name} (ignored){hint}"))
        });
        let mut all: Vec<(usize, String)> = ignored.chain(unknown).collect();
        all.sort();
        all.into_iter().map(|(line, what)| format!("{}:{line}: {what}", self.path.display())).collect()
    }

    /// Name and value as text; systemd refuses the whole file when either is not UTF-8.
    fn decode(&self, assignment: &Assignment) -> Result<(String, String)> {
        let refuse = |what: &str, bytes: &[u8]| {
            usage(format!(
                "config file {}:{}: {what} {:?} is not valid UTF-8; systemd refuses such a file, so the service \
                 would not start: save the file as UTF-8",
                self.path.display(),
                assignment.line,
                String::from_utf8_lossy(bytes),
            ))
        };
        let name = systemd_utf8(&assignment.name).ok_or_else(|| refuse("the name", &assignment.name))?;
        let value = systemd_utf8(&assignment.value)
            .ok_or_else(|| refuse(&format!("the value of {name}"), &assignment.value))?;
        Ok((name, value))
    }
}

/// Text as systemd's `utf8_is_valid` accepts it: valid UTF-8 without Unicode noncharacters.
fn systemd_utf8(bytes: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(bytes).ok()?;
    let noncharacter = |c: char| matches!(c as u32, 0xFDD0..=0xFDEF) || (c as u32 & 0xFFFE) == 0xFFFE;
    (!text.chars().any(noncharacter)).then(|| text.to_string())
}

/// Whether systemd passes this assignment on to the service, and if not, why.
fn systemd_accepts(name: &str, value: &str) -> std::result::Result<(), String> {
    let valid_name = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid_name {
        return Err(invalid_name(name));
    }
    // POSIX bounds one variable by ARG_MAX, less `=` and the terminating NUL.
    let arg_max = usize::try_from(arg_max()).unwrap_or(usize::MAX);
    if name.len() > arg_max.saturating_sub(2) || value.len() > arg_max.saturating_sub(3) {
        return Err(format!("the value of {name} is longer than ARG_MAX allows: ignored, as systemd ignores it"));
    }
    Ok(())
}

fn invalid_name(name: &str) -> String {
    if let Some(rest) = name.strip_prefix(BYTE_ORDER_MARK) {
        return format!(
            "the file starts with a UTF-8 byte order mark, which systemd reads as part of the name `{rest}`: \
             the line is ignored, as systemd ignores it; save the file without a byte order mark"
        );
    }
    if let Some(rest) = name.strip_prefix("export").filter(|r| r.starts_with([' ', '\t'])) {
        return format!(
            "`export` is not special in systemd's env files, so `{name}` is not a variable name: the line is \
             ignored, as systemd ignores it; write {}=...",
            rest.trim()
        );
    }
    format!(
        "`{name}` is not a variable name (ASCII letters, digits and `_`, not starting with a digit): \
         the line is ignored, as systemd ignores it"
    )
}

fn explain(note: &Note) -> (usize, String) {
    match note {
        Note::NoEquals { line, text } if text.starts_with(b"=") => {
            let text = String::from_utf8_lossy(text);
            (*line, format!("`{text}` has no name before `=`: ignored, as systemd ignores it; expected KEY=VALUE"))
        }
        Note::NoEquals { line, text } => {
            let text = String::from_utf8_lossy(text);
            let bom = if text.starts_with(BYTE_ORDER_MARK) {
                " (it starts with a UTF-8 byte order mark, which systemd does not skip)"
            } else {
                ""
            };
            let text = text.trim_start_matches(BYTE_ORDER_MARK);
            (*line, format!("`{text}` has no `=`{bom}: ignored, as systemd ignores it; expected KEY=VALUE"))
        }
        Note::AfterCommentContinuation { line } => (
            *line,
            "this line follows a comment ending in `\\`: systemd 254 and later read it (as upgraderd does), \
             older systemd reads it as part of the comment; remove the `\\`"
                .to_string(),
        ),
    }
}

/// `sysconf(_SC_ARG_MAX)`, the bound systemd puts on one assignment.
fn arg_max() -> libc::c_long {
    // SAFETY: sysconf reads a system limit and touches no memory of ours.
    let limit = unsafe { libc::sysconf(libc::_SC_ARG_MAX) };
    if limit > 0 {
        limit
    } else {
        libc::c_long::MAX
    }
}
