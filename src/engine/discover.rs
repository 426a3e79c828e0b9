//! The deployment as it runs: which container, which compose project and
//! tool, which version, which data. One way to find it, used by `upgrade`,
//! `rollback`, `backup`, `check-version`, `watch` and recovery alike.
//!
//! This is where host configuration meets what Docker reports: a configured
//! value always wins over a container label, and messages name the setting
//! that would fix a gap.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};

use crate::config::Config;
use crate::engine::pin;
use crate::exit::usage;
use crate::ops::compose::{Compose, Orchestrator, Project, ProjectLabels};
use crate::ops::compose_file::scan as scan_compose_files;
use crate::ops::docker::{Container, Docker, ImageRef, Mount};
use crate::ops::git::Git;
use crate::ops::process::Runner;
use crate::ops::swarm::{self, Service, Swarm};
use crate::states::Status;
use crate::store::db::Db;

/// The running service as discovered from Docker.
pub(crate) struct Deployment {
    pub docker: Docker,
    pub compose: Compose,
    pub container: Container,
    pub project: Project,
}

/// Finds the container, its compose project and the compose tool, and the
/// services that move together; for a Swarm service (configured, or named by
/// a task container's labels), its stack instead.
pub(crate) fn discover(config: &Config, runner: &Runner) -> Result<Deployment> {
    let docker = Docker::new(&config.docker, runner.clone());
    if let Some(service) = &config.swarm_service {
        return discover_swarm(config, docker, service);
    }
    let container = find_container(config, &docker)?;
    if let Some(service) = container.label(swarm::SERVICE_LABEL) {
        let service = service.to_string();
        return discover_swarm(config, docker, &service);
    }
    let mut project = project_of(config, &container)?;
    let compose = compose_tool(config, runner)?;
    project.services = service_set(config, &docker, &compose, &project, &container)?;
    Ok(Deployment { docker, compose, container, project })
}

/// A Swarm service's stack, as a project: the stack's name, the primary
/// service by its name in the stack, what stands for its running container
/// (for its version: [`swarm_container`]), and the stack's services that move
/// with it.
fn discover_swarm(config: &Config, docker: Docker, name: &str) -> Result<Deployment> {
    let cli = Swarm::new(docker.clone());
    let service = swarm_service(&cli, name)?;
    let stack = service.stack().map(str::to_string).ok_or_else(|| {
        usage(format!(
            "Swarm service {name} was not deployed by `docker stack deploy` (it has no {} label); upgraderd upgrades \
             the services of a stack",
            swarm::STACK_LABEL
        ))
    })?;
    let primary = service.short_name().to_string();
    let container = swarm_container(&docker, &service)?;
    let mut project = Project::stack(stack, primary, Vec::new());
    project.services = stack_service_set(config, &cli, &project, &service)?;
    // Never run for a stack: Swarm, not compose, changes its services.
    let compose = Compose::assume(vec![config.docker.display().to_string(), "compose".into()], true, docker.runner());
    Ok(Deployment { docker, compose, container, project })
}

/// The Swarm service named by `UPGRADERD_SWARM_SERVICE` (or a task container's label), by name or id.
fn swarm_service(cli: &Swarm, name: &str) -> Result<Service> {
    cli.service(name)
        .with_context(|| format!("finding the Swarm service named by UPGRADERD_SWARM_SERVICE={name}"))?
        .ok_or_else(|| {
            usage(format!(
                "Swarm service {name} (UPGRADERD_SWARM_SERVICE) does not exist; `docker service ls` lists the services"
            ))
        })
}

