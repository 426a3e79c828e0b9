//! The rebuild strategy (`UPGRADERD_STRATEGY=rebuild`) against a fake `git`
//! and the fake `docker`/compose (`common::fake_git`, `common::fake_engine`):
//! the exact command lines of its runbook, in order, and a failure injected at
//! each step (fetch, moving the checkout, build, up, health, moving it back),
//! each ending `failed` with the checkout back and nothing running changed
//! before the switch, or `rolled_back` after it.

use crate::common::fake_engine::Deployment;
use crate::common::fake_git::{C1, C2, C3};
use serde_json::Value;

/// The runbook as these tests pin it: every git command but the
/// informational `log` and `describe` (shown without `-C <checkout>`), and
/// every docker command that changes something (the project's compose flags,
/// checked exactly, shown as `…`; the upgrade id as `<id>`).
fn steps(d: &Deployment) -> Vec<String> {
    let dir = d.sb.path().display().to_string();
    let compose = format!(
        "docker compose -p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml \
         --env-file {dir}/.env "
    );
    let id = d.last_history()["upgradeId"].as_str().unwrap_or("none").to_string();
    d.runbook()
        .into_iter()
        .filter_map(|line| {
            let line = line.replace(&format!("git -C {dir} "), "git ").replace(&compose, "docker compose … ");
            let informational = ["git log ", "git describe "].iter().any(|p| line.starts_with(p));
            let changes =
                ["git ", "docker tag ", "docker image rm ", "docker compose … "].iter().any(|p| line.starts_with(p))
                    && !line.ends_with(" config --format json");
            (changes && !informational).then(|| line.replace(&id, "<id>"))
        })
        .collect()
}

/// The checks before anything changes, for `--to 2.0.0`.
fn preflight() -> Vec<String> {
    vec![
        "git rev-parse --is-inside-work-tree".into(),
        "git rev-parse --abbrev-ref HEAD".into(),
        "git status --porcelain --untracked-files=no".into(),
        "git rev-parse --verify HEAD^{commit}".into(),
        "git fetch --quiet --tags --force origin +refs/heads/main:refs/remotes/origin/main".into(),
        "git rev-parse --verify --quiet refs/tags/v2.0.0^{commit}".into(),
        format!("git merge-base --is-ancestor {C1} {C2}"),
    ]
}

/// Keeping the running image, moving the checkout and building the target.
fn fetch() -> Vec<String> {
    vec![
        "docker tag sha256:v-1.0.0 registry.example/demo/app:upgraderd-rollback-<id>".into(),
        format!("git reset --keep {C2}"),
        "docker compose … build".into(),
    ]
}

/// Everything after the switch that puts 1.0.0 back: stop, checkout back, old image back, up.
fn roll_back() -> Vec<String> {
    vec![
        "docker compose … stop -t 10".into(),
        format!("git reset --keep {C1}"),
        "docker tag sha256:v-1.0.0 registry.example/demo/app:latest".into(),
        "docker compose … up -d --no-build".into(),
    ]
}

fn up() -> String {
    "docker compose … up -d --no-build".into()
}

fn concat(parts: &[&[String]]) -> Vec<String> {
    parts.concat()
}

/// Upgrades to 2.0.0 with `FAIL_ON` and `CRASH` set; returns the deployment and its history row.
fn upgrade(fail_on: &str, crash: &str) -> (Deployment, Value) {
    let d = Deployment::rebuild().with("FAIL_ON", fail_on).with("CRASH", crash);
    let before = d.data();
    let run = d.sb.run(&["upgrade", "--to", "2.0.0"]);
    let row = d.last_history();
    let what = format!("FAIL_ON={fail_on:?} CRASH={crash:?}\n{}\n{}", run.stdout, run.stderr);
    assert_eq!(row["strategy"], "rebuild", "{what}");
    assert_eq!(d.status_file()["status"], row["status"], "{what}");
    assert_eq!(run.code, if row["status"] == "complete" { 0 } else { 1 }, "{what}");
    if row["status"] != "complete" && d.head() == C1 {
        assert_eq!(d.data(), before, "data back or untouched: {what}");
    }
    (d, row)
}

#[track_caller]
fn assert_error(row: &Value, needle: &str) {
    let error = row["errorMessage"].as_str().unwrap_or_default();
    assert!(error.contains(needle), "error lacks {needle:?}: {error}");
}

