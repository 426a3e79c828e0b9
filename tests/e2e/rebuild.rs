//! The rebuild strategy on the real engine: a git checkout of a local bare
//! repository built by compose, upgraded to a tag, rolled back from a bad tip,
//! refused when unsafe, and put back after a killed upgrader; each under
//! compose v1 and v2 (they build and name images differently).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{self, Sandbox};
use crate::compose::{each_compose, ComposeVersion};
use crate::scenario::Scenario;
use crate::world::free_port;

/// Runs git in `dir` with a fixed identity.
pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=upgraderd tests",
            "-c",
            "user.email=tests@upgraderd.invalid",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The app's source at one release: a Dockerfile on the locally built image `base`.
pub(crate) fn commit_release(
    src: &Path,
    base: &str,
    version: &str,
    behavior: &str,
    schema: u8,
    message: &str,
) -> String {
    fs::write(
        src.join("Dockerfile"),
        format!(
            "FROM {base}\nENV APP_VERSION={version} APP_BEHAVIOR={behavior} APP_SCHEMA={schema}\n\
             LABEL org.opencontainers.image.version={version}\n"
        ),
    )
    .unwrap();
    git(src, &["add", "-A"]);
    git(src, &["commit", "-q", "-m", message]);
    git(src, &["rev-parse", "HEAD"])
}

impl Scenario {
    /// The OpenTrace layout: a checkout of a local bare repository (file URL)
    /// deployed with `docker-compose -f docker-compose.prod.yml up --build -d`
    /// at v1.0.0, while origin/main has 2.0.0 (tag v2.0.0) and a broken 2.0.1
    /// at its tip; tag v9.9.9 names a commit whose build fails.
    pub fn start_rebuild(test: &str, compose: ComposeVersion) -> Option<(Scenario, Vec<String>)> {
        let (world, name, docker_config) = Scenario::enter(test, compose)?;
        let sandbox = Sandbox::new();
        let src = sandbox.path().join("src");
        fs::create_dir_all(&src).unwrap();
        git(&src, &["init", "-q"]);
        let port = free_port();
        fs::write(
            src.join("docker-compose.prod.yml"),
            format!(
                "version: '3.7'\nservices:\n  app:\n    build: .\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
                 volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\nvolumes:\n  appdata:\n    labels:\n      upgraderd-e2e: {prefix}\n",
                prefix = world.prefix
            ),
        )
        .unwrap();
        let p = &format!("{}-build:1.0.0", world.prefix);
        let mut commits = vec![commit_release(&src, p, "1.0.0", "good", 1, "Release 1.0.0")];
        git(&src, &["tag", "v1.0.0"]);
        commits.push(commit_release(&src, p, "2.0.0", "good", 2, "Release 2.0.0"));
        git(&src, &["tag", "v2.0.0"]);
        commits.push(commit_release(&src, p, "2.0.1", "migrate-crash", 2, "Release 2.0.1 (broken migration)"));
        git(&src, &["checkout", "-q", "-b", "broken", "v1.0.0"]);
        fs::write(src.join("Dockerfile"), "FROM scratch\nCOPY does-not-exist /nothing\n").unwrap();
        git(&src, &["commit", "-q", "-am", "A build that fails"]);
        git(&src, &["tag", "v9.9.9"]);
        git(&src, &["checkout", "-q", "main"]);
        let scenario = Scenario::deploy_checkout(name, sandbox, port, compose, docker_config);
        Some((scenario, commits))
    }

