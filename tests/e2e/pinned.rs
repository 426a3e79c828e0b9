//! Pinned versions and release families, on compose files written the way
//! apps ship them: Immich's one `.env` variable for two repositories,
//! Gitea's literal tag in an overlay, Authentik's `${IMAGE}:${TAG}` pair with
//! defaults, Mastodon's literal family across two repositories, `v`-prefixed
//! tags. The upgrade edits the pin (the exact bytes of the tag), rollback and
//! recovery put the files back byte for byte, and what cannot be edited is
//! refused before anything changes. Each under compose v1 and v2.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::Duration;

use crate::common;
use crate::compose::{each_compose, ComposeVersion};
use crate::scenario::Scenario;
use crate::world::{free_port, must, world};

each_compose! {
    an_immich_shaped_family_on_one_env_variable_moves_together_and_stays_moved;
    an_immich_shaped_family_that_migrates_and_crashes_goes_back_with_its_env_file_and_data;
    a_literal_pin_in_an_overlay_file_upgrades_and_rolls_back;
    an_image_and_tag_pair_with_defaults_moves_server_and_worker_and_a_manual_rollback_puts_it_back;
    a_literal_family_across_two_repositories_named_in_upgraderd_services_moves_together;
    a_version_only_the_shell_knew_and_a_read_only_env_file_are_refused_before_anything_changes;
    a_v_prefixed_family_is_upgraded_by_check_version_to_the_tag_that_exists;
    a_release_step_runs_with_the_new_image_before_it_serves_and_one_that_fails_rolls_back;
    an_immich_shaped_family_on_a_channel_moves_together_and_can_have_the_version_written_down;
}

/// One repository of a family: its last path component and the prefix its tags carry (`v` or none).
struct Repo {
    name: &'static str,
    tag_prefix: &'static str,
    /// A channel tag (`release`) pushed for 1.0.0 too, when not empty.
    channel: &'static str,
}

/// What a layout gets: the scenario's repositories, port and run marker.
struct Names {
    registry_path: String,
    port: u16,
    prefix: String,
}

impl Names {
    fn repo(&self, name: &str) -> String {
        format!("{}/{name}", self.registry_path)
    }
}

/// The app's service block (the primary: port, data, labels) with `image`.
fn app(n: &Names, image: &str) -> String {
    format!(
        "  app:\n    image: {image}\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
         volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n",
        port = n.port,
        prefix = n.prefix
    )
}

/// A worker on the app's data with `image`.
fn worker(n: &Names, service: &str, image: &str) -> String {
    format!(
        "  {service}:\n    image: {image}\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
         volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n",
        prefix = n.prefix
    )
}

fn volumes(n: &Names, names: &[&str]) -> String {
    let mut text = "volumes:\n".to_string();
    for name in names {
        text.push_str(&format!("  {name}:\n    labels:\n      upgraderd-e2e: {}\n", n.prefix));
    }
    text
}

