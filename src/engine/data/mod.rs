//! The project's data: what every service of the compose project keeps, how
//! each service's data is kept consistent while it is copied (the label
//! `upgraderd.backup`: `stop`, `live` or `skip`), the native-dump hooks run
//! inside a service's container, and the containers stopped around the final
//! pass of a backup and around a restore, started again in `depends_on` order.
//!
//! A label the *image* carries is ignored: labels are the operator's, written
//! in the compose file, and an image must not choose how its own data is backed up.
//!
//! Here: the data set ([`DataSet`], [`data_set`]) and the hooks' argv.
//! Inside: `copy` backs the set up and restores it, `hold` stops and starts
//! its services, `placement` says where a Swarm stack's data may be.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::config::Config;
use crate::engine::discover::is_data_mount;
use crate::engine::halt::Halt;
use crate::engine::stores;
use crate::exit::usage;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::{Container, Docker};
use crate::ops::swarm::{Service, Swarm, STACK_LABEL};
use crate::states::BackupMode;
use crate::store::backup::Source;

mod copy;
mod hold;
pub(crate) mod placement;

pub(crate) use self::copy::{back_up, restore_with_owners_stopped, services_in, BackedUp, Observer, Target};
pub(crate) use self::hold::{start_containers, stop_containers, STOP_GRACE};

/// The label choosing a service's backup mode, and its hooks' labels.
pub(crate) const MODE_LABEL: &str = "upgraderd.backup";
pub(crate) const PRE_LABEL: &str = "upgraderd.backup.pre";
pub(crate) const POST_LABEL: &str = "upgraderd.backup.post";

/// One container of the project and the data it keeps.
#[derive(Debug, Clone)]
pub(crate) struct ServiceData {
    pub service: String,
    /// The container's id (where hooks run).
    pub container: String,
    /// What is stopped and started again: the container, or its Swarm service.
    pub halt: Halt,
    pub mode: BackupMode,
    /// Why this mode: the setting, the label, or the image.
    pub mode_from: String,
    pub pre: Option<Vec<String>>,
    pub post: Option<Vec<String>>,
    /// The services it depends on (compose v2 records them on the container).
    pub depends_on: Vec<String>,
    pub sources: Vec<Source>,
}

/// Everything a backup of the project covers.
#[derive(Debug, Clone, Default)]
pub(crate) struct DataSet {
    pub services: Vec<ServiceData>,
    /// Configured data paths no service mounts.
    pub unowned: Vec<Source>,
    /// What was left out, and why, for the upgrade's log.
    pub notes: Vec<String>,
}

impl DataSet {
    /// Every data path, each once.
    pub(crate) fn sources(&self) -> Vec<Source> {
        let mut sources: Vec<Source> = Vec::new();
        for source in self.services.iter().flat_map(|s| &s.sources).chain(&self.unowned) {
            if !sources.iter().any(|s| s.path == source.path) {
                sources.push(source.clone());
            }
        }
        sources
    }

    pub(crate) fn paths(&self) -> Vec<PathBuf> {
        self.sources().into_iter().map(|s| s.path).collect()
    }

    /// The containers of `stop`-mode services that hold data.
    pub(crate) fn stop_mode(&self) -> impl Iterator<Item = &ServiceData> {
        self.services.iter().filter(|s| s.mode == BackupMode::Stop && !s.sources.is_empty())
    }

    /// The containers of these services.
    pub(crate) fn of_services<'a>(&'a self, services: &'a [String]) -> impl Iterator<Item = &'a ServiceData> {
        self.services.iter().filter(move |s| services.contains(&s.service))
    }

    /// One line per service for the log: `db (stop, image postgres): /var/lib/docker/volumes/…`.
    pub(crate) fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = self
            .services
            .iter()
            .filter(|s| !s.sources.is_empty())
            .map(|s| {
                let paths: Vec<String> = s.sources.iter().map(|p| p.path.display().to_string()).collect();
                format!("{} ({}, {}): {}", s.service, s.mode, s.mode_from, paths.join(", "))
            })
            .collect();
        lines.extend(self.unowned.iter().map(|s| format!("(no service): {}", s.path.display())));
        lines.extend(self.notes.iter().cloned());
        lines
    }
}

