//! The project's data: what every service of the compose project keeps, how
//! each service's data is kept consistent while it is copied (the label
//! `upgraderd.backup`: `stop`, `live` or `skip`), the native-dump hooks run
//! inside a service's container, and the containers stopped around the final
//! pass of a backup and around a restore, started again in `depends_on` order.
//!
//! A label the *image* carries is ignored: labels are the operator's, written
//! in the compose file, and an image must not choose how its own data is backed up.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

use crate::config::Config;
use crate::engine::discover::is_data_mount;
use crate::engine::halt::{self, Halt};
use crate::engine::stores;
use crate::exit::usage;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::{Container, Docker};
use crate::ops::swarm::{Service, Swarm, SERVICE_LABEL, STACK_LABEL};
use crate::states::BackupMode;
use crate::store::backup::{self, Created, Progress, Source};

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

/// The order to start `services` in: each after the services it depends on
/// (those in the list); otherwise as given.
pub(crate) fn start_order(services: &[ServiceData]) -> Vec<ServiceData> {
    let mut left: Vec<ServiceData> = services.to_vec();
    let mut ordered: Vec<ServiceData> = Vec::new();
    while !left.is_empty() {
        let ready = left.iter().position(|s| {
            s.depends_on.iter().all(|d| !left.iter().any(|other| &other.service == d && other.service != s.service))
        });
        // A cycle (compose refuses them) would leave none ready: take the first as given.
        ordered.push(left.remove(ready.unwrap_or(0)));
    }
    ordered
}

/// Runs a hook in a service's running container.
fn run_hook(docker: &Docker, service: &ServiceData, container: &str, label: &str, argv: &[String]) -> Result<()> {
    let cmd = docker.exec(container, argv);
    docker.runner().run(&cmd).map_err(|e| anyhow!("{} of service {}: {e}", label, service.service))?;
    Ok(())
}

/// The container a service's hook runs in now: the one the data set found,
/// or for a Swarm service scaled to 0 and back since (its `stop` mode), a task
/// container of it running on this node: Swarm replaced the one found.
fn hook_container(docker: &Docker, service: &ServiceData) -> Result<String> {
    let Halt::SwarmService { name, .. } = &service.halt else { return Ok(service.container.clone()) };
    let running = docker.containers_with_label(SERVICE_LABEL, name, false)?;
    if running.iter().any(|c| c.id == service.container) {
        return Ok(service.container.clone());
    }
    running.into_iter().next().map(|c| c.id).ok_or_else(|| anyhow!("no task of Swarm service {name} runs on this node"))
}

/// Stops these services' containers (or Swarm services), dependents first
/// (the reverse of their start order), adding each one to `stopped` (as its
/// [`Halt`] token) and telling the observer before it is asked to stop, so
/// that the caller, or recovery after a kill, can start them again whatever
/// happens. A failure stops nothing more.
pub(crate) fn stop_containers(
    docker: &Docker,
    services: &[ServiceData],
    stopped: &mut Vec<String>,
    observer: &mut dyn Observer,
) -> Result<()> {
    for service in start_order(services).iter().rev() {
        let token = service.halt.token();
        if stopped.contains(&token) {
            continue;
        }
        observer.log(&format!("Stopping {} ({})", service.service, service.halt.describe()));
        // Counted as stopped before it is asked to stop: a stop that fails half-way (a Swarm
        // service scaled to 0 whose tasks did not drain in time) is started again all the same.
        // When recording it fails, the caller starts a service that never stopped: a start of a
        // running container, or a scale to the replicas it has, which changes nothing.
        stopped.push(token);
        observer.stopped(stopped)?;
        halt::stop(docker, &service.halt, STOP_GRACE)
            .map_err(|e| anyhow!("stopping {} failed: {e:#}", service.service))?;
    }
    Ok(())
}

/// How long a stopped service has to shut down cleanly before it is killed.
pub(crate) const STOP_GRACE: Duration = Duration::from_secs(30);

