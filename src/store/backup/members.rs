//! Member names and the rules every data member must pass. `verify` and
//! `restore` read archives through the same [`Rules`], so an archive that
//! verifies restores, and one that restore would refuse fails to verify.
//!
//! A member is `data/<i>` (data path `i` itself) or `data/<i>/<relative>`,
//! names as bytes. Refused: absolute names, `.`, `..` or empty components,
//! anything outside `data/<i>` for a known `i`, a member whose parent is not an
//! earlier directory member (so nothing is ever written through a symlink),
//! duplicates, device nodes and other types upgraderd never writes (FIFOs it
//! does write), and hard links to anything but an
//! earlier file of the same data path. A final pass ([`Rules::begin_final_pass`])
//! may name again what it retired, and a directory again to give it its final
//! mode and time. Symlink *targets* are data: any target,
//! absolute or relative, dangling or not, is stored and restored verbatim.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Result};

use super::format::{show, Kind, Root};

/// A data member that passed the rules.
#[derive(Debug, Clone)]
pub(super) struct Member {
    /// The name as the manifest lists it (no trailing `/`).
    pub name: Vec<u8>,
    /// Position of its data path in the metadata's roots.
    pub root: usize,
    /// Its path below `data/<i>`, `/`-separated; empty for the data path itself.
    pub relative: Vec<u8>,
    pub kind: Kind,
    /// A symlink's target, verbatim; for a hard link, the member it shares its inode with.
    pub link: Option<Vec<u8>>,
    /// A directory the final pass names again: only its mode, owner and time are new.
    pub again: bool,
}

/// The rules, with what has been seen so far in one archive.
pub(super) struct Rules<'a> {
    archive: &'a Path,
    roots: &'a [Root],
    seen: HashMap<Vec<u8>, Kind>,
    final_pass: bool,
}

