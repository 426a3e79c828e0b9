//! The documentation holds together: every relative Markdown link in the
//! README, the CHANGELOG, `docs/*.md` and the examples' READMEs names a file
//! or directory that exists, and every `#anchor` names a heading of the page
//! it points into (by GitHub's slug rules). External links (`http://`,
//! `https://`, `mailto:`) are not fetched. The README's walk-through starts
//! within its first 150 lines.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The Markdown files whose links are checked, relative to `root`.
fn documents(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("README.md"), PathBuf::from("CHANGELOG.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .unwrap()
        .map(|e| PathBuf::from("docs").join(e.unwrap().file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    out.extend(docs);
    let mut examples = Vec::new();
    readmes_under(root, Path::new("examples"), &mut examples);
    examples.sort();
    out.extend(examples);
    out
}

fn readmes_under(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else { return };
    for entry in entries {
        let entry = entry.unwrap();
        let path = dir.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            readmes_under(root, &path, out);
        } else if kind.is_file() && entry.file_name() == "README.md" {
            out.push(path);
        }
    }
}

/// The text outside fenced code blocks, as blocks of consecutive non-blank
/// lines (a link's text may wrap), each with the number of its first line.
fn prose_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    let mut fence: Option<String> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker: String = trimmed.chars().take_while(|&c| c == '`' || c == '~').collect();
        let opens = marker.len() >= 3 && marker.chars().all(|c| c == marker.chars().next().unwrap());
        if let Some(open) = &fence {
            // A fence closes with at least as many of the same character, and nothing else.
            if opens && marker.starts_with(open.as_str()) && trimmed[marker.len()..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if opens {
            fence = Some(marker);
            blocks.extend(current.take());
            continue;
        }
        if line.trim().is_empty() {
            blocks.extend(current.take());
        } else if let Some((_, block)) = &mut current {
            block.push('\n');
            block.push_str(line);
        } else {
            current = Some((i + 1, line.to_string()));
        }
    }
    blocks.extend(current);
    blocks
}

/// `block` with the inside of every code span blanked (newlines kept, so
/// that line numbers still count): a `](` in code is no link.
fn without_code_spans(block: &str) -> String {
    let chars: Vec<char> = block.chars().collect();
    let mut out = String::with_capacity(block.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '`' {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|&&c| c == '`').count();
        // The span ends at the next run of exactly as many backticks.
        let mut j = i + run;
        let mut end = None;
        while j < chars.len() {
            if chars[j] == '`' {
                let other = chars[j..].iter().take_while(|&&c| c == '`').count();
                if other == run {
                    end = Some(j);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match end {
            Some(end) => {
                out.extend(chars[i..end + run].iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
                i = end + run;
            }
            None => {
                // No closing run: the backticks are text.
                out.extend(&chars[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// A link in a document: the line it is on and the destination as written.
#[derive(Debug, PartialEq)]
struct Link {
    line: usize,
    target: String,
}

/// The inline links and images (`[text](target)`) and the reference
/// definitions (`[label]: target`) of a Markdown text, outside code.
fn links(text: &str) -> Vec<Link> {
    let mut out = Vec::new();
    for (first_line, block) in prose_blocks(text) {
        let prose = without_code_spans(&block);
        let mut from = 0;
        while let Some(found) = prose[from..].find("](") {
            let start = from + found + 2;
            let rest = prose[start..].trim_start_matches([' ', '\t']);
            let target = if let Some(inner) = rest.strip_prefix('<') {
                inner.split('>').next().unwrap_or("").to_string()
            } else {
                // Up to the closing parenthesis (nested pairs allowed) or a title.
                let mut depth = 0;
                let mut end = rest.len();
                for (k, c) in rest.char_indices() {
                    match c {
                        '(' => depth += 1,
                        ')' if depth == 0 => {
                            end = k;
                            break;
                        }
                        ')' => depth -= 1,
                        c if c.is_whitespace() => {
                            end = k;
                            break;
                        }
                        _ => {}
                    }
                }
                rest[..end].to_string()
            };
            let line = first_line + prose[..start].matches('\n').count();
            out.push(Link { line, target });
            from = start;
        }
        for (k, line) in prose.lines().enumerate() {
            let trimmed = line.trim_start();
            if line.len() - trimmed.len() > 3 || !trimmed.starts_with('[') {
                continue;
            }
            if let Some(close) = trimmed.find("]:") {
                if let Some(target) = trimmed[close + 2..].split_whitespace().next() {
                    let target = target.trim_start_matches('<').trim_end_matches('>');
                    out.push(Link { line: first_line + k, target: target.to_string() });
                }
            }
        }
    }
    out
}

/// GitHub's anchor for a heading: the text as shown (a link's text, no code
/// marks), lowercased, punctuation dropped (letters, digits, `-` and `_`
/// stay), each space a `-`.
fn slug(heading: &str) -> String {
    // A link in a heading shows its text only.
    let mut shown = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find('[') {
        let Some(mid) = rest[open..].find("](") else { break };
        let Some(close) = rest[open + mid..].find(')') else { break };
        shown.push_str(&rest[..open]);
        shown.push_str(&rest[open + 1..open + mid]);
        rest = &rest[open + mid + close + 1..];
    }
    shown.push_str(rest);
    shown
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// Every anchor a page has: its headings' slugs (a repeated one gets `-1`,
/// `-2`, ... as on GitHub) and explicit `<a name="…">`/`id="…"` anchors.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (_, block) in prose_blocks(text) {
        for line in block.lines() {
            let trimmed = line.trim_start();
            if line.len() - trimmed.len() <= 3 {
                let hashes = trimmed.chars().take_while(|&c| c == '#').count();
                let after = &trimmed[hashes..];
                if (1..=6).contains(&hashes) && (after.is_empty() || after.starts_with([' ', '\t'])) {
                    let title = after.trim().trim_end_matches('#').trim_end();
                    let base = slug(title);
                    let mut anchor = base.clone();
                    let mut n = 0;
                    while out.contains(&anchor) {
                        n += 1;
                        anchor = format!("{base}-{n}");
                    }
                    out.insert(anchor);
                }
            }
            for attr in ["name=\"", "id=\""] {
                let mut rest = line;
                while let Some(i) = rest.find(attr) {
                    rest = &rest[i + attr.len()..];
                    if let Some(end) = rest.find('"') {
                        out.insert(rest[..end].to_string());
                    }
                }
            }
        }
    }
    out
}

/// `%XX` escapes in a link's path, as a browser resolves them.
fn percent_decoded(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(byte) = u8::from_str_radix(&path[i + 1..i + 3], 16) {
                out.push(byte);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Checks the links of `doc` (relative to `root`): how many relative links it
/// has, and one message per broken one naming the file, the line, the link
/// and what is missing.
fn check(root: &Path, doc: &Path) -> (usize, Vec<String>) {
    let text = std::fs::read_to_string(root.join(doc)).unwrap_or_else(|e| panic!("{}: {e}", doc.display()));
    let mut checked = 0;
    let mut problems = Vec::new();
    for Link { line, target } in links(&text) {
        let at = format!("{}:{line}: link `{target}`", doc.display());
        if target.is_empty() {
            problems.push(format!("{at}: the link has no destination"));
            continue;
        }
        let lower = target.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("mailto:") {
            continue;
        }
        if lower.split(['/', '#']).next().is_some_and(|s| s.ends_with(':')) {
            problems
                .push(format!("{at}: an unknown scheme (only http, https and mailto links may leave the repository)"));
            continue;
        }
        checked += 1;
        let (path, fragment) = match target.split_once('#') {
            Some((path, fragment)) => (path, Some(fragment)),
            None => (target.as_str(), None),
        };
        let path = percent_decoded(path.split('?').next().unwrap_or(""));
        let file = if path.is_empty() {
            doc.to_path_buf()
        } else if let Some(from_root) = path.strip_prefix('/') {
            PathBuf::from(from_root)
        } else {
            doc.parent().unwrap_or(Path::new("")).join(&path)
        };
        let full = root.join(&file);
        if !full.exists() {
            problems.push(format!("{at}: {} does not exist", file.display()));
            continue;
        }
        let Some(fragment) = fragment else { continue };
        if !full.is_file() || full.extension().is_none_or(|e| e != "md") {
            // Line anchors into source files and the like are GitHub's business.
            continue;
        }
        let page = std::fs::read_to_string(&full).unwrap();
        let known = anchors(&page);
        if !known.contains(&percent_decoded(fragment)) {
            let known: Vec<String> = known.iter().map(|a| format!("#{a}")).collect();
            problems.push(format!(
                "{at}: {} has no heading with the anchor `#{fragment}` (its anchors: {})",
                file.display(),
                known.join(" ")
            ));
        }
    }
    (checked, problems)
}

#[test]
fn every_relative_link_in_the_docs_names_a_file_and_heading_that_exist() {
    let root = root();
    let mut problems = Vec::new();
    let mut counted = Vec::new();
    for doc in documents(root) {
        let (checked, found) = check(root, &doc);
        counted.push((doc, checked));
        problems.extend(found);
    }
    assert!(problems.is_empty(), "broken links in the documentation:\n{}", problems.join("\n"));
    // The README links to every page of docs/: a parser that finds nothing would pass vacuously.
    let readme = counted.iter().find(|(d, _)| d == Path::new("README.md")).unwrap().1;
    assert!(readme >= 10, "only {readme} relative links found in README.md");
    let readme_text = std::fs::read_to_string(root.join("README.md")).unwrap();
    for (doc, _) in counted.iter().filter(|(d, _)| d.starts_with("docs")) {
        assert!(
            readme_text.contains(&format!("]({})", doc.display())),
            "README.md does not link to {}: add it to the Documentation table",
            doc.display()
        );
    }
}

#[test]
fn github_slugs() {
    for (heading, anchor) in [
        ("Install and test", "install-and-test"),
        ("Several apps on one host", "several-apps-on-one-host"),
        ("Rebuild upgrades (`--strategy rebuild`)", "rebuild-upgrades---strategy-rebuild"),
        ("The daemon: `upgraderd watch`", "the-daemon-upgraderd-watch"),
        (
            "Stack data: every service's data, databases included, and no lost write",
            "stack-data-every-services-data-databases-included-and-no-lost-write",
        ),
        ("Why the binary is static, and how", "why-the-binary-is-static-and-how"),
        ("`UPGRADERD_STATE_DIR`", "upgraderd_state_dir"),
        ("See [the map](docs/ARCHITECTURE.md)", "see-the-map"),
        ("Prüfung 2.0", "prüfung-20"),
    ] {
        assert_eq!(slug(heading), anchor, "{heading}");
    }
    let repeated = anchors("# Notes\n\n## Notes\n\n```\n# not a heading\n```\n\n### Notes ###\n");
    assert_eq!(repeated, ["notes", "notes-1", "notes-2"].map(String::from).into());
}

#[test]
fn a_broken_link_is_reported_with_its_file_line_and_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("docs")).unwrap();
    std::fs::write(dir.path().join("docs/topic.md"), "# Topic\n\n## A section\n").unwrap();
    std::fs::write(
        dir.path().join("README.md"),
        "# Title\n\n\
         Good: [topic](docs/topic.md), [its section](docs/topic.md#a-section),\n\
         [here](#title), [a directory](docs/), [web](https://example.com/x#y).\n\n\
         Not links: `[x](missing.md)` and\n\n```\n[y](missing.md)\n```\n\n\
         Bad: [gone](docs/gone.md) and [no such\nsection](docs/topic.md#b-section)\n\n\
         [ref]: docs/other.md\n",
    )
    .unwrap();
    let (checked, problems) = check(dir.path(), Path::new("README.md"));
    assert_eq!(checked, 7, "{problems:?}");
    assert_eq!(
        problems,
        [
            "README.md:12: link `docs/gone.md`: docs/gone.md does not exist",
            "README.md:13: link `docs/topic.md#b-section`: docs/topic.md has no heading with the anchor `#b-section` \
             (its anchors: #a-section #topic)",
            "README.md:15: link `docs/other.md`: docs/other.md does not exist",
        ]
    );
}

#[test]
fn the_readme_walk_through_starts_within_its_first_150_lines() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let line = readme
        .lines()
        .position(|l| l.starts_with("## ") && l.to_lowercase().contains("walk-through"))
        .map(|i| i + 1)
        .expect("README.md has no `## …walk-through…` section");
    assert!(line <= 150, "README.md's walk-through starts at line {line}; it must start within the first 150");
    // It is a walk-through: commands to run, beginning with the install.
    let section = &readme[readme.lines().take(line).map(|l| l.len() + 1).sum::<usize>()..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    for step in ["./install.sh", "upgraderd config", "--dry-run", "upgraderd history"] {
        assert!(section.contains(step), "README.md's walk-through lacks {step}");
    }
}
