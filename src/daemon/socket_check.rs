//! The Docker socket check of the MeshMonitor watchdog protocol: the app
//! creates `.docker-socket-test-request` in the trigger directory and reads
//! `.docker-socket-test`, whose first line starts `PASS:`, `WARN:` or `FAIL:`.
//!
//! The intake loop notices a request (an inotify event, or a look every
//! second while polling), removes it at once and hands it to a thread of its
//! own, which runs the checks and writes the answer. So a slow or hung engine
//! never holds up triggers, the systemd watchdog or a stop request, and a
//! check is answered while an upgrade runs on the worker thread. The request
//! goes before the answer comes: an app that removes its request once it has
//! read the answer (MeshMonitor's backend does, checking first that it is
//! still there) never races upgraderd for it.
//!
//! The request is never opened: a regular file of any size is just a
//! request; anything else at that name (a symlink, a directory, a FIFO) is
//! removed as the name it is, never followed, and answered `FAIL:`. The
//! answer is written atomically by the shared directory's no-symlink rules.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::config::{Config, SOCKET_TEST_ANSWER, SOCKET_TEST_REQUEST};
use crate::engine::status::iso;
use crate::ops::docker::Docker;
use crate::ops::process::Runner;
use crate::store::db::now_ms;
use crate::store::shared_dir::{Entry, SharedDir};
use crate::ui::Ui;

/// How long one docker command of the check may take: the app waits about ten seconds in all.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// The longest error text carried on the answer's first line.
const MAX_REASON_CHARS: usize = 400;

/// What the app asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    Check,
    /// The request was not a regular file.
    Refused,
}

/// The socket check's thread and the way to hand it requests.
pub(super) struct SocketChecks {
    dir: Arc<SharedDir>,
    ui: Ui,
    asks: Option<Sender<Ask>>,
    thread: Option<JoinHandle<()>>,
}

impl SocketChecks {
    /// Starts the thread that answers requests in `dir`.
    pub(super) fn start(dir: Arc<SharedDir>, config: &Config, ui: &Ui) -> SocketChecks {
        let (asks, received) = mpsc::channel();
        let checks = Checks {
            docker: Docker::new(&config.docker, Runner::new(false)),
            container: config.container.clone(),
            enabled: config.enabled,
        };
        let (answers, log) = (dir.clone(), ui.clone());
        let thread = std::thread::Builder::new()
            .name("socket-check".into())
            .spawn(move || answer_requests(&received, &checks, &answers, &log))
            .map_err(|e| ui.warn(format!("cannot start the Docker socket check ({e}); its requests stay unanswered")))
            .ok();
        SocketChecks { dir, ui: ui.clone(), asks: thread.is_some().then_some(asks), thread }
    }

    /// Takes the request waiting in the trigger directory, if there is one: removes
    /// it (as the name it is, never followed) and hands it to the thread.
    pub(super) fn take_request(&self) {
        let ask = match self.dir.entry(SOCKET_TEST_REQUEST) {
            Ok(Entry::Missing) => return,
            Ok(Entry::File { .. }) => Ask::Check,
            Ok(Entry::Other) => Ask::Refused,
            Err(e) => return self.ui.warn(format!("cannot look at {}: {e}", self.request_path())),
        };
        if let Err(e) = self.dir.remove(SOCKET_TEST_REQUEST) {
            self.ui.warn(format!("cannot remove the Docker socket check request {}: {e}", self.request_path()));
        }
        if let Some(asks) = &self.asks {
            let _ = asks.send(ask);
        }
    }

    fn request_path(&self) -> String {
        self.dir.path().join(SOCKET_TEST_REQUEST).display().to_string()
    }
}