#[test]
fn a_good_rebuild_runs_the_exact_runbook_in_order() {
    let (d, row) = upgrade("", "");
    assert_eq!(row["status"], "complete", "{row}");
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch(), &[up()]]));
    assert_eq!(d.head(), C2);
    assert_eq!(d.running_image(), "sha256:v-2.0.0+b1", "the service runs the image this upgrade built");
    assert_eq!(row["previousCommit"], C1);
    assert_eq!(row["targetCommit"], C2);
    assert_eq!(row["previousSubject"], "1111111 Release 1.0.0");
    assert_eq!(row["targetSubject"], "2222222 Release 2.0.0");
    assert_eq!(row["rollbackImages"], r#"[{"name":"registry.example/demo/app:latest","id":"sha256:v-1.0.0"}]"#);
    assert_eq!((row["fromVersion"].as_str(), row["toVersion"].as_str()), (Some("1.0.0"), Some("2.0.0")));
    // The compose command lines in full, once.
    let dir = d.sb.path().display().to_string();
    let base = format!(
        "docker compose -p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml \
         --env-file {dir}/.env"
    );
    let runbook = d.runbook();
    assert!(runbook.contains(&format!("{base} build")), "{runbook:#?}");
    assert!(runbook.contains(&format!("{base} up -d --no-build")), "{runbook:#?}");
}

#[test]
fn latest_builds_the_remote_tip_and_reports_its_version() {
    let d = Deployment::rebuild();
    d.sb.test().args(["upgrade", "--to", "latest"]).run();
    let steps = steps(&d);
    assert!(
        steps.contains(&"git rev-parse --verify --quiet refs/remotes/origin/main^{commit}".to_string()),
        "{steps:#?}"
    );
    assert!(steps.contains(&format!("git reset --keep {C3}")), "{steps:#?}");
    assert_eq!(d.head(), C3);
    assert_eq!(d.running_version(), "2.0.1");
    assert_eq!(d.last_history()["targetCommit"], C3);
}

#[test]
fn a_failed_fetch_is_refused_in_preflight_and_changes_nothing() {
    let (d, row) = upgrade("fetch:1", "");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "refused in preflight");
    assert_error(&row, "the remote origin cannot be reached");
    assert_eq!(steps(&d), preflight()[..5].to_vec(), "nothing after the fetch");
    assert_eq!((d.head().as_str(), d.running_image().as_str()), (C1, "sha256:v-1.0.0"));
    assert_eq!(row["switched"], false);
}

const UNTAG: &str = "docker image rm registry.example/demo/app:upgraderd-rollback-<id>";

#[test]
fn a_failed_move_of_the_checkout_changes_nothing_running() {
    let (d, row) = upgrade("reset:1", "");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "moving the checkout to the target commit");
    assert_error(&row, "injected failure of reset #1");
    // A failed fetch looks where the checkout is (still at the previous commit) and
    // drops the rollback tag it made: nothing will ever need it.
    let undo = ["git rev-parse --verify HEAD^{commit}".to_string(), UNTAG.to_string()];
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch()[..2], &undo]), "no build, no up");
    assert_eq!((d.head().as_str(), d.running_image().as_str()), (C1, "sha256:v-1.0.0"));
    assert_eq!(row["switched"], false);
}

#[test]
fn a_failed_build_puts_the_checkout_back_and_changes_nothing_running() {
    let (d, row) = upgrade("build:1", "");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "building the new version failed; the checkout is back at the previous commit");
    let back =
        [format!("git reset --keep {C1}"), "git rev-parse --verify HEAD^{commit}".to_string(), UNTAG.to_string()];
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch(), &back]));
    assert_eq!((d.head().as_str(), d.running_image().as_str()), (C1, "sha256:v-1.0.0"));
    assert_eq!(row["switched"], false);
}

#[test]
fn a_failed_build_whose_checkout_cannot_go_back_at_once_says_so_and_tries_again() {
    let (d, row) = upgrade("build:1 reset:2", "");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "building the new version failed, and moving the checkout back failed too");
    // The attempt puts back what its fetch moved before it ends: a second move back succeeds.
    assert_eq!(steps(&d).last().map(String::as_str), Some(UNTAG));
    assert!(steps(&d).contains(&format!("git reset --keep {C1}")));
    assert_eq!(d.head(), C1, "the checkout is back at the previous commit");
    assert_eq!(d.running_image(), "sha256:v-1.0.0");
    assert_eq!(row["switched"], false);
}

#[test]
fn a_failed_up_is_rolled_back_to_the_previous_commit_and_image() {
    let (d, row) = upgrade("up:1", "");
    assert_eq!(row["status"], "rolled_back");
    assert_error(&row, "starting the rebuilt services");
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch(), &[up()], &roll_back()]));
    assert_eq!((d.head().as_str(), d.running_image().as_str()), (C1, "sha256:v-1.0.0"));
    assert_eq!(row["switched"], true);
}

