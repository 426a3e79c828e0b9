//! Restore gives back exactly what was there: names as bytes, symlinks,
//! hard links, sparse files, owners, modes and times, checked on a full
//! listing, by hand and as a property over random trees.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use sha2::{Digest, Sha256};
use upgraderd::testing::backup::{self, Destination, Reason};

/// One entry of a listing: everything restore must give back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    kind: &'static str,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: i64,
    size: u64,
    sha256: String,
    link: Vec<u8>,
    /// The first name (bytewise) of the entry's inode, for files with several names.
    inode_group: Vec<u8>,
}

/// Every entry below `root` (and `root` itself, as the empty name), names as bytes.
pub fn listing(root: &Path) -> BTreeMap<Vec<u8>, Listed> {
    fn walk(root: &Path, relative: &[u8], out: &mut Vec<(Vec<u8>, fs::Metadata)>) {
        let path = if relative.is_empty() { root.to_path_buf() } else { root.join(OsStr::from_bytes(relative)) };
        let meta = fs::symlink_metadata(&path).unwrap();
        let is_dir = meta.is_dir();
        out.push((relative.to_vec(), meta));
        if is_dir {
            for entry in fs::read_dir(&path).unwrap() {
                let name = entry.unwrap().file_name();
                let mut child = relative.to_vec();
                if !child.is_empty() {
                    child.push(b'/');
                }
                child.extend_from_slice(name.as_bytes());
                walk(root, &child, out);
            }
        }
    }
    let mut entries = Vec::new();
    walk(root, b"", &mut entries);
    let mut first_name: BTreeMap<(u64, u64), Vec<u8>> = BTreeMap::new();
    for (name, meta) in &entries {
        if meta.is_file() {
            let first = first_name.entry((meta.dev(), meta.ino())).or_insert_with(|| name.clone());
            *first = first.clone().min(name.clone());
        }
    }
    entries
        .into_iter()
        .map(|(name, meta)| {
            let path = root.join(OsStr::from_bytes(&name));
            let (kind, sha256, link) = if meta.file_type().is_symlink() {
                ("symlink", String::new(), fs::read_link(&path).unwrap().as_os_str().as_bytes().to_vec())
            } else if meta.is_dir() {
                ("dir", String::new(), Vec::new())
            } else {
                ("file", format!("{:x}", Sha256::digest(fs::read(&path).unwrap())), Vec::new())
            };
            let inode_group = if meta.is_file() { first_name[&(meta.dev(), meta.ino())].clone() } else { Vec::new() };
            let size = if meta.is_dir() { 0 } else { meta.len() };
            let listed = Listed {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                mtime: meta.mtime(),
                size,
                sha256,
                link,
                inode_group,
            };
            (name, listed)
        })
        .collect()
}

fn back_up(data: &Path, backups: &Path) -> PathBuf {
    let created = backup::create(&[data.to_path_buf()], backups, Reason::default(), &mut |_| {}).unwrap();
    assert!(created.warnings.is_empty(), "{:?}", created.warnings);
    backup::verify(&created.path).unwrap();
    created.path
}

fn restore_into(archive: &Path, target: &Path) {
    backup::restore(archive, &Destination::Into(target.to_path_buf()), &mut |_| {}).unwrap();
}

fn path_of(root: &Path, name: &[u8]) -> PathBuf {
    root.join(OsStr::from_bytes(name))
}

