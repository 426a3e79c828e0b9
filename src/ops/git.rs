//! git in the deployment's checkout: what HEAD is, whether the tree is clean,
//! fetching, resolving a branch tip or a release tag to a commit, the
//! fast-forward test, and moving the checkout (`reset --keep`, which never
//! discards local changes).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::ops::process::{Cmd, Runner};
use crate::version::Target;

#[derive(Debug, Clone)]
pub(crate) struct Git {
    program: PathBuf,
    dir: PathBuf,
    runner: Runner,
}

impl Git {
    pub(crate) fn new(program: &Path, dir: &Path, runner: Runner) -> Git {
        Git { program: program.to_path_buf(), dir: dir.to_path_buf(), runner }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        // -C keeps every command in the checkout; no pager, no prompt for credentials.
        Cmd::new(&self.program)
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_PAGER", "cat")
            .timeout(Duration::from_secs(120))
    }

    fn text<I, S>(&self, args: I) -> Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Ok(self.runner.run(&self.cmd(args))?.stdout_text().trim().to_string())
    }

    /// Whether the directory is inside a git work tree.
    pub(crate) fn is_work_tree(&self) -> bool {
        self.text(["rev-parse", "--is-inside-work-tree"]).is_ok_and(|t| t == "true")
    }

    /// The checked-out branch, `None` when HEAD is detached.
    pub(crate) fn branch(&self) -> Result<Option<String>> {
        let name = self.text(["rev-parse", "--abbrev-ref", "HEAD"])?;
        Ok((name != "HEAD").then_some(name))
    }

    pub(crate) fn head(&self) -> Result<String> {
        self.text(["rev-parse", "--verify", "HEAD^{commit}"])
    }

    /// Tracked files with local modifications (untracked files do not count).
    pub(crate) fn modified_files(&self) -> Result<Vec<String>> {
        // Not trimmed: each line starts with two status columns, the first often a space.
        let out = self.runner.run(&self.cmd(["status", "--porcelain", "--untracked-files=no"]))?.stdout_text();
        Ok(out.lines().filter(|l| l.len() > 3).map(|l| l[3..].to_string()).collect())
    }

    /// Fetches the branch and tags from the remote (remote-tracking refs only; the checkout is untouched).
    pub(crate) fn fetch(&self, remote: &str, branch: &str) -> Result<()> {
        let refspec = format!("+refs/heads/{branch}:refs/remotes/{remote}/{branch}");
        self.runner
            .run(&self.cmd(["fetch", "--quiet", "--tags", "--force", remote, &refspec]))
            .with_context(|| format!("fetching {branch} from the remote {remote}"))?;
        Ok(())
    }

    /// The commit a target names: `latest` is the remote branch's tip, a version is tag `vX.Y.Z` or `X.Y.Z`.
    pub(crate) fn resolve(&self, remote: &str, branch: &str, target: &Target) -> Result<String> {
        let candidates = match target {
            Target::Latest => vec![format!("refs/remotes/{remote}/{branch}")],
            Target::Version(version) => {
                let bare = version.strip_prefix('v').unwrap_or(version);
                vec![format!("refs/tags/v{bare}"), format!("refs/tags/{bare}")]
            }
        };
        for reference in &candidates {
            if let Ok(commit) = self.text(["rev-parse", "--verify", "--quiet", &format!("{reference}^{{commit}}")]) {
                if !commit.is_empty() {
                    return Ok(commit);
                }
            }
        }
        Err(anyhow!(
            "{} not found in {} after fetching from {remote}",
            match target {
                Target::Latest => format!("the branch {branch}"),
                Target::Version(version) => format!("no tag v{0} or {0}", version.trim_start_matches('v')),
            },
            self.dir.display()
        ))
    }

    /// Whether `ancestor` is an ancestor of (or equal to) `descendant`.
    pub(crate) fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool> {
        let out = self.runner.output(&self.cmd(["merge-base", "--is-ancestor", ancestor, descendant]))?;
        match out.ended {
            crate::ops::process::Ended::Code(0) => Ok(true),
            crate::ops::process::Ended::Code(1) => Ok(false),
            _ => Err(anyhow!("`git merge-base --is-ancestor` failed: {}", out.stderr_tail(3))),
        }
    }

    /// The tag naming a commit exactly, if any (`v2.0.0` → `2.0.0`).
    pub(crate) fn version_at(&self, commit: &str) -> Option<String> {
        let tag = self.text(["describe", "--tags", "--exact-match", commit]).ok()?;
        Some(tag.strip_prefix('v').unwrap_or(&tag).to_string())
    }

    /// The nearest tag below HEAD, for the running version.
    pub(crate) fn describe(&self) -> Option<String> {
        let tag = self.text(["describe", "--tags", "--abbrev=0"]).ok()?;
        Some(tag.strip_prefix('v').unwrap_or(&tag).to_string())
    }

    /// One line naming a commit: short sha and subject.
    pub(crate) fn summary(&self, commit: &str) -> String {
        self.text(["log", "-1", "--format=%h %s", commit]).unwrap_or_else(|_| commit.chars().take(8).collect())
    }

    /// Moves the branch (and the work tree) to `commit`, keeping local changes (refused if they conflict).
    pub(crate) fn move_to(&self, commit: &str) -> Cmd {
        self.cmd(["reset", "--keep", commit]).mutating()
    }
}
