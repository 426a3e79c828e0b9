//! Attacks that break promises of the README today: a data path swapped for a
//! symlink, a refused `latest` that leaves the service's tag moved, an outcome
//! the state database could not take that is later rolled back, directory
//! trees deep enough to overflow a recursive walk, and spool files that can be
//! neither claimed nor rejected. Each test names the promise it checks.

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common;
use crate::common::fake_engine::Deployment;
use crate::common::watcher::Watcher;
use crate::common::Sandbox;
use serde_json::Value;

#[track_caller]
fn wait_status(d: &Deployment, w: &Watcher, upgrade_id: &str, states: &[&str]) -> Value {
    common::wait(format!("status {states:?} for {upgrade_id}"))
        .within(Duration::from_secs(60))
        .showing(|| format!("status: {:?}\nlog:\n{}", d.status(), w.log()))
        .until(|| {
            d.status().filter(|s| s["upgradeId"] == upgrade_id && states.iter().any(|state| s["status"] == *state))
        })
}

/// Makes `dir/name/d/d/…` `depth` levels deep, through handles (the path would exceed PATH_MAX).
fn deep_tree(dir: &Path, name: &str, depth: usize) {
    fs::create_dir(dir.join(name)).unwrap();
    let path = CString::new(dir.join(name).as_os_str().as_bytes()).unwrap();
    let mut fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    let d = CString::new("d").unwrap();
    for _ in 0..depth {
        assert!(fd >= 0 && unsafe { libc::mkdirat(fd, d.as_ptr(), 0o755) } == 0, "mkdirat");
        let next = unsafe { libc::openat(fd, d.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        unsafe { libc::close(fd) };
        fd = next;
    }
    unsafe { libc::close(fd) };
}

/// Removes a tree `deep_tree` made (std's recursive removal would hit PATH_MAX or the stack).
fn remove_deep(path: &Path) {
    let _ = Command::new("rm").arg("-rf").arg(path).status();
}

/// "Restore creates every member relative to held directory handles, so a staging or
/// target name swapped for a link cannot make it write outside the target": the target
/// data path itself, swapped for a link by an app that owns its parent, is followed today
/// (`Stage::open` in store/backup/restore.rs: `create_dir_all` and `open_trusted_dir`),
/// and the link target's contents are moved aside and deleted.
#[test]
fn a_restore_never_follows_a_data_path_swapped_for_a_symlink() {
    let mut sb = Sandbox::new();
    let app = sb.path().join("app");
    let data = app.join("db");
    fs::create_dir_all(data.join("sub")).unwrap();
    fs::write(data.join("a"), "data").unwrap();
    fs::write(data.join("sub/b"), "more").unwrap();
    let host = sb.path().join("host");
    fs::create_dir_all(host.join("etc")).unwrap();
    fs::write(host.join("etc/passwd"), "root:x:0:0").unwrap();
    fs::write(host.join("keep"), "host file").unwrap();
    sb.env("UPGRADERD_DATA_DIR", data.display().to_string());
    sb.test().args(["backup", "create"]).run();
    let archive = fs::read_dir(sb.backups()).unwrap().next().unwrap().unwrap().path();

    // The app owns `app/`: it moves its data away and leaves a link to a host directory.
    fs::rename(&data, app.join("db.moved")).unwrap();
    symlink(&host, &data).unwrap();
    let before = common::tree(&host);
    let run = sb.run(&["backup", "restore", archive.to_str().unwrap()]);
    assert_eq!(common::tree(&host), before, "the restore wrote through the link:\n{}", run.stderr);
}

/// A data path the operator named that is a symlink (`/srv/app/data -> /mnt/disk/data`)
/// is stored as a bare link: `create` reports "0 files" and a rollback would restore
/// nothing (`scan_root` in store/backup/scan.rs). It must either back up the data or
/// refuse with the reason, never report an empty backup as done.
#[test]
fn a_symlinked_data_path_is_not_backed_up_as_an_empty_archive() {
    let mut sb = Sandbox::new();
    let real = sb.path().join("disk/data");
    fs::create_dir_all(&real).unwrap();
    fs::write(real.join("app.db"), "precious").unwrap();
    let configured = sb.path().join("data");
    symlink(&real, &configured).unwrap();
    sb.env("UPGRADERD_DATA_DIR", configured.display().to_string());
    let run = sb.run(&["backup", "create"]);
    if run.code == 0 {
        assert!(!run.stdout.contains("(0 files"), "an empty backup was reported done:\n{}", run.stdout);
    } else {
        assert!(run.stderr.contains(&configured.display().to_string()), "{}", run.stderr);
    }
}

/// "a version beyond the rules is refused before the switch, nothing changed": pulling
/// `latest` moves the service's own tag (`IMAGE:latest`) to the refused image, and the
/// pull strategy has no `undo_fetch` (engine/strategy/pull.rs), so the next
/// `docker compose up` (by the operator, a reboot's recreate, …) starts the refused version.
#[test]
fn a_refused_latest_leaves_the_services_tag_on_the_running_image() {
    let d = Deployment::new().with("UPGRADERD_POLICY", "patch");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"latest-1","version":"latest"}"#);
    let refused = wait_status(&d, &w, "latest-1", &["failed"]);
    assert!(refused["error"].as_str().unwrap_or_default().contains("beyond UPGRADERD_POLICY=patch"), "{refused}");
    assert_eq!(d.running_version(), "1.0.0");
    let tag = fs::read_to_string(d.sb.path().join("images/registry.example_demo_app_latest")).unwrap();
    assert_eq!(tag.trim(), "sha256:v-1.0.0", "app:latest now names the refused image; the next `up` runs it");
}

/// Undoes `chattr +i` when dropped, so the temp dir can be removed whatever happens.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path) -> Option<Immutable> {
        let ok = Command::new("chattr").arg("+i").arg(path).stderr(Stdio::null()).status();
        ok.is_ok_and(|s| s.success()).then(|| Immutable(path.to_path_buf()))
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}

