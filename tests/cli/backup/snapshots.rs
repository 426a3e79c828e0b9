//! Snapshots: what did not change is shared with the previous snapshot and
//! never read again; what changed, however it hides, is copied; each
//! snapshot verifies and restores by itself, also once the one it shared
//! with is pruned; an export is a plain `.tar.gz`; races and a full disk end
//! as they do for an archive. Filesystems with reflinks (XFS, btrfs in loop
//! files) clone instead of copying and give back the same bytes.

use std::fs;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rusqlite::Connection;
use upgraderd::testing::backup::{self, Destination, Form, Pause, Reason, Source};

use crate::common::tree;

/// Files and a SQLite database, left alone long enough that their times can be trusted.
fn data_in(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    fs::create_dir_all(data.join("photos/2024")).unwrap();
    for i in 0..40u32 {
        let bytes: Vec<u8> = (0..20_000u32).map(|n| (n.wrapping_mul(2654435761) ^ i) as u8).collect();
        fs::write(data.join(format!("photos/2024/img{i:03}.jpg")), bytes).unwrap();
    }
    fs::write(data.join("config.yml"), "port: 3001\n").unwrap();
    symlink("config.yml", data.join("current.yml")).unwrap();
    fs::hard_link(data.join("photos/2024/img000.jpg"), data.join("cover.jpg")).unwrap();
    let db = Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);").unwrap();
    drop(db);
    settle();
    data
}

/// Past the second within which a change is never trusted to show in a file's times.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn snapshot(data: &Path, backups: &Path) -> backup::Created {
    backup::create_as(&[data.to_path_buf()], backups, Form::Snapshot, Reason::default(), &mut |_| {}).unwrap()
}

/// How the snapshot stored its one data path's files.
fn stored(created: &backup::Created) -> serde_json::Value {
    let meta = serde_json::to_value(&created.meta).unwrap();
    meta["roots"][0]["stored"].clone()
}

fn restored(created: &backup::Created, into: &Path) -> std::collections::BTreeMap<String, String> {
    backup::restore(&created.path, &Destination::Into(into.to_path_buf()), &mut |_| {}).unwrap();
    let mut files = tree(into);
    files.remove("app.db"); // Compared by its rows: a database snapshot is not byte for byte.
    files
}

fn rows(db: &Path) -> i64 {
    Connection::open(db).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap()
}

#[test]
fn a_second_snapshot_reads_only_what_changed_and_restores_whole_after_the_first_is_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let first = snapshot(&data, &backups);
    assert_eq!(stored(&first)["shared"], 0, "nothing to share with yet: {}", stored(&first));

    fs::write(data.join("photos/2024/img007.jpg"), b"edited").unwrap();
    fs::write(data.join("photos/2024/new.jpg"), b"new photo").unwrap();
    fs::remove_file(data.join("photos/2024/img008.jpg")).unwrap();
    Connection::open(data.join("app.db")).unwrap().execute("INSERT INTO t VALUES (4)", []).unwrap();
    settle();
    let mut expected = tree(&data);
    expected.remove("app.db");
    let second = snapshot(&data, &backups);

    let how = stored(&second);
    // Of 39 photos left, one was edited; the config did not change; a photo
    // is new; the database is always snapshotted anew.
    assert_eq!(how["shared"], 39, "{how}");
    assert_eq!(how["copied"].as_u64().unwrap() + how["cloned"].as_u64().unwrap(), 3, "{how}");
    let shared_object = second.path.join("objects");
    let linked = walk(&shared_object).into_iter().filter(|f| fs::metadata(f).unwrap().nlink() > 1).count();
    assert!(linked >= 37, "unchanged contents are hard links to the first snapshot's: {linked}");

    // The first goes; the second holds all of its data by itself.
    let deleted = backup::prune_keeping(&backups, 1).unwrap();
    assert_eq!(deleted, vec![first.path.clone()]);
    backup::verify(&second.path).unwrap();
    let into = dir.path().join("restored");
    assert_eq!(restored(&second, &into), expected);
    assert_eq!(rows(&into.join("app.db")), 4);
    assert_eq!(
        fs::metadata(into.join("cover.jpg")).unwrap().ino(),
        fs::metadata(into.join("photos/2024/img000.jpg")).unwrap().ino()
    );
}

