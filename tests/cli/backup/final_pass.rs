//! The final pass: a first pass taken while the data changes, then only what
//! changed until the services stopped. What the archive restores is the data
//! as it was at the end, byte for byte, and unchanged files are read once.

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use rusqlite::Connection;
use upgraderd::testing::backup::{self, Destination, Form, Reason, Source};

use super::fidelity::{build, listing, node, owner, Node};

/// File times tick coarsely: a file changed within a second of the first
/// pass is always copied again. Waiting that out lets the final pass skip
/// what did not change, which is what these tests check.
fn settle() {
    std::thread::sleep(Duration::from_millis(1100));
}

fn first_pass(data: &Path, backups: &Path) -> backup::FirstPass {
    backup::begin(&[Source::path(data)], backups, Form::Archive, Reason::default(), &mut |_| {}).unwrap()
}

/// The names the final pass retired and the data members it stored.
fn final_pass_of(archive: &Path) -> (Vec<String>, Vec<String>) {
    let file = fs::File::open(archive).unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let (mut retired, mut stored, mut after) = (Vec::new(), Vec::new(), false);
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name == "final-pass.json" {
            let mut text = String::new();
            entry.read_to_string(&mut text).unwrap();
            let json: serde_json::Value = serde_json::from_str(&text).unwrap();
            retired =
                json["stale"].as_array().unwrap().iter().map(|n| n["path"].as_str().unwrap().to_string()).collect();
            after = true;
        } else if after && name.starts_with("data/") {
            stored.push(name.trim_end_matches('/').to_string());
        }
    }
    (retired, stored)
}

#[test]
fn the_final_pass_copies_only_what_changed_and_restores_the_end_state() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("logs")).unwrap();
    fs::create_dir_all(data.join("gone")).unwrap();
    fs::write(data.join("big.bin"), vec![7u8; 1 << 20]).unwrap();
    fs::write(data.join("edited.txt"), "before").unwrap();
    fs::write(data.join("gone/inside"), "x").unwrap();
    fs::write(data.join("logs/old.log"), "rotated").unwrap();
    fs::write(data.join("linked"), "shared").unwrap();
    let db = Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);").unwrap();
    settle();

    let pass = first_pass(&data, &dir.path().join("backups"));
    fs::write(data.join("edited.txt"), "after, longer").unwrap();
    fs::remove_dir_all(data.join("gone")).unwrap();
    fs::remove_file(data.join("logs/old.log")).unwrap();
    fs::write(data.join("logs/new.log"), "fresh").unwrap();
    fs::hard_link(data.join("linked"), data.join("linked-too")).unwrap();
    db.execute("INSERT INTO t VALUES (2)", []).unwrap();
    drop(db);
    let end = listing(&data);
    let created = pass.finish_after_final_pass(&mut |_| {}).unwrap();
    backup::verify(&created.path).unwrap();

    let (retired, stored) = final_pass_of(&created.path);
    assert!(!stored.iter().any(|n| n == "data/0/big.bin"), "an unchanged file is read once: {stored:?}");
    for name in ["data/0/edited.txt", "data/0/logs/new.log", "data/0/linked", "data/0/linked-too", "data/0/app.db"] {
        assert!(stored.iter().any(|n| n == name), "{name} changed: {stored:?}");
    }
    for name in ["data/0/gone", "data/0/gone/inside", "data/0/logs/old.log", "data/0/edited.txt", "data/0/app.db"] {
        assert!(retired.iter().any(|n| n == name), "{name} retired: {retired:?}");
    }

    let target = dir.path().join("target");
    backup::restore(&created.path, &Destination::Into(target.clone()), &mut |_| {}).unwrap();
    let mut restored = listing(&target);
    let rows: i64 =
        Connection::open(target.join("app.db")).unwrap().query_row("SELECT count(*) FROM t", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 2, "the row written before the stop is in the restored database");
    // The database is a snapshot (its WAL folded in), not the live file's bytes.
    let mut end = end;
    for listed in [&mut restored, &mut end] {
        listed.retain(|name, _| !name.starts_with(b"app.db"));
    }
    assert_eq!(restored, end);
}

#[test]
fn a_data_path_that_changes_type_during_the_stop_fails_the_backup_and_leaves_no_archive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "a").unwrap();
    let backups = dir.path().join("backups");
    let pass = first_pass(&data, &backups);
    fs::remove_dir_all(&data).unwrap();
    fs::write(&data, "now a file").unwrap();
    let err = format!("{:#}", pass.finish_after_final_pass(&mut |_| {}).unwrap_err());
    assert!(err.contains("changed from a directory to a file"), "{err}");
    assert_eq!(fs::read_dir(&backups).unwrap().count(), 0, "the partial archive is gone");
}