impl Scenario {
    /// Pushes each repository's tags (`<prefix><version>` of the test images
    /// `versions`), keeps only the 1.0.0 ones local, writes `files` into the
    /// project directory and starts it with `compose_files` (`env` for compose's own environment).
    fn pinned(
        test: &str,
        compose: ComposeVersion,
        repos: &[Repo],
        versions: &[&str],
        layout: &dyn Fn(&Names) -> Vec<(&'static str, String)>,
        compose_files: &[&'static str],
        env: &[(&str, &str)],
    ) -> Option<Scenario> {
        let (world, name, docker_config) = Scenario::enter(test, compose)?;
        let names = Names {
            registry_path: format!("{}/{name}", world.registry),
            port: free_port(),
            prefix: world.prefix.clone(),
        };
        let build = format!("{}-build", world.prefix);
        for repo in repos {
            let repository = names.repo(repo.name);
            if !repo.channel.is_empty() {
                let tag = format!("{repository}:{}", repo.channel);
                must(&["docker", "tag", &format!("{build}:1.0.0"), &tag]);
                must(&["docker", "push", &tag]);
            }
            for version in versions {
                let tag = format!("{repository}:{}{version}", repo.tag_prefix);
                must(&["docker", "tag", &format!("{build}:{version}"), &tag]);
                must(&["docker", "push", &tag]);
                if *version != "1.0.0" {
                    must(&["docker", "rmi", &tag]);
                }
            }
        }
        let sandbox = common::Sandbox::new();
        let dir = sandbox.path().join("deploy");
        fs::create_dir_all(&dir).unwrap();
        for (file, text) in layout(&names) {
            fs::write(dir.join(file), text).unwrap();
        }
        let scenario = Scenario {
            name,
            repo: names.repo(repos[0].name),
            dir,
            port: names.port,
            sandbox,
            files: compose_files.to_vec(),
            compose_version: compose,
            docker_config,
            more_repos: repos[1..].iter().map(|r| names.repo(r.name)).collect(),
        };
        let mut up = scenario.compose_command(&["up", "-d"]);
        up.envs(env.iter().copied());
        let out = up.output().unwrap();
        assert!(out.status.success(), "compose up: {}", String::from_utf8_lossy(&out.stderr));
        scenario.wait_version("1.0.0");
        scenario.seed();
        Some(scenario)
    }

    /// The image reference `service`'s container runs.
    fn runs(&self, service: &str) -> String {
        let id = self.service_container(service).unwrap_or_else(|| panic!("{service} has a container"));
        must(&["docker", "inspect", "--format", "{{.Config.Image}}", &id]).trim().to_string()
    }

    fn file(&self, name: &str) -> String {
        fs::read_to_string(self.dir.join(name)).unwrap()
    }
}

const IMMICH_ENV: &str =
    "# Immich: the version of every image\nUPLOAD_LOCATION=./library\nIMMICH_VERSION=\"v1.0.0\"  # pinned\nTZ=Etc/UTC\n";

/// Immich's shape: server and machine learning on two repositories, one
/// `.env` variable; a cache beside them on its own repository, not moved.
fn immich(n: &Names) -> Vec<(&'static str, String)> {
    let compose = format!(
        "services:\n{}{}  cache:\n    image: {}:7.2\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
         volumes:\n      - cachedata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n{}",
        app(n, &format!("{}:${{IMMICH_VERSION:-release}}", n.repo("server"))),
        worker(n, "ml", &format!("{}:${{IMMICH_VERSION:-release}}", n.repo("ml"))),
        n.repo("cache"),
        volumes(n, &["appdata", "cachedata"]),
        prefix = n.prefix,
    );
    vec![("docker-compose.yml", compose), (".env", IMMICH_ENV.to_string())]
}

/// Immich's repositories: the server, machine learning and the cache (`cache:7.2` is pushed by hand).
fn start_immich(test: &str, compose: ComposeVersion, versions: &[&str]) -> Option<Scenario> {
    start_immich_with(test, compose, versions, IMMICH_ENV)
}

/// Immich with `env` as its `.env`; a `release` channel pushed for 1.0.0 beside the `v` tags.
fn start_immich_with(test: &str, compose: ComposeVersion, versions: &[&str], env: &str) -> Option<Scenario> {
    let world = world()?;
    let (_, name, _) = Scenario::enter(test, compose)?;
    let cache = format!("{}/{name}/cache:7.2", world.registry);
    must(&["docker", "tag", &format!("{}-build:1.0.0", world.prefix), &cache]);
    let repos = [
        Repo { name: "server", tag_prefix: "v", channel: "release" },
        Repo { name: "ml", tag_prefix: "v", channel: "release" },
    ];
    let layout = |n: &Names| {
        let mut files = immich(n);
        files[1].1 = env.to_string();
        files
    };
    let mut s = Scenario::pinned(test, compose, &repos, versions, &layout, &["docker-compose.yml"], &[])?;
    s.more_repos.push(format!("{}/{name}/cache", world.registry));
    Some(s)
}

fn an_immich_shaped_family_on_one_env_variable_moves_together_and_stays_moved(compose: ComposeVersion) {
    let Some(s) = start_immich("immich", compose, &["1.0.0", "2.0.0"]) else { return };
    let compose_file = s.file("docker-compose.yml");
    let cache = s.service_container("cache").unwrap();
    // Asked without the `v`: the registry's tag is `v2.0.0`, and that is what is written.
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.runs("app"), format!("{}:v2.0.0", s.repo));
    assert_eq!(s.runs("ml"), format!("{}:v2.0.0", s.more_repos[0]), "machine learning moved with the server");
    assert_eq!(s.file(".env"), IMMICH_ENV.replace("v1.0.0", "v2.0.0"), "only the version changed in .env");
    assert_eq!(s.file("docker-compose.yml"), compose_file, "the compose file is untouched");
    assert_eq!(s.service_container("cache").unwrap(), cache, "the cache was not recreated");
    let row = s.last_history();
    assert_eq!((row["status"].as_str(), row["services"].clone()), (Some("complete"), serde_json::json!(["app", "ml"])));
    assert!(run.stderr.contains("Wrote v2.0.0 over IMMICH_VERSION=v1.0.0 at"), "{}", run.stderr);
    // The app's own documented upgrade path keeps what upgraderd installed.
    s.compose(&["up", "-d"]);
    s.wait_version("2.0.0");
    assert_eq!(s.runs("ml"), format!("{}:v2.0.0", s.more_repos[0]));
}

fn an_immich_shaped_family_that_migrates_and_crashes_goes_back_with_its_env_file_and_data(compose: ComposeVersion) {
    let Some(s) = start_immich("immich-bad", compose, &["1.0.0", "2.0.5"]) else { return };
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", "v2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.file(".env"), IMMICH_ENV, ".env is byte for byte as before");
    assert_eq!(s.runs("app"), format!("{}:v1.0.0", s.repo));
    assert_eq!(s.runs("ml"), format!("{}:v1.0.0", s.more_repos[0]));
    assert_eq!(s.dump(), before, "the data is back as the old version left it");
}

