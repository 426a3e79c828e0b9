//! Where a service's version is written (its pin), and the edit that moves
//! it: a literal tag on its `image:` line, a variable whose value sits in an
//! env file compose reads (`IMMICH_VERSION=v1.131.3` in `.env`), the default
//! of that variable in the expression (`${AUTHENTIK_TAG:-2025.2.1}`), or a
//! moving tag (`latest`, `release`) that names no version at all.
//!
//! An upgrade changes exactly the bytes of the tag and nothing else in the
//! file; rollback puts the file's original bytes back. The refusals here say
//! which file and line, and what to write instead.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::engine::journal::Journal;
use crate::ops::process::Runner;

use crate::ops::compose::Project;
use crate::ops::compose_file::dotenv::{self, Assignment};
use crate::ops::compose_file::expr::{self, Origin};
use crate::ops::compose_file::{ImageLine, Scan};
use crate::store::edited::{self, EditedFile};

/// The env files compose read for the project, in order (a later one wins).
#[derive(Debug, Clone, Default)]
pub(crate) struct EnvFiles {
    files: Vec<(PathBuf, Vec<Assignment>)>,
}

impl EnvFiles {
    /// The project's env files: the ones compose recorded, else `.env` in the
    /// project directory; a missing default `.env` is no error (compose reads none then).
    pub(crate) fn of(project: &Project) -> Result<EnvFiles, String> {
        let recorded = project.env_file.iter().cloned().collect::<Vec<_>>();
        let (paths, required) =
            if recorded.is_empty() { (vec![project.working_dir.join(".env")], false) } else { (recorded, true) };
        let mut files = Vec::new();
        for path in paths {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let text = String::from_utf8(bytes)
                        .map_err(|_| format!("env file {} is not UTF-8 text", path.display()))?;
                    files.push((path, dotenv::parse(&text)));
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {}
                Err(e) => return Err(format!("env file {} cannot be read: {e}", path.display())),
            }
        }
        Ok(EnvFiles { files })
    }

    /// The assignment compose takes for `name`, with its file.
    fn lookup(&self, name: &str) -> Option<(&Path, &Assignment)> {
        self.files.iter().rev().find_map(|(path, all)| dotenv::last(all, name).map(|a| (path.as_path(), a)))
    }

    /// The file a new assignment would go in, for advice.
    pub(crate) fn main_file(&self, project: &Project) -> PathBuf {
        self.files.first().map(|(p, _)| p.clone()).unwrap_or_else(|| project.working_dir.join(".env"))
    }
}

/// Where the bytes of a version are written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Place {
    pub file: PathBuf,
    /// 1-based.
    pub line: usize,
    /// The bytes of the tag in the file.
    pub span: Range<usize>,
    /// The tag as written there now.
    pub text: String,
    /// The variable that carries it, when a variable does.
    pub variable: Option<String>,
}

impl Place {
    /// `file:line`, and what is written there, for logs and `--dry-run`.
    pub(crate) fn describe(&self) -> String {
        match &self.variable {
            Some(variable) => format!("{variable}={} at {}:{}", self.text, self.file.display(), self.line),
            None => format!("tag {} at {}:{}", self.text, self.file.display(), self.line),
        }
    }
}

/// How a service's version is pinned, and so how an upgrade moves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Pin {
    /// A tag that names a channel (`latest`, `release`, or no tag): the tag
    /// is moved to the new image; `written` is where the channel's name is
    /// written, for operators who want the version written down instead.
    Moving { written: Option<Place> },
    /// The version is written at this place, which the upgrade edits.
    Version(Place),
}

/// A service's image as its compose files write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Located {
    /// The reference, resolved as compose resolves it.
    pub reference: String,
    /// The tag in it (`latest` when it names none).
    pub tag: String,
    /// The variable that carries the tag, when one does.
    pub variable: Option<String>,
    pub pin: Pin,
}

/// A tag that names a release rather than a channel: a digit, after an optional `v`.
pub(crate) fn names_a_version(tag: &str) -> bool {
    tag.strip_prefix('v').unwrap_or(tag).starts_with(|c: char| c.is_ascii_digit())
}

