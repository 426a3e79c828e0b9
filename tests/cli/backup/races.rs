//! Races a compromised app can run against a backup or a restore, made
//! deterministic with the library's pause points: names swapped for symlinks
//! to host files between the scan and the copy, or under the staging area.

use std::fs;
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use rusqlite::Connection;
use upgraderd::testing::backup::{self, Destination, Form, Pause, Reason};

const SECRET: &str = "host-secret-5f3a9c";

/// A root-only file outside the data, as `/etc/shadow` would be.
fn host_secret(dir: &Path) -> PathBuf {
    let host = dir.join("host");
    fs::create_dir_all(&host).unwrap();
    let secret = host.join("shadow");
    fs::write(&secret, format!("root:{SECRET}:19000::::::\n")).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
    secret
}

fn archive_bytes(archive: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    flate2::read::GzDecoder::new(fs::File::open(archive).unwrap()).read_to_end(&mut bytes).unwrap();
    bytes
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Every member of an archive: name and link target.
fn members(archive: &Path) -> Vec<(String, tar::EntryType, Option<String>)> {
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(archive).unwrap()));
    tar.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let link = e.link_name().unwrap().map(|l| l.display().to_string());
            (e.path().unwrap().display().to_string(), e.header().entry_type(), link)
        })
        .collect()
}

#[test]
fn a_file_or_directory_swapped_for_a_link_to_a_host_file_after_the_scan_is_never_read() {
    let dir = tempfile::tempdir().unwrap();
    let secret = host_secret(dir.path());
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("notes"), "harmless notes").unwrap();
    fs::write(data.join("sub/shadow"), "harmless inner").unwrap();

    let created = backup::create_paused(
        std::slice::from_ref(&data),
        &dir.path().join("backups"),
        Form::Archive,
        Reason::default(),
        &mut |_| {},
        &mut |pause| {
            if let Pause::Scanned = pause {
                fs::remove_file(data.join("notes")).unwrap();
                symlink(&secret, data.join("notes")).unwrap();
                fs::rename(data.join("sub"), data.join("sub.moved")).unwrap();
                symlink(secret.parent().unwrap(), data.join("sub")).unwrap();
            }
        },
    )
    .unwrap();

    let bytes = archive_bytes(&created.path);
    assert!(!contains(&bytes, SECRET), "the host file's content is in the archive");
    let members = members(&created.path);
    let notes = members.iter().find(|m| m.0 == "data/0/notes").expect("notes is stored as what it became");
    assert_eq!(notes.1, tar::EntryType::Symlink);
    assert_eq!(notes.2.as_deref(), Some(secret.to_str().unwrap()));
    let sub = members.iter().find(|m| m.0 == "data/0/sub").expect("sub is stored as what it became");
    assert_eq!(sub.1, tar::EntryType::Symlink);
    assert!(!members.iter().any(|m| m.0.starts_with("data/0/sub/")), "{members:?}");
    assert!(created.warnings.iter().any(|w| w.contains("notes") && w.contains("symlink")), "{:?}", created.warnings);
    backup::verify(&created.path).unwrap();
}

#[test]
fn a_database_directory_swapped_while_the_copy_holds_it_is_still_read_through_its_handle() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let host = dir.path().join("host");
    fs::create_dir_all(data.join("db")).unwrap();
    fs::create_dir_all(&host).unwrap();
    for (path, value) in [(data.join("db/app.db"), "app-row-1b2c"), (host.join("app.db"), SECRET)] {
        let db = Connection::open(path).unwrap();
        db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t(v TEXT)").unwrap();
        db.execute("INSERT INTO t VALUES (?1)", [value]).unwrap();
    }

    let created = backup::create_paused(
        std::slice::from_ref(&data),
        &dir.path().join("backups"),
        Form::Archive,
        Reason::default(),
        &mut |_| {},
        &mut |pause| {
            if let Pause::Copying(b"data/0/db/app.db") = pause {
                fs::rename(data.join("db"), data.join("db.moved")).unwrap();
                symlink(&host, data.join("db")).unwrap();
            }
        },
    )
    .unwrap();

    let bytes = archive_bytes(&created.path);
    assert!(!contains(&bytes, SECRET), "the host database is in the archive");
    assert!(contains(&bytes, "app-row-1b2c"), "the app's database is missing");
}