#[test]
fn a_file_changed_in_place_with_its_size_and_time_put_back_is_still_copied() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let victim = data.join("photos/2024/img003.jpg");
    let before = fs::metadata(&victim).unwrap();
    snapshot(&data, &backups);

    // Same size, same modification time (as `touch -d` would put it back): only the change time tells.
    let mut bytes = fs::read(&victim).unwrap();
    bytes[0] ^= 0xff;
    fs::write(&victim, &bytes).unwrap();
    fs::File::options().write(true).open(&victim).unwrap().set_modified(before.modified().unwrap()).unwrap();
    assert_eq!(fs::metadata(&victim).unwrap().len(), before.len());
    assert_eq!(fs::metadata(&victim).unwrap().modified().unwrap(), before.modified().unwrap());
    settle();
    let second = snapshot(&data, &backups);
    let into = dir.path().join("restored");
    restored(&second, &into);
    assert_eq!(fs::read(into.join("photos/2024/img003.jpg")).unwrap(), bytes, "the edit is in the snapshot");

    // The same file replaced by another inode with the same size and times is copied too.
    let tmp = data.join("photos/2024/img004.tmp");
    let replaced = data.join("photos/2024/img004.jpg");
    let old = fs::metadata(&replaced).unwrap();
    let mut other = fs::read(&replaced).unwrap();
    other.reverse();
    fs::write(&tmp, &other).unwrap();
    fs::File::options().write(true).open(&tmp).unwrap().set_modified(old.modified().unwrap()).unwrap();
    fs::rename(&tmp, &replaced).unwrap();
    settle();
    let third = snapshot(&data, &backups);
    let into = dir.path().join("restored-3");
    restored(&third, &into);
    assert_eq!(fs::read(into.join("photos/2024/img004.jpg")).unwrap(), other);
}

#[test]
fn a_file_swapped_for_a_link_to_a_host_file_during_a_snapshot_is_stored_as_the_link() {
    // A file copied whole, and one stored in pieces.
    for name in ["config.yml", "disk.img"] {
        let dir = tempfile::tempdir().unwrap();
        let data = large_data_in(dir.path());
        let secret = dir.path().join("host-shadow");
        fs::write(&secret, "HOST-SECRET").unwrap();
        let backups = dir.path().join("backups");
        let target = data.join(name);
        let created = backup::create_paused(
            std::slice::from_ref(&data),
            &backups,
            Form::Snapshot,
            Reason::default(),
            &mut |_| {},
            &mut |pause| {
                if let Pause::Copying(member) = pause {
                    if member.ends_with(format!("/{name}").as_bytes()) {
                        fs::remove_file(&target).unwrap();
                        symlink(&secret, &target).unwrap();
                    }
                }
            },
        )
        .unwrap();
        assert!(created.warnings.iter().any(|w| w.contains("replaced by a symlink")), "{name}: {:?}", created.warnings);
        for object in walk(&created.path.join("objects")) {
            assert_ne!(fs::read(&object).unwrap(), b"HOST-SECRET", "{name}: the host file was never read");
        }
        let into = dir.path().join("restored");
        backup::restore(&created.path, &Destination::Into(into.clone()), &mut |_| {}).unwrap();
        assert_eq!(fs::read_link(into.join(name)).unwrap(), secret, "{name}");
    }
}

