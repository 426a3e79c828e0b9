//! Stacks: the compose project is the unit. A web and a worker on one image
//! move together and go back together; a one-shot migration job must exit 0;
//! a service in a profile upgrades without extra settings; an unknown name in
//! `UPGRADERD_SERVICES` is a configuration error. Each under compose v1 and v2.

use serde_json::Value;

use crate::compose::{each_compose, ComposeVersion};
use crate::scenario::Scenario;
use crate::world::must;

each_compose! {
    a_web_and_a_worker_on_one_image_move_together;
    a_version_that_migrates_and_crashes_leaves_the_whole_set_on_the_old_version_with_its_data;
    a_failing_migration_job_rolls_back_before_anything_serves_the_new_version;
    a_service_in_a_profile_upgrades_without_extra_settings;
    an_unknown_name_in_upgraderd_services_is_a_configuration_error;
}

/// The app's service (the primary, `extra` lines added to it) and `more` services, sharing its data.
fn stack(app_extra: &'static str, more: &'static str) -> impl Fn(&str, u16, &str) -> String {
    move |repo, port, prefix| {
        let more = more.replace("{repo}", repo).replace("{prefix}", prefix);
        format!(
            "services:\n  app:\n    image: {repo}:latest\n    restart: unless-stopped\n    ports:\n      - \"127.0.0.1:{port}:3001\"\n    \
             volumes:\n      - appdata:/data\n    env_file: app.env\n    labels:\n      upgraderd-e2e: {prefix}\n{app_extra}{more}\
             volumes:\n  appdata:\n    labels:\n      upgraderd-e2e: {prefix}\n"
        )
    }
}

const WORKER: &str =
    "  worker:\n    image: {repo}:latest\n    restart: unless-stopped\n    environment:\n      APP_ROLE: worker\n    \
                      volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n";

const MIGRATE: &str =
    "  migrate:\n    image: {repo}:latest\n    restart: \"no\"\n    environment:\n      APP_ROLE: migrate\n    \
                       volumes:\n      - appdata:/data\n    labels:\n      upgraderd-e2e: {prefix}\n";

const AFTER_MIGRATE: &str = "    depends_on:\n      migrate:\n        condition: service_completed_successfully\n";

impl Scenario {
    /// The version label of the image `service`'s container runs.
    fn service_version(&self, service: &str) -> String {
        let id = self.service_container(service).unwrap_or_else(|| panic!("{service} has a container"));
        let image = must(&["docker", "inspect", "--format", "{{.Image}}", &id]);
        let label = "{{index .Config.Labels \"org.opencontainers.image.version\"}}";
        must(&["docker", "image", "inspect", "--format", label, image.trim()]).trim().to_string()
    }

    fn service_running(&self, service: &str) -> bool {
        let id = self.service_container(service).unwrap_or_default();
        must(&["docker", "inspect", "--format", "{{.State.Running}}", &id]).trim() == "true"
    }
}

fn a_web_and_a_worker_on_one_image_move_together(compose: ComposeVersion) {
    let layout = stack("", WORKER);
    let Some(s) = Scenario::start_with("pair", &["1.0.0", "2.0.0"], compose, &layout, &["up", "-d"]) else { return };
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
    assert_eq!(s.service_version("worker"), "2.0.0", "the worker moved with the web");
    assert!(s.service_running("worker"));
    let row = s.last_history();
    assert_eq!(row["services"], serde_json::json!(["app", "worker"]), "{row}");
    assert!(s.dump().starts_with("schema 2"), "{}", s.dump());
}

fn a_version_that_migrates_and_crashes_leaves_the_whole_set_on_the_old_version_with_its_data(compose: ComposeVersion) {
    let layout = stack("", WORKER);
    let Some(s) = Scenario::start_with("pair-bad", &["1.0.0", "2.0.5"], compose, &layout, &["up", "-d"]) else {
        return;
    };
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.5"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert_eq!(s.last_history()["status"], "rolled_back", "{}", run.stderr);
    s.wait_version("1.0.0");
    assert_eq!(s.service_version("worker"), "1.0.0", "the worker went back too");
    assert!(s.service_running("worker"), "the worker runs the old version on the restored data");
    assert_eq!(s.dump(), before, "the data is back as the old version left it");
}

fn a_failing_migration_job_rolls_back_before_anything_serves_the_new_version(compose: ComposeVersion) {
    let layout = stack(AFTER_MIGRATE, MIGRATE);
    let Some(s) = Scenario::start_with("job", &["1.0.0", "2.0.1"], compose, &layout, &["up", "-d"]) else { return };
    let before = s.dump();
    let run = s.upgraderd(&["upgrade", "--to", "2.0.1"]);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let row = s.last_history();
    assert_eq!(row["status"], "rolled_back", "{}", run.stderr);
    assert!(row["errorMessage"].as_str().unwrap_or_default().contains("migrate"), "{row}");
    let journal: Vec<Value> = s.last_journal();
    assert!(
        journal.iter().all(|e| e["status"] != "health_check"),
        "the web never got as far as its health gate: {journal:#?}"
    );
    s.wait_version("1.0.0");
    assert_eq!(s.dump(), before);
}

fn a_service_in_a_profile_upgrades_without_extra_settings(compose: ComposeVersion) {
    let layout = stack("    profiles: [app]\n", "");
    let up = ["--profile", "app", "up", "-d"];
    let Some(s) = Scenario::start_with("profile", &["1.0.0", "2.0.0"], compose, &layout, &up) else { return };
    let run = s.upgraderd(&["upgrade", "--to", "2.0.0"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    s.wait_version("2.0.0");
}

fn an_unknown_name_in_upgraderd_services_is_a_configuration_error(compose: ComposeVersion) {
    let layout = stack("", WORKER);
    let Some(s) = Scenario::start_with("unknown", &["1.0.0", "2.0.0"], compose, &layout, &["up", "-d"]) else {
        return;
    };
    let container = s.container();
    let run =
        s.upgraderd_command(&["upgrade", "--to", "2.0.0"]).env("UPGRADERD_SERVICES", "app,wrker").output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("UPGRADERD_SERVICES names `wrker`"), "{stderr}");
    assert_eq!(s.container(), container, "nothing was recreated");
    s.wait_version("1.0.0");
}