/// Where `service`'s version is written; the error says why it cannot be
/// told or edited, with the file and line and what to write instead.
pub(crate) fn locate(service: &str, scan: &Scan, env: &EnvFiles, project: &Project) -> Result<Located, String> {
    let line = scan.images.get(service).ok_or_else(|| {
        format!(
            "no `image:` line for service {service} in {}; upgraderd changes the version where it is written, so \
             give the service an `image:` line (not an anchor or `extends`)",
            scan.files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })?;
    let span = line.span.clone().ok_or_else(|| {
        format!(
            "{}: the image of service {service} is written as `{}`, which upgraderd does not edit; write it on one \
             line as `image: REPOSITORY:TAG`, unquoted or in plain quotes",
            line.place(),
            line.value
        )
    })?;
    let segments = expr::parse(&line.value).map_err(|e| format!("{}: {e}", line.place()))?;
    if let Some(name) = expr::variables(&line.value).into_iter().find(|name| std::env::var_os(name).is_some()) {
        return Err(format!(
            "{}: {name} is set in upgraderd's own environment, which compose prefers to the env file; unset it \
             there, so that the env file alone says which version runs",
            line.place()
        ));
    }
    let lookup = |name: &str| env.lookup(name).map(|(_, a)| a.value.clone());
    let pieces = expr::resolve(&line.value, &segments, &lookup).map_err(|e| format!("{}: {e}", line.place()))?;
    let reference: String = pieces.iter().map(|p| p.text.as_str()).collect();
    if reference.contains('@') {
        return Err(format!(
            "{}: service {service} is pinned by digest ({reference}); upgraderd moves tags, not digests: write the \
             tag alone (REPOSITORY:TAG)",
            line.place()
        ));
    }
    let Some(tag_range) = tag_range(&reference) else {
        // No tag: `latest`, which is a channel, and not written anywhere to edit.
        return Ok(Located { reference, tag: "latest".into(), variable: None, pin: Pin::Moving { written: None } });
    };
    let tag = reference[tag_range.clone()].to_string();
    if tag.is_empty() {
        return Err(unset_variable(service, line, env, project));
    }
    let (place, variable) = place_of_tag(service, line, span.start, &pieces, tag_range, env, project)?;
    let pin = if names_a_version(&tag) { Pin::Version(place) } else { Pin::Moving { written: Some(place) } };
    Ok(Located { reference, tag, variable, pin })
}

/// The byte range of the tag in a reference: after the last `:` behind the last `/`.
fn tag_range(reference: &str) -> Option<Range<usize>> {
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    let colon = reference[name_start..].rfind(':')? + name_start;
    Some(colon + 1..reference.len())
}

/// The place whose bytes are the tag, and the variable that carries it.
fn place_of_tag(
    service: &str,
    line: &ImageLine,
    value_at: usize,
    pieces: &[expr::Piece],
    tag: Range<usize>,
    env: &EnvFiles,
    project: &Project,
) -> Result<(Place, Option<String>), String> {
    let holder = holding_piece(pieces, &tag).or_else(|| {
        // `${IMMICH_VERSION}-cuda`: the version in one place, a flavour written after it.
        let text: String = pieces.iter().map(|p| p.text.as_str()).collect();
        let core = crate::version::without_flavour(&text[tag.clone()]).len();
        let found = holding_piece(pieces, &(tag.start..tag.start + core))?;
        let flavour_is_written = pieces_after(pieces, tag.start + core).all(|p| matches!(p.origin, Origin::Written(_)));
        flavour_is_written.then_some(found)
    });
    let (piece, offset, tag) = holder.ok_or_else(|| {
        format!(
            "{}: the tag of service {service} is made of several parts (`{}`); upgraderd changes a version written \
             in one place: one variable or one literal tag",
            line.place(),
            line.value
        )
    })?;
    let len = tag.end - tag.start;
    let text = piece.text[offset..offset + len].to_string();
    let in_line = |range: &Range<usize>, variable: Option<String>| {
        let start = value_at + range.start + offset;
        Place { file: line.file.clone(), line: line.line, span: start..start + len, text: text.clone(), variable }
    };
    match &piece.origin {
        Origin::Written(range) => Ok((in_line(range, None), None)),
        Origin::Word { name, raw } => Ok((in_line(raw, Some(name.clone())), Some(name.clone()))),
        Origin::Variable(name) => {
            let (file, assignment) = env.lookup(name).ok_or_else(|| format!("{name} has no value"))?;
            let span = assignment.span.clone().ok_or_else(|| {
                format!(
                    "{}:{}: {name} is written with quotes that hold escapes or variables; write it plainly \
                     ({name}={}) so that upgraderd can change it",
                    file.display(),
                    assignment.line,
                    assignment.value
                )
            })?;
            let start = span.start + offset;
            let place = Place {
                file: file.to_path_buf(),
                line: assignment.line,
                span: start..start + len,
                text,
                variable: Some(name.clone()),
            };
            Ok((place, Some(name.clone())))
        }
        Origin::Nowhere => Err(unset_variable(service, line, env, project)),
    }
}

/// The piece whose text holds all of `range` of the resolved value, with the
/// range's offset in it and the range.
fn holding_piece<'a>(
    pieces: &'a [expr::Piece],
    range: &Range<usize>,
) -> Option<(&'a expr::Piece, usize, Range<usize>)> {
    let mut at = 0;
    for piece in pieces {
        let span = at..at + piece.text.len();
        at = span.end;
        if span.start <= range.start && range.end <= span.end && !piece.text.is_empty() {
            return Some((piece, range.start - span.start, range.clone()));
        }
    }
    None
}