/// What stands for a Swarm service's running container: a task container of
/// it on this node when there is one (its image is what runs here), else the
/// service as the manager knows it. Only a manager changes services, and the
/// usual shape runs none of their tasks there (`node.role == worker`): the
/// spec names the image, the image's labels tell the version (pulled here to
/// read them, by the digest the spec pins), and the gate reads the tasks'
/// states through the manager. Its data, if any, is placement's to judge.
fn swarm_container(docker: &Docker, service: &Service) -> Result<Container> {
    // By its name, also when configured by id: task containers carry names.
    let name = service.spec.name.as_str();
    let running = docker.containers_with_label(swarm::SERVICE_LABEL, name, false)?;
    if let Some(container) = running.into_iter().next() {
        return Ok(container);
    }
    let image = service.image().to_string();
    if !docker.runner().dry_run() && docker.image_id(&image)?.is_none() {
        // Not the upgrade's pull: the version's label is read from the image, not guessed from its tag.
        // One that fails leaves the version to the last upgrade or the tag (`current_version`).
        let pull = docker.cmd(["pull", "-q", "--", &image]).timeout(std::time::Duration::from_secs(120));
        let _ = docker.runner().run(&pull);
    }
    Ok(stand_in(name, &image))
}

/// A running container of `image` named after the service: what the rest of
/// discovery reads of a primary container (its name, its image by reference).
fn stand_in(name: &str, image: &str) -> Container {
    let inspect = serde_json::json!({
        "Id": "", "Name": name, "Image": image,
        "Config": {"Image": image}, "State": {"Status": "running", "Running": true},
    });
    serde_json::from_value(inspect).expect("a stand-in container reads as one")
}
/// The stack's services that move with the primary, the primary first:
/// `UPGRADERD_SERVICES` (names in the stack, each checked), else every
/// service of the stack on the primary's image repository.
fn stack_service_set(config: &Config, cli: &Swarm, project: &Project, primary: &Service) -> Result<Vec<String>> {
    let services = cli.stack_services(&project.name)?;
    let in_stack: Vec<(String, String)> =
        services.iter().map(|s| (s.short_name().to_string(), swarm::without_digest(s.image()).to_string())).collect();
    let primary_image = swarm::without_digest(primary.image());
    let chosen = if config.services.is_empty() {
        same_repository(primary_image, &in_stack)
    } else {
        let defined: Vec<String> = in_stack.iter().map(|(s, _)| s.clone()).collect();
        let named = named_services(&config.services, &defined, &in_stack, &format!("stack {}", project.name))?;
        on_primary_repository(&named, primary_image, &in_stack)?
    };
    Ok(std::iter::once(project.service.clone()).chain(chosen.into_iter().filter(|s| *s != project.service)).collect())
}

/// `UPGRADERD_SERVICES` of a stack, each running the primary's repository:
/// every moved service gets the primary's new image, which would replace
/// another repository's program by this one.
fn on_primary_repository(named: &[String], primary_image: &str, in_stack: &[(String, String)]) -> Result<Vec<String>> {
    let repository = ImageRef::parse(primary_image).repository;
    let foreign = in_stack
        .iter()
        .find(|(service, image)| named.contains(service) && ImageRef::parse(image).repository != repository);
    match foreign {
        Some((service, image)) => Err(usage(format!(
            "UPGRADERD_SERVICES names `{service}`, which runs {image}, not {repository}: an upgrade gives every \
             service it names {repository}'s new image. Leave `{service}` out: its data is backed up with the \
             stack's whether it moves or not"
        ))),
        None => Ok(named.to_vec()),
    }
}

/// The services that move together, the primary first: `UPGRADERD_SERVICES`
/// (each checked against the project), else every service of the project whose
/// container runs the primary's image repository (a web and a worker on one image).
pub(crate) fn service_set(
    config: &Config,
    docker: &Docker,
    compose: &Compose,
    project: &Project,
    primary: &Container,
) -> Result<Vec<String>> {
    let containers = docker.project_containers(&project.name)?;
    let running: Vec<(String, String)> = containers
        .iter()
        // upgraderd's own container (a sidecar in the project) never moves with the app.
        .filter(|c| crate::engine::sidecar::own_container_id() != Some(c.id.as_str()))
        .filter_map(|c| Some((c.label("com.docker.compose.service")?.to_string(), c.config.image.clone())))
        .collect();
    let chosen = if config.services.is_empty() {
        let mut family = same_repository(&primary.config.image, &running);
        family.extend(same_version_variable(project));
        family.sort();
        family.dedup();
        family
    } else {
        let defined = compose.service_names(project)?;
        named_services(&config.services, &defined, &running, &format!("compose project {}", project.name))?
    };
    Ok(std::iter::once(project.service.clone()).chain(chosen.into_iter().filter(|s| *s != project.service)).collect())
}