#[test]
fn names_that_differ_only_in_invalid_utf8_bytes_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(path_of(&data, b"d\xe9j\xe0")).unwrap();
    fs::write(path_of(&data, b"a\xff"), "ff").unwrap();
    fs::write(path_of(&data, b"a\xfe"), "fe").unwrap();
    fs::write(path_of(&data, b"a\xef\xbf\xbd"), "the replacement character itself").unwrap();
    fs::write(path_of(&data, b"d\xe9j\xe0/f\x80"), "nested").unwrap();
    symlink(OsStr::from_bytes(b"a\xff"), path_of(&data, b"l\xc3")).unwrap();
    let before = listing(&data);
    let archive = back_up(&data, &dir.path().join("backups"));

    let mut manifest = String::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&archive).unwrap()));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        if entry.path_bytes().as_ref() == b"manifest.json" {
            entry.read_to_string(&mut manifest).unwrap();
        }
    }
    assert!(manifest.contains("\"pathHex\": \"646174612f302f61ff\""), "{manifest}");

    let elsewhere = dir.path().join("elsewhere");
    restore_into(&archive, &elsewhere);
    assert_eq!(
        listing(&elsewhere).into_iter().skip(1).collect::<Vec<_>>(),
        before.clone().into_iter().skip(1).collect::<Vec<_>>()
    );
    fs::remove_file(path_of(&data, b"a\xff")).unwrap();
    fs::write(path_of(&data, b"a\xfe"), "changed").unwrap();
    backup::restore(&archive, &Destination::Original, &mut |_| {}).unwrap();
    assert_eq!(listing(&data), before);
}

#[test]
fn sparse_files_stay_sparse_and_hard_links_stay_linked() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    let sparse = fs::File::create(data.join("disk.img")).unwrap();
    sparse.set_len(32 << 20).unwrap();
    sparse.write_all_at(b"boot sector", 0).unwrap();
    sparse.write_all_at(&[0x5a; 100_000], 12 << 20).unwrap();
    sparse.write_all_at(b"near the end, then a hole", 24 << 20).unwrap();
    drop(sparse);
    fs::write(data.join("a"), "shared content").unwrap();
    fs::hard_link(data.join("a"), data.join("sub/b")).unwrap();
    fs::hard_link(data.join("a"), data.join("c")).unwrap();
    fs::write(data.join("alone"), "shared content").unwrap();
    let before = listing(&data);
    let blocks_before = fs::metadata(data.join("disk.img")).unwrap().blocks();

    let archive = back_up(&data, &dir.path().join("backups"));
    assert!(fs::metadata(&archive).unwrap().len() < 1 << 20, "holes were stored");
    let elsewhere = dir.path().join("elsewhere");
    restore_into(&archive, &elsewhere);

    let after = listing(&elsewhere);
    assert_eq!(after.into_iter().skip(1).collect::<Vec<_>>(), before.clone().into_iter().skip(1).collect::<Vec<_>>());
    let blocks_after = fs::metadata(elsewhere.join("disk.img")).unwrap().blocks();
    assert!(blocks_after <= blocks_before + 64, "restored {blocks_after} blocks, the original had {blocks_before}");
    let inode = |p: &Path| fs::metadata(p).unwrap().ino();
    assert_eq!(inode(&elsewhere.join("a")), inode(&elsewhere.join("sub/b")));
    assert_eq!(inode(&elsewhere.join("a")), inode(&elsewhere.join("c")));
    assert_ne!(inode(&elsewhere.join("a")), inode(&elsewhere.join("alone")));
    assert_eq!(fs::metadata(elsewhere.join("a")).unwrap().nlink(), 3);

    // GNU tar reads the archive: the sparse member, the hard links, the names.
    let listed = Command::new("tar").arg("tvzf").arg(&archive).output().unwrap();
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains("data/0/disk.img"), "{text}");
    assert!(text.contains("data/0/sub/b link to data/0/a") || text.contains("data/0/c link to data/0/a"), "{text}");
}

/// A random tree: what to create, in order (parents before children).
#[derive(Debug, Clone)]
pub enum Node {
    Dir { name: Vec<u8>, mode: u32 },
    File { name: Vec<u8>, content: Vec<u8>, mode: u32, hole_before: Option<u32> },
    Symlink { name: Vec<u8>, target: Vec<u8> },
    HardLink { name: Vec<u8>, to: usize },
}

fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop::sample::select(vec![b'a', b'b', b'.', b'-', b' ', 0xff, 0xfe, 0xc3, 0xa9, 0x80]), 1..5)
        .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

pub fn owner() -> impl Strategy<Value = (u32, u32)> {
    prop::sample::select(vec![(0, 0), (1000, 1000), (65534, 65534), (12345, 0)])
}