/// The project's data set: every service's writable volumes and bind mounts
/// (or `UPGRADERD_DATA_DIR`, attributed to the service that mounts it), each
/// service with its mode, minus `skip` services and `UPGRADERD_BACKUP_EXCLUDE`.
pub(crate) fn data_set(config: &Config, docker: &Docker, project: &Project) -> Result<DataSet> {
    let containers = project_containers(docker, project)?;
    let stack = stack_services(docker, project)?;
    let replicas: BTreeMap<&str, u64> =
        stack.iter().filter_map(|s| Some((s.spec.name.as_str(), s.replicas()?))).collect();
    check_configured_modes(config, &containers, &stack, project)?;
    let mut set = DataSet::default();
    for container in &containers {
        let Some(service) = project.service_of(container) else { continue };
        if crate::engine::sidecar::own_container_id() == Some(container.id.as_str()) {
            set.notes.push(format!("{service}: upgraderd runs in this container; it never stops or backs up itself"));
            continue;
        }
        let halt = match project.orchestrator {
            Orchestrator::Compose => Halt::Container(container.id.clone()),
            Orchestrator::Swarm => {
                let name = project.swarm_service(&service);
                Halt::SwarmService { replicas: replicas.get(name.as_str()).copied().unwrap_or(1), name }
            }
        };
        // Unread, the image's labels cannot be told from the compose file's: none is trusted then.
        let image_labels = match docker.image_labels(&container.image) {
            Ok(labels) => Some(labels),
            Err(e) => {
                set.notes.push(format!(
                    "{service}: its image's labels could not be read ({e:#}); its upgraderd.backup labels are ignored"
                ));
                None
            }
        };
        let mut sources = sources_of(config, &service, container, &mut set.notes);
        let roots: Vec<PathBuf> = sources.iter().map(|s| s.path.clone()).collect();
        let facts = stores::Facts {
            image: &container.config.image,
            ports: container.config.exposed_ports(),
            data: &roots,
            moved: project.services.contains(&service),
        };
        let (mode, mode_from) = mode_of(config, &service, container, image_labels.as_ref(), &facts, &mut set.notes);
        let own_label =
            |key: &str| container.label(key).filter(|_| image_labels.as_ref().is_some_and(|l| !l.contains_key(key)));
        let pre = own_label(PRE_LABEL).map(|text| hook_argv(&service, PRE_LABEL, text)).transpose()?;
        let post = own_label(POST_LABEL).map(|text| hook_argv(&service, POST_LABEL, text)).transpose()?;
        if mode == BackupMode::Skip {
            set.notes.push(format!("{service}: not backed up ({mode_from})"));
            sources.clear();
        }
        set.services.push(ServiceData {
            service,
            container: container.id.clone(),
            halt,
            mode,
            mode_from,
            pre,
            post,
            depends_on: depends_on(container),
            sources,
        });
    }
    set.services.sort_by(|a, b| a.service.cmp(&b.service));
    if !config.data_dirs.is_empty() {
        set.unowned = config
            .data_dirs
            .iter()
            .filter(|path| !set.services.iter().any(|s| s.sources.iter().any(|src| &src.path == *path)))
            .map(Source::path)
            .collect();
    }
    Ok(set)
}

/// The project's containers: all of a compose project's (stopped ones hold
/// data too); a stack's running tasks on this node (a stopped task container
/// is history Swarm keeps, and its volumes are the running task's).
fn project_containers(docker: &Docker, project: &Project) -> Result<Vec<Container>> {
    match project.orchestrator {
        Orchestrator::Compose => docker.project_containers(&project.name),
        Orchestrator::Swarm => docker.containers_with_label(STACK_LABEL, &project.name, false),
    }
}