/// The services whose tag is the variable that carries the primary's
/// (`immich-server` and `immich-machine-learning` on `${IMMICH_VERSION}`),
/// whatever their repositories. Files that cannot be read add none here;
/// the upgrade's preflight says why.
fn same_version_variable(project: &Project) -> Vec<String> {
    let (Ok(scan), Ok(env)) = (scan_compose_files(&project.files), pin::EnvFiles::of(project)) else {
        return Vec::new();
    };
    let Some(variable) = pin::tag_variable(&project.service, &scan, &env, project) else { return Vec::new() };
    scan.images
        .keys()
        .filter(|service| pin::tag_variable(service, &scan, &env, project).as_deref() == Some(variable.as_str()))
        .cloned()
        .collect()
}

/// The services whose containers run `image`'s repository, by name.
fn same_repository(image: &str, running: &[(String, String)]) -> Vec<String> {
    let repository = ImageRef::parse(image).repository;
    let mut services: Vec<String> = running
        .iter()
        .filter(|(_, image)| ImageRef::parse(image).repository == repository)
        .map(|(service, _)| service.clone())
        .collect();
    services.sort();
    services.dedup();
    services
}

/// `UPGRADERD_SERVICES`, each a service the project defines (or runs: one in an inactive profile).
fn named_services(
    named: &[String],
    defined: &[String],
    running: &[(String, String)],
    project: &str,
) -> Result<Vec<String>> {
    let known = |name: &String| defined.contains(name) || running.iter().any(|(service, _)| service == name);
    match named.iter().find(|name| !known(name)) {
        Some(unknown) => Err(usage(format!(
            "UPGRADERD_SERVICES names `{unknown}`, which {project} does not define; its services: {}",
            defined.join(", ")
        ))),
        None => Ok(named.to_vec()),
    }
}

/// Whether the configuration names a deployment to find (what [`find_container`] needs).
pub(crate) fn deployment_configured(config: &Config) -> bool {
    config.container.is_some()
        || config.swarm_service.is_some()
        || (config.compose_project.is_some() && config.service.is_some())
}

/// The container whose image is the running version: for
/// `UPGRADERD_SWARM_SERVICE`, what [`swarm_container`] finds; else [`find_container`].
pub(crate) fn primary_container(config: &Config, docker: &Docker) -> Result<Container> {
    match &config.swarm_service {
        Some(name) => swarm_container(docker, &swarm_service(&Swarm::new(docker.clone()), name)?),
        None => find_container(config, docker),
    }
}

/// The container to upgrade: `UPGRADERD_CONTAINER`, else the one compose runs for the configured service.
pub(crate) fn find_container(config: &Config, docker: &Docker) -> Result<Container> {
    let name = match (&config.container, &config.compose_project, &config.service) {
        (Some(name), _, _) => name.clone(),
        (None, Some(project), Some(service)) => docker.service_container(project, service)?.ok_or_else(|| {
            anyhow!(
                "no container for service {service} of compose project {project}; start the project, or set \
                 UPGRADERD_CONTAINER"
            )
        })?,
        _ => return Err(usage(
            "no service to upgrade: set UPGRADERD_CONTAINER (or UPGRADERD_COMPOSE_PROJECT and UPGRADERD_SERVICE, or \
                 UPGRADERD_SWARM_SERVICE)",
        )),
    };
    docker
        .inspect_container(&name)
        .with_context(|| format!("finding the container named by UPGRADERD_CONTAINER={name}"))
}