    /// The checkout in `sandbox/src` pushed to a bare `origin.git`, cloned to
    /// `deploy` at v1.0.0 and started as OpenTrace starts it
    /// (`up --build -d` of `docker-compose.prod.yml`), seeded.
    pub(crate) fn deploy_checkout(
        name: String,
        sandbox: Sandbox,
        port: u16,
        compose: ComposeVersion,
        docker_config: Option<std::path::PathBuf>,
    ) -> Scenario {
        let src = sandbox.path().join("src");
        let origin = sandbox.path().join("origin.git");
        git(sandbox.path(), &["clone", "-q", "--bare", src.to_str().unwrap(), origin.to_str().unwrap()]);
        let dir = sandbox.path().join("deploy");
        git(sandbox.path(), &["clone", "-q", &format!("file://{}", origin.display()), dir.to_str().unwrap()]);
        git(&dir, &["reset", "-q", "--hard", "v1.0.0"]);
        let scenario = Scenario {
            repo: compose.built_image(&name, "app"),
            name,
            dir,
            port,
            sandbox,
            files: vec!["docker-compose.prod.yml"],
            compose_version: compose,
            docker_config,
            more_repos: Vec::new(),
        };
        scenario.compose(&["up", "-d", "--build"]);
        scenario.wait_version("1.0.0");
        scenario.seed();
        scenario
    }

    pub fn head(&self) -> String {
        git(&self.dir, &["rev-parse", "HEAD"])
    }

    pub fn rebuild(&self, args: &[&str]) -> common::Run {
        let mut all = vec!["upgrade", "--strategy", "rebuild"];
        all.extend_from_slice(args);
        self.upgraderd(&all)
    }
}

each_compose! {
    rebuild_to_a_tag_then_a_bad_tip_rolls_back_to_the_commit_its_images_and_data;
    rebuild_refuses_what_it_cannot_do_safely_before_anything_running_changes;
    a_rebuild_upgrader_killed_after_the_switch_is_put_back_by_the_next_watch;
    a_rebuild_upgrader_killed_after_moving_the_checkout_gets_the_checkout_back;
}

fn rebuild_to_a_tag_then_a_bad_tip_rolls_back_to_the_commit_its_images_and_data(compose: ComposeVersion) {
    let Some((s, commits)) = Scenario::start_rebuild("rebuild", compose) else { return };
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1]);
    assert!(s.dump().starts_with("schema 2"));
    let row = s.last_history();
    assert_eq!((row["strategy"].as_str(), row["status"].as_str()), (Some("rebuild"), Some("complete")));
    assert_eq!(row["previousCommit"], commits[0].as_str());
    assert!(row["targetSubject"].as_str().unwrap().ends_with("Release 2.0.0"), "{row}");
    let table = s.upgraderd(&["history"]);
    assert!(table.stdout.contains("Release 2.0.0"), "history shows commits:\n{}", table.stdout);

    let before = s.dump();
    let container = s.container();
    let run = s.rebuild(&["--to", "latest"]);
    assert_eq!(run.code, 1, "{}\n{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("Building"), "the build is its own step:\n{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1], "the checkout is back at the previous commit");
    assert_eq!(s.dump(), before, "data restored");
    assert_ne!(s.container(), container, "recreated from the kept image");
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{row}");
    assert!(!run.stderr.contains("Building 2.0.0"));
}

fn rebuild_refuses_what_it_cannot_do_safely_before_anything_running_changes(compose: ComposeVersion) {
    let Some((s, commits)) = Scenario::start_rebuild("rbrefuse", compose) else { return };
    let container = s.container();
    let unchanged = |what: &str| {
        assert_eq!(s.container(), container, "{what}: the container was not touched");
        assert_eq!(s.head(), commits[0], "{what}: the checkout did not move");
        s.wait_version("1.0.0");
    };

    // A local modification to a tracked file.
    fs::write(
        s.dir.join("docker-compose.prod.yml"),
        fs::read_to_string(s.dir.join("docker-compose.prod.yml")).unwrap() + "# local\n",
    )
    .unwrap();
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("local modifications to tracked files: docker-compose.prod.yml"), "{}", run.stderr);
    git(&s.dir, &["checkout", "--", "docker-compose.prod.yml"]);
    unchanged("dirty tree");

    // A diverged branch: a local commit the remote does not have.
    fs::write(s.dir.join("NOTES"), "local\n").unwrap();
    git(&s.dir, &["add", "NOTES"]);
    git(&s.dir, &["commit", "-q", "-m", "local change"]);
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert!(run.stderr.contains("is not a fast-forward of the checkout"), "{}", run.stderr);
    git(&s.dir, &["reset", "-q", "--hard", &commits[0]]);
    unchanged("diverged");

    // An unreachable remote.
    git(&s.dir, &["remote", "set-url", "origin", "file:///nonexistent/origin.git"]);
    let run = s.rebuild(&["--to", "2.0.0"]);
    assert!(run.stderr.contains("the remote origin cannot be reached"), "{}", run.stderr);
    let origin = s.sandbox.path().join("origin.git");
    git(&s.dir, &["remote", "set-url", "origin", &format!("file://{}", origin.display())]);
    unchanged("unreachable remote");

    // A build that fails: nothing running changes and the checkout goes back.
    let run = s.rebuild(&["--to", "9.9.9", "--force"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("building the new version failed; the checkout is back"), "{}", run.stderr);
    unchanged("failed build");
    let row = s.last_history();
    assert_eq!(row["status"], "failed");
    assert_eq!(row["switched"], false);
}