/// A stack's services, with the replicas each runs with (what scaling it back
/// restores); none for a compose project.
fn stack_services(docker: &Docker, project: &Project) -> Result<Vec<Service>> {
    match project.orchestrator {
        Orchestrator::Compose => Ok(Vec::new()),
        Orchestrator::Swarm => Swarm::new(docker.clone()).stack_services(&project.name),
    }
}

/// `UPGRADERD_BACKUP_MODES` may only name services the project runs, or, for
/// a stack, defines (one on another node is skipped by name, which preflight asks for).
fn check_configured_modes(
    config: &Config,
    containers: &[Container],
    stack: &[Service],
    project: &Project,
) -> Result<()> {
    let mut known: Vec<String> = containers.iter().filter_map(|c| project.service_of(c)).collect();
    known.extend(stack.iter().map(|s| s.short_name().to_string()));
    known.sort();
    known.dedup();
    match config.backup_modes.iter().find(|(service, _)| !known.contains(service)) {
        Some((unknown, _)) => Err(usage(format!(
            "UPGRADERD_BACKUP_MODES names `{unknown}`, which project {} does not run; its services: {}",
            project.name,
            known.join(", ")
        ))),
        None => Ok(()),
    }
}

/// The mode of one service, and where it came from: the setting, the
/// compose file's label, else what [`stores::default_mode`] tells of it.
fn mode_of(
    config: &Config,
    service: &str,
    container: &Container,
    image_labels: Option<&BTreeMap<String, String>>,
    facts: &stores::Facts<'_>,
    notes: &mut Vec<String>,
) -> (BackupMode, String) {
    if let Some((_, mode)) = config.backup_modes.iter().find(|(s, _)| s == service) {
        return (*mode, "UPGRADERD_BACKUP_MODES".into());
    }
    let Some(image_labels) = image_labels else { return stores::default_mode(facts) };
    if image_labels.contains_key(MODE_LABEL) {
        notes.push(format!(
            "{service}: its image sets the label {MODE_LABEL}, which only the compose file may set; ignored"
        ));
    } else if let Some(text) = container.label(MODE_LABEL) {
        match BackupMode::parse(text.trim()) {
            Some(mode) => return (mode, format!("label {MODE_LABEL}")),
            None => notes.push(format!(
                "{service}: label {MODE_LABEL}={text:?} is not a mode (use {}); the default applies",
                BackupMode::choices()
            )),
        }
    }
    stores::default_mode(facts)
}

/// A service's data paths: its writable mounts minus the excluded, or the
/// configured data paths that lie in one of its mounts.
fn sources_of(config: &Config, service: &str, container: &Container, notes: &mut Vec<String>) -> Vec<Source> {
    let mounts = container.mounts.iter().filter(|m| is_data_mount(m));
    if !config.data_dirs.is_empty() {
        let mut sources = Vec::new();
        for mount in mounts {
            for path in config.data_dirs.iter().filter(|p| p.starts_with(&mount.source)) {
                let below = path.strip_prefix(&mount.source).unwrap_or(Path::new(""));
                let inside = mount.destination.join(below);
                sources.push(Source {
                    path: path.clone(),
                    service: Some(service.to_string()),
                    mount: Some(inside.display().to_string()),
                });
            }
        }
        return sources;
    }
    let mut sources = Vec::new();
    for mount in mounts {
        if let Some(excluded) = config.backup_exclude.iter().find(|e| mount.source.starts_with(e)) {
            notes.push(format!(
                "{service}: {} left out (UPGRADERD_BACKUP_EXCLUDE={})",
                mount.source.display(),
                excluded.display()
            ));
            continue;
        }
        sources.push(Source {
            path: mount.source.clone(),
            service: Some(service.to_string()),
            mount: Some(mount.destination.display().to_string()),
        });
    }
    sources
}

/// The services a container depends on, from compose v2's `com.docker.compose.depends_on`
/// (`db:service_started:false,cache:service_healthy:true`); compose v1 records none.
fn depends_on(container: &Container) -> Vec<String> {
    container
        .label("com.docker.compose.depends_on")
        .map(|text| {
            text.split(',').filter_map(|d| d.split(':').next()).filter(|s| !s.is_empty()).map(str::to_string).collect()
        })
        .unwrap_or_default()
}