/// The compose project: configured values win over the container's labels.
pub(crate) fn project_of(config: &Config, container: &Container) -> Result<Project> {
    let labels = ProjectLabels::read(container);
    let missing = |what: &str, key: &str| {
        anyhow!(
            "container {} has no compose label com.docker.compose.{what} (was it started by compose?); set {key}",
            container.name.trim_start_matches('/')
        )
    };
    let name = config
        .compose_project
        .clone()
        .or(labels.name)
        .ok_or_else(|| missing("project", "UPGRADERD_COMPOSE_PROJECT"))?;
    if config.service.as_deref().is_some_and(|s| s.contains(',')) {
        return Err(usage(
            "UPGRADERD_SERVICE names one service (the primary); list the services that move together in UPGRADERD_SERVICES",
        ));
    }
    let service = config.service.clone().or(labels.service).ok_or_else(|| missing("service", "UPGRADERD_SERVICE"))?;
    let working_dir = config
        .compose_dir
        .clone()
        .or(labels.working_dir)
        .ok_or_else(|| missing("project.working_dir", "UPGRADERD_COMPOSE_DIR"))?;
    let files = if config.compose_files.is_empty() {
        if labels.files.is_empty() {
            return Err(missing("project.config_files", "UPGRADERD_COMPOSE_FILES"));
        }
        labels.files
    } else {
        config.compose_files.clone()
    };
    // compose v1 records paths as given on its command line: relative to the working dir.
    let absolute = |p: PathBuf| if p.is_absolute() { p } else { working_dir.join(p) };
    let files = files.into_iter().map(absolute).collect();
    let env_file = labels.env_file.map(absolute);
    Ok(Project {
        name,
        working_dir,
        files,
        env_file,
        services: vec![service.clone()],
        service,
        orchestrator: Orchestrator::Compose,
    })
}

/// The compose tool: `UPGRADERD_COMPOSE_CMD`, else the `docker compose` plugin, else `docker-compose`.
pub(crate) fn compose_tool(config: &Config, runner: &Runner) -> Result<Compose> {
    if let Some(argv) = &config.compose_cmd {
        if argv.is_empty() {
            return Err(usage("UPGRADERD_COMPOSE_CMD is empty; set it to `docker compose` or `docker-compose`"));
        }
        if argv.get(1).is_some_and(|w| w == "compose") {
            return Ok(Compose::assume(argv.clone(), true, runner));
        }
        return Compose::detect(std::slice::from_ref(argv), runner)
            .context("UPGRADERD_COMPOSE_CMD does not answer `version`; check the command");
    }
    let plugin = vec![config.docker.display().to_string(), "compose".to_string()];
    let standalone = vec!["docker-compose".to_string()];
    Compose::detect(&[plugin, standalone], runner)
        .context("install Docker Compose (the v2 plugin or docker-compose), or set UPGRADERD_COMPOSE_CMD")
}

/// The version the service runs: configured, else the image's label, else the
/// last complete upgrade, else the tag (its pin) when it names a version (`v1.2.3` too).
pub(crate) fn current_version(
    config: &Config,
    docker: &Docker,
    container: &Container,
    db: Option<&Db>,
) -> Option<String> {
    if let Some(v) = &config.current_version {
        return Some(v.clone());
    }
    if let Ok(Some(label)) = docker.image_version_label(&container.image) {
        return Some(label);
    }
    if let Some(Ok(Some(last))) = db.map(|db| db.latest_with_status(Status::Complete)) {
        if let Some(v) = last.to_version {
            return Some(v);
        }
    }
    let tag = ImageRef::parse(swarm::without_digest(&container.config.image)).tag;
    pin::names_a_version(&tag).then(|| crate::version::without_flavour(&tag).to_string())
}

/// A writable volume or bind mount: data. The Docker socket is a control
/// channel, never data; tmpfs and read-only mounts hold nothing to restore;
/// a host system file bound in (`/etc/localtime`, often without `:ro`) is the host's.
pub(crate) fn is_data_mount(mount: &Mount) -> bool {
    mount.rw
        && (mount.kind == "volume" || mount.kind == "bind")
        && !is_docker_socket(&mount.source)
        && !(mount.kind == "bind" && is_host_system_file(&mount.source))
}