fn a_rebuild_upgrader_killed_after_the_switch_is_put_back_by_the_next_watch(compose: ComposeVersion) {
    let Some((s, commits)) = Scenario::start_rebuild("rbkill", compose) else { return };
    let before = s.dump();
    let mut upgrade = s
        .upgraderd_command(&["upgrade", "--strategy", "rebuild", "--to", "2.0.0"])
        .env("UPGRADERD_HEALTH_STABLE", "120s")
        .env("UPGRADERD_HEALTH_TIMEOUT", "180s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait("the upgrade to reach health_check")
        .within(Duration::from_secs(120))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until_true(|| s.try_status_file().is_some_and(|st| st["status"] == "health_check"));
    upgrade.kill().unwrap();
    upgrade.wait().unwrap();
    s.wait_version("2.0.0");
    assert_eq!(s.head(), commits[1]);

    let log = s.sandbox.path().join("watch.log");
    let stderr = std::fs::File::create(&log).unwrap();
    let mut daemon = s.upgraderd_command(&["watch"]).stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
    common::wait("watch to roll the killed upgrade back")
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(200))
        .showing(|| format!("{}\nwatch said:\n{}", s.last_history(), std::fs::read_to_string(&log).unwrap_or_default()))
        .until_true(|| s.last_history()["status"] == "rolled_back");
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    s.wait_version("1.0.0");
    assert_eq!(s.head(), commits[0], "the checkout is back at the recorded commit");
    assert_eq!(s.dump(), before);
}

fn a_rebuild_upgrader_killed_after_moving_the_checkout_gets_the_checkout_back(compose: ComposeVersion) {
    let Some((s, commits)) = Scenario::start_rebuild("rbmoved", compose) else { return };
    let before = s.dump();
    let mut upgrade = s
        .upgraderd_command(&["upgrade", "--strategy", "rebuild", "--to", "2.0.0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once the checkout has moved: while the build runs, before the
    // switch. Not while `git reset` itself runs: git killed there leaves
    // .git/HEAD.lock behind, and recovery cannot move the checkout back (a
    // known limitation of upgraderd, not what this test is about).
    let building = || {
        let status = s.try_status_file()?;
        status["logs"]
            .as_array()?
            .iter()
            .any(|line| line.as_str().is_some_and(|l| l.starts_with("Building ")))
            .then_some(())
    };
    common::wait("the build of the moved checkout to start")
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(5))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until(building);
    assert_ne!(s.head(), commits[0], "the checkout moved before the build");
    upgrade.kill().unwrap();
    upgrade.wait().unwrap();

    s.recover_with_watch(&["failed", "rolled_back"]);
    assert_eq!(
        s.head(),
        commits[0],
        "the checkout is back where the running version was built from: {}\ngit status:\n{}",
        s.last_history(),
        git(&s.dir, &["status", "--porcelain=v1", "--ignored"])
    );
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
    eprintln!("rbmoved: recovered as {}", s.last_history()["status"]);
}