#[test]
fn a_disk_that_fills_during_a_snapshot_leaves_nothing_and_says_so() {
    if !crate::common::can_mount() {
        eprintln!("SKIP: cannot mount here; a full disk during a snapshot not exercised");
        return;
    }
    // A file copied whole, and one stored in pieces, of which several fit.
    for (noise, disk) in [(3 << 20, "1m"), (12 << 20, "6m")] {
        let dir = tempfile::tempdir().unwrap();
        let data = data_in(dir.path());
        fs::write(data.join("noise.bin"), crate::common::incompressible(noise)).unwrap();
        let full = crate::common::Mounted::tmpfs(&dir.path().join("small-disk"), disk);
        let err =
            backup::create_as(std::slice::from_ref(&data), &full.0, Form::Snapshot, Reason::default(), &mut |_| {})
                .map(|c| c.path)
                .unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("is full"), "{noise} bytes: {err}");
        let left: Vec<_> = fs::read_dir(&full.0).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert!(left.is_empty(), "{noise} bytes: left behind: {left:?}");
    }
}

#[test]
fn the_final_pass_of_a_snapshot_stores_only_what_changed_and_keeps_only_the_end_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let first =
        backup::begin(&[Source::path(&data)], &backups, Form::Snapshot, Reason::default(), &mut |_| {}).unwrap();
    // While the services stop: one photo rewritten, one removed.
    fs::write(data.join("photos/2024/img010.jpg"), b"rewritten while stopping").unwrap();
    fs::remove_file(data.join("photos/2024/img011.jpg")).unwrap();
    let mut expected = tree(&data);
    expected.remove("app.db");
    let created = first.finish_after_final_pass(&mut |_| {}).unwrap();

    assert_eq!(held(&created.path), referenced(&created.path), "the first pass's copies of what changed are not kept");
    let into = dir.path().join("restored");
    assert_eq!(restored(&created, &into), expected, "the end state");
}

#[test]
fn an_export_is_a_plain_tar_gz_that_tar_unpacks_and_upgraderd_restores() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    snapshot(&data, &backups);
    fs::write(data.join("config.yml"), "port: 4000\n").unwrap();
    settle();
    let second = snapshot(&data, &backups);
    let out = dir.path().join("offsite.tar.gz");
    let verified = backup::export(&second.path, &out, &mut |_| {}).unwrap();
    assert_eq!(verified.files, backup::verify(&second.path).unwrap().files, "every file of the snapshot");
    assert!(backup::export(&second.path, &out, &mut |_| {}).is_err(), "an existing file is never overwritten");

    let unpacked = dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    let status = Command::new("tar").arg("xzf").arg(&out).arg("-C").arg(&unpacked).status().unwrap();
    assert!(status.success());
    assert_eq!(fs::read_to_string(unpacked.join("data/0/config.yml")).unwrap(), "port: 4000\n");
    assert_eq!(fs::read_link(unpacked.join("data/0/current.yml")).unwrap(), Path::new("config.yml"));

    let mut expected = tree(&data);
    expected.remove("app.db");
    let into = dir.path().join("restored");
    backup::restore(&out, &Destination::Into(into.clone()), &mut |_| {}).unwrap();
    let mut got = tree(&into);
    got.remove("app.db");
    assert_eq!(got, expected);
    assert_eq!(rows(&into.join("app.db")), 3);
}