#[test]
fn a_build_that_fails_its_health_gate_is_rolled_back_with_its_data() {
    let (d, row) = upgrade("", "2.0.0");
    assert_eq!(row["status"], "rolled_back");
    assert_error(&row, "exited with code 1");
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch(), &[up()], &roll_back()]));
    assert_eq!((d.head().as_str(), d.running_image().as_str()), (C1, "sha256:v-1.0.0"));
    assert!(!d.data()["app.db"].contains("migrated by 2.0.0"), "the backup was restored: {:?}", d.data());
}

#[test]
fn a_previous_build_that_fails_its_gate_after_the_revert_fails_the_rollback_on_its_restored_data() {
    let (d, row) = upgrade("", "2.0.0 1.0.0");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "exited with code 1");
    assert_error(&row, "rollback failed: the previous version is not healthy either");
    assert_eq!(steps(&d), concat(&[&preflight(), &fetch(), &[up()], &roll_back()]));
    assert_eq!(
        (d.head().as_str(), d.running_image().as_str()),
        (C1, "sha256:v-1.0.0"),
        "the previous commit and image"
    );
    assert!(!d.data()["app.db"].contains("migrated by 2.0.0"), "on its restored data: {:?}", d.data());
}

#[test]
fn a_checkout_that_cannot_move_back_fails_the_rollback_loudly() {
    let (d, row) = upgrade("reset:2", "2.0.0");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "exited with code 1");
    assert_error(&row, "rollback failed: moving the checkout back");
    let mut expected = concat(&[&preflight(), &fetch(), &[up()], &roll_back()]);
    expected.truncate(expected.len() - 2);
    // The previous version cannot come back from a checkout that did not move: the new one
    // runs again (its containers started, none rebuilt), and the record says so.
    expected.push("docker compose … start".into());
    assert_eq!(steps(&d), expected);
    assert_eq!(d.head(), C2);
    assert_eq!(row["switched"], true);
    assert_error(&row, "; now app runs ");
}

#[test]
fn a_rebuild_rollback_whose_stop_fails_while_the_new_version_runs_restores_nothing() {
    let d = Deployment::rebuild().with("FAIL_ON", "stop:1");
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let migrated = d.data();
    let run = d.sb.test().args(["rollback"]).status(1).run();
    run.stderr_has("stopping the new version failed").stderr_has("nothing was restored").stderr_has("now app runs ");
    let steps = steps(&d);
    assert_eq!(steps.last().map(String::as_str), Some("docker compose … start"), "{steps:#?}");
    assert_eq!((d.head().as_str(), d.running_version().as_str()), (C2, "2.0.0"), "left as it is, still serving");
    assert_eq!(d.data(), migrated, "nothing is restored under a running container");
    assert_eq!(d.last_history()["status"], "failed");
}

#[test]
fn a_damaged_backup_fails_the_rebuild_rollback_and_the_new_version_runs_again_on_its_data() {
    let (d, row) = upgrade("backup", "2.0.0");
    assert_eq!(row["status"], "failed");
    assert_error(&row, "rollback failed: restoring data");
    assert_error(&row, "the data was left as the new version wrote it; now app runs ");
    assert!(d.data()["app.db"].contains("migrated by 2.0.0"), "not half-restored: {:?}", d.data());
    let steps = steps(&d);
    let stopped = steps.iter().rposition(|l| l.ends_with(" stop -t 10")).expect("the rollback stopped it");
    assert_eq!(steps[stopped + 1..], ["docker compose … start".to_string()], "started again: {steps:#?}");
    assert_eq!(d.head(), C2, "the checkout stays with the version that runs");
}

#[test]
fn a_dirty_checkout_is_refused_before_anything_moves() {
    let d = Deployment::rebuild().with("DIRTY", " M docker-compose.yml");
    d.sb.test()
        .args(["upgrade", "--to", "2.0.0"])
        .status(1)
        .stderr_contains("local modifications to tracked files: docker-compose.yml")
        .run();
    assert_eq!(d.head(), C1);
    assert!(!steps(&d).iter().any(|s| s.starts_with("git reset") || s.starts_with("docker ")), "{:#?}", steps(&d));
}

#[test]
fn compose_v1_builds_the_services_its_yaml_names() {
    let d = Deployment::rebuild().compose_v1();
    d.sb.test().args(["upgrade", "--to", "2.0.0"]).run();
    let dir = d.sb.path().display().to_string();
    let base = format!(
        "-p demo --project-directory {dir} -f {dir}/docker-compose.yml -f {dir}/docker-compose.prod.yml --env-file {dir}/.env"
    );
    let v1 = std::fs::read_to_string(d.sb.path().join("compose-v1.log")).unwrap();
    assert_eq!(
        v1.lines().collect::<Vec<_>>(),
        vec![
            "version".to_string(),
            format!("{base} config"),
            format!("{base} build"),
            format!("{base} up -d --no-build")
        ]
    );
    assert_eq!(d.running_image(), "sha256:v-2.0.0+b1");
}