/// "record it when the disk has room again": an upgrade whose health gate passed while
/// the state database was immutable ends `complete` on stderr and in the status file, but
/// the row stays at `health_check`. Nothing records the outcome later; the next upgrade's
/// recovery takes the row for an orphan and rolls the healthy version back, restoring the
/// pre-upgrade backup over what the app wrote since (engine/journal.rs `finish`,
/// engine/recover.rs `plan`, daemon.rs).
#[test]
fn an_outcome_the_database_could_not_take_is_never_rolled_back_later() {
    let d = Deployment::new().with("UPGRADERD_HEALTH_STABLE", "3s");
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"imm-1","version":"2.0.0"}"#);
    wait_status(&d, &w, "imm-1", &["health_check"]);
    let db = d.sb.path().join("state-dir/upgraderd.db");
    let Some(frozen) = Immutable::set(&db) else {
        eprintln!("skipped: chattr +i is not possible here (needs root and a filesystem with attributes)");
        return;
    };
    let done = wait_status(&d, &w, "imm-1", &["complete", "rolled_back", "failed"]);
    drop(frozen);
    assert_eq!(done["status"], "complete", "{done}");
    fs::write(d.sb.path().join("data/written-after-the-upgrade"), "the app's new data").unwrap();
    // The next request; the version it asks for does not matter, only what happens to imm-1.
    d.write_trigger(br#"{"upgradeId":"imm-2","version":"2.0.0"}"#);
    w.wait_for_log("upgrade imm-2 ended");
    assert_eq!(d.running_version(), "2.0.0", "the healthy upgrade was rolled back:\n{}", w.log());
    assert!(d.sb.path().join("data/written-after-the-upgrade").exists(), "the app's data since was lost");
}