#[test]
fn an_export_named_tar_zst_is_zstd_that_tar_unpacks_and_upgraderd_restores_from_either_kind() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let snapshot = snapshot(&data, &backups);
    let archive =
        backup::create_as(std::slice::from_ref(&data), &backups, Form::Archive, Reason::default(), &mut |_| {})
            .unwrap();
    let mut expected = tree(&data);
    expected.remove("app.db");
    for (kind, backup) in [("snapshot", &snapshot.path), ("archive", &archive.path)] {
        let out = dir.path().join(format!("{kind}.tar.zst"));
        let verified = backup::export(backup, &out, &mut |_| {}).unwrap();
        assert_eq!(verified.files, backup::verify(backup).unwrap().files, "{kind}: every file");
        let start = fs::read(&out).unwrap();
        assert_eq!(&start[..4], &[0x28, 0xb5, 0x2f, 0xfd], "{kind}: a zstd frame");

        let unpacked = dir.path().join(format!("{kind}-unpacked"));
        fs::create_dir_all(&unpacked).unwrap();
        let status = Command::new("tar").arg("--zstd").arg("-xf").arg(&out).arg("-C").arg(&unpacked).status().unwrap();
        assert!(status.success(), "{kind}: tar --zstd -xf");
        assert_eq!(fs::read_to_string(unpacked.join("data/0/config.yml")).unwrap(), "port: 3001\n");

        let into = dir.path().join(format!("{kind}-restored"));
        backup::restore(&out, &Destination::Into(into.clone()), &mut |_| {}).unwrap();
        let mut got = tree(&into);
        got.remove("app.db");
        assert_eq!(got, expected, "{kind}");
        assert_eq!(rows(&into.join("app.db")), 3, "{kind}");
    }

    // A damaged zstd export fails verify naming the file; so does a file that is no backup at all.
    let damaged = dir.path().join("damaged.tar.zst");
    let mut bytes = fs::read(dir.path().join("snapshot.tar.zst")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&damaged, bytes).unwrap();
    let err = format!("{:#}", backup::verify(&damaged).unwrap_err());
    assert!(err.contains("damaged.tar.zst"), "{err}");
    let junk = dir.path().join("junk.tar.zst");
    fs::write(&junk, b"not a backup at all").unwrap();
    let err = format!("{:#}", backup::verify(&junk).unwrap_err());
    assert!(err.contains("junk.tar.zst"), "{err}");
}

/// A large database and a large file with holes, next to the usual data.
fn large_data_in(dir: &Path) -> PathBuf {
    let data = data_in(dir);
    let db = Connection::open(data.join("big.db")).unwrap();
    db.execute_batch("CREATE TABLE t(x); WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) INSERT INTO t SELECT randomblob(1000) FROM n;").unwrap();
    drop(db);
    let image = fs::File::create(data.join("disk.img")).unwrap();
    for (at, len) in [(0u64, 3 << 20), (9 << 20, 100_000), ((20 << 20) - 10, 10)] {
        let bytes: Vec<u8> = (0..len as u32).map(|n| (n.wrapping_mul(2654435761) >> 7) as u8 | 1).collect();
        image.write_all_at(&bytes, at).unwrap();
    }
    image.set_len(20 << 20).unwrap();
    settle();
    data
}

/// The bytes of a snapshot's objects that no other snapshot shares.
fn alone(snapshot: &Path) -> u64 {
    walk(&snapshot.join("objects"))
        .iter()
        .map(|f| fs::metadata(f).unwrap())
        .filter(|m| m.nlink() == 1)
        .map(|m| m.len())
        .sum()
}

#[test]
fn a_large_database_and_a_large_file_are_stored_in_pieces_and_a_change_costs_the_pieces_it_touched() {
    let dir = tempfile::tempdir().unwrap();
    let data = large_data_in(dir.path());
    let backups = dir.path().join("backups");
    let first = snapshot(&data, &backups);
    let how = stored(&first);
    // The database always; the image unless the filesystem cloned it.
    let clones = how["cloned"].as_u64().unwrap() > 0;
    assert_eq!(how["pieced"], if clones { 1 } else { 2 }, "{how}");
    assert!(how["piecedNewBytes"].as_u64().unwrap() > 10 << 20, "all of it is new: {how}");

    // A write inside the image, and rows added to the database.
    fs::OpenOptions::new().write(true).open(data.join("disk.img")).unwrap().write_all_at(b"changed", 5 << 20).unwrap();
    Connection::open(data.join("big.db"))
        .unwrap()
        .execute_batch("INSERT INTO t SELECT randomblob(1000) FROM t LIMIT 10;")
        .unwrap();
    settle();
    let second = snapshot(&data, &backups);
    let how = stored(&second);
    let size = fs::metadata(data.join("big.db")).unwrap().len();
    assert!(size > 10 << 20, "a database of {size} bytes");
    // The image's changed piece and the database's changed pages: a few MiB, not 32.
    let new = how["piecedNewBytes"].as_u64().unwrap();
    assert!((1 << 20..=6 << 20).contains(&new), "{how}");
    if !clones {
        assert!(alone(&second.path) <= 7 << 20, "the second snapshot holds {} bytes alone", alone(&second.path));
    }

    // The first goes; the second holds all of its pieces by itself, and gives the same bytes back.
    backup::prune_keeping(&backups, 1).unwrap();
    backup::verify(&second.path).unwrap();
    let mut expected = tree(&data);
    expected.remove("big.db");
    expected.remove("app.db");
    let into = dir.path().join("restored");
    let mut got = restored(&second, &into);
    got.remove("big.db");
    assert_eq!(got, expected);
    let count = |db: &Path| {
        Connection::open(db).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0)).unwrap()
    };
    assert_eq!(count(&into.join("big.db")), 12010);
    let image = fs::metadata(into.join("disk.img")).unwrap();
    assert!(image.blocks() * 512 < image.len(), "the image's holes are holes again");

    // Exported, it is a plain archive of the same bytes.
    let out = dir.path().join("offsite.tar.gz");
    backup::export(&second.path, &out, &mut |_| {}).unwrap();
    let unpacked = dir.path().join("unpacked");
    fs::create_dir_all(&unpacked).unwrap();
    assert!(Command::new("tar").arg("xzf").arg(&out).arg("-C").arg(&unpacked).status().unwrap().success());
    assert!(fs::read(unpacked.join("data/0/disk.img")).unwrap() == fs::read(data.join("disk.img")).unwrap());
}