/// Gitea's shape: the base file names one tag, the operator's overlay pins another.
fn gitea(n: &Names) -> Vec<(&'static str, String)> {
    let base = format!("services:\n{}{}", app(n, &format!("{}:0.9.0", n.repo("gitea"))), volumes(n, &["appdata"]));
    let overlay = format!(
        "# ops: pinned here\r\nservices:\r\n  app:\r\n    image: \"{}:1.0.0\"   # bump on release\r\n",
        n.repo("gitea")
    );
    vec![("docker-compose.yml", base), ("docker-compose.override.yml", overlay)]
}

fn a_literal_pin_in_an_overlay_file_upgrades_and_rolls_back(compose: ComposeVersion) {
    let repos = [Repo { name: "gitea", tag_prefix: "", channel: "" }];
    let files = ["docker-compose.yml", "docker-compose.override.yml"];
    let Some(s) = Scenario::pinned("gitea", compose, &repos, &["1.0.0", "2.0.0", "2.0.1"], &gitea, &files, &[]) else {
        return;
    };
    let (base, overlay) = (s.file("docker-compose.yml"), s.file("docker-compose.override.yml"));
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    let upgraded = overlay.replace(":1.0.0", ":2.0.0");
    assert_eq!(s.file("docker-compose.override.yml"), upgraded, "the overlay's tag moved, CRLF and comments kept");
    assert_eq!(s.file("docker-compose.yml"), base, "the base file is untouched");

    let run = s.upgraderd(&["upgrade", "--to", "2.0.1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back");
    s.wait_version("2.0.0");
    assert_eq!(s.file("docker-compose.override.yml"), upgraded, "the overlay names what runs again");
}

/// Authentik's shape: `${IMAGE:-…}:${TAG:-…}` for server and worker, the image in `.env`, the tag a default.
fn authentik(n: &Names) -> Vec<(&'static str, String)> {
    let image = "${AUTHENTIK_IMAGE:-ghcr.io/goauthentik/server}:${AUTHENTIK_TAG:-1.0.0}";
    let compose = format!("services:\n{}{}{}", app(n, image), worker(n, "worker", image), volumes(n, &["appdata"]));
    vec![("docker-compose.yml", compose), (".env", format!("PG_PASS=secret\nAUTHENTIK_IMAGE={}\n", n.repo("server")))]
}

fn an_image_and_tag_pair_with_defaults_moves_server_and_worker_and_a_manual_rollback_puts_it_back(
    compose: ComposeVersion,
) {
    let repos = [Repo { name: "server", tag_prefix: "", channel: "" }];
    let Some(s) =
        Scenario::pinned("authentik", compose, &repos, &["1.0.0", "2.0.0"], &authentik, &["docker-compose.yml"], &[])
    else {
        return;
    };
    let (compose_file, env) = (s.file("docker-compose.yml"), s.file(".env"));
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.runs("worker"), format!("{}:2.0.0", s.repo), "the worker moved with the server");
    assert_eq!(s.file("docker-compose.yml"), compose_file.replace(":-1.0.0}", ":-2.0.0}"), "both defaults moved");
    assert_eq!(s.file(".env"), env);

    let run = s.upgraderd(&["rollback"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.runs("worker"), format!("{}:1.0.0", s.repo));
    assert_eq!(s.file("docker-compose.yml"), compose_file, "the compose file is as it was before the upgrade");
    assert_eq!(s.dump(), before);
}

/// Mastodon's shape: web and sidekiq on one repository, streaming on another, literal tags.
fn mastodon(n: &Names) -> Vec<(&'static str, String)> {
    let compose = format!(
        "services:\n{}{}{}{}",
        app(n, &format!("{}:v1.0.0", n.repo("mastodon"))),
        worker(n, "sidekiq", &format!("{}:v1.0.0", n.repo("mastodon"))),
        worker(n, "streaming", &format!("{}:v1.0.0", n.repo("mastodon-streaming"))),
        volumes(n, &["appdata"])
    );
    vec![("docker-compose.yml", compose)]
}

fn a_literal_family_across_two_repositories_named_in_upgraderd_services_moves_together(compose: ComposeVersion) {
    let repos = [
        Repo { name: "mastodon", tag_prefix: "v", channel: "" },
        Repo { name: "mastodon-streaming", tag_prefix: "v", channel: "" },
    ];
    let Some(s) =
        Scenario::pinned("mastodon", compose, &repos, &["1.0.0", "2.0.0"], &mastodon, &["docker-compose.yml"], &[])
    else {
        return;
    };
    let compose_file = s.file("docker-compose.yml");
    let run = s
        .upgraderd_command(&["upgrade", "--to", "v2.0.0"])
        .env("UPGRADERD_SERVICES", "app,sidekiq,streaming")
        .output()
        .unwrap();
    let run = common::Run::from_output(run);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.runs("sidekiq"), format!("{}:v2.0.0", s.repo));
    assert_eq!(s.runs("streaming"), format!("{}:v2.0.0", s.more_repos[0]), "streaming kept its own repository");
    assert_eq!(s.file("docker-compose.yml"), compose_file.replace(":v1.0.0", ":v2.0.0"));
}