impl<'a> Rules<'a> {
    pub(super) fn new(archive: &'a Path, roots: &'a [Root]) -> Rules<'a> {
        Rules { archive, roots, seen: HashMap::new(), final_pass: false }
    }

    /// The final pass begins: `stale` members (each one seen, a directory only
    /// with everything below it) are forgotten, and may come again.
    pub(super) fn begin_final_pass(&mut self, stale: &[Vec<u8>]) -> Result<()> {
        if self.final_pass {
            bail!("backup {} has two final passes; refusing this archive", self.archive.display());
        }
        self.final_pass = true;
        for name in stale {
            if self.seen.remove(name.as_slice()).is_none() {
                bail!(
                    "backup {}: its final pass retires `{}`, which the archive does not hold; refusing this archive",
                    self.archive.display(),
                    show(name)
                );
            }
        }
        let orphan = self.seen.keys().find(|name| {
            let slash = name.iter().rposition(|b| *b == b'/').unwrap_or(0);
            name.starts_with(b"data/") && slash > 5 && !self.seen.contains_key(&name[..slash])
        });
        if let Some(orphan) = orphan {
            bail!(
                "backup {}: its final pass retires the directory of `{}` but not `{}` itself; refusing this archive",
                self.archive.display(),
                show(orphan),
                show(orphan)
            );
        }
        Ok(())
    }

    /// Checks one member (its raw name, tar type and link name) and records it.
    pub(super) fn check(&mut self, raw_name: &[u8], entry_type: tar::EntryType, link: Option<&[u8]>) -> Result<Member> {
        let kind = self.kind_of(raw_name, entry_type)?;
        let name = match kind {
            Kind::Dir => raw_name.strip_suffix(b"/").unwrap_or(raw_name),
            _ => raw_name,
        };
        let (root, relative) = self.locate(name)?;
        let again = self.final_pass && kind == Kind::Dir && self.seen.get(name) == Some(&Kind::Dir);
        if again {
            return Ok(Member { name: name.to_vec(), root, relative: relative.to_vec(), kind, link: None, again });
        }
        if self.seen.contains_key(name) {
            bail!("backup {}: member `{}` appears twice; refusing this archive", self.archive.display(), show(name));
        }
        if relative.is_empty() {
            self.check_root_member(name, kind, root)?;
        } else {
            self.check_parent(name, root)?;
        }
        let link = match kind {
            Kind::Symlink => Some(self.link_target(name, link)?),
            Kind::Hardlink => Some(self.hard_link_target(name, root, link)?),
            _ => None,
        };
        self.seen.insert(name.to_vec(), kind);
        Ok(Member { name: name.to_vec(), root, relative: relative.to_vec(), kind, link, again: false })
    }

    fn kind_of(&self, name: &[u8], entry_type: tar::EntryType) -> Result<Kind> {
        Ok(match entry_type {
            tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::File,
            tar::EntryType::Directory => Kind::Dir,
            tar::EntryType::Symlink => Kind::Symlink,
            tar::EntryType::Link => Kind::Hardlink,
            tar::EntryType::Fifo => Kind::Fifo,
            device @ (tar::EntryType::Char | tar::EntryType::Block) => bail!(
                "backup {} has member `{}`, a {} device node, which upgraderd never writes: it never creates \
                 device nodes on the host; refusing this archive",
                self.archive.display(),
                show(name),
                if device == tar::EntryType::Char { "character" } else { "block" }
            ),
            other => bail!(
                "backup {} has member `{}` of type {other:?}, which upgraderd never writes",
                self.archive.display(),
                show(name)
            ),
        })
    }

    /// Which data path a member belongs to (its position in the roots) and its path below it.
    fn locate<'n>(&self, name: &'n [u8]) -> Result<(usize, &'n [u8])> {
        let hostile = || {
            anyhow::anyhow!(
                "member `{}` has an absolute path, `..` or lies outside data/: refusing to restore this archive",
                show(name)
            )
        };
        if name.split(|b| *b == b'/').any(|part| matches!(part, b"" | b"." | b"..")) {
            return Err(hostile());
        }
        let rest = name.strip_prefix(b"data/").ok_or_else(hostile)?;
        let (index, relative) = match rest.iter().position(|b| *b == b'/') {
            Some(slash) => (&rest[..slash], &rest[slash + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let index: usize = std::str::from_utf8(index).ok().and_then(|s| s.parse().ok()).ok_or_else(hostile)?;
        let root = self.roots.iter().position(|r| r.index == index).ok_or_else(hostile)?;
        Ok((root, relative))
    }

    fn check_root_member(&self, name: &[u8], kind: Kind, root: usize) -> Result<()> {
        let is_dir = self.roots[root].is_dir;
        if (kind == Kind::Dir) != is_dir {
            bail!(
                "member `{}` is a {kind:?} but data/{} was backed up as a {}: refusing to restore this archive",
                show(name),
                self.roots[root].index,
                if is_dir { "directory" } else { "file" }
            );
        }
        Ok(())
    }

    /// A member's parent must be a directory member that came before it.
    fn check_parent(&self, name: &[u8], root: usize) -> Result<()> {
        let slash = name.iter().rposition(|b| *b == b'/').unwrap_or(0);
        let parent = &name[..slash];
        match self.seen.get(parent) {
            Some(Kind::Dir) => Ok(()),
            Some(_) => bail!(
                "member `{}` lies below `{}`, which is not a directory: refusing to write through it",
                show(name),
                show(parent)
            ),
            None => bail!(
                "member `{}` comes before its parent directory `{}` (data/{}): refusing this archive",
                show(name),
                show(parent),
                self.roots[root].index
            ),
        }
    }

    fn link_target(&self, name: &[u8], link: Option<&[u8]>) -> Result<Vec<u8>> {
        match link {
            Some(target) if !target.is_empty() => Ok(target.to_vec()),
            _ => bail!("backup {}: symlink member `{}` has no target", self.archive.display(), show(name)),
        }
    }
}

impl Rules<'_> {
    /// A hard link must name an earlier file of the same data path.
    fn hard_link_target(&self, name: &[u8], root: usize, link: Option<&[u8]>) -> Result<Vec<u8>> {
        let target = link.unwrap_or_default();
        let same_root =
            self.locate(target).is_ok_and(|(target_root, relative)| target_root == root && !relative.is_empty());
        match self.seen.get(target) {
            Some(Kind::File | Kind::Hardlink) if same_root => Ok(target.to_vec()),
            _ => bail!(
                "backup {}: hard link `{}` names `{}`, which is not an earlier file of the same data directory; \
                 refusing this archive",
                self.archive.display(),
                show(name),
                show(target)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn roots() -> Vec<Root> {
        vec![
            Root {
                index: 0,
                path: PathBuf::from("/d"),
                is_dir: true,
                service: None,
                mount: None,
                restore_bytes: None,
                stored: None,
            },
            Root {
                index: 1,
                path: PathBuf::from("/f"),
                is_dir: false,
                service: None,
                mount: None,
                restore_bytes: None,
                stored: None,
            },
        ]
    }

    /// A raw member: name, tar type, link name.
    type Raw<'a> = (&'a [u8], tar::EntryType, Option<&'a [u8]>);

    fn check_all(members: &[Raw<'_>]) -> Result<Vec<Member>> {
        let roots = roots();
        let mut rules = Rules::new(Path::new("a.tar.gz"), &roots);
        members.iter().map(|(name, kind, link)| rules.check(name, *kind, *link)).collect()
    }

    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};

    #[test]
    fn links_may_point_anywhere_but_nothing_is_written_through_them() {
        let ok = check_all(&[
            (b"data/0/", D, None),
            (b"data/0/current", L, Some(b"/data/schema")),
            (b"data/0/up", L, Some(b"../x")),
            (b"data/0/sub", D, None),
            (b"data/0/sub/\xff", F, None),
        ])
        .unwrap();
        assert_eq!(ok[1].link.as_deref(), Some(&b"/data/schema"[..]));
        assert_eq!(ok[4].relative, b"sub/\xff");
        let through =
            check_all(&[(b"data/0", D, None), (b"data/0/l", L, Some(b"/etc")), (b"data/0/l/passwd", F, None)]);
        assert!(through.unwrap_err().to_string().contains("not a directory"));
    }

    #[test]
    fn hostile_names_are_refused() {
        for name in [&b"/etc/passwd"[..], b"data/0/../x", b"data/0/./x", b"data//0", b"data/9", b"etc/x", b"data/x"] {
            assert!(check_all(&[(b"data/0", D, None), (name, F, None)]).is_err(), "{}", show(name));
        }
        assert!(check_all(&[(b"data/0", D, None), (b"data/0/a", F, None), (b"data/0/a", F, None)]).is_err());
        assert!(check_all(&[(b"data/0/a", F, None)]).is_err(), "a member before its data directory");
        assert!(check_all(&[(b"data/1", D, None)]).is_err(), "a directory where a file was backed up");
        assert!(check_all(&[(b"data/1", F, None)]).is_ok());
        assert!(check_all(&[(b"data/0", tar::EntryType::Char, None)]).is_err());
    }

    #[test]
    fn a_final_pass_may_name_again_only_what_it_retired_and_directories() {
        let roots = roots();
        let mut rules = Rules::new(Path::new("a.tar.gz"), &roots);
        for (name, kind) in [(&b"data/0"[..], D), (b"data/0/a", F), (b"data/0/d", D), (b"data/0/d/b", F)] {
            rules.check(name, kind, None).unwrap();
        }
        assert!(rules.clone_with(|r| r.begin_final_pass(&[b"data/0/x".to_vec()])).is_err(), "not in the archive");
        assert!(rules.clone_with(|r| r.begin_final_pass(&[b"data/0/d".to_vec()])).is_err(), "its child stays");
        rules.begin_final_pass(&[b"data/0/a".to_vec()]).unwrap();
        rules.check(b"data/0/a", F, None).unwrap();
        assert!(rules.check(b"data/0/d", D, None).unwrap().again);
        assert!(rules.check(b"data/0/d/b", F, None).is_err(), "not retired: still a duplicate");
        assert!(rules.begin_final_pass(&[]).is_err(), "only one final pass");
    }

    impl Rules<'_> {
        fn clone_with(&self, f: impl FnOnce(&mut Rules<'_>) -> Result<()>) -> Result<()> {
            let mut copy =
                Rules { archive: self.archive, roots: self.roots, seen: self.seen.clone(), final_pass: false };
            f(&mut copy)
        }
    }

    #[test]
    fn hard_links_name_an_earlier_file_of_the_same_data_path() {
        use tar::EntryType::Link as H;
        let ok = check_all(&[(b"data/0", D, None), (b"data/0/a", F, None), (b"data/0/b", H, Some(b"data/0/a"))]);
        assert_eq!(ok.unwrap()[2].link.as_deref(), Some(&b"data/0/a"[..]));
        for bad in [
            vec![(&b"data/0"[..], D, None), (b"data/0/b", H, Some(&b"data/0/a"[..])), (b"data/0/a", F, None)],
            vec![(b"data/0", D, None), (b"data/0/d", D, None), (b"data/0/b", H, Some(b"data/0/d"))],
            vec![(b"data/0", D, None), (b"data/0/b", H, Some(b"/etc/shadow"))],
            vec![(b"data/1", F, None), (b"data/0", D, None), (b"data/0/b", H, Some(b"data/1"))],
        ] {
            assert!(check_all(&bad).is_err(), "{bad:?}");
        }
    }
}