/// The names of the objects a snapshot holds.
fn held(snapshot: &Path) -> std::collections::BTreeSet<String> {
    walk(&snapshot.join("objects")).iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
}

/// The objects a snapshot's manifest names: contents, lists of pieces, and the pieces they list.
fn referenced(snapshot: &Path) -> std::collections::BTreeSet<String> {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(snapshot.join("manifest.json")).unwrap()).unwrap();
    let mut named = std::collections::BTreeSet::new();
    for sha in manifest["entries"].as_array().unwrap().iter().filter_map(|e| e["sha256"].as_str()) {
        let list = snapshot.join("objects").join(&sha[..2]).join(format!("{sha}.pieces"));
        match fs::read_to_string(&list) {
            Ok(text) => {
                named.insert(format!("{sha}.pieces"));
                named.extend(text.lines().skip(3).filter(|l| *l != "-").map(str::to_string));
            }
            Err(_) => {
                named.insert(sha.to_string());
            }
        }
    }
    named
}

#[test]
fn the_final_pass_stores_the_changed_pieces_and_keeps_only_those_of_the_end_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = large_data_in(dir.path());
    let backups = dir.path().join("backups");
    let first =
        backup::begin(&[Source::path(&data)], &backups, Form::Snapshot, Reason::default(), &mut |_| {}).unwrap();
    // While the services stop: rows deleted, the image written.
    Connection::open(data.join("big.db")).unwrap().execute_batch("DELETE FROM t WHERE rowid % 97 = 0;").unwrap();
    fs::OpenOptions::new().write(true).open(data.join("disk.img")).unwrap().write_all_at(b"stopping", 1 << 20).unwrap();
    let mut expected = tree(&data);
    expected.remove("app.db");
    expected.remove("big.db");
    let created = first.finish_after_final_pass(&mut |_| {}).unwrap();

    assert_eq!(
        held(&created.path),
        referenced(&created.path),
        "the first pass's lists and pieces of what changed are not kept"
    );
    let how = stored(&created);
    let database = fs::metadata(data.join("big.db")).unwrap().len();
    assert!(how["piecedNewBytes"].as_u64().unwrap() >= database, "a first snapshot: all of the database is new: {how}");

    backup::verify(&created.path).unwrap();
    let into = dir.path().join("restored");
    let mut got = restored(&created, &into);
    got.remove("big.db");
    assert_eq!(got, expected, "the end state");
    let count: i64 =
        Connection::open(into.join("big.db")).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(count, 12000 - 12000 / 97, "the database as the final pass read it");
}