/// Starts what `tokens` stopped again and waits until each is ready (see
/// [`halt::wait_ready`]; `timeout` is `UPGRADERD_START_TIMEOUT`): all at once,
/// but a service after the ones it depends on, each group awaited together.
pub(crate) fn start_containers(
    docker: &Docker,
    tokens: &[String],
    services: &[ServiceData],
    timeout: Option<Duration>,
    log: &mut dyn FnMut(&str),
) -> Result<()> {
    let mut known: Vec<ServiceData> =
        start_order(services).into_iter().filter(|s| tokens.contains(&s.halt.token())).collect();
    // Several replicas of one Swarm service share its halt: it is started once.
    known.dedup_by(|a, b| a.halt == b.halt);
    let mut waves: Vec<Vec<(String, Halt)>> =
        start_waves(&known).into_iter().map(|w| w.into_iter().map(|s| (s.service, s.halt)).collect()).collect();
    // What recovery found recorded but no longer in the project: started together, last.
    let unknown: Vec<(String, Halt)> = tokens
        .iter()
        .filter(|token| !known.iter().any(|s| &s.halt.token() == *token))
        .map(|token| (Halt::from_token(token).describe(), Halt::from_token(token)))
        .collect();
    if !unknown.is_empty() {
        waves.push(unknown);
    }
    let mut failures = Vec::new();
    for wave in waves {
        let names: Vec<&str> = wave.iter().map(|(name, _)| name.as_str()).collect();
        log(&format!("Starting {} again", names.join(", ")));
        let began = Instant::now();
        let mut started = Vec::new();
        for (name, halt) in &wave {
            match halt::start(docker, halt) {
                Ok(()) => started.push((name, halt)),
                Err(e) => failures.push(format!("{name}: {e:#}")),
            }
        }
        let results: Vec<(String, Result<halt::Ready>)> = std::thread::scope(|scope| {
            let waits: Vec<_> = started
                .iter()
                .map(|(name, halt)| (name.to_string(), scope.spawn(|| halt::wait_ready(docker, halt, timeout))))
                .collect();
            waits.into_iter().map(|(name, wait)| (name, wait.join().unwrap_or_else(|_| bail!("panicked")))).collect()
        });
        for (name, result) in results {
            match result {
                Ok(ready) => {
                    log(&format!("{name} ready ({}) after {:.1}s", ready.describe(), began.elapsed().as_secs_f64()))
                }
                Err(e) => failures.push(format!("{name}: {e:#}")),
            }
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        bail!("starting again failed: {}", failures.join("; "))
    }
}

/// `services` in groups that can start together: each group's services
/// depend on none of the ones in later groups.
pub(crate) fn start_waves(services: &[ServiceData]) -> Vec<Vec<ServiceData>> {
    let mut left: Vec<ServiceData> = services.to_vec();
    let mut waves = Vec::new();
    while !left.is_empty() {
        let waits = |s: &ServiceData| {
            s.depends_on.iter().any(|d| left.iter().any(|other| &other.service == d && other.service != s.service))
        };
        let (mut wave, rest): (Vec<ServiceData>, Vec<ServiceData>) = left.iter().cloned().partition(|s| !waits(s));
        if wave.is_empty() {
            // A cycle (compose refuses them) would leave none ready: take the first as given.
            wave = vec![left[0].clone()];
            left.remove(0);
        } else {
            left = rest;
        }
        waves.push(wave);
    }
    waves
}

/// What a consistent backup reports as it goes.
pub(crate) trait Observer {
    fn log(&mut self, line: &str);
    /// The containers stopped now (after each change), to be started again if upgraderd dies.
    fn stopped(&mut self, ids: &[String]) -> Result<()>;
    fn progress(&mut self, progress: Progress);
}

/// Backs up `set` so that it holds every write committed until the services
/// were stopped: the `pre` hooks, a first pass while everything serves, then
/// the `stop`-mode services and `keep_stopped` (an upgrade's moved services)
/// stopped for a final pass of what changed, then the `stop`-mode services
/// started again (and waited for) and the `post` hooks of those running.
/// `stopped` holds what is stopped at any moment, also when this fails;
/// `keep_stopped` stays stopped on success.
pub(crate) fn back_up(
    docker: &Docker,
    set: &DataSet,
    keep_stopped: &[ServiceData],
    target: &Target<'_>,
    stopped: &mut Vec<String>,
    observer: &mut dyn Observer,
) -> Result<Created> {
    for line in set.describe() {
        observer.log(&format!("Data: {line}"));
    }
    run_hooks(docker, set, PRE_LABEL, |s| &s.pre, stopped, observer)?;
    let began = Instant::now();
    let first = backup::begin(&set.sources(), target.dir, target.reason.clone(), &mut |p| observer.progress(p))?;
    for warning in first.warnings() {
        observer.log(warning);
    }
    let logged = first.warnings().len();
    observer.log(&format!("First pass, while serving: {:.1}s", began.elapsed().as_secs_f64()));
    let keep: Vec<&str> = keep_stopped.iter().map(|s| s.service.as_str()).collect();
    let stop_mode: Vec<ServiceData> =
        set.stop_mode().filter(|s| !keep.contains(&s.service.as_str())).cloned().collect();
    // The kept ones (the app) last in the list: stopped first, before what they depend on.
    let to_stop: Vec<ServiceData> = stop_mode.iter().chain(keep_stopped).cloned().collect();
    let stopping = Instant::now();
    stop_containers(docker, &to_stop, stopped, observer)?;
    let final_began = Instant::now();
    let created = first.finish_after_final_pass(&mut |p| observer.progress(p))?;
    let final_took = final_began.elapsed();
    // The archive's warnings begin with the first pass's, logged above: each is logged once.
    for warning in created.warnings.iter().skip(logged) {
        observer.log(warning);
    }
    let again: Vec<String> = stop_mode.iter().map(|s| s.halt.token()).collect();
    let started = start_containers(docker, &again, &stop_mode, target.start_timeout, &mut |line| observer.log(line));
    stopped.retain(|id| !again.contains(id) || started.is_err());
    observer.stopped(stopped)?;
    started?;
    let held: Vec<&str> = stop_mode.iter().map(|s| s.service.as_str()).collect();
    observer.log(&match held.is_empty() {
        true => format!("Final pass: {:.1}s", final_took.as_secs_f64()),
        false => format!(
            "Final pass: {:.1}s; {} stopped for {:.1}s",
            final_took.as_secs_f64(),
            held.join(", "),
            stopping.elapsed().as_secs_f64()
        ),
    });
    run_hooks(docker, set, POST_LABEL, |s| &s.post, stopped, observer)?;
    Ok(created)
}

/// Where a backup goes and how long a restarted service has to come back.
pub(crate) struct Target<'a> {
    pub dir: &'a Path,
    pub reason: backup::Reason,
    pub start_timeout: Option<Duration>,
}