/// "the daemon carries on": a trigger that is a directory is moved to
/// `.upgrade-trigger.rejected`, replacing an earlier one with a recursive removal
/// (`remove_at` in store/shared_dir.rs) that holds a descriptor and a stack frame per
/// level. A deep enough tree planted by the app aborts the daemon (stack overflow) —
/// and the claim left behind aborts it again at every start — or, with few
/// descriptors, leaves a claim that is rejected again at every intake.
#[test]
fn a_deep_directory_planted_as_a_rejected_trigger_neither_kills_the_daemon_nor_lingers() {
    let d = Deployment::new();
    deep_tree(&d.trigger_dir(), ".upgrade-trigger.rejected", 30_000);
    fs::create_dir(d.trigger_dir().join(".upgrade-trigger")).unwrap();
    let w = Watcher::start(&d);
    w.wait_for_log("trigger rejected");
    d.write_trigger(br#"{"upgradeId":"after-deep","version":"2.0.0"}"#);
    let alive =
        common::wait("the next trigger to be taken").within(Duration::from_secs(30)).showing(|| w.log()).until(|| {
            if !w.is_alive() {
                return Some(false);
            }
            d.status().is_some_and(|s| s["upgradeId"] == "after-deep").then_some(true)
        });
    let log = w.log();
    drop(w);
    // The planted tree may have been moved aside (hidden) rather than removed: remove every rejected name.
    for entry in fs::read_dir(d.trigger_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().contains(".upgrade-trigger.rejected") {
            remove_deep(&path);
        }
    }
    assert!(alive, "the daemon died:\n{log}");
    assert!(!d.trigger_dir().join("..upgrade-trigger.claimed").exists(), "the claim lingers:\n{log}");
}

/// "never crash": the new version (the app) makes a deep directory tree in its data
/// and fails its health gate. The rollback restores the data, then removes the old tree
/// recursively (`fsat::remove_tree_at` in store/backup/fsat.rs) on the upgrade thread's
/// 2 MiB stack: the daemon aborts mid-rollback with the service stopped.
#[test]
fn a_deep_tree_made_by_a_failing_version_does_not_abort_its_rollback() {
    // Nothing answers the health check: the gate fails after its timeout, a window to act in.
    let d = Deployment::new()
        .with("UPGRADERD_HEALTH_URL", "http://127.0.0.1:9/api/health")
        .with("UPGRADERD_HEALTH_TIMEOUT", "4s");
    deep_tree(d.sb.path(), "prepared", 5_000);
    let w = Watcher::start(&d);
    d.write_trigger(br#"{"upgradeId":"deep-rb","version":"2.0.0"}"#);
    wait_status(&d, &w, "deep-rb", &["health_check"]);
    fs::rename(d.sb.path().join("prepared"), d.sb.path().join("data/made-by-2.0.0")).unwrap();
    let ended = common::wait("the rollback to end or the daemon to die")
        .within(Duration::from_secs(60))
        .showing(|| w.log())
        .until(|| {
            if !w.is_alive() {
                return Some(None);
            }
            d.status().filter(|s| s["status"] == "rolled_back" || s["status"] == "failed").map(Some)
        });
    let log = w.log();
    drop(w);
    for entry in fs::read_dir(d.sb.path().join("data")).unwrap() {
        remove_deep(&entry.unwrap().path());
    }
    assert!(ended.is_some(), "the daemon died during the rollback:\n{log}");
    assert_eq!(d.running_version(), "1.0.0", "the previous image was not put back:\n{log}");
}

/// "upgraderd takes every file there in name order, each as its own request": a spool
/// file whose name is not UTF-8, or so long that `.<name>.claimed` exceeds NAME_MAX, is
/// skipped at every intake without a word (`Daemon::intake_spool` in daemon.rs,
/// `SharedDir::names`): neither taken, nor rejected, nor reported.
#[test]
fn a_spool_file_that_cannot_be_claimed_is_rejected_or_reported_never_skipped_silently() {
    let d = Deployment::new();
    let spool = d.trigger_dir().join(".upgrade-trigger.d");
    fs::create_dir(&spool).unwrap();
    let long = format!("{}.json", "1".repeat(245));
    fs::write(spool.join(&long), br#"{"upgradeId":"long-name","version":"2.0.0"}"#).unwrap();
    let not_utf8 = std::ffi::OsStr::from_bytes(b"2-\xff\xfe.json");
    fs::write(spool.join(not_utf8), br#"{"upgradeId":"bytes-name","version":"2.0.0"}"#).unwrap();
    let w = Watcher::start(&d);
    fs::write(spool.join(".t"), br#"{"upgradeId":"ordinary","version":"2.0.0"}"#).unwrap();
    fs::rename(spool.join(".t"), spool.join("3-ordinary.json")).unwrap();
    wait_status(&d, &w, "ordinary", &["complete", "failed"]);
    let left: Vec<_> = fs::read_dir(&spool).unwrap().map(|e| e.unwrap().file_name()).collect();
    let log = w.log();
    for name in [std::ffi::OsStr::new(&long), not_utf8] {
        let handled = !left.iter().any(|n| n == name);
        let reported = log.contains(&name.to_string_lossy()[..40.min(name.len())]);
        assert!(handled || reported, "{name:?} was skipped without a word; left {left:?}\n{log}");
    }
}