/// The pieces that resolve to text at or after `from` in the resolved value.
fn pieces_after(pieces: &[expr::Piece], from: usize) -> impl Iterator<Item = &expr::Piece> {
    let mut at = 0;
    pieces.iter().filter(move |piece| {
        let end = at + piece.text.len();
        at = end;
        end > from && !piece.text.is_empty()
    })
}

/// A tag whose variable no env file sets: what ran came from the shell of whoever ran `compose up`.
fn unset_variable(service: &str, line: &ImageLine, env: &EnvFiles, project: &Project) -> String {
    format!(
        "{}: the tag of service {service} comes from a variable that no env file sets and that has no default \
         (`{}`): its value came from the environment of whoever ran `compose up`, which upgraderd cannot edit; \
         write it into {}",
        line.place(),
        line.value,
        env.main_file(project).display()
    )
}

/// The variable that carries `service`'s tag, when one does (for the release family).
pub(crate) fn tag_variable(service: &str, scan: &Scan, env: &EnvFiles, project: &Project) -> Option<String> {
    locate(service, scan, env, project).ok()?.variable
}

/// Lines outside the family's `image:` lines that use `variable`: editing it would change them too.
pub(crate) fn other_uses(scan: &Scan, variable: &str) -> Vec<String> {
    scan.other_uses
        .iter()
        .filter(|u| u.names.iter().any(|n| n == variable))
        .map(|u| format!("{}:{}", u.file.display(), u.line))
        .collect()
}

/// The text that replaces what `place` holds for the version `new_tag`: the
/// flavour written there stays (`v1.2.3-cuda` becomes `v1.3.0-cuda`).
pub(crate) fn new_text(place: &Place, new_tag: &str) -> String {
    crate::version::in_flavour_of(new_tag, &place.text)
}

/// The edits that write `new_tag` at every place (a place shared by two
/// services is edited once); each file read once, and refused when it may not be replaced.
pub(crate) fn plan_edits(places: &[&Place], new_tag: &str) -> Result<Vec<EditedFile>, String> {
    let mut by_file: BTreeMap<&Path, Vec<&Place>> = BTreeMap::new();
    for place in places {
        let list = by_file.entry(place.file.as_path()).or_default();
        if !list.iter().any(|p| p.span == place.span) {
            list.push(place);
        }
    }
    let mut edits = Vec::new();
    for (path, mut places) in by_file {
        if let Some(why) = edited::not_editable(path) {
            return Err(format!("{} {why}", path.display()));
        }
        let original = edited::read(path).map_err(|e| format!("{} cannot be read: {e}", path.display()))?;
        places.sort_by_key(|p| std::cmp::Reverse(p.span.start));
        let mut bytes = original.clone();
        let mut floor = usize::MAX;
        for place in places {
            let found = bytes.get(place.span.clone());
            if found != Some(place.text.as_bytes()) || place.span.end > floor {
                return Err(format!(
                    "{}:{} no longer says {} where upgraderd read it; it was changed meanwhile: try again",
                    path.display(),
                    place.line,
                    place.text
                ));
            }
            floor = place.span.start;
            bytes.splice(place.span.clone(), new_text(place, new_tag).bytes());
        }
        edits.push(EditedFile { path: path.to_path_buf(), original, edited: bytes });
    }
    Ok(edits)
}