#[test]
fn a_damaged_piece_fails_verify_and_restore_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = large_data_in(dir.path());
    let created = snapshot(&data, &dir.path().join("backups"));
    let list = object_of(&created.path, "data/0/big.db").with_extension("pieces");
    let pieces = fs::read_to_string(&list).unwrap();
    let piece = pieces.lines().nth(5).unwrap();
    let object = created.path.join("objects").join(&piece[..2]).join(piece);
    let len = fs::metadata(&object).unwrap().len() as usize;

    // The same length, other bytes: the whole content's sha256 tells.
    fs::set_permissions(&object, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&object, vec![0x55u8; len]).unwrap();
    verify_and_restore_refuse(&created, "big.db", dir.path());

    // Gone, or its list named by a path: refused, naming the member.
    fs::remove_file(&object).unwrap();
    let err = format!("{:#}", backup::verify(&created.path).unwrap_err());
    assert!(err.contains("big.db") && err.contains(piece) && err.contains("cannot be opened"), "{err}");
    // A FIFO in its place is refused, not waited on.
    assert!(Command::new("mkfifo").arg(&object).status().unwrap().success());
    let err = format!("{:#}", backup::verify(&created.path).unwrap_err());
    assert!(err.contains("big.db") && err.contains("not a regular file"), "{err}");
    fs::set_permissions(&list, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&list, pieces.replacen(piece, "../../../../etc/passwd", 1)).unwrap();
    let err = format!("{:#}", backup::verify(&created.path).unwrap_err());
    assert!(err.contains("big.db") && err.contains("neither a sha256"), "{err}");
}

#[test]
fn a_damaged_object_fails_verify_and_restore_naming_the_member() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let created = snapshot(&data, &dir.path().join("backups"));
    fs::write(object_of(&created.path, "data/0/config.yml"), "port: 6666\n").unwrap();
    verify_and_restore_refuse(&created, "config.yml", dir.path());
}

/// `verify` and `restore` of a damaged snapshot both fail naming `file`, and the restore leaves nothing.
fn verify_and_restore_refuse(created: &backup::Created, file: &str, dir: &Path) {
    let err = format!("{:#}", backup::verify(&created.path).unwrap_err());
    assert!(err.contains(file) && err.contains("does not match"), "{err}");
    let into = dir.join("restored");
    let err =
        format!("{:#}", backup::restore(&created.path, &Destination::Into(into.clone()), &mut |_| {}).unwrap_err());
    assert!(err.contains(file), "{err}");
    assert!(!into.join("config.yml").exists(), "nothing restored from a damaged snapshot");
}

#[test]
fn a_reflink_filesystem_clones_and_gives_back_the_same_bytes() {
    for (fs_type, mkfs) in [("xfs", &["mkfs.xfs", "-q", "-m", "reflink=1"][..]), ("btrfs", &["mkfs.btrfs", "-q"][..])] {
        let Some(disk) = LoopDisk::make(fs_type, mkfs) else { continue };
        let data = data_in(&disk.mount);
        // The same content under several names: hashed at once on several threads, stored once.
        for copy in 0..6 {
            fs::write(data.join(format!("photos/same-{copy}.jpg")), vec![7u8; 300_000]).unwrap();
        }
        // Clones are hashed past the page cache in aligned reads: a file with
        // holes between data off that alignment, and one of several reads.
        let sparse = fs::File::create(data.join("sparse.img")).unwrap();
        for (at, bytes) in [(1_000u64, 5_000usize), (3 << 20, 70_000), ((8 << 20) + 512, 100)] {
            sparse.write_all_at(&vec![at as u8 | 1; bytes], at).unwrap();
        }
        sparse.set_len((12 << 20) + 77).unwrap();
        let large: Vec<u8> = (0..(3 << 20) + 12_345u32).map(|n| (n % 251) as u8).collect();
        fs::write(data.join("large.bin"), large).unwrap();
        settle();
        let backups = disk.mount.join("backups");
        let created = snapshot(&data, &backups);
        let how = stored(&created);
        assert!(how["cloned"].as_u64().unwrap() >= 48, "{fs_type}: the photos are cloned: {how}");
        let verified = backup::verify(&created.path).unwrap();
        assert!(verified.files >= 49, "{fs_type}: {} files verified", verified.files);
        let objects = walk(&created.path.join("objects"));
        assert!(objects.iter().all(|o| !o.to_string_lossy().contains("incoming-")), "{fs_type}: {objects:?}");
        assert_eq!(
            objects.len(),
            44 + 1,
            "{fs_type}: 40 photos, the config, one content of six, two more, the database"
        );

        // A cloned content's sha256 came later, from a worker: the next snapshot still shares by it.
        let second = snapshot(&data, &backups);
        assert_eq!(stored(&second)["shared"], 49, "{fs_type}: {}", stored(&second));
        backup::prune_keeping(&backups, 1).unwrap();
        let mut expected = tree(&data);
        expected.remove("app.db");
        let into = disk.mount.join("restored");
        assert_eq!(restored(&second, &into), expected, "{fs_type}");
        assert_eq!(rows(&into.join("app.db")), 3, "{fs_type}");
    }
}

