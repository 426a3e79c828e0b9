//! A fake `git` over a model checkout, beside the fake `docker`
//! (`common::fake_engine`), for the rebuild strategy without a repository.
//!
//! The model lives in `git/` of the deployment's state dir: `HEAD` holds the
//! checked-out commit; `commits/<sha>` holds `<index> <version> <subject>`
//! (history is linear: a commit descends from every lower index); `tags/`
//! holds the local tags, and `remote/` the branch tip and tags that `fetch`
//! brings in as `origin_main` and `tags/`. The checkout is at [`C1`]
//! (1.0.0, tag v1.0.0); the remote has [`C2`] (2.0.0, tag v2.0.0) and [`C3`]
//! (2.0.1, its main branch's tip, untagged). `FAIL_ON` counts `fetch` and
//! `reset` like the fake docker counts its verbs; `DIRTY="M  file"` makes the
//! tree modified. Any command the model does not know fails with exit 99.

use std::fs;

use super::fake_engine::Deployment;

pub const C1: &str = "1111111111111111111111111111111111111111";
pub const C2: &str = "2222222222222222222222222222222222222222";
pub const C3: &str = "3333333333333333333333333333333333333333";

pub const FAKE_GIT: &str = r#"#!/bin/sh
S="$FAKE_STATE"; G="$S/git"
echo "git $*" >> "$S/runbook.log"
count() {
  n=$(( $(cat "$S/count.$1" 2>/dev/null || echo 0) + 1 )); echo $n > "$S/count.$1"
  for f in $FAIL_ON; do
    if [ "$f" = "$1:$n" ]; then echo "fake git: injected failure of $1 #$n" >&2; exit 1; fi
  done
}
# Every command runs in the checkout: `git -C DIR …`.
if [ "$1" = -C ]; then shift 2; else echo "fake git: no -C: $*" >&2; exit 99; fi
commit_of() {
  case "$1" in
    HEAD) cat "$G/HEAD" ;;
    refs/remotes/origin/main) cat "$G/origin_main" 2>/dev/null ;;
    refs/tags/*) cat "$G/tags/${1#refs/tags/}" 2>/dev/null ;;
    *) [ -f "$G/commits/$1" ] && echo "$1" ;;
  esac
}
index_of() { cut -d' ' -f1 "$G/commits/$1"; }
case "$*" in
  "rev-parse --is-inside-work-tree") echo true ;;
  "rev-parse --abbrev-ref HEAD") echo main ;;
  "rev-parse --verify HEAD^{commit}") cat "$G/HEAD" ;;
  "rev-parse --verify --quiet "*)
    c=$(commit_of "$(printf '%s' "$4" | sed 's/\^{commit}$//')"); [ -n "$c" ] || exit 1; echo "$c" ;;
  "status --porcelain --untracked-files=no") [ -z "$DIRTY" ] || echo "$DIRTY" ;;
  "fetch --quiet --tags --force origin +refs/heads/main:refs/remotes/origin/main")
    count fetch; cp "$G/remote/main" "$G/origin_main"; cp "$G"/remote/tags/* "$G/tags/" ;;
  "merge-base --is-ancestor "*) [ "$(index_of "$3")" -le "$(index_of "$4")" ] ;;
  "log -1 --format=%h %s "*) printf '%.7s %s\n' "$4" "$(cut -d' ' -f3- "$G/commits/$4")" ;;
  "describe --tags --exact-match "*)
    for t in "$G"/tags/*; do if [ "$(cat "$t")" = "$4" ]; then basename "$t"; exit 0; fi; done
    echo "fatal: no tag exactly matches '$4'" >&2; exit 128 ;;
  "reset --keep "*)
    count reset; c=$(commit_of "$3")
    if [ -z "$c" ]; then echo "fatal: bad revision '$3'" >&2; exit 128; fi
    echo "$c" > "$G/HEAD" ;;
  *) echo "fake git: unexpected $*" >&2; exit 99 ;;
esac
"#;

impl Deployment {
    /// The same deployment upgraded by `UPGRADERD_STRATEGY=rebuild`: its
    /// service built by compose from a checkout the fake `git` models.
    pub fn rebuild() -> Deployment {
        let d = Deployment::new().with("UPGRADERD_STRATEGY", "rebuild");
        let git = d.sb.path().join("git");
        for dir in ["commits", "tags", "remote/tags"] {
            fs::create_dir_all(git.join(dir)).unwrap();
        }
        for (commit, line) in
            [(C1, "1 1.0.0 Release 1.0.0"), (C2, "2 2.0.0 Release 2.0.0"), (C3, "3 2.0.1 Release 2.0.1")]
        {
            fs::write(git.join("commits").join(commit), format!("{line}\n")).unwrap();
        }
        fs::write(git.join("HEAD"), format!("{C1}\n")).unwrap();
        fs::write(git.join("tags/v1.0.0"), format!("{C1}\n")).unwrap();
        fs::write(git.join("remote/tags/v1.0.0"), format!("{C1}\n")).unwrap();
        fs::write(git.join("remote/tags/v2.0.0"), format!("{C2}\n")).unwrap();
        fs::write(git.join("remote/main"), format!("{C3}\n")).unwrap();
        fs::write(d.sb.path().join("built"), "").unwrap();
        d.sb.fake("git", FAKE_GIT);
        d
    }

    /// The commit the fake checkout is at.
    pub fn head(&self) -> String {
        fs::read_to_string(self.sb.path().join("git/HEAD")).unwrap().trim().to_string()
    }

    /// Every call of the fake `git` and `docker`, in order, as `git …` / `docker …`.
    pub fn runbook(&self) -> Vec<String> {
        fs::read_to_string(self.sb.path().join("runbook.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }
}
