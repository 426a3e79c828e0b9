//! Compose files and env files as text: where each service's `image:` line
//! is (file, line, the bytes of its value), which other lines use a
//! variable, and the `include:`d files, read line by line the way compose
//! files are written (block style, one key per line). Nothing here decides
//! what to change; `engine::pin` does.

pub(crate) mod dotenv;
pub(crate) mod expr;

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The `image:` line of one service in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ImageLine {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// The value as written, without its quotes.
    pub value: String,
    /// Where the value's bytes are in the file; `None` when they are not the
    /// value itself (a quoted value with escapes, an anchor, a block scalar).
    pub span: Option<Range<usize>>,
}

impl ImageLine {
    /// `file:line`, for messages.
    pub(crate) fn place(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// A line that uses variables and is not an `image:` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct VariableUse {
    pub file: PathBuf,
    pub line: usize,
    pub names: Vec<String>,
}

/// What the compose files of a project say about images.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    /// Each service's `image:` line that compose uses: the last file's that sets it.
    pub images: BTreeMap<String, ImageLine>,
    /// Lines outside `image:` that use a variable.
    pub other_uses: Vec<VariableUse>,
    /// Every file read, the `include:`d ones after the file that includes them.
    pub files: Vec<PathBuf>,
}

/// Reads `files` in order (later files override earlier ones, as compose
/// merges them) and the files they `include:`.
pub(crate) fn scan(files: &[PathBuf]) -> Result<Scan> {
    let mut scan = Scan::default();
    let mut queue: Vec<PathBuf> = files.to_vec();
    queue.reverse();
    while let Some(file) = queue.pop() {
        if scan.files.contains(&file) {
            continue;
        }
        let text =
            std::fs::read_to_string(&file).with_context(|| format!("reading compose file {}", file.display()))?;
        let read = scan_text(&file, &text);
        scan.files.push(file.clone());
        let base = file.parent().unwrap_or(Path::new("/"));
        for included in read.includes.into_iter().rev() {
            queue.push(base.join(included));
        }
        scan.images.extend(read.images);
        scan.other_uses.extend(read.other_uses);
    }
    Ok(scan)
}

/// What one file says.
#[derive(Debug, Default)]
struct FileScan {
    images: BTreeMap<String, ImageLine>,
    other_uses: Vec<VariableUse>,
    includes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Services,
    Include,
    Other,
}

fn scan_text(file: &Path, text: &str) -> FileScan {
    let mut read = FileScan::default();
    let mut section = Section::Other;
    let mut service_indent: Option<usize> = None;
    let mut service: Option<String> = None;
    let mut property_indent: Option<usize> = None;
    let mut offset = 0;
    for (index, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_start = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        let content = line.trim_start();
        let indent = line.len() - content.len();
        if content.is_empty() || content.starts_with('#') || content == "---" {
            continue;
        }
        let number = index + 1;
        let mut is_image_line = false;
        if indent == 0 {
            section = match key_of(content).as_deref() {
                Some("services") => Section::Services,
                Some("include") => Section::Include,
                _ => Section::Other,
            };
            (service_indent, service, property_indent) = (None, None, None);
        } else if section == Section::Include {
            if let Some(path) = include_path(content) {
                read.includes.push(path);
            }
        } else if section == Section::Services {
            let at_service_level = *service_indent.get_or_insert(indent) == indent;
            if at_service_level {
                service = key_of(content);
                property_indent = None;
            } else if let (Some(name), true) = (&service, indent > service_indent.unwrap_or(0)) {
                if *property_indent.get_or_insert(indent) == indent && key_of(content).as_deref() == Some("image") {
                    let value_at = line_start + indent + content.find(':').map_or(0, |c| c + 1);
                    let image = image_value(&text[value_at..line_start + line.len()], value_at);
                    read.images.insert(
                        name.clone(),
                        ImageLine { file: file.to_path_buf(), line: number, value: image.0, span: image.1 },
                    );
                    is_image_line = true;
                }
            }
        }
        let names = variables_in(content);
        if !is_image_line && !names.is_empty() {
            read.other_uses.push(VariableUse { file: file.to_path_buf(), line: number, names });
        }
    }
    read
}

/// The key of a `key:` or `key: value` line, without quotes.
fn key_of(content: &str) -> Option<String> {
    let content = content.strip_prefix("- ").unwrap_or(content);
    let (key, _) = content.split_once(':')?;
    let key = key.trim().trim_matches(['"', '\'']);
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_string())
}

/// `- path`, `- path: path`, `path: path` (under a list item) in an `include:` section.
fn include_path(content: &str) -> Option<String> {
    let item = content.strip_prefix("- ").unwrap_or(content).trim();
    let value = match item.split_once(':') {
        Some(("path", value)) => value.trim(),
        Some(_) => return None,
        None => item,
    };
    let value = value.trim_matches(['"', '\'']);
    (!value.is_empty() && !value.starts_with('[')).then(|| value.to_string())
}

