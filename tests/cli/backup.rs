//! `upgraderd backup …` against real files: round trips, live SQLite writers,
//! hostile and damaged archives, full disks and unwritable directories.

mod fidelity;
mod final_pass;
mod races;
mod snapshots;
mod special;

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::common;
use crate::common::{can_mount, tree, Mounted, Sandbox};
use flate2::write::GzEncoder;
use rusqlite::Connection;

fn sandbox_with_data() -> (Sandbox, PathBuf) {
    let mut sb = Sandbox::new();
    let data = sb.path().join("data");
    fs::create_dir_all(data.join("config/nested")).unwrap();
    fs::write(data.join("config/app.yml"), "port: 3001\n").unwrap();
    fs::write(data.join("config/nested/secret"), "s3cret").unwrap();
    fs::set_permissions(data.join("config/nested/secret"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(data.join("config/nested"), fs::Permissions::from_mode(0o750)).unwrap();
    symlink("config/app.yml", data.join("current.yml")).unwrap();
    let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    fs::File::options().write(true).open(data.join("config/app.yml")).unwrap().set_modified(old).unwrap();
    let db = Connection::open(data.join("app.db")).unwrap();
    db.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE nodes(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO nodes(name) VALUES ('a'),('b');").unwrap();
    drop(db);
    sb.env("UPGRADERD_DATA_DIR", data.display().to_string());
    (sb, data)
}

fn only_archive(sb: &Sandbox) -> PathBuf {
    let archives: Vec<_> = fs::read_dir(sb.backups()).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    archives[0].clone()
}

fn count_rows(db: &Path) -> i64 {
    Connection::open(db).unwrap().query_row("SELECT count(*) FROM nodes", [], |r| r.get(0)).unwrap()
}

#[test]
fn create_verify_restore_round_trip_keeps_modes_times_and_links() {
    for format in ["archive", "snapshot"] {
        round_trip_as(format);
    }
}

fn round_trip_as(format: &str) {
    let (mut sb, data) = sandbox_with_data();
    sb.env("UPGRADERD_BACKUP_FORMAT", format);
    let before = tree(&data);
    let mtime_before = fs::metadata(data.join("config/app.yml")).unwrap().mtime();
    sb.test().args(["backup", "create"]).stdout_contains("created backup").stderr_contains("backing_up").run();

    let archive = only_archive(&sb);
    let mode = |path: &Path| fs::metadata(path).unwrap().permissions().mode() & 0o777;
    if format == "archive" {
        assert_eq!(mode(&archive), 0o600);
    } else {
        assert_eq!(mode(&archive), 0o700, "a snapshot is a private directory");
        let shards = fs::read_dir(archive.join("objects")).unwrap();
        for object in shards.flat_map(|shard| fs::read_dir(shard.unwrap().path()).unwrap()) {
            assert_eq!(mode(&object.unwrap().path()), 0o400, "its contents are read-only");
        }
    }
    assert_eq!(fs::metadata(sb.backups()).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(fs::read_dir(sb.backups()).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().contains("partial")));

    let listed = sb.test().args(["--json", "backup", "list"]).run().json();
    assert_eq!(listed["backups"][0]["kind"], format, "{listed}");
    let id = listed["backups"][0]["id"].as_str().unwrap().to_string();
    sb.test().args(["backup", "verify", &id]).stdout_contains("sha256").run();
    sb.test().args(["backup", "verify", archive.to_str().unwrap()]).run();

    // Damage the data every way an upgrade might, then restore.
    fs::write(data.join("config/app.yml"), "port: 9999\n").unwrap();
    fs::remove_file(data.join("current.yml")).unwrap();
    fs::write(data.join("junk-from-new-version"), "x").unwrap();
    Connection::open(data.join("app.db")).unwrap().execute_batch("DROP TABLE nodes; CREATE TABLE v2(x);").unwrap();

    sb.test().args(["backup", "restore", &id]).stdout_contains("restored").run();
    let mut after = tree(&data);
    let mut before = before;
    // The database is compared by content below; its bytes may differ (WAL folded in).
    before.remove("app.db");
    after.remove("app.db");
    assert_eq!(after, before);
    assert_eq!(count_rows(&data.join("app.db")), 2);
    assert_eq!(fs::metadata(data.join("config/app.yml")).unwrap().mtime(), mtime_before);
    let leftovers: Vec<_> = fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n.to_string_lossy().starts_with(".upgraderd"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn restore_to_another_directory_leaves_the_original_alone() {
    let (sb, data) = sandbox_with_data();
    sb.test().args(["backup", "create"]).run();
    fs::write(data.join("config/app.yml"), "changed").unwrap();
    let elsewhere = sb.path().join("inspect");
    let archive = only_archive(&sb);
    sb.test().args(["backup", "restore", archive.to_str().unwrap(), "--to", elsewhere.to_str().unwrap()]).run();
    assert_eq!(fs::read_to_string(elsewhere.join("config/app.yml")).unwrap(), "port: 3001\n");
    assert_eq!(fs::read_to_string(data.join("config/app.yml")).unwrap(), "changed");
}

#[test]
fn a_database_written_during_the_backup_restores_whole_and_consistent() {
    let (sb, data) = sandbox_with_data();
    let db_path = data.join("app.db");
    // A big enough database that the backup takes a while.
    {
        let db = Connection::open(&db_path).unwrap();
        db.execute_batch("BEGIN").unwrap();
        for i in 0..20_000 {
            db.execute("INSERT INTO nodes(name) VALUES (?1)", [format!("seed-{i}-{}", "x".repeat(100))]).unwrap();
        }
        db.execute_batch("COMMIT").unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = {
        let (stop, committed, db_path) = (stop.clone(), committed.clone(), db_path.clone());
        std::thread::spawn(move || {
            let db = Connection::open(&db_path).unwrap();
            db.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                db.execute("INSERT INTO nodes(name) VALUES (?1)", [format!("live-{n}")]).unwrap();
                n += 1;
                committed.store(count_rows(&db_path), Ordering::SeqCst);
            }
            n
        })
    };
    common::wait("the writer to commit 50 rows")
        .every(Duration::from_millis(5))
        .until_true(|| committed.load(Ordering::SeqCst) >= 20_050);
    let before_backup = committed.load(Ordering::SeqCst);
    sb.test().args(["backup", "create"]).run();
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 50, "the writer kept writing during the backup");

    let restored = sb.path().join("restored");
    sb.test()
        .args(["backup", "restore", only_archive(&sb).to_str().unwrap(), "--to", restored.to_str().unwrap()])
        .run();
    let copy = Connection::open(restored.join("app.db")).unwrap();
    let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0)).unwrap();
    assert_eq!(check, "ok");
    let rows = count_rows(&restored.join("app.db"));
    assert!(rows >= before_backup, "restored {rows} rows, {before_backup} were committed before the backup began");
    assert!(!restored.join("app.db-wal").exists() || fs::metadata(restored.join("app.db-wal")).unwrap().len() == 0);
}

/// A raw tar member: name, type, body, link target.
type RawMember<'a> = (&'a str, tar::EntryType, &'a [u8], Option<&'a str>);

/// Writes a gzip'd tar with the given raw members.
fn hostile_archive(path: &Path, members: &[RawMember], with_meta: bool) {
    let file = fs::File::create(path).unwrap();
    let mut builder = tar::Builder::new(GzEncoder::new(file, flate2::Compression::default()));
    let mut append = |name: &str, kind: tar::EntryType, body: &[u8], link: Option<&str>| {
        let mut header = tar::Header::new_old();
        {
            // Write the raw name bytes: the tar crate would refuse `..` and absolute paths.
            let raw = header.as_old_mut();
            raw.name[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(link) = link {
                raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
            }
        }
        header.set_entry_type(kind);
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, body).unwrap();
    };
    let target = path.parent().unwrap().join("victim");
    if with_meta {
        let meta = serde_json::json!({"format":1,"id":"x","createdAt":"now","roots":[{"index":0,"path":target,"isDir":true}],"totalBytes":1,"fileCount":1});
        append("upgraderd-backup.json", tar::EntryType::Regular, meta.to_string().as_bytes(), None);
    }
    for (name, kind, body, link) in members {
        append(name, *kind, body, *link);
    }
    builder.into_inner().unwrap().finish().unwrap();
}

#[test]
fn hostile_archives_are_refused_and_touch_nothing() {
    let sb = Sandbox::new();
    let victim = sb.path().join("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("keep"), "original").unwrap();
    let outside = sb.path().join("outside");
    let cases: Vec<(&str, Vec<RawMember>, &str)> = vec![
        (
            "absolute",
            vec![
                ("data/0", tar::EntryType::Directory, b"", None),
                ("/tmp/upgraderd-evil", tar::EntryType::Regular, b"x", None),
            ],
            "absolute path",
        ),
        (
            "dotdot",
            vec![
                ("data/0", tar::EntryType::Directory, b"", None),
                ("data/0/../../outside", tar::EntryType::Regular, b"x", None),
            ],
            "`..`",
        ),
        (
            "write-through-link",
            vec![
                ("data/0", tar::EntryType::Directory, b"", None),
                ("data/0/l", tar::EntryType::Symlink, b"", Some("../../outside")),
                ("data/0/l/evil", tar::EntryType::Regular, b"x", None),
            ],
            "not a directory: refusing to write through it",
        ),
        (
            "device",
            vec![("data/0", tar::EntryType::Directory, b"", None), ("data/0/dev", tar::EntryType::Char, b"", None)],
            "never writes",
        ),
    ];
    for (name, members, expected) in cases {
        let archive = sb.path().join(format!("{name}.tar.gz"));
        hostile_archive(&archive, &members, true);
        // verify applies the rules restore applies: it names the same problem.
        sb.test().args(["backup", "verify", archive.to_str().unwrap()]).status(1).stderr_contains(expected).run();
        sb.test().args(["backup", "restore", archive.to_str().unwrap()]).status(1).stderr_contains(expected).run();
        assert_eq!(fs::read_to_string(victim.join("keep")).unwrap(), "original", "{name}");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1, "{name}: staging left behind");
        assert!(!outside.exists(), "{name}");
        assert!(!Path::new("/tmp/upgraderd-evil").exists());
    }
}

#[test]
fn an_archive_holding_a_device_node_is_refused_naming_the_member() {
    let sb = Sandbox::new();
    let victim = sb.path().join("victim");
    fs::create_dir_all(&victim).unwrap();
    fs::write(victim.join("keep"), "original").unwrap();
    for (kind, name, words) in [
        (tar::EntryType::Char, "data/0/dev/null", "a character device node"),
        (tar::EntryType::Block, "data/0/dev/sda", "a block device node"),
    ] {
        let archive = sb.path().join("device.tar.gz");
        let members: Vec<RawMember> = vec![
            ("data/0", tar::EntryType::Directory, b"", None),
            ("data/0/dev", tar::EntryType::Directory, b"", None),
            (name, kind, b"", None),
        ];
        hostile_archive(&archive, &members, true);
        for command in ["verify", "restore"] {
            let run = sb.test().args(["backup", command, archive.to_str().unwrap()]).status(1).run();
            let line = run.stderr.lines().find(|l| l.contains(name)).unwrap_or_else(|| panic!("{}", run.stderr));
            assert!(line.contains(words) && line.contains("never creates device nodes"), "{command}: {line}");
        }
        assert_eq!(fs::read_to_string(victim.join("keep")).unwrap(), "original");
        assert_eq!(fs::read_dir(&victim).unwrap().count(), 1, "staging left behind");
        assert!(!victim.join("dev").exists());
    }
}

/// readlink of every symlink below `root`, by relative path.
fn links(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found: Vec<_> = ["current", "up", "dangling", "odd", "sub/deep"]
        .iter()
        .map(|name| (name.to_string(), fs::read_link(root.join(name)).unwrap()))
        .collect();
    found.sort();
    found
}

#[test]
fn links_are_data_stored_and_restored_verbatim_wherever_they_point() {
    let (sb, data) = sandbox_with_data();
    fs::create_dir_all(data.join("sub")).unwrap();
    symlink("/data/schema", data.join("current")).unwrap();
    symlink("../x", data.join("up")).unwrap();
    symlink("no/such/file", data.join("dangling")).unwrap();
    symlink("./a//b/", data.join("odd")).unwrap();
    symlink(format!("../../{}", "long-name/".repeat(20)), data.join("sub/deep")).unwrap();
    let before = links(&data);
    sb.test().args(["backup", "create"]).run();
    let archive = only_archive(&sb);
    sb.test().args(["backup", "verify", archive.to_str().unwrap()]).run();

    for name in ["current", "up", "dangling", "odd", "sub/deep"] {
        fs::remove_file(data.join(name)).unwrap();
    }
    sb.test().args(["backup", "restore", archive.to_str().unwrap()]).run();
    assert_eq!(links(&data), before);

    let elsewhere = sb.path().join("elsewhere");
    sb.test().args(["backup", "restore", archive.to_str().unwrap(), "--to", elsewhere.to_str().unwrap()]).run();
    assert_eq!(links(&elsewhere), before);
    // Nothing was written through a link: ../x was never created.
    assert!(!data.parent().unwrap().join("x").exists());
}

#[test]
fn damaged_archives_name_what_is_wrong() {
    let (mut sb, data) = sandbox_with_data();
    sb.env("UPGRADERD_BACKUP_FORMAT", "archive");
    fs::write(data.join("big.bin"), (0..400_000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<_>>()).unwrap();
    sb.test().args(["backup", "create"]).run();
    let good = fs::read(only_archive(&sb)).unwrap();
    let dir = sb.path().join("bad");
    fs::create_dir_all(&dir).unwrap();

    let truncated = dir.join("truncated.tar.gz");
    fs::write(&truncated, &good[..good.len() / 2]).unwrap();
    sb.test().args(["backup", "verify", truncated.to_str().unwrap()]).status(1).stderr_contains("truncated").run();

    let flipped = dir.join("flipped.tar.gz");
    let mut bytes = good.clone();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    fs::write(&flipped, &bytes).unwrap();
    let run = sb.test().args(["backup", "verify", flipped.to_str().unwrap()]).status(1).run();
    assert!(run.stderr.contains("corrupt") || run.stderr.contains("damaged"), "{}", run.stderr);

    let plain = dir.join("plain.tar.gz");
    fs::write(&plain, "this is not gzip at all").unwrap();
    sb.test()
        .args(["backup", "verify", plain.to_str().unwrap()])
        .status(1)
        .stderr_contains("is neither a gzip nor a zstd file")
        .run();

    let no_manifest = dir.join("nomanifest.tar.gz");
    hostile_archive(&no_manifest, &[("data/0", tar::EntryType::Directory, b"", None)], true);
    sb.test()
        .args(["backup", "verify", no_manifest.to_str().unwrap()])
        .status(1)
        .stderr_contains("has no manifest.json")
        .run();

    let foreign = dir.join("foreign.tar.gz");
    hostile_archive(&foreign, &[("etc/passwd", tar::EntryType::Regular, b"root", None)], false);
    sb.test()
        .args(["backup", "verify", foreign.to_str().unwrap()])
        .status(1)
        .stderr_contains("not an upgraderd backup")
        .run();

    // A restore from a damaged archive leaves the data as it was.
    let before = tree(&data);
    sb.test()
        .args(["backup", "restore", truncated.to_str().unwrap()])
        .status(1)
        .stderr_contains("left as it was")
        .run();
    assert_eq!(tree(&data), before);
    sb.test()
        .args(["backup", "verify", "no-such-backup"])
        .status(1)
        .stderr_contains("no backup `no-such-backup`")
        .run();
}

#[test]
fn a_member_that_does_not_match_its_manifest_is_named() {
    let (mut sb, _data) = sandbox_with_data();
    sb.env("UPGRADERD_BACKUP_FORMAT", "archive");
    sb.test().args(["backup", "create"]).run();
    let archive = only_archive(&sb);
    // Rewrite the archive with one member's content changed but the manifest kept.
    let mut input = tar::Archive::new(flate2::read::GzDecoder::new(fs::File::open(&archive).unwrap()));
    let tampered = sb.path().join("tampered.tar.gz");
    let mut output =
        tar::Builder::new(GzEncoder::new(fs::File::create(&tampered).unwrap(), flate2::Compression::default()));
    for entry in input.entries().unwrap() {
        let mut entry = entry.unwrap();
        let mut header = entry.header().clone();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        if entry.path().unwrap().ends_with("config/app.yml") {
            body = b"port: 6666\n".to_vec();
            header.set_size(body.len() as u64);
            header.set_cksum();
        }
        output.append(&header, body.as_slice()).unwrap();
    }
    output.into_inner().unwrap().finish().unwrap().flush().unwrap();
    sb.test()
        .args(["backup", "verify", tampered.to_str().unwrap()])
        .status(1)
        .stderr_contains("member `data/0/config/app.yml` does not match its manifest")
        .run();
}

#[test]
fn missing_data_and_unwritable_backup_dirs_are_clear_errors() {
    let mut sb = Sandbox::new();
    sb.env("UPGRADERD_DATA_DIR", sb.path().join("nope").display().to_string());
    sb.test().args(["backup", "create"]).status(1).stderr_contains("does not exist; fix UPGRADERD_DATA_DIR").run();

    let (mut sb, _data) = sandbox_with_data();
    let file = sb.path().join("a-file");
    fs::write(&file, "").unwrap();
    sb.env("UPGRADERD_BACKUP_DIR", file.join("backups").display().to_string());
    sb.test().args(["backup", "create"]).status(1).stderr_contains("cannot create the backup directory").run();

    sb.unset("UPGRADERD_DATA_DIR");
    sb.test().args(["backup", "create"]).status(2).stderr_contains("set UPGRADERD_DATA_DIR").run();
}

#[test]
fn a_read_only_backup_dir_is_reported() {
    if !can_mount() {
        eprintln!("SKIP: cannot mount here; read-only backup dir not exercised");
        return;
    }
    let (mut sb, _data) = sandbox_with_data();
    let source = sb.path().join("ro-source");
    fs::create_dir_all(&source).unwrap();
    let ro = Mounted::read_only_bind(&source, &sb.path().join("ro"));
    sb.env("UPGRADERD_BACKUP_DIR", ro.0.display().to_string());
    sb.test().args(["backup", "create"]).status(1).stderr_contains("is the backup directory writable?").run();
}

#[test]
fn a_full_disk_leaves_no_partial_and_says_how_much_was_needed() {
    if !can_mount() {
        eprintln!("SKIP: cannot mount here; disk-full backup not exercised");
        return;
    }
    let (mut sb, data) = sandbox_with_data();
    // Incompressible data, larger than the disk.
    let noise = crate::common::incompressible(3 << 20);
    fs::write(data.join("noise.bin"), &noise).unwrap();
    let full = Mounted::tmpfs(&sb.path().join("small"), "1m");
    sb.env("UPGRADERD_BACKUP_DIR", full.0.display().to_string());
    sb.test().args(["backup", "create"]).status(1).stderr_contains("is full: the backup needed up to 3.0 MiB").run();
    let left: Vec<_> = fs::read_dir(&full.0).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
fn prune_keeps_the_newest_and_the_last_complete_upgrades_backup() {
    let (sb, _data) = sandbox_with_data();
    let unix_second = || SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    for _ in 0..4 {
        sb.test().args(["backup", "create"]).run();
        // Archive names carry their time to the second: the next one must sort after this one.
        let done = unix_second();
        common::wait("the clock to reach the next second")
            .every(Duration::from_millis(10))
            .until_true(|| unix_second() > done);
    }
    let mut all: Vec<PathBuf> = fs::read_dir(sb.backups()).unwrap().map(|e| e.unwrap().path()).collect();
    all.sort();
    // The oldest belongs to the last complete upgrade.
    let db = upgraderd::testing::db::Db::open(&sb.state().join("upgraderd.db")).unwrap();
    db.insert_upgrade(&upgraderd::testing::db::UpgradeRecord {
        id: "u1".into(),
        status: upgraderd::testing::Status::Complete,
        deployment_method: "docker-compose".into(),
        strategy: upgraderd::testing::Strategy::Pull,
        started_at: 1,
        ..Default::default()
    })
    .unwrap();
    db.record_backup("u1", &all[0]).unwrap();
    fs::write(sb.backups().join("upgrade-backup-20200101_000000-dead00.tar.gz.partial"), "x").unwrap();
    fs::create_dir_all(sb.backups().join("upgrade-backup-20200101_000000-dead01.snap.partial/objects/ab")).unwrap();
    // What is not upgraderd's is never touched.
    let notes = sb.backups().join("operator-notes.txt");
    fs::write(&notes, "keep me").unwrap();

    sb.test().args(["backup", "prune", "--keep", "2"]).stdout_contains("deleted 1").run();
    let mut left: Vec<PathBuf> = fs::read_dir(sb.backups()).unwrap().map(|e| e.unwrap().path()).collect();
    left.sort();
    let mut expected = vec![all[0].clone(), all[2].clone(), all[3].clone(), notes];
    expected.sort();
    assert_eq!(left, expected);
}

/// A large sparse file (a disk image, a preallocated store) holds a few blocks
/// of data: its backup stores only those, and its restore writes only those,
/// so it restores onto a filesystem with far less free space than its
/// apparent size.
#[test]
fn a_sparse_file_larger_than_the_free_space_restores() {
    if !can_mount() {
        eprintln!("SKIP: cannot mount here; a sparse file larger than the free space not exercised");
        return;
    }
    const APPARENT: u64 = 64 << 20;
    let mut sb = Sandbox::new();
    let disk = Mounted::tmpfs(&sb.path().join("small-disk"), "4m");
    let data = disk.0.join("data");
    fs::create_dir_all(&data).unwrap();
    let image = data.join("disk.img");
    let file = fs::File::create(&image).unwrap();
    file.set_len(APPARENT).unwrap();
    file.write_all_at(b"boot", 0).unwrap();
    file.write_all_at(b"middle", APPARENT / 2).unwrap();
    drop(file);
    fs::write(data.join("app.yml"), "port: 3001\n").unwrap();
    sb.env("UPGRADERD_DATA_DIR", data.display().to_string());
    sb.test().args(["backup", "create"]).run();
    let id =
        sb.test().args(["--json", "backup", "list"]).run().json()["backups"][0]["id"].as_str().unwrap().to_string();

    // What a new version wrote over it.
    fs::File::options().write(true).open(&image).unwrap().write_all_at(b"NEW!", 0).unwrap();
    fs::write(data.join("app.yml"), "port: 9999\n").unwrap();
    fs::write(data.join("written-by-the-new-version"), "x").unwrap();
    assert!(
        upgraderd::testing::free_bytes(&data).unwrap() < APPARENT,
        "the disk must have less room than the file's apparent size"
    );

    sb.test().args(["backup", "restore", &id]).stdout_contains("restored").run();
    let restored = fs::metadata(&image).unwrap();
    assert_eq!(restored.len(), APPARENT);
    assert!(restored.blocks() * 512 < 1 << 20, "the holes came back as holes: {} blocks", restored.blocks());
    let read_at = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        fs::File::open(&image).unwrap().read_exact_at(&mut buf, offset).unwrap();
        buf
    };
    assert_eq!((read_at(0, 4), read_at(APPARENT / 2, 6)), (b"boot".to_vec(), b"middle".to_vec()));
    assert_eq!(fs::read_to_string(data.join("app.yml")).unwrap(), "port: 3001\n");
    assert!(!data.join("written-by-the-new-version").exists());
}

/// A disk that fills while a restore writes (another writer on the same
/// filesystem, say) is a full disk, not a damaged backup: the error says so,
/// where and how much the restore needed there; the data is left as it was,
/// and the archive still verifies.
#[test]
fn a_disk_that_fills_during_a_restore_is_reported_full_not_damaged() {
    use upgraderd::testing::backup::{self, Destination, Pause, Reason};
    if !can_mount() {
        eprintln!("SKIP: cannot mount here; a disk filling during a restore not exercised");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Mounted::tmpfs(&dir.path().join("small-disk"), "4m");
    let data = disk.0.join("data");
    fs::create_dir_all(&data).unwrap();
    let noise = crate::common::incompressible(1 << 20);
    fs::write(data.join("blob.bin"), &noise).unwrap();
    fs::write(data.join("notes"), "notes").unwrap();
    let created =
        backup::create(std::slice::from_ref(&data), &dir.path().join("backups"), Reason::default(), &mut |_| {})
            .unwrap();
    let needed = backup::read_meta(&created.path).unwrap().restore_bytes().unwrap();

    // What the new version left, and what a rollback must not touch if it cannot finish.
    fs::write(data.join("blob.bin"), "the new version's blob").unwrap();
    fs::write(data.join("written-by-the-new-version"), "x").unwrap();
    let before = tree(&data);
    let err = backup::restore_paused(&created.path, &Destination::Original, &mut |_| {}, &mut |pause| {
        if let Pause::Staging(b"data/0/blob.bin") = pause {
            // Something else fills the filesystem just as the big member is about to be written.
            let mut filler = fs::File::create(disk.0.join("filler")).unwrap();
            while filler.write_all(&[0u8; 64 << 10]).is_ok() {}
        }
    })
    .unwrap_err();
    let message = format!("{err:#}");
    assert!(!message.contains("damaged"), "{message}");
    assert!(message.contains("no space left"), "says the disk is full: {message}");
    assert!(message.contains(&format!("restoring into {}", data.display())), "says where: {message}");
    assert!(message.contains(&format!("{} needed", upgraderd::testing::human_bytes(needed))), "how much: {message}");
    assert!(message.contains("data/0/blob.bin"), "{message}");
    assert_eq!(tree(&data), before, "the data was left as it was");
    backup::verify(&created.path).expect("the archive is fine");
}