/// Where the host keeps its own system, runtime and kernel files.
const HOST_SYSTEM_ROOTS: &[&str] = &["/etc", "/usr", "/run", "/var/run", "/dev", "/proc", "/sys"];
/// Of those, the ones that never hold an app's data, whatever is bound from them.
const HOST_KERNEL_ROOTS: &[&str] = &["/dev", "/proc", "/sys"];

/// A file or symlink under the host's system directories (a directory there
/// may be an app's configuration, and stays data), or anything from `/dev`,
/// `/proc` or `/sys`.
fn is_host_system_file(source: &Path) -> bool {
    if HOST_KERNEL_ROOTS.iter().any(|root| source.starts_with(root)) {
        return true;
    }
    HOST_SYSTEM_ROOTS.iter().any(|root| source.starts_with(root))
        && std::fs::symlink_metadata(source).is_ok_and(|meta| !meta.is_dir())
}

fn is_docker_socket(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n == "docker.sock")
}

/// git in the app's checkout: `UPGRADERD_GIT_DIR`, else the compose working dir.
pub(crate) fn git_for(config: &Config, project: &Project, runner: &Runner) -> Git {
    let dir = config.git_dir.clone().unwrap_or_else(|| project.working_dir.clone());
    Git::new(&config.git, &dir, runner.clone())
}

