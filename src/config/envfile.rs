//! Reading the env-style configuration file.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use super::keys::is_known_name;
use crate::exit::usage;

/// One `KEY=VALUE` line of an env-style file.
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub value: String,
    pub line: usize,
}

/// A parsed env-style configuration file.
#[derive(Debug, Default)]
pub struct EnvFile {
    pub path: PathBuf,
    pub entries: HashMap<String, FileEntry>,
    /// Lines naming keys upgraderd does not know, for warnings.
    pub unknown: Vec<(usize, String)>,
}

impl EnvFile {
    pub fn read(path: &Path) -> Result<EnvFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| usage(format!("cannot read config file {}: {e}", path.display())))?;
        EnvFile::parse(path, &text)
    }

    /// Parses the subset of systemd's `EnvironmentFile=` syntax operators use:
    /// `KEY=VALUE`, `#`/`;` comments, blank lines, single or double quotes.
    pub fn parse(path: &Path, text: &str) -> Result<EnvFile> {
        let mut file = EnvFile { path: path.to_path_buf(), ..EnvFile::default() };
        for (index, raw) in text.lines().enumerate() {
            let line_no = index + 1;
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let at = |what: &str| {
                usage(format!(
                    "config file {}:{line_no}: {what}; expected KEY=VALUE, e.g. UPGRADERD_BACKUP_KEEP=5",
                    path.display()
                ))
            };
            let line = line.strip_prefix("export ").unwrap_or(line);
            let Some((name, value)) = line.split_once('=') else {
                return Err(at("no `=` on this line"));
            };
            let name = name.trim();
            if name.is_empty()
                || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                || name.starts_with(|c: char| c.is_ascii_digit())
            {
                return Err(at(&format!("`{name}` is not a variable name")));
            }
            let value = unquote(value.trim()).map_err(at)?;
            if !is_known_name(name) {
                file.unknown.push((line_no, name.to_string()));
            }
            file.entries.insert(name.to_string(), FileEntry { value, line: line_no });
        }
        Ok(file)
    }
}

fn unquote(value: &str) -> std::result::Result<String, &'static str> {
    for quote in ['"', '\''] {
        if let Some(rest) = value.strip_prefix(quote) {
            let Some(inner) = rest.strip_suffix(quote) else {
                return Err("unterminated quote");
            };
            if quote == '"' {
                return Ok(inner.replace("\\\"", "\"").replace("\\\\", "\\"));
            }
            return Ok(inner.to_string());
        }
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_syntax() {
        let file = EnvFile::parse(
            Path::new("f"),
            "; comment\nexport UPGRADERD_GIT_BRANCH=\"release\"\nUPGRADERD_GIT_REMOTE='up stream'\nMY_APP_SETTING=1\n",
        )
        .unwrap();
        assert_eq!(file.entries["UPGRADERD_GIT_BRANCH"].value, "release");
        assert_eq!(file.entries["UPGRADERD_GIT_REMOTE"].value, "up stream");
        assert_eq!(file.unknown, vec![(4, "MY_APP_SETTING".to_string())]);

        for (text, why) in
            [("UPGRADERD_X\n", "no `=`"), ("BAD-NAME=1\n", "not a variable name"), ("A=\"open\n", "unterminated quote")]
        {
            let err = EnvFile::parse(Path::new("/c.env"), text).unwrap_err().to_string();
            assert!(err.contains("/c.env:1") && err.contains(why), "{err}");
        }
    }
}