pub fn node() -> impl Strategy<Value = Node> {
    let modes = prop::sample::select(vec![0o644, 0o600, 0o755, 0o400, 0o4755, 0o2750, 0o1777]);
    prop_oneof![
        (name_bytes(), prop::sample::select(vec![0o755, 0o700, 0o500, 0o2775]))
            .prop_map(|(name, mode)| Node::Dir { name, mode }),
        (name_bytes(), prop::collection::vec(any::<u8>(), 0..3000), modes, prop::option::of(1u32..8))
            .prop_map(|(name, content, mode, hole_before)| Node::File { name, content, mode, hole_before }),
        (name_bytes(), prop::collection::vec(prop::sample::select(vec![b'/', b'.', b'a', 0xff, b'x']), 1..12))
            .prop_map(|(name, target)| Node::Symlink { name, target }),
        (name_bytes(), any::<prop::sample::Index>())
            .prop_map(|(name, to)| Node::HardLink { name, to: to.index(1 << 16) }),
    ]
}

/// Creates the nodes below `data`: each in the most recent directory at its depth, skipping clashes.
pub fn build(data: &Path, nodes: &[(Node, usize, (u32, u32), i64)]) {
    fs::create_dir_all(data).unwrap();
    let mut dirs: Vec<PathBuf> = vec![data.to_path_buf()];
    let mut files: Vec<PathBuf> = Vec::new();
    let mut modes: Vec<(PathBuf, u32)> = Vec::new();
    let mut dir_times: Vec<(PathBuf, i64)> = vec![(data.to_path_buf(), 1_234_567_890)];
    for (node, depth, (uid, gid), mtime) in nodes {
        let parent = dirs[(*depth).min(dirs.len() - 1)].clone();
        let name = match node {
            Node::Dir { name, .. }
            | Node::File { name, .. }
            | Node::Symlink { name, .. }
            | Node::HardLink { name, .. } => name,
        };
        let path = path_of(&parent, name);
        if fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        match node {
            Node::Dir { mode, .. } => {
                fs::create_dir(&path).unwrap();
                modes.push((path.clone(), *mode));
                dir_times.push((path.clone(), *mtime));
                dirs.push(path.clone());
            }
            Node::File { content, mode, hole_before, .. } => {
                let file = fs::File::create(&path).unwrap();
                let offset = u64::from(hole_before.unwrap_or(0)) * 65536;
                file.write_all_at(content, offset).unwrap();
                file.set_len(offset + content.len() as u64 + u64::from(hole_before.is_some()) * 65536).unwrap();
                modes.push((path.clone(), *mode));
                files.push(path.clone());
            }
            Node::Symlink { target, .. } => symlink(OsStr::from_bytes(target), &path).unwrap(),
            Node::HardLink { to, .. } => {
                if files.is_empty() {
                    continue;
                }
                fs::hard_link(&files[to % files.len()], &path).unwrap();
            }
        }
        std::os::unix::fs::lchown(&path, Some(*uid), Some(*gid)).unwrap();
        if let Node::File { .. } = node {
            fs::File::open(&path).unwrap().set_modified(filetime(*mtime)).unwrap();
        }
    }
    // Modes last, deepest first, then the directories' times (creating children changed them).
    for (path, mode) in modes.iter().rev() {
        fs::set_permissions(path, fs::Permissions::from_mode(*mode)).unwrap();
    }
    for (dir, mtime) in dir_times.iter().rev() {
        fs::File::open(dir).unwrap().set_modified(filetime(*mtime)).unwrap();
    }
}

fn filetime(seconds: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds as u64)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_trees_round_trip_byte_identically(
        nodes in prop::collection::vec((node(), 0usize..4, owner(), 1_000_000_000i64..1_900_000_000), 1..24)
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        build(&data, &nodes);
        let before = listing(&data);
        let archive = back_up(&data, &dir.path().join("backups"));
        let target = dir.path().join("target");
        restore_into(&archive, &target);
        prop_assert_eq!(listing(&target), before.clone());
        backup::restore(&archive, &Destination::Original, &mut |_| {}).unwrap();
        prop_assert_eq!(listing(&data), before);
    }
}
