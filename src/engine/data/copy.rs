//! Backing up and restoring the data set consistently: the hooks, a first
//! pass while everything serves, the final pass with the `stop`-mode services
//! held, and a restore with every owner of the data stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};

use super::hold::stop_containers_until_processes_end;
use super::{data_set, start_containers, stop_containers, DataSet, ServiceData, POST_LABEL, PRE_LABEL};
use crate::config::Config;
use crate::engine::halt::{Halt, PendingStop};
use crate::ops::compose::Project;
use crate::ops::docker::Docker;
use crate::ops::swarm::SERVICE_LABEL;
use crate::store::backup::{self, Created, Progress};

/// What a consistent backup reports as it goes.
pub(crate) trait Observer {
    fn log(&mut self, line: &str);
    /// What is stopped now (after each change), to be started again if upgraderd dies.
    fn stopped(&mut self, held: &[Halt]) -> Result<()>;
    fn progress(&mut self, progress: Progress);
    /// As the first pass begins, when `keep_stopped` (an upgrade's moved
    /// services) will be stopped: what the upgrade can start of its switch
    /// while the app serves starts here.
    fn first_pass_begins(&mut self) {}
    /// Just before `keep_stopped` is stopped for the final pass.
    fn final_stop_begins(&mut self) {}
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
    stopped: &mut Vec<Halt>,
    observer: &mut dyn Observer,
) -> Result<BackedUp> {
    for line in set.describe() {
        observer.log(&format!("Data: {line}"));
    }
    run_hooks(docker, set, PRE_LABEL, |s| &s.pre, stopped, observer)?;
    if !keep_stopped.is_empty() {
        observer.first_pass_begins();
    }
    let began = Instant::now();
    let first =
        backup::begin(&set.sources(), target.dir, target.form, target.reason.clone(), &mut |p| observer.progress(p))?;
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
    if !keep_stopped.is_empty() {
        observer.final_stop_begins();
    }
    let stopping = Instant::now();
    let mut pending = stop_containers_until_processes_end(docker, &to_stop, stopped, observer)?;
    let final_began = Instant::now();
    let created = first.finish_after_final_pass(&mut |p| observer.progress(p))?;
    let final_took = final_began.elapsed();
    let begun = match pending.is_empty() {
        true => "",
        false => ", begun as the stopped processes ended",
    };
    // The archive's warnings begin with the first pass's, logged above: each is logged once.
    for warning in created.warnings.iter().skip(logged) {
        observer.log(warning);
    }
    for line in backup::stored_lines(&created.meta) {
        observer.log(&line);
    }
    let again: Vec<Halt> = stop_mode.iter().map(|s| s.halt.clone()).collect();
    // What starts again must have stopped: its stop ends first.
    let (ending, going_on): (Vec<PendingStop>, Vec<PendingStop>) =
        pending.drain(..).partition(|stop| again.contains(stop.halt()));
    ending.into_iter().try_for_each(PendingStop::finish)?;
    let started = start_containers(docker, &again, &stop_mode, target.start_timeout, &mut |line| observer.log(line));
    stopped.retain(|halt| !again.contains(halt) || started.is_err());
    observer.stopped(stopped)?;
    started?;
    let held: Vec<&str> = stop_mode.iter().map(|s| s.service.as_str()).collect();
    observer.log(&match held.is_empty() {
        true => format!("Final pass: {:.1}s{begun}", final_took.as_secs_f64()),
        false => format!(
            "Final pass: {:.1}s{begun}; {} stopped for {:.1}s",
            final_took.as_secs_f64(),
            held.join(", "),
            stopping.elapsed().as_secs_f64()
        ),
    });
    run_hooks(docker, set, POST_LABEL, |s| &s.post, stopped, observer)?;
    Ok(BackedUp { created, stopping: going_on })
}

/// A consistent backup made, and the stops of `keep_stopped` the engine may
/// still be finishing: their processes ended before the final pass began.
pub(crate) struct BackedUp {
    pub created: Created,
    pub stopping: Vec<PendingStop>,
}

/// Where a backup goes and how long a restarted service has to come back.
pub(crate) struct Target<'a> {
    pub dir: &'a Path,
    pub form: backup::Form,
    pub reason: backup::Reason,
    pub start_timeout: Option<Duration>,
}

/// Runs `label`'s hook in every running service that has one; a stopped service's is skipped.
fn run_hooks(
    docker: &Docker,
    set: &DataSet,
    label: &str,
    hook: fn(&ServiceData) -> &Option<Vec<String>>,
    stopped: &[Halt],
    observer: &mut dyn Observer,
) -> Result<()> {
    let mut hooked: Vec<String> = Vec::new();
    for service in &set.services {
        let Some(argv) = hook(service) else { continue };
        if stopped.contains(&service.halt) {
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
/// restored under a running container. `still_held` (what an interrupted
/// earlier attempt recorded stopped) is started again with them. What is
/// stopped is told to the observer as it changes. A failed restore leaves the
/// data as it was, and the services are started again all the same.
pub(crate) fn restore_with_owners_stopped(
    config: &Config,
    docker: &Docker,
    project: &Project,
    archive: &Path,
    except_services: &[String],
    still_held: &[Halt],
    observer: &mut dyn Observer,
) -> Result<backup::Restored> {
    let owners = owners_of(config, docker, project, archive, except_services)?;
    let mut stopped = still_held.to_vec();
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