impl Drop for SocketChecks {
    /// Lets a running check finish its answer (each command is bounded), then ends the thread.
    fn drop(&mut self) {
        drop(self.asks.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The thread: every request waiting when a check begins is answered by that
/// check, whose answer is written after all of them were made.
fn answer_requests(asks: &Receiver<Ask>, checks: &Checks, dir: &SharedDir, ui: &Ui) {
    while let Ok(first) = asks.recv() {
        let waiting: Vec<Ask> = std::iter::once(first).chain(asks.try_iter()).collect();
        let first_line = if waiting.contains(&Ask::Check) { verdict(&checks.run(), checks.enabled) } else { refusal() };
        let answer = format!(
            "{first_line}\nanswered by upgraderd {} on the host (pid {}) at {}\n",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            iso(now_ms()).unwrap_or_default()
        );
        match dir.check().and_then(|()| dir.write_atomic(SOCKET_TEST_ANSWER, answer.as_bytes(), 0o644)) {
            Ok(()) => ui.info(format!("Docker socket check answered: {first_line}")),
            Err(e) => ui.warn(format!(
                "cannot write the Docker socket check's answer {}: {e}",
                dir.path().join(SOCKET_TEST_ANSWER).display()
            )),
        }
    }
}

/// What the checks need from the configuration.
struct Checks {
    docker: Docker,
    container: Option<String>,
    /// Whether the app's triggers are honoured (`UPGRADERD_ENABLED`).
    enabled: bool,
}

/// What the checks found; each runs only when the one before it passed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Found {
    Unreachable(String),
    PsFailed { engine: String, error: String },
    Reachable { engine: String, running: usize, container: Seen },
}

/// The configured container, as the engine sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    NotConfigured,
    Inspected { name: String, state: String },
    NotInspectable { name: String, error: String },
}

impl Checks {
    /// The engine answers, `docker ps` works, the configured container can be inspected.
    fn run(&self) -> Found {
        let engine = match self.docker.server_version(COMMAND_TIMEOUT) {
            Ok(version) => version,
            Err(e) => return Found::Unreachable(format!("{e:#}")),
        };
        let running = match self.docker.running_containers(COMMAND_TIMEOUT) {
            Ok(ids) => ids.len(),
            Err(e) => return Found::PsFailed { engine, error: format!("{e:#}") },
        };
        let container = match &self.container {
            None => Seen::NotConfigured,
            Some(name) => match self.docker.inspect_container_within(name, COMMAND_TIMEOUT) {
                Ok(found) => Seen::Inspected { name: name.clone(), state: found.state.status },
                Err(e) => Seen::NotInspectable { name: name.clone(), error: format!("{e:#}") },
            },
        };
        Found::Reachable { engine, running, container }
    }
}

/// The answer's first line for what the checks found; `enabled`: the app's triggers are honoured.
fn verdict(found: &Found, enabled: bool) -> String {
    let (engine, running, container) = match found {
        Found::Unreachable(error) => {
            return format!("FAIL: upgraderd cannot reach the Docker engine from the host: {}", one_line(error))
        }
        Found::PsFailed { engine, error } => {
            return format!(
                "FAIL: the Docker engine {engine} answers upgraderd, but `docker ps` failed: {}",
                one_line(error)
            )
        }
        Found::Reachable { engine, running, container } => (engine, running, container),
    };
    let containers = if *running == 1 { "container" } else { "containers" };
    let mut facts = format!(
        "the Docker engine {engine} answers upgraderd on the host; `docker ps` lists {running} running {containers}"
    );
    let mut problems = Vec::new();
    match container {
        Seen::Inspected { name, state } => facts.push_str(&format!("; container {name} is {state}")),
        Seen::NotInspectable { name, error } => {
            problems.push(format!("container {name} cannot be inspected: {}", one_line(error)))
        }
        Seen::NotConfigured => {
            problems.push("no container is configured to check (set UPGRADERD_CONTAINER or CONTAINER_NAME)".into())
        }
    }
    if !enabled {
        problems.push("upgrades from the app are disabled on this host (UPGRADERD_ENABLED=false)".into());
    }
    if problems.is_empty() {
        format!("PASS: {facts}")
    } else {
        format!("WARN: {facts}, but {}", problems.join("; "))
    }
}

fn refusal() -> String {
    format!(
        "FAIL: {SOCKET_TEST_REQUEST} was not a regular file (a symlink, directory, FIFO or device); upgraderd \
         removed it without following it. Create a regular file to ask again."
    )
}

/// An error on one line, cut to a length an app shows.
fn one_line(text: &str) -> String {
    let line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match line.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &line[..cut]),
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reachable(container: Seen) -> Found {
        Found::Reachable { engine: "27.5.1".into(), running: 3, container }
    }

    fn inspected() -> Seen {
        Seen::Inspected { name: "meshmonitor".into(), state: "running".into() }
    }

    #[test]
    fn pass_needs_the_engine_ps_and_the_configured_container() {
        let pass = verdict(&reachable(inspected()), true);
        assert!(pass.starts_with("PASS: the Docker engine 27.5.1 answers"), "{pass}");
        assert!(pass.contains("lists 3 running containers; container meshmonitor is running"), "{pass}");
        let one = verdict(&Found::Reachable { engine: "27.5.1".into(), running: 1, container: inspected() }, true);
        assert!(one.contains("lists 1 running container; "), "{one}");
    }

    #[test]
    fn warn_when_the_engine_works_but_the_container_or_the_app_cannot_be_served() {
        let missing = Seen::NotInspectable {
            name: "meshmonitor".into(),
            error: "container `meshmonitor` does not exist\n(`docker ps -a` lists containers)".into(),
        };
        let warn = verdict(&reachable(missing), true);
        assert!(warn.starts_with("WARN: the Docker engine 27.5.1 answers"), "{warn}");
        assert!(warn.contains("container meshmonitor cannot be inspected: container `meshmonitor` does not exist ("));
        assert!(!warn.contains('\n'), "one line: {warn}");
        let unnamed = verdict(&reachable(Seen::NotConfigured), true);
        assert!(unnamed.starts_with("WARN: ") && unnamed.contains("UPGRADERD_CONTAINER or CONTAINER_NAME"));
        let disabled = verdict(&reachable(inspected()), false);
        assert!(disabled.starts_with("WARN: ") && disabled.contains("UPGRADERD_ENABLED=false"), "{disabled}");
    }

    #[test]
    fn fail_when_the_engine_or_docker_ps_does_not_answer() {
        let down = verdict(&Found::Unreachable("Cannot connect to the Docker daemon".into()), true);
        assert_eq!(
            down,
            "FAIL: upgraderd cannot reach the Docker engine from the host: Cannot connect to the Docker daemon"
        );
        let ps = verdict(&Found::PsFailed { engine: "27.5.1".into(), error: "permission denied".into() }, true);
        assert!(ps.starts_with("FAIL: the Docker engine 27.5.1 answers upgraderd, but `docker ps` failed"), "{ps}");
        assert!(refusal().starts_with("FAIL: .docker-socket-test-request was not a regular file"));
    }

    #[test]
    fn long_errors_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_REASON_CHARS + 50);
        let cut = one_line(&long);
        assert_eq!(cut.chars().count(), MAX_REASON_CHARS + 1);
        assert!(cut.ends_with('…'));
    }
}