/// A filesystem in a loop file, mounted for one test; `None` (and a line saying so) where it cannot be.
struct LoopDisk {
    mount: PathBuf,
    _dir: tempfile::TempDir,
}

impl LoopDisk {
    fn make(fs_type: &str, mkfs: &[&str]) -> Option<LoopDisk> {
        if !crate::common::can_mount() {
            eprintln!("SKIP: cannot mount here; {fs_type} reflinks not exercised");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        fs::File::create(&image).unwrap().set_len(400 << 20).unwrap();
        let made = Command::new(mkfs[0]).args(&mkfs[1..]).arg(&image).status();
        if !made.is_ok_and(|s| s.success()) {
            eprintln!(
                "SKIP: {} is missing or failed (apt-get install xfsprogs btrfs-progs); {fs_type} not exercised",
                mkfs[0]
            );
            return None;
        }
        let mount = dir.path().join("mnt");
        fs::create_dir_all(&mount).unwrap();
        let mounted = Command::new("mount").args(["-o", "loop"]).arg(&image).arg(&mount).status();
        if !mounted.is_ok_and(|s| s.success()) {
            eprintln!("SKIP: cannot loop-mount {fs_type} here");
            return None;
        }
        Some(LoopDisk { mount, _dir: dir })
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mount).status();
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_file_written_through_a_shared_map_is_read_again_though_its_times_lag() {
    if !crate::common::can_mount() {
        eprintln!("SKIP: cannot mount here; writes through a map with the backups on another filesystem not exercised");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    if on_tmpfs(dir.path()) {
        eprintln!("SKIP: the temporary directory is on tmpfs, which never writes back: a map's writes keep the times");
        return;
    }
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    let db = data.join("store.mdb");
    fs::write(&db, vec![0u8; 4096]).unwrap();
    // The backups elsewhere: their sync does not write back the data's pages.
    let backups = crate::common::Mounted::tmpfs(&dir.path().join("backups"), "16m");
    let file = fs::OpenOptions::new().read(true).write(true).open(&db).unwrap();
    // SAFETY: a shared map of 4096 bytes of a file of that size, unmapped below.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED);
    let page = map.cast::<u8>();
    // SAFETY: within the 4096 mapped bytes.
    unsafe { std::ptr::write_bytes(page, b'A', 4096) };
    settle();
    snapshot(&data, &backups.0);
    // The same page written again: its times change only if the page was written back in between.
    unsafe { std::ptr::write_bytes(page, b'B', 4096) };
    settle();
    let second = snapshot(&data, &backups.0);
    // SAFETY: the map made above.
    unsafe { libc::munmap(map, 4096) };
    let into = dir.path().join("restored");
    backup::restore(&second.path, &Destination::Into(into.clone()), &mut |_| {}).unwrap();
    let got = fs::read(into.join("store.mdb")).unwrap();
    assert!(
        got.len() == 4096 && got.iter().all(|b| *b == b'B'),
        "the second write is in the snapshot: {:?}…",
        &got[..8]
    );
}

fn on_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed statfs to fill.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == TMPFS_MAGIC }
}

/// The manifest entry of `member` and the path of its object.
fn object_of(snapshot: &Path, member: &str) -> PathBuf {
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(snapshot.join("manifest.json")).unwrap()).unwrap();
    let entry = manifest["entries"].as_array().unwrap().iter().find(|e| e["path"] == member).unwrap();
    let sha = entry["sha256"].as_str().unwrap();
    snapshot.join("objects").join(&sha[..2]).join(sha)
}