#[test]
fn an_abandoned_first_pass_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("a"), "a").unwrap();
    let backups = dir.path().join("backups");
    drop(first_pass(&data, &backups));
    assert_eq!(fs::read_dir(&backups).unwrap().count(), 0);
}

/// Changes a built tree: new nodes, and every `nth` entry removed or rewritten.
fn change(data: &Path, more: &[(Node, usize, (u32, u32), i64)], remove_every: usize, rewrite_every: usize) {
    let names: Vec<Vec<u8>> = listing(data).into_keys().filter(|n| !n.is_empty()).collect();
    for (i, name) in names.iter().enumerate().rev() {
        let path = data.join(std::ffi::OsStr::from_bytes_compat(name));
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if remove_every > 0 && i % remove_every == 0 {
            if meta.is_dir() {
                let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o700));
                let _ = fs::remove_dir_all(&path);
            } else {
                let _ = fs::remove_file(&path);
            }
        } else if rewrite_every > 0 && i % rewrite_every == 0 && meta.is_file() {
            let _ = fs::set_permissions(&path, fs::Permissions::from_mode(0o600));
            fs::write(&path, format!("rewritten {i}")).unwrap();
        }
    }
    build(data, more);
}

trait FromBytesCompat {
    fn from_bytes_compat(bytes: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn whatever_changes_between_the_passes_the_archive_restores_the_end_state(
        first in prop::collection::vec((node(), 0usize..4, owner(), 1_000_000_000i64..1_900_000_000), 1..20),
        more in prop::collection::vec((node(), 0usize..4, owner(), 1_000_000_000i64..1_900_000_000), 0..10),
        remove_every in 0usize..5,
        rewrite_every in 0usize..4,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        build(&data, &first);
        settle();
        let pass = first_pass(&data, &dir.path().join("backups"));
        change(&data, &more, remove_every, rewrite_every);
        let end = listing(&data);
        let created = pass.finish_after_final_pass(&mut |_| {}).unwrap();
        backup::verify(&created.path).unwrap();
        let target = dir.path().join("target");
        backup::restore(&created.path, &Destination::Into(target.clone()), &mut |_| {}).unwrap();
        prop_assert_eq!(listing(&target), end);
    }
}

#[test]
fn a_file_or_directory_swapped_for_a_symlink_before_the_final_pass_is_stored_as_the_link() {
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host");
    fs::create_dir_all(&host).unwrap();
    fs::write(host.join("shadow"), "HOST-SECRET").unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("secret.txt"), "app data").unwrap();
    fs::write(data.join("sub/inner"), "inner").unwrap();
    let pass = first_pass(&data, &dir.path().join("backups"));
    // The app plants links to the host where a file and a directory were.
    fs::remove_file(data.join("secret.txt")).unwrap();
    std::os::unix::fs::symlink(host.join("shadow"), data.join("secret.txt")).unwrap();
    fs::remove_dir_all(data.join("sub")).unwrap();
    std::os::unix::fs::symlink(&host, data.join("sub")).unwrap();
    let created = pass.finish_after_final_pass(&mut |_| {}).unwrap();
    backup::verify(&created.path).unwrap();
    let mut everything = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(&created.path).unwrap()).read_to_end(&mut everything).unwrap();
    assert!(!everything.windows(11).any(|w| w == b"HOST-SECRET"), "a host file's content is in the backup");
    let target = dir.path().join("target");
    backup::restore(&created.path, &Destination::Into(target.clone()), &mut |_| {}).unwrap();
    assert_eq!(fs::read_link(target.join("secret.txt")).unwrap(), host.join("shadow"));
    assert_eq!(fs::read_link(target.join("sub")).unwrap(), host);
    assert_eq!(fs::read_to_string(host.join("shadow")).unwrap(), "HOST-SECRET", "the host file is untouched");
}

#[test]
fn a_disk_that_fills_during_the_final_pass_leaves_no_partial_archive() {
    if !crate::common::can_mount() {
        eprintln!("SKIP: cannot mount here; a full disk in the final pass not exercised");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(&data).unwrap();
    fs::write(data.join("small"), "small").unwrap();
    let full = crate::common::Mounted::tmpfs(&dir.path().join("small-disk"), "1m");
    let pass = first_pass(&data, &full.0);
    // Incompressible data, larger than the disk, written while the first pass waits.
    let noise = crate::common::incompressible(3 << 20);
    fs::write(data.join("noise.bin"), &noise).unwrap();
    let err = format!("{:#}", pass.finish_after_final_pass(&mut |_| {}).unwrap_err());
    assert!(err.contains("is full"), "{err}");
    let left: Vec<_> = fs::read_dir(&full.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
