//! What a compromised app, odd data and a full disk can do, on the real
//! engine: links planted in the volume stay links through a backup and a
//! rollback (and never bring a host file into the archive), the app's trigger
//! is bound by the operator's policy, and a state disk that fills during the
//! health gate still ends `rolled_back`, recorded.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use crate::common::{self, Mounted};
use crate::compose::ComposeVersion;
use crate::scenario::Scenario;
use crate::world::must;

impl Scenario {
    fn write_trigger(&self, body: &str) {
        let tmp = self.sandbox.path().join(".trigger.tmp");
        fs::write(&tmp, body).unwrap();
        fs::rename(&tmp, self.sandbox.path().join(".upgrade-trigger")).unwrap();
    }

    #[track_caller]
    fn wait_status(&self, id: &str, state: &str, within: Duration) -> serde_json::Value {
        common::wait(format!("{id} to be {state}"))
            .within(within)
            .every(Duration::from_millis(100))
            .showing(|| format!("{:?}", self.try_status_file()))
            .until(|| self.try_status_file().filter(|s| s["upgradeId"] == id && s["status"] == state))
    }
}

#[test]
fn links_the_app_planted_survive_a_rollback_verbatim_and_no_host_file_enters_the_backup() {
    let Some(s) = Scenario::start("links", &["1.0.0", "2.0.5"], ComposeVersion::V1) else { return };
    let volume = s.volume_dir();
    symlink("/data/schema", volume.join("current")).unwrap();
    symlink("/etc/shadow", volume.join("secret")).unwrap();
    symlink("../../outside", volume.join("up")).unwrap();
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]).code(1);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before, "the data came back for the old version");
    for (name, target) in [("current", "/data/schema"), ("secret", "/etc/shadow"), ("up", "../../outside")] {
        assert_eq!(fs::read_link(volume.join(name)).unwrap(), PathBuf::from(target), "{name} is the same link");
    }
    // The backup holds the links as links, and nothing of the host file they
    // name: read from its export, a plain .tar.gz.
    let backup = s.last_history()["backupPath"].as_str().unwrap().to_string();
    let exported = tempfile::tempdir().unwrap();
    let archive = exported.path().join("backup.tar.gz").display().to_string();
    s.upgraderd(&["backup", "export", &backup, &archive]).success();
    let listing = must(&["tar", "tvzf", &archive]);
    assert!(listing.lines().any(|l| l.contains("secret -> /etc/shadow")), "{listing}");
    let shadow = fs::read("/etc/shadow").unwrap_or_default();
    if !shadow.is_empty() {
        let extracted = tempfile::tempdir().unwrap();
        must(&["tar", "xzf", &archive, "-C", extracted.path().to_str().unwrap()]);
        for file in common::tree(extracted.path()).values() {
            assert_ne!(file.as_bytes(), &shadow[..], "a host file's content is in the backup");
        }
    }
}