/// Runs `label`'s hook in every running service that has one; a stopped service's is skipped.
fn run_hooks(
    docker: &Docker,
    set: &DataSet,
    label: &str,
    hook: fn(&ServiceData) -> &Option<Vec<String>>,
    stopped: &[String],
    observer: &mut dyn Observer,
) -> Result<()> {
    let mut hooked: Vec<String> = Vec::new();
    for service in &set.services {
        let Some(argv) = hook(service) else { continue };
        if stopped.contains(&service.halt.token()) {
            observer.log(&format!("{label} of {} skipped: it is stopped for the switch", service.service));
            continue;
        }
        let container =
            hook_container(docker, service).map_err(|e| anyhow!("{label} of {}: {e:#}", service.service))?;
        // Replicas of a Swarm service found in one container since its scale-up run its hook once.
        if hooked.contains(&container) {
            continue;
        }
        observer.log(&format!("Running {label} in {}: {}", service.service, argv.join(" ")));
        run_hook(docker, service, &container, label, argv)?;
        hooked.push(container);
    }
    Ok(())
}

/// Restores `archive` over its data paths with every running service whose
/// data it replaces stopped (but those in `already_stopped`), then starts them
/// again, each after what it depends on, and waits for them: nothing is ever
/// restored under a running container. `left_stopped` (halt tokens an
/// interrupted earlier attempt recorded) is started again with them. What is
/// stopped is told to the observer as it changes. A failed restore leaves the
/// data as it was, and the services are started again all the same.
pub(crate) fn restore_with_owners_stopped(
    config: &Config,
    docker: &Docker,
    project: &Project,
    archive: &Path,
    already_stopped: &[String],
    left_stopped: &[String],
    observer: &mut dyn Observer,
) -> Result<backup::Restored> {
    let owners = owners_of(config, docker, project, archive, already_stopped)?;
    let mut stopped = left_stopped.to_vec();
    let halted = stop_containers(docker, &owners, &mut stopped, observer);
    let restored = halted.and_then(|()| backup::restore(archive, &backup::Destination::Original, &mut |_| {}));
    let started = start_containers(docker, &stopped, &owners, config.start_timeout, &mut |l| observer.log(l));
    if started.is_ok() {
        // Not recorded, recovery starts again what runs already, which changes nothing: no
        // reason to report a restore that went through as failed.
        if let Err(e) = observer.stopped(&[]) {
            observer.log(&format!("could not record that nothing is stopped any more: {e:#}"));
        }
    }
    let restored = restored?;
    started?;
    Ok(restored)
}

/// The services, but `except`, whose data `archive` holds.
fn owners_of(
    config: &Config,
    docker: &Docker,
    project: &Project,
    archive: &Path,
    except: &[String],
) -> Result<Vec<ServiceData>> {
    let named = services_in(archive)?;
    if named.is_empty() {
        return Ok(Vec::new());
    }
    let set = data_set(config, docker, project)
        .map_err(|e| e.context("finding the services whose data the backup replaces"))?;
    Ok(set.services.into_iter().filter(|s| named.contains(&s.service) && !except.contains(&s.service)).collect())
}

/// The services a backup's data came from, as its metadata names them.
pub(crate) fn services_in(archive: &Path) -> Result<Vec<String>> {
    let meta = backup::read_meta(archive)?;
    let mut named: Vec<String> = meta.roots.iter().filter_map(|r| r.service.clone()).collect();
    named.sort();
    named.dedup();
    Ok(named)
}

#[cfg(test)]
mod tests {
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