/// Writes each edit, after checking that the file still holds the bytes read
/// in preflight (someone may have changed it since).
pub(crate) fn apply(edits: &[EditedFile]) -> Result<()> {
    for edit in edits {
        let now = edited::read(&edit.path).map_err(|e| anyhow::anyhow!("reading {}: {e}", edit.path.display()))?;
        if now != edit.original {
            anyhow::bail!(
                "{} was changed since the pre-flight checks read it; nothing was written to it",
                edit.path.display()
            );
        }
        edited::replace(&edit.path, &edit.edited)
            .map_err(|e| anyhow::anyhow!("writing the new version into {}: {e}", edit.path.display()))?;
    }
    Ok(())
}

/// Checks, just before compose reads them, that the files still hold what
/// upgraderd wrote into them while the old version served.
pub(crate) fn still_written(edits: &[EditedFile]) -> Result<()> {
    for edit in edits {
        let now = edited::read(&edit.path).map_err(|e| anyhow::anyhow!("reading {}: {e}", edit.path.display()))?;
        if now != edit.edited {
            anyhow::bail!(
                "{} was changed after upgraderd wrote the new version into it, while the backup ran; nothing was \
                 started from it",
                edit.path.display()
            );
        }
    }
    Ok(())
}

/// Puts every edited file back as it was; a file already back is left alone.
/// A file changed by someone else since upgraderd wrote it is not
/// overwritten: the error names it and what to put back by hand.
pub(crate) fn put_back(edits: &[EditedFile]) -> Result<Vec<PathBuf>> {
    let mut restored = Vec::new();
    let mut refused = Vec::new();
    for edit in edits {
        let now = match edited::read(&edit.path) {
            Ok(now) => now,
            Err(e) => {
                refused.push(format!("{} cannot be read: {e}", edit.path.display()));
                continue;
            }
        };
        if now == edit.original {
            continue;
        }
        if now != edit.edited {
            refused.push(format!(
                "{} was changed since upgraderd wrote the new version into it; it was left as it is: put the old \
                 version back there by hand",
                edit.path.display()
            ));
            continue;
        }
        match edited::replace(&edit.path, &edit.original) {
            Ok(()) => restored.push(edit.path.clone()),
            Err(e) => refused.push(format!("putting {} back: {e}", edit.path.display())),
        }
    }
    if refused.is_empty() {
        Ok(restored)
    } else {
        Err(anyhow::anyhow!(refused.join("; ")))
    }
}

/// Writes the new version over every place (the files' bytes journaled
/// first, so that a rollback or recovery can always put them back); a dry run only says where.
pub(crate) fn write(
    journal: &mut Journal,
    runner: &Runner,
    edits: &[EditedFile],
    places: &[Place],
    tag: &str,
) -> Result<()> {
    if edits.is_empty() {
        return Ok(());
    }
    if runner.dry_run() {
        for place in places {
            runner.plan(format!("# write {} over {}", new_text(place, tag), place.describe()));
        }
        return Ok(());
    }
    journal.db.record_edited_files(&journal.upgrade_id, edits)?;
    apply(edits)?;
    for place in places {
        journal.log(&format!("Wrote {} over {}", new_text(place, tag), place.describe()));
    }
    Ok(())
}