#[test]
fn the_apps_trigger_cannot_force_past_the_operators_policy_or_skip_the_backup() {
    let Some(s) = Scenario::start("policy", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let spawn = |policy: &str| {
        s.upgraderd_command(&["watch"])
            .env("UPGRADERD_POLICY", policy)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut daemon = spawn("patch");
    s.write_trigger(r#"{"upgradeId":"forced","version":"2.0.0","force":true,"backup":false}"#);
    let refused = s.wait_status("forced", "failed", Duration::from_secs(60));
    assert!(refused["error"].as_str().unwrap().contains("beyond UPGRADERD_POLICY=patch"), "{refused}");
    assert!(refused["logs"].to_string().contains("UPGRADERD_TRIGGER_MAY_FORCE"), "{refused}");
    s.wait_version("1.0.0");
    daemon.kill().unwrap();
    daemon.wait().unwrap();

    let mut daemon = spawn("major");
    s.write_trigger(r#"{"upgradeId":"no-backup","version":"2.0.0","backup":false}"#);
    s.wait_status("no-backup", "complete", Duration::from_secs(120));
    // The whole log: the status file shows the app only its last lines.
    let done = s.last_history();
    assert!(done["logs"].to_string().contains("UPGRADERD_TRIGGER_MAY_SKIP_BACKUP"), "{done}");
    assert!(done["backupPath"].is_string(), "the backup was taken although the trigger said not to");
    s.wait_version("2.0.0");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
}

#[test]
fn a_state_disk_that_fills_during_the_gate_still_ends_rolled_back_and_recorded() {
    if !common::can_mount() {
        eprintln!("SKIP: cannot mount a tmpfs here; the full state disk was not exercised on the engine");
        return;
    }
    let Some(s) = Scenario::start("fulldisk", &["1.0.0", "2.0.2"], ComposeVersion::V1) else { return };
    let state = s.sandbox.state();
    let _mounted = Mounted::tmpfs(&state, "64m");
    let before = s.dump();
    // 2.0.2 never listens: the gate runs to its timeout, time enough to fill the disk under it.
    let mut upgrade = s.upgraderd_command(&["upgrade", "--to", "2.0.2"]).stdout(Stdio::null()).spawn().unwrap();
    s.wait_status_step("health_check");
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", state.join("filler").display()))
        .stderr(Stdio::null())
        .status();
    let exit = upgrade.wait().unwrap();
    assert_eq!(exit.code(), Some(1));
    assert_eq!(s.status_file()["status"], "rolled_back");
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
    fs::remove_file(state.join("filler")).unwrap();
    assert_eq!(s.last_history()["status"], "rolled_back", "the outcome was recorded on the full disk");
}

impl Scenario {
    #[track_caller]
    fn wait_status_step(&self, step: &str) {
        common::wait(format!("the upgrade to reach {step}"))
            .within(Duration::from_secs(120))
            .every(Duration::from_millis(50))
            .showing(|| format!("{:?}", self.try_status_file()))
            .until_true(|| self.try_status_file().is_some_and(|s| s["status"] == step));
    }
}

impl Scenario {
    fn started_at(&self) -> String {
        must(&["docker", "inspect", "--format", "{{.State.StartedAt}}", &self.container()]).trim().to_string()
    }

    fn backups(&self) -> usize {
        fs::read_dir(self.sandbox.backups()).map_or(0, |d| d.count())
    }
}

#[test]
fn latest_asked_while_latest_runs_stops_nothing_and_backs_up_nothing() {
    let Some(s) = Scenario::start("latest-noop", &["1.0.0"], ComposeVersion::V1) else { return };
    must(&["docker", "push", &format!("{}:latest", s.repo)]);
    let started = s.started_at();
    for _ in 0..3 {
        let run = s.upgraderd(&["upgrade", "--to", "latest"]);
        assert_eq!(run.code, 0, "{}", run.stderr);
        assert!(run.stderr.contains("Already up to date: latest is the image that runs"), "{}", run.stderr);
    }
    assert_eq!(s.started_at(), started, "the app was never stopped");
    assert_eq!(s.backups(), 0, "nothing was backed up");
    assert_eq!(s.last_history()["status"], "complete");
}

#[test]
fn an_unlabelled_failing_latest_is_rolled_back_once_not_at_every_trigger_of_the_app() {
    let Some(s) = Scenario::start("latest-crash", &["1.0.0", "2.0.1"], ComposeVersion::V1) else { return };
    // 2.0.1 crashes; this copy of it says no version, as many `latest` images do.
    let context = tempfile::tempdir().unwrap();
    let dockerfile = format!("FROM {}:2.0.1\nLABEL org.opencontainers.image.version=\"\"\n", s.repo);
    must(&["docker", "pull", &format!("{}:2.0.1", s.repo)]);
    crate::world::docker_build(context.path(), &dockerfile, &format!("{}:unlabelled", s.repo));
    // The registry's `latest` becomes the failing image; the host still runs 1.0.0 as `latest`.
    let local_latest = must(&["docker", "image", "inspect", "--format", "{{.Id}}", &format!("{}:latest", s.repo)]);
    must(&["docker", "tag", &format!("{}:unlabelled", s.repo), &format!("{}:latest", s.repo)]);
    must(&["docker", "push", &format!("{}:latest", s.repo)]);
    must(&["docker", "tag", local_latest.trim(), &format!("{}:latest", s.repo)]);
    // By project and service: the container the rollback recreates has a new id.
    let mut watch = s
        .upgraderd_command(&["watch"])
        .env_remove("UPGRADERD_CONTAINER")
        .env("UPGRADERD_COMPOSE_PROJECT", &s.name)
        .env("UPGRADERD_SERVICE", "app")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    s.write_trigger(r#"{"upgradeId":"crash-1","version":"latest"}"#);
    s.wait_status("crash-1", "rolled_back", Duration::from_secs(120));
    let started = s.started_at();
    s.write_trigger(r#"{"upgradeId":"crash-2","version":"latest"}"#);
    let refused = s.wait_status("crash-2", "failed", Duration::from_secs(120));
    unsafe { libc::kill(watch.id() as i32, libc::SIGTERM) };
    watch.wait().unwrap();
    assert!(refused["error"].as_str().unwrap_or_default().contains("was rolled back on this host"), "{refused}");
    assert_eq!(s.started_at(), started, "the second trigger stopped nothing");
    s.wait_version("1.0.0");
}

#[test]
fn a_password_in_the_operators_hook_never_reaches_the_apps_files_on_the_engine() {
    const SECRET: &str = "hunter2";
    let Some(s) = Scenario::start("hook-secret", &["1.0.0", "2.0.0"], ComposeVersion::V1) else { return };
    let (sandbox, trigger) = (s.sandbox.path().display().to_string(), s.sandbox.path().display().to_string());
    let pre = format!("cp {trigger}/.upgrade-status.json {sandbox}/status-during-pre; true --password={SECRET}");
    let run =
        s.upgraderd_command(&["upgrade", "--to", "2.0.0"]).env("UPGRADERD_PRE_UPGRADE_CMD", &pre).output().unwrap();
    let run = common::Run::from_output(run);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    let during = fs::read_to_string(s.sandbox.path().join("status-during-pre")).expect("the hook ran");
    for (what, text) in [
        ("the status file while the hook ran", during),
        ("the status file", fs::read_to_string(s.sandbox.path().join(".upgrade-status.json")).unwrap()),
        ("history", s.last_history().to_string()),
        ("the log", run.stderr.clone()),
    ] {
        assert!(!text.contains(SECRET), "{what} holds the hook's password: {text}");
    }
}

#[test]
fn a_fifo_comes_back_a_fifo_and_a_socket_and_a_device_node_are_left_out_through_a_rollback() {
    use std::os::unix::fs::FileTypeExt;
    let Some(s) = Scenario::start("special", &["1.0.0", "2.0.5"], ComposeVersion::V1) else { return };
    let volume = s.volume_dir();
    must(&["mkfifo", volume.join("queue").to_str().unwrap()]);
    let _socket = std::os::unix::net::UnixListener::bind(volume.join("app.sock")).unwrap();
    must(&["mknod", volume.join("null").to_str().unwrap(), "c", "1", "3"]);
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    assert!(fs::symlink_metadata(volume.join("queue")).unwrap().file_type().is_fifo(), "the FIFO is back as a FIFO");
    assert!(!volume.join("app.sock").exists(), "a socket is a runtime object, not data");
    assert!(!volume.join("null").exists(), "upgraderd never creates a device node on the host");
    assert!(run.stderr.contains("left out: a socket"), "{}", run.stderr);
    assert!(run.stderr.contains("null: left out"), "{}", run.stderr);
}

#[test]
fn a_sparse_file_larger_than_the_data_filesystem_does_not_make_the_rollback_impossible() {
    if !common::can_mount() {
        assert!(std::env::var("UPGRADERD_E2E_REQUIRED").map_or(true, |v| v != "1"), "a tmpfs cannot be mounted here");
        eprintln!("SKIP: a tmpfs cannot be mounted here; the sparse file was not exercised");
        return;
    }
    let place = tempfile::Builder::new().prefix("upgraderd-e2e-sparse-").tempdir().unwrap();
    // The app's data on a 64 MiB filesystem; declared first, so it is unmounted after the project is down.
    let _mounted = Mounted::tmpfs(place.path(), "64m");
    let data = place.path().display().to_string();
    let on_tmpfs = move |repo: &str, port: u16, prefix: &str| {
        crate::scenario::single_app(repo, port, prefix)
            .replace("      - appdata:/data\n", &format!("      - {data}:/data\n"))
    };
    let Some(s) = Scenario::start_with("sparse", &["1.0.0", "2.0.5"], ComposeVersion::V1, &on_tmpfs, &["up", "-d"])
    else {
        return;
    };
    // 1 GiB that holds almost nothing: what the app can make on a 64 MiB disk.
    fs::File::create(place.path().join("image.raw")).unwrap().set_len(1 << 30).unwrap();
    let before = crate::scenario::sqlite_dump(place.path());
    let run =
        s.upgraderd_command(&["upgrade", "--to", "2.0.5"]).env("UPGRADERD_HEALTH_TIMEOUT", "60s").output().unwrap();
    let run = common::Run::from_output(run);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(
        s.last_history()["status"],
        "rolled_back",
        "not `failed` for want of room it does not need: {}",
        run.stderr
    );
    s.wait_version("1.0.0");
    assert_eq!(crate::scenario::sqlite_dump(place.path()), before);
    assert_eq!(fs::metadata(place.path().join("image.raw")).unwrap().len(), 1 << 30, "the sparse file is back");
}