/// Data with a nested file, backed up; returns the archive and an empty host directory.
fn backed_up(dir: &Path) -> (PathBuf, PathBuf) {
    let data = dir.join("data");
    fs::create_dir_all(data.join("sub/deeper")).unwrap();
    fs::write(data.join("a"), "a").unwrap();
    fs::write(data.join("sub/deeper/file"), "payload-77").unwrap();
    let created = backup::create(&[data], &dir.join("backups"), Reason::default(), &mut |_| {}).unwrap();
    let outside = dir.join("outside");
    fs::create_dir_all(&outside).unwrap();
    (created.path, outside)
}

fn staging_in(target: &Path) -> PathBuf {
    fs::read_dir(target)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(".upgraderd-staging-"))
        .expect("a staging directory")
}

fn assert_empty(outside: &Path) {
    let left: Vec<_> = fs::read_dir(outside).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(left.is_empty(), "the restore wrote outside its target: {left:?}");
}

#[test]
fn a_staging_directory_swapped_for_a_link_does_not_move_the_restore_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, outside) = backed_up(dir.path());
    let target = dir.path().join("target");
    let restored = backup::restore_paused(&archive, &Destination::Into(target.clone()), &mut |_| {}, &mut |pause| {
        if let Pause::Staging(b"data/0/a") = pause {
            let staging = staging_in(&target);
            fs::rename(&staging, target.join("moved-away")).unwrap();
            symlink(&outside, &staging).unwrap();
        }
    });
    assert_empty(&outside);
    restored.unwrap();
    assert_eq!(fs::read_to_string(target.join("sub/deeper/file")).unwrap(), "payload-77");
}

#[test]
fn a_staged_directory_swapped_for_a_link_does_not_move_the_restore_outside_the_target() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, outside) = backed_up(dir.path());
    let target = dir.path().join("target");
    let _ = backup::restore_paused(&archive, &Destination::Into(target.clone()), &mut |_| {}, &mut |pause| {
        if let Pause::Staging(b"data/0/sub/deeper/file") = pause {
            let staging = staging_in(&target);
            fs::rename(staging.join("sub"), staging.join("sub.moved")).unwrap();
            symlink(&outside, staging.join("sub")).unwrap();
        }
    });
    assert_empty(&outside);
}

#[test]
fn a_target_child_swapped_for_a_link_before_the_swap_is_moved_aside_not_followed() {
    let dir = tempfile::tempdir().unwrap();
    let (archive, outside) = backed_up(dir.path());
    fs::write(outside.join("keep"), "host file").unwrap();
    let target = dir.path().join("target");
    fs::create_dir_all(&target).unwrap();
    backup::restore_paused(&archive, &Destination::Into(target.clone()), &mut |_| {}, &mut |pause| {
        if let Pause::Swapping = pause {
            symlink(&outside, target.join("sub")).unwrap();
        }
    })
    .unwrap();
    assert_eq!(fs::read_to_string(outside.join("keep")).unwrap(), "host file");
    assert_eq!(fs::read_to_string(target.join("sub/deeper/file")).unwrap(), "payload-77");
}

#[test]
fn a_file_that_disappears_between_the_scan_and_the_copy_is_skipped_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    fs::create_dir_all(data.join("logs/old")).unwrap();
    fs::write(data.join("logs/app.log"), "rotated away").unwrap();
    fs::write(data.join("logs/old/app.log.1"), "also gone").unwrap();
    fs::write(data.join("kept"), "kept").unwrap();

    let created = backup::create_paused(
        std::slice::from_ref(&data),
        &dir.path().join("backups"),
        Form::Archive,
        Reason::default(),
        &mut |_| {},
        &mut |pause| {
            if let Pause::Scanned = pause {
                fs::remove_file(data.join("logs/app.log")).unwrap();
                fs::remove_dir_all(data.join("logs/old")).unwrap();
            }
        },
    )
    .expect("a rotated log never aborts a backup");

    let names: Vec<String> = members(&created.path).into_iter().map(|m| m.0).collect();
    assert!(names.contains(&"data/0/kept".to_string()), "{names:?}");
    assert!(!names.iter().any(|n| n.contains("app.log") || n.contains("logs/old")), "{names:?}");
    for gone in ["logs/app.log", "logs/old"] {
        assert!(
            created.warnings.iter().any(|w| w.contains(gone) && w.contains("disappeared")),
            "{gone} not listed: {:?}",
            created.warnings
        );
    }
    backup::verify(&created.path).unwrap();
}