/// Puts back every file the journal's upgrade (or the upgrade it rolls back)
/// edited, byte for byte; a dry run only says which.
pub(crate) fn restore(journal: &mut Journal, runner: &Runner, upgrade_id: &str) -> Result<()> {
    let mut edited = journal.db.edited_files(&journal.upgrade_id)?;
    if edited.is_empty() {
        edited = journal.db.edited_files(upgrade_id)?;
    }
    if runner.dry_run() {
        for file in &edited {
            runner.plan(format!("# put {} back as it was before the upgrade", file.path.display()));
        }
        return Ok(());
    }
    let restored = put_back(&edited).context("putting the edited files back")?;
    for path in restored {
        journal.log(&format!("Put {} back as it was before the upgrade", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::compose_file::scan;

    struct Deploy {
        dir: tempfile::TempDir,
        project: Project,
    }

    fn deploy(compose: &str, env: Option<&str>) -> Deploy {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("docker-compose.yml"), compose).unwrap();
        if let Some(env) = env {
            std::fs::write(dir.path().join(".env"), env).unwrap();
        }
        let project = Project {
            name: "p".into(),
            working_dir: dir.path().to_path_buf(),
            files: vec![dir.path().join("docker-compose.yml")],
            env_file: None,
            service: "server".into(),
            services: vec!["server".into()],
            orchestrator: Default::default(),
        };
        Deploy { dir, project }
    }

    impl Deploy {
        fn locate(&self, service: &str) -> Result<Located, String> {
            let scan = scan(&self.project.files).unwrap();
            locate(service, &scan, &EnvFiles::of(&self.project).unwrap(), &self.project)
        }

        fn read(&self, name: &str) -> String {
            std::fs::read_to_string(self.dir.path().join(name)).unwrap()
        }
    }

    const IMMICH: &str =
        "services:\n  server:\n    image: ghcr.io/immich-app/immich-server:${IMMICH_VERSION:-release}\n  \
        ml:\n    image: ghcr.io/immich-app/immich-machine-learning:${IMMICH_VERSION:-release}\n";

    #[test]
    fn a_version_in_the_env_file_is_edited_there_once_for_the_whole_family() {
        let env = "# keep me\r\nUPLOAD_LOCATION=./library\r\nIMMICH_VERSION=\"v1.131.3\" # pinned\r\n";
        let d = deploy(IMMICH, Some(env));
        let server = d.locate("server").unwrap();
        let ml = d.locate("ml").unwrap();
        assert_eq!(server.reference, "ghcr.io/immich-app/immich-server:v1.131.3");
        assert_eq!((server.tag.as_str(), server.variable.as_deref()), ("v1.131.3", Some("IMMICH_VERSION")));
        let (Pin::Version(a), Pin::Version(b)) = (&server.pin, &ml.pin) else { panic!("{server:?} {ml:?}") };
        assert_eq!(a, b, "one place for both");
        assert_eq!(a.line, 3);
        let edits = plan_edits(&[a, b], "v1.132.1").unwrap();
        apply(&edits).unwrap();
        assert_eq!(d.read(".env"), env.replace("v1.131.3", "v1.132.1"), "only the version changed");
        assert_eq!(d.read("docker-compose.yml"), IMMICH);
        put_back(&edits).unwrap();
        assert_eq!(d.read(".env"), env, "byte for byte");
    }

    #[test]
    fn a_channel_is_a_moving_tag_and_a_default_is_edited_in_the_expression() {
        let d = deploy(IMMICH, None);
        let located = d.locate("server").unwrap();
        assert_eq!(located.tag, "release");
        let Pin::Moving { written: Some(place) } = &located.pin else { panic!("{located:?}") };
        assert_eq!((place.line, place.text.as_str()), (3, "release"));

        let authentik = "services:\n  server:\n    image: ${AUTHENTIK_IMAGE:-ghcr.io/goauthentik/server}:${AUTHENTIK_TAG:-2025.2.1}\n";
        let d = deploy(authentik, Some("AUTHENTIK_IMAGE=registry.local/authentik\n"));
        let located = d.locate("server").unwrap();
        assert_eq!(located.reference, "registry.local/authentik:2025.2.1");
        let Pin::Version(place) = &located.pin else { panic!("{located:?}") };
        apply(&plan_edits(&[place], "2025.4.0").unwrap()).unwrap();
        assert_eq!(d.read("docker-compose.yml"), authentik.replace("2025.2.1", "2025.4.0"));
        assert_eq!(d.read(".env"), "AUTHENTIK_IMAGE=registry.local/authentik\n");
    }

    #[test]
    fn a_flavour_written_after_the_variable_stays_and_one_inside_the_value_is_kept() {
        let cuda = "services:\n  server:\n    image: ghcr.io/immich-app/immich-server:${IMMICH_VERSION:-release}\n  \
            ml:\n    image: ghcr.io/immich-app/immich-machine-learning:${IMMICH_VERSION:-release}-cuda\n";
        let d = deploy(cuda, Some("IMMICH_VERSION=v1.131.3\n"));
        let ml = d.locate("ml").unwrap();
        assert_eq!(ml.tag, "v1.131.3-cuda");
        let (Pin::Version(a), Pin::Version(b)) = (d.locate("server").unwrap().pin, ml.pin) else { panic!() };
        assert_eq!(a, b, "both are pinned by the one value");
        apply(&plan_edits(&[&a, &b], "v1.132.1").unwrap()).unwrap();
        assert_eq!(d.read(".env"), "IMMICH_VERSION=v1.132.1\n");
        let alpine = "services:\n  server:\n    image: app:1.2.3-alpine\n";
        let d = deploy(alpine, None);
        let Pin::Version(place) = d.locate("server").unwrap().pin else { panic!() };
        apply(&plan_edits(&[&place], "1.3.0").unwrap()).unwrap();
        assert_eq!(d.read("docker-compose.yml"), alpine.replace("1.2.3-alpine", "1.3.0-alpine"));
    }

    #[test]
    fn a_literal_tag_is_edited_on_its_line() {
        let gitea = "services:\n  server:\n    image: \"gitea/gitea:1.22.3\"   # pinned\n";
        let d = deploy(gitea, None);
        let Pin::Version(place) = d.locate("server").unwrap().pin else { panic!() };
        apply(&plan_edits(&[&place], "1.22.4").unwrap()).unwrap();
        assert_eq!(d.read("docker-compose.yml"), gitea.replace("1.22.3", "1.22.4"));
    }

    #[test]
    fn what_cannot_be_edited_is_refused_with_the_place_and_the_fix() {
        let shell_only = "services:\n  server:\n    image: app:${APP_TAG}\n";
        let err = deploy(shell_only, Some("OTHER=1\n")).locate("server").unwrap_err();
        assert!(err.contains("docker-compose.yml:3") && err.contains("environment of whoever ran"), "{err}");
        assert!(err.contains(".env"), "{err}");
        let digest = "services:\n  server:\n    image: app:1.0@sha256:abc\n";
        assert!(deploy(digest, None).locate("server").unwrap_err().contains("pinned by digest"));
        let split = "services:\n  server:\n    image: app:${MAJOR}.${MINOR}\n";
        let err = deploy(split, Some("MAJOR=1\nMINOR=2\n")).locate("server").unwrap_err();
        assert!(err.contains("several parts"), "{err}");
        let escaped = deploy(IMMICH, Some("IMMICH_VERSION=\"v1\\.2\"\n")).locate("server").unwrap_err();
        assert!(escaped.contains(".env:1") && escaped.contains("write it plainly"), "{escaped}");
    }

    #[test]
    fn a_file_changed_since_it_was_read_or_written_is_left_alone() {
        let d = deploy(IMMICH, Some("IMMICH_VERSION=v1.0.0\n"));
        let Pin::Version(place) = d.locate("server").unwrap().pin else { panic!() };
        let edits = plan_edits(&[&place], "v1.1.0").unwrap();
        std::fs::write(d.dir.path().join(".env"), "IMMICH_VERSION=v1.0.0\nX=1\n").unwrap();
        assert!(apply(&edits).unwrap_err().to_string().contains("was changed since the pre-flight"));
        assert_eq!(d.read(".env"), "IMMICH_VERSION=v1.0.0\nX=1\n");
        let err = put_back(&edits).unwrap_err().to_string();
        assert!(err.contains("left as it is"), "{err}");
        assert_eq!(d.read(".env"), "IMMICH_VERSION=v1.0.0\nX=1\n");
    }
}