/// Plain HTTP to a registry only on loopback: anything else must speak TLS.
pub(crate) fn registry_may_be_insecure(image: &ImageRef) -> bool {
    image.registry_is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(json: &str) -> Container {
        let mut parsed: Vec<Container> = serde_json::from_str(json).unwrap();
        parsed.pop().unwrap()
    }

    const APP: &str = r#"[{"Id":"abc","Name":"/app","Image":"sha256:1","RestartCount":0,
        "Config":{"Image":"app:1","Labels":{"com.docker.compose.service":"app",
            "com.docker.compose.project":"shop","com.docker.compose.project.working_dir":"/srv/shop",
            "com.docker.compose.project.config_files":"docker-compose.yml,/etc/shop/override.yml",
            "com.docker.compose.project.environment_file":".env"}},
        "State":{"Status":"running","Running":true,"ExitCode":0},
        "Mounts":[
          {"Type":"volume","Name":"data","Source":"/var/lib/docker/volumes/data/_data","Destination":"/data","RW":true},
          {"Type":"bind","Source":"/srv/conf","Destination":"/conf","RW":false},
          {"Type":"bind","Source":"/var/run/docker.sock","Destination":"/var/run/docker.sock","RW":true},
          {"Type":"tmpfs","Source":"","Destination":"/tmp","RW":true}]}]"#;

    fn config() -> Config {
        let layers = crate::config::Layers::resolve(&[], &crate::config::Env::default(), None);
        Config::from_layers(&layers).unwrap()
    }

    #[test]
    fn a_stack_service_named_to_move_must_run_the_primarys_repository() {
        let in_stack = [
            ("web".to_string(), "127.0.0.1:5000/app:1.0.0".to_string()),
            ("worker".to_string(), "127.0.0.1:5000/app:1.0.0".to_string()),
            ("db".to_string(), "postgres:15".to_string()),
        ];
        let named = ["web".to_string(), "worker".to_string()];
        assert_eq!(on_primary_repository(&named, "127.0.0.1:5000/app:1.0.0", &in_stack).unwrap(), named);
        let with_db = ["web".to_string(), "db".to_string()];
        let err = on_primary_repository(&with_db, "127.0.0.1:5000/app:1.0.0", &in_stack).unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err:#}");
        assert!(format!("{err:#}").contains("names `db`, which runs postgres:15, not 127.0.0.1:5000/app"), "{err:#}");
    }

    #[test]
    fn host_system_files_bound_in_are_not_data_but_a_directory_under_etc_is() {
        let bind = |source: &str| Mount {
            kind: "bind".into(),
            source: PathBuf::from(source),
            destination: PathBuf::from(source),
            rw: true,
        };
        for host in ["/etc/passwd", "/dev/null", "/proc/cpuinfo", "/sys/kernel"] {
            assert!(!is_data_mount(&bind(host)), "{host}");
        }
        assert!(is_data_mount(&bind("/etc")), "a directory under /etc stays data");
        assert!(is_data_mount(&bind("/srv/app/data")));
    }

    #[test]
    fn data_is_writable_volumes_and_binds_without_the_socket() {
        let c = container(APP);
        let data: Vec<&Path> = c.mounts.iter().filter(|m| is_data_mount(m)).map(|m| m.source.as_path()).collect();
        assert_eq!(data, vec![Path::new("/var/lib/docker/volumes/data/_data")]);
    }

    #[test]
    fn the_project_comes_from_labels_with_relative_v1_paths_made_absolute() {
        let project = project_of(&config(), &container(APP)).unwrap();
        assert_eq!(project.name, "shop");
        assert_eq!(project.service, "app");
        assert_eq!(
            project.files,
            vec![PathBuf::from("/srv/shop/docker-compose.yml"), PathBuf::from("/etc/shop/override.yml")]
        );
        assert_eq!(project.env_file, Some(PathBuf::from("/srv/shop/.env")));
    }

    #[test]
    fn configured_values_win_over_labels() {
        let mut config = config();
        config.compose_project = Some("other".into());
        config.compose_dir = Some(PathBuf::from("/opt/other"));
        config.compose_files = vec![PathBuf::from("prod.yml")];
        let project = project_of(&config, &container(APP)).unwrap();
        assert_eq!(project.name, "other");
        assert_eq!(project.files, vec![PathBuf::from("/opt/other/prod.yml")]);
    }

    fn running(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(s, i)| (s.to_string(), i.to_string())).collect()
    }

    #[test]
    fn the_set_is_every_service_on_the_primarys_image_repository() {
        let project = running(&[
            ("web", "ghcr.io/acme/app:latest"),
            ("worker", "ghcr.io/acme/app:latest"),
            ("migrate", "ghcr.io/acme/app:latest"),
            ("db", "postgres:15"),
            ("cache", "ghcr.io/acme/app-cache:latest"),
        ]);
        assert_eq!(same_repository("ghcr.io/acme/app:latest", &project), vec!["migrate", "web", "worker"]);
    }

    #[test]
    fn named_services_must_exist_in_the_project() {
        let defined = vec!["web".to_string(), "worker".to_string(), "db".to_string()];
        let profiled = running(&[("admin", "app:latest")]);
        let named = vec!["worker".to_string(), "admin".to_string()];
        assert_eq!(named_services(&named, &defined, &profiled, "compose project shop").unwrap(), named);
        let err = named_services(&["wrker".to_string()], &defined, &profiled, "compose project shop").unwrap_err();
        assert!(err.chain().any(|c| c.is::<crate::exit::UsageError>()));
        assert!(
            err.to_string()
                .contains("names `wrker`, which compose project shop does not define; its services: web, worker, db"),
            "{err}"
        );
    }

    #[test]
    fn a_service_list_in_the_singular_key_points_to_the_plural_one() {
        let mut config = config();
        config.service = Some("web,worker".into());
        let err = project_of(&config, &container(APP)).unwrap_err().to_string();
        assert!(err.contains("UPGRADERD_SERVICES"), "{err}");
    }

    #[test]
    fn a_container_without_compose_labels_names_the_setting_to_add() {
        let bare = APP.replace("com.docker.compose.project\"", "unrelated\"");
        let err = project_of(&config(), &container(&bare)).unwrap_err().to_string();
        assert!(err.contains("UPGRADERD_COMPOSE_PROJECT"), "{err}");
    }
}