/// The value after `image:`, without quotes or comment, and the range of its
/// bytes when they are the value itself.
fn image_value(after_colon: &str, at: usize) -> (String, Option<Range<usize>>) {
    let lead = after_colon.len() - after_colon.trim_start().len();
    let raw = after_colon.trim_start();
    let start = at + lead;
    match raw.as_bytes().first() {
        Some(b'"') => match raw[1..].find('"') {
            Some(close) if !raw[1..1 + close].contains('\\') => {
                (raw[1..1 + close].to_string(), Some(start + 1..start + 1 + close))
            }
            _ => (raw.to_string(), None),
        },
        Some(b'\'') => match raw[1..].find('\'') {
            Some(close) if !raw[1 + close + 1..].starts_with('\'') => {
                (raw[1..1 + close].to_string(), Some(start + 1..start + 1 + close))
            }
            _ => (raw.to_string(), None),
        },
        Some(b'&' | b'*' | b'|' | b'>' | b'{' | b'[') | None => (raw.to_string(), None),
        Some(_) => {
            let end = (1..raw.len())
                .find(|&i| raw.as_bytes()[i] == b'#' && matches!(raw.as_bytes()[i - 1], b' ' | b'\t'))
                .unwrap_or(raw.len());
            let value = raw[..end].trim_end();
            (value.to_string(), Some(start..start + value.len()))
        }
    }
}

/// The variables a line refers to (`${NAME…}`, `$NAME`; not `$$`).
fn variables_in(content: &str) -> Vec<String> {
    let bytes = content.as_bytes();
    let mut names = Vec::new();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] != b'$' {
            i += 1;
            continue;
        }
        let start = if bytes[i + 1] == b'{' { i + 2 } else { i + 1 };
        if bytes[i + 1] == b'$' {
            i += 2;
            continue;
        }
        let len = bytes[start..].iter().take_while(|c| c.is_ascii_alphanumeric() || **c == b'_').count();
        if len > 0 && !bytes[start].is_ascii_digit() {
            names.push(content[start..start + len].to_string());
        }
        i = start + len.max(1);
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const IMMICH: &str = "name: immich\n\nservices:\n  immich-server:\n    container_name: immich_server\n    \
        image: ghcr.io/immich-app/immich-server:${IMMICH_VERSION:-release}\n    volumes:\n      \
        - ${UPLOAD_LOCATION}:/usr/src/app/upload\n    env_file:\n      - .env\n\n  immich-machine-learning:\n    \
        # the ML image\n    image: 'ghcr.io/immich-app/immich-machine-learning:${IMMICH_VERSION:-release}' # cuda: -cuda\n  \
        redis:\n    image: docker.io/valkey/valkey:8-bookworm@sha256:ff21\n    healthcheck:\n      \
        test: redis-cli ping || exit 1\n\nvolumes:\n  model-cache:\n";

    #[test]
    fn each_services_image_line_with_the_bytes_of_its_value() {
        let read = scan_text(Path::new("/srv/immich/docker-compose.yml"), IMMICH);
        let server = &read.images["immich-server"];
        assert_eq!(server.line, 6);
        assert_eq!(server.value, "ghcr.io/immich-app/immich-server:${IMMICH_VERSION:-release}");
        assert_eq!(&IMMICH[server.span.clone().unwrap()], server.value);
        let ml = &read.images["immich-machine-learning"];
        assert_eq!((ml.line, &IMMICH[ml.span.clone().unwrap()]), (14, ml.value.as_str()));
        assert_eq!(ml.value, "ghcr.io/immich-app/immich-machine-learning:${IMMICH_VERSION:-release}");
        assert_eq!(read.images["redis"].value, "docker.io/valkey/valkey:8-bookworm@sha256:ff21");
        assert_eq!(read.other_uses.len(), 1);
        assert_eq!((read.other_uses[0].line, read.other_uses[0].names.clone()), (8, vec!["UPLOAD_LOCATION".into()]));
    }

    #[test]
    fn an_overlay_overrides_and_an_include_adds() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path().join("docker-compose.yml");
        let overlay = dir.path().join("docker-compose.override.yml");
        std::fs::create_dir(dir.path().join("db")).unwrap();
        std::fs::write(
            &base,
            "include:\n  - path: db/compose.yml\nservices:\n  server:\n    image: gitea/gitea:1.21\n",
        )
        .unwrap();
        std::fs::write(&overlay, "services:\n  \"server\":\n    image: \"gitea/gitea:1.22.3\"\n").unwrap();
        std::fs::write(dir.path().join("db/compose.yml"), "services:\n  db:\n    image: postgres:15\n").unwrap();
        let read = scan(&[base.clone(), overlay.clone()]).unwrap();
        assert_eq!(read.images["server"].file, overlay);
        assert_eq!((read.images["server"].line, read.images["server"].value.as_str()), (3, "gitea/gitea:1.22.3"));
        assert_eq!(read.images["db"].value, "postgres:15");
        assert_eq!(read.files, vec![base, dir.path().join("db/compose.yml"), overlay]);
    }

    #[test]
    fn values_whose_bytes_are_not_the_value_have_no_span() {
        for (line, value) in [
            ("    image: \"app:\\u0031\"\n", "\"app:\\u0031\""),
            ("    image: *app_image\n", "*app_image"),
            ("    image: >-\n", ">-"),
        ] {
            let text = format!("services:\n  app:\n{line}");
            let read = scan_text(Path::new("c.yml"), &text);
            assert_eq!((read.images["app"].value.as_str(), read.images["app"].span.clone()), (value, None), "{line}");
        }
    }
}