#[test]
fn objects_grown_swapped_for_links_or_named_by_a_path_are_refused_and_never_shared() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let first = snapshot(&data, &backups);

    // Grown: verify applies restore's rule (the size the manifest records).
    let grown = object_of(&first.path, "data/0/photos/2024/img001.jpg");
    fs::set_permissions(&grown, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    fs::OpenOptions::new().append(true).open(&grown).unwrap().write_all_at(b"extra", 20_000).unwrap();
    let err = format!("{:#}", backup::verify(&first.path).unwrap_err());
    assert!(err.contains("img001.jpg") && err.contains("bytes, the manifest says 20000"), "{err}");
    // The next snapshot reads that file again instead of sharing the damaged object.
    let second = snapshot(&data, &backups);
    assert_eq!(
        stored(&second)["copied"].as_u64().unwrap() + stored(&second)["cloned"].as_u64().unwrap(),
        2,
        "the photo and the database: {}",
        stored(&second)
    );
    backup::verify(&second.path).unwrap();

    // Swapped for a link to a file outside: never followed.
    let outside = dir.path().join("outside");
    fs::write(&outside, "not the photo").unwrap();
    let linked = object_of(&second.path, "data/0/photos/2024/img002.jpg");
    let copy = dir.path().join("copy.snap");
    Command::new("cp").arg("-a").arg(&second.path).arg(&copy).status().unwrap();
    let linked_copy = copy.join(linked.strip_prefix(&second.path).unwrap());
    fs::remove_file(&linked_copy).unwrap();
    symlink(&outside, &linked_copy).unwrap();
    let err = format!("{:#}", backup::verify(&copy).unwrap_err());
    assert!(err.contains("img002.jpg"), "{err}");

    // Named by a path instead of a sha256: refused before anything is opened.
    let manifest = copy.join("manifest.json");
    let text = fs::read_to_string(&manifest).unwrap();
    let sha = linked.file_name().unwrap().to_string_lossy().into_owned();
    fs::write(&manifest, text.replace(&sha, "../../outside")).unwrap();
    let into = dir.path().join("restored");
    let err = format!("{:#}", backup::restore(&copy, &Destination::Into(into.clone()), &mut |_| {}).unwrap_err());
    assert!(err.contains("is not a sha256"), "{err}");
    assert!(!into.join("photos").exists(), "nothing restored");
}

#[test]
fn prune_leaves_an_unreadable_snapshot_alone_and_keeps_a_good_one_and_export_keeps_what_is_not_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_in(dir.path());
    let backups = dir.path().join("backups");
    let good = snapshot(&data, &backups);
    let broken = snapshot(&data, &backups);
    fs::remove_file(broken.path.join("manifest.json")).unwrap();
    // Named like a snapshot, but a file: not a backup at all.
    fs::write(backups.join("upgrade-backup-20200101_000000-abcdef.snap"), "x").unwrap();
    let deleted = backup::prune_keeping(&backups, 1).unwrap();
    assert!(deleted.is_empty(), "the only readable snapshot is kept: {deleted:?}");
    assert!(good.path.exists() && broken.path.exists());
    assert_eq!(backup::list_ids(&backups).unwrap().len(), 2, "the file is not listed as a backup");

    let out = dir.path().join("out.tar.gz");
    let partial = dir.path().join("out.tar.gz.partial");
    fs::write(&partial, "precious").unwrap();
    assert!(backup::export(&good.path, &out, &mut |_| {}).is_err(), "it will not write over a file of that name");
    assert_eq!(fs::read_to_string(&partial).unwrap(), "precious", "nor remove it");
}
