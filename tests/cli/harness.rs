//! The test harness itself: a [`Test`] whose run does not end as declared
//! fails naming every expectation it missed, with what is needed to run it
//! again by hand (argv, cwd, the environment it set) and both streams.

use crate::common::{Sandbox, Test};

/// The panic message of `f`, which must panic.
fn panic_of(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let payload = std::panic::catch_unwind(f).expect_err("the run was declared wrongly: it must fail");
    payload.downcast_ref::<String>().cloned().unwrap_or_default()
}

#[test]
fn a_run_that_ends_otherwise_than_declared_shows_argv_cwd_env_and_both_streams() {
    let message = panic_of(|| {
        Test::new()
            .args(["--backup-keep", "many", "config"])
            .env("UPGRADERD_MARKER", "set by the test")
            .stdout_contains("never printed")
            .stderr_lacks("invalid")
            .run();
    });
    for needle in [
        "exit code 2, expected 0",
        "stdout lacks \"never printed\"",
        "stderr holds \"invalid\"",
        "argv: ",
        " --backup-keep many config",
        "cwd: /",
        "UPGRADERD_MARKER=set by the test",
        "UPGRADERD_STATE_DIR=",
        "stdout:\n",
        "stderr:\n  | error: invalid UPGRADERD_BACKUP_KEEP",
    ] {
        assert!(message.contains(needle), "the report lacks {needle:?}:\n{message}");
    }
}

#[test]
fn a_run_in_a_sandbox_sees_its_environment_and_the_test_s_overrides() {
    let mut sb = Sandbox::new();
    sb.env("UPGRADERD_CONTAINER", "from-sandbox").env("UPGRADERD_IMAGE", "ghcr.io/x/app");
    let run = sb
        .test()
        .args(["config"])
        .env("UPGRADERD_CONTAINER", "from-test")
        .unset("UPGRADERD_IMAGE")
        .stdout_contains("from-test")
        .stdout_lacks("from-sandbox")
        .stdout_lacks("ghcr.io/x/app")
        .run();
    assert_eq!(run.code, 0);
    // The sandbox keeps its own: the overrides were for that run only.
    sb.test().args(["config"]).stdout_contains("from-sandbox").stdout_contains("ghcr.io/x/app").run();
    sb.test().arg("--version").stdout(format!("upgraderd {}\n", env!("CARGO_PKG_VERSION"))).stderr("").run();
}