/// A hook label's command as argv: split like a shell does (quotes and
/// backslashes), never run by one.
fn hook_argv(service: &str, label: &str, text: &str) -> Result<Vec<String>> {
    split_command(text).map_err(|why| usage(format!("service {service}: label {label}={text:?} {why}")))
}

/// Splits a command line into words: blanks separate, `'…'` is literal,
/// `"…"` keeps blanks and takes `\` before `"`, `\` or `$`, and `\` outside
/// quotes escapes the next character. Nothing is expanded.
pub(crate) fn split_command(text: &str) -> std::result::Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("has an unclosed single quote".into()),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err("has an unclosed double quote".into()),
                        },
                        Some(c) => w.push(c),
                        None => return Err("has an unclosed double quote".into()),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err("ends with a lone backslash".into()),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    if words.is_empty() {
        return Err("is empty".into());
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::hold::start_order;
    use super::*;

    #[test]
    fn hook_commands_split_like_a_shell_without_one() {
        let argv = split_command(r#"pg_dumpall -U postgres -f '/var/lib/postgresql/data/dump all.sql'"#).unwrap();
        assert_eq!(argv, ["pg_dumpall", "-U", "postgres", "-f", "/var/lib/postgresql/data/dump all.sql"]);
        let argv = split_command(r#"sh -c "echo \"\$HOME\" > /x" a\ b"#).unwrap();
        assert_eq!(argv, ["sh", "-c", "echo \"$HOME\" > /x", "a b"]);
        assert_eq!(split_command("x ''").unwrap(), ["x", ""]);
        for bad in ["'open", "\"open", "trailing\\", "   "] {
            assert!(split_command(bad).is_err(), "{bad}");
        }
    }

    fn service(name: &str, depends_on: &[&str]) -> ServiceData {
        ServiceData {
            service: name.into(),
            container: format!("{name}-id"),
            halt: Halt::Container(format!("{name}-id")),
            mode: BackupMode::Stop,
            mode_from: "default".into(),
            pre: None,
            post: None,
            depends_on: depends_on.iter().map(|s| s.to_string()).collect(),
            sources: Vec::new(),
        }
    }

    #[test]
    fn backup_modes_may_name_a_stack_service_running_on_another_node() {
        let layers = crate::config::Layers::resolve(&[], &crate::config::Env::default(), None);
        let mut config = Config::from_layers(&layers).unwrap();
        let project = Project::stack("shop", "web", Vec::new());
        let db: Service = serde_json::from_str(
            r#"{"ID":"s2","Spec":{"Name":"shop_db","Labels":{"com.docker.stack.namespace":"shop"},
                "TaskTemplate":{"ContainerSpec":{"Image":"postgres:15"}},"Mode":{"Replicated":{"Replicas":1}}}}"#,
        )
        .unwrap();
        // No task of `db` runs here: skipping it by name is what preflight asks for.
        config.backup_modes = vec![("db".into(), BackupMode::Skip)];
        assert!(check_configured_modes(&config, &[], std::slice::from_ref(&db), &project).is_ok());
        config.backup_modes = vec![("dbx".into(), BackupMode::Skip)];
        let err = check_configured_modes(&config, &[], &[db], &project).unwrap_err();
        assert!(err.is::<crate::exit::UsageError>(), "{err:#}");
        assert!(
            format!("{err:#}").contains("names `dbx`, which project shop does not run; its services: db"),
            "{err:#}"
        );
    }

    #[test]
    fn services_start_after_what_they_depend_on() {
        let set = [service("web", &["db", "cache"]), service("cache", &[]), service("db", &["cache"])];
        let order: Vec<String> = start_order(&set).into_iter().map(|s| s.service).collect();
        assert_eq!(order, ["cache", "db", "web"]);
        let cycle = [service("a", &["b"]), service("b", &["a"])];
        assert_eq!(start_order(&cycle).len(), 2, "a cycle still starts everything");
    }
}