fn a_version_only_the_shell_knew_and_a_read_only_env_file_are_refused_before_anything_changes(compose: ComposeVersion) {
    let shell_only = |n: &Names| {
        let compose =
            format!("services:\n{}{}", app(n, &format!("{}:${{APP_TAG}}", n.repo("app"))), volumes(n, &["appdata"]));
        vec![("docker-compose.yml", compose), (".env", "OTHER=1\n".to_string())]
    };
    let repos = [Repo { name: "app", tag_prefix: "", channel: "" }];
    let Some(s) = Scenario::pinned(
        "shell-only",
        compose,
        &repos,
        &["1.0.0", "2.0.0"],
        &shell_only,
        &["docker-compose.yml"],
        &[("APP_TAG", "1.0.0")],
    ) else {
        return;
    };
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("APP_TAG") && run.stderr.contains("environment of whoever ran"), "{}", run.stderr);
    assert_eq!(s.file(".env"), "OTHER=1\n");
    assert_eq!(s.container(), container, "nothing was recreated");

    let Some(s) = start_immich("read-only-env", compose, &["1.0.0", "2.0.0"]) else { return };
    fs::set_permissions(s.dir.join(".env"), fs::Permissions::from_mode(0o444)).unwrap();
    let container = s.container();
    let run = s.upgraderd(&["upgrade", "--to", "v2.0.0"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains(".env is read-only (mode 0444)"), "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "failed");
    assert_eq!(s.file(".env"), IMMICH_ENV);
    assert_eq!(s.container(), container, "nothing was recreated");
    s.wait_version("1.0.0");
}

fn a_v_prefixed_family_is_upgraded_by_check_version_to_the_tag_that_exists(compose: ComposeVersion) {
    let Some(s) = start_immich("v-prefix", compose, &["1.0.0", "2.0.0"]) else { return };
    // `latest` of a pinned family is the newest release tag in its registry, spelled as there.
    let dry = s.upgraderd(&["upgrade", "--to", "latest", "--dry-run"]);
    assert_eq!(dry.code, 0, "{}", dry.stderr);
    assert!(dry.stdout.contains("# write v2.0.0 over IMMICH_VERSION=v1.0.0 at"), "{}", dry.stdout);
    assert!(
        dry.stderr.contains(&format!("ml: {}:v1.0.0 -> {0}:v2.0.0 (pinned: IMMICH_VERSION", s.more_repos[0])),
        "{}",
        dry.stderr
    );
    assert_eq!(s.file(".env"), IMMICH_ENV, "a dry run writes nothing");
    let run = s.upgraderd(&["--json", "check-version", "--upgrade"]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.runs("ml"), format!("{}:v2.0.0", s.more_repos[0]));
    assert!(s.file(".env").contains("IMMICH_VERSION=\"v2.0.0\""), "{}", s.file(".env"));
    let row = s.last_history();
    assert_eq!(row["status"], "complete", "the app reports 2.0.0 for the tag v2.0.0: {row}");
}

/// Killed after the edit, during the gate of a version that never answers:
/// the next `watch` puts the files, the images and the data back.
#[test]
fn a_kill_after_the_edit_is_recovered_with_the_env_file_put_back() {
    let Some(s) = start_immich("immich-kill", ComposeVersion::V1, &["1.0.0", "2.0.2"]) else { return };
    let before = s.dump();
    let mut upgrade = s
        .upgraderd_command(&["upgrade", "--to", "v2.0.2"])
        .env("UPGRADERD_HEALTH_TIMEOUT", "120s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    common::wait("the upgrade to reach its gate with .env edited")
        .within(Duration::from_secs(120))
        .every(Duration::from_millis(20))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until_true(|| {
            s.try_status_file().is_some_and(|st| st["status"] == "health_check") && s.file(".env").contains("v2.0.2")
        });
    upgrade.kill().unwrap();
    upgrade.wait().unwrap();
    assert_eq!(s.file(".env"), IMMICH_ENV.replace("v1.0.0", "v2.0.2"), "killed with the new version written");

    s.recover_with_watch(&["rolled_back"]);
    s.wait_version("1.0.0");
    assert_eq!(s.file(".env"), IMMICH_ENV, "the env file is back byte for byte");
    assert_eq!(s.runs("ml"), format!("{}:v1.0.0", s.more_repos[0]));
    assert_eq!(s.dump(), before);
    let leftovers: Vec<_> = fs::read_dir(&s.dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "no temp file left beside .env: {leftovers:?}");
}

/// The new version is written into `.env` (and proven by `compose config`)
/// while the old one serves, before the backup: stopped during the backup,
/// the upgrade puts the file back itself; killed there, the next `watch` does.
/// Either way nothing else changed.
#[test]
fn a_stop_or_a_kill_during_the_backup_puts_the_written_pin_back() {
    let Some(s) = start_immich("immich-early", ComposeVersion::V1, &["1.0.0", "2.0.0"]) else { return };
    let before = s.dump();
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        // New data each time (none shared with an earlier snapshot), which the
        // first pass takes a while over, so the test can catch the upgrade in it.
        let mut bulk = fs::File::create(s.volume_dir().join("bulk.bin")).unwrap();
        let mut random = fs::File::open("/dev/urandom").unwrap();
        std::io::copy(&mut std::io::Read::take(&mut random, 384 << 20), &mut bulk).unwrap();
        drop(bulk);
        let mut upgrade = s
            .upgraderd_command(&["upgrade", "--to", "v2.0.0"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Caught with the switch's compose started and held at the gate, which must never let it through.
        common::wait("the upgrade to back up with .env already edited and compose held")
            .within(Duration::from_secs(120))
            .every(Duration::from_millis(5))
            .showing(|| format!("{:?}\n{}", s.try_status_file(), s.file(".env")))
            .until_true(|| {
                s.try_status_file().is_some_and(|st| {
                    st["status"] == "backing_up"
                        && st["logs"].to_string().contains("held from the engine until the switch")
                }) && s.file(".env").contains("v2.0.0")
            });
        unsafe { libc::kill(upgrade.id() as i32, signal) };
        upgrade.wait().unwrap();
        if signal == libc::SIGKILL {
            s.recover_with_watch(&["failed"]);
        }
        let row = s.last_history();
        assert_eq!(row["status"], "failed", "{row}");
        assert!(row["errorMessage"].as_str().unwrap_or_default().contains("before"), "{row}");
        assert_eq!(s.file(".env"), IMMICH_ENV, "the env file is back byte for byte after signal {signal}");
        s.wait_version("1.0.0");
        assert_eq!(s.runs("ml"), format!("{}:v1.0.0", s.more_repos[0]));
        assert_eq!(s.dump(), before);
        assert!(!s.sandbox.state().join("compose-gate/engine.sock").exists(), "the gate outlived signal {signal}");
    }
}

fn a_release_step_runs_with_the_new_image_before_it_serves_and_one_that_fails_rolls_back(compose: ComposeVersion) {
    let repos = [
        Repo { name: "mastodon", tag_prefix: "v", channel: "" },
        Repo { name: "mastodon-streaming", tag_prefix: "v", channel: "" },
    ];
    let Some(s) =
        Scenario::pinned("steps", compose, &repos, &["1.0.0", "2.0.0"], &mastodon, &["docker-compose.yml"], &[])
    else {
        return;
    };
    let compose_file = s.file("docker-compose.yml");
    let before = s.dump();
    let upgrade = |step: &str| {
        let mut cmd = s.upgraderd_command(&["upgrade", "--to", "v2.0.0"]);
        cmd.env("UPGRADERD_SERVICES", "app,sidekiq,streaming").env("UPGRADERD_RELEASE_STEPS", step);
        common::Run::from_output(cmd.output().unwrap())
    };
    let run = upgrade("sidekiq: release-step 3");
    assert_eq!(run.code, 1, "{}", run.stderr);
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{}", run.stderr);
    assert!(
        row["errorMessage"].as_str().unwrap_or_default().contains("release step `sidekiq: release-step 3`"),
        "{row}"
    );
    assert!(s.last_journal().iter().all(|e| e["status"] != "health_check"), "nothing served the new version");
    s.wait_version("1.0.0");
    assert_eq!(s.file("docker-compose.yml"), compose_file);
    assert_eq!(s.dump(), before);

    let run = upgrade("app: release-step 0");
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert!(run.stderr.contains("release step ran on 2.0.0, exiting 0"), "it ran with the new image: {}", run.stderr);
}

fn an_immich_shaped_family_on_a_channel_moves_together_and_can_have_the_version_written_down(compose: ComposeVersion) {
    let env = "IMMICH_VERSION=release\n";
    let Some(s) = start_immich_with("channel", compose, &["1.0.0", "2.0.0"], env) else { return };
    let image_id = |reference: &str| must(&["docker", "image", "inspect", "--format", "{{.Id}}", reference]);
    let run = s.upgraderd(&["upgrade", "--to", "v2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    let ml = s.service_container("ml").unwrap();
    let ml_image = must(&["docker", "inspect", "--format", "{{.Image}}", &ml]);
    assert_eq!(ml_image, image_id(&format!("{}:v2.0.0", s.more_repos[0])), "machine learning moved with the server");
    assert_eq!(s.file(".env"), env, "a channel moves by its tag: .env is untouched");

    let run = s.upgraderd(&["rollback"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("1.0.0");
    let ml_image = must(&["docker", "inspect", "--format", "{{.Image}}", &s.service_container("ml").unwrap()]);
    assert_eq!(ml_image, image_id(&format!("{}:v1.0.0", s.more_repos[0])), "and went back with it");

    let run =
        s.upgraderd_command(&["upgrade", "--to", "v2.0.0"]).env("UPGRADERD_PIN_CHANNELS", "true").output().unwrap();
    let run = common::Run::from_output(run);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.file(".env"), "IMMICH_VERSION=v2.0.0\n", "the version installed is written down");
    assert_eq!(s.runs("ml"), format!("{}:v2.0.0", s.more_repos[0]));
}
