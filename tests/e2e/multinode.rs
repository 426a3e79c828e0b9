//! A real two-node Docker Swarm for upgraderd's Swarm support: a manager and
//! a worker, each a private `dockerd` ([`PrivateEngine`]) in network and UTS
//! namespaces of its own (so `node.hostname` differs: `dk1`, `dk2`), on one
//! [`Lan`] the host reaches too. upgraderd drives the manager through
//! `DOCKER_HOST`, as it would run on a manager whose services' tasks run on
//! workers; the machine's engine is never put in (or out of) a swarm.
//!
//! Shaped by what this kernel allows (`/work/shared/reference/multi-node-swarm.md`):
//! no IPVS, so services use `endpoint_mode: dnsrr` and publish their ports in
//! host mode, and the `ingress` network is removed after `swarm init`; the
//! dispatcher heartbeat is 2 s, so a lost node is `Down` in 5–7 s. Both
//! engines pull the test registry's `127.0.0.1:PORT/…` references through
//! their forwarders.
//!
//! It owns what its engines and its LAN own; dropping [`Swarm2`] removes them
//! all (a killed run's are removed by the next one, by run marker). The tests
//! here, each on a swarm of its own: a stateless service on the worker only,
//! upgraded and rolled back from the manager; a service spread over both
//! nodes whose worker is lost at the switch, during the gate, or during the
//! rollback, or whose link is cut during the gate and healed; a service with
//! data pinned to the manager, moved and restored with the worker lost; and
//! the refusals of a backed-up service on the worker or free to go there.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::{self, Sandbox};
use crate::private_engine::{remains_of, Lan, Options, PrivateEngine};
use crate::world::{free_port, must, world};

/// The manager's hostname, and so its `node.hostname`.
pub const MANAGER: &str = "dk1";
/// The worker's.
pub const WORKER: &str = "dk2";

/// A two-node swarm: the manager at `.2` of its LAN, the worker at `.3`.
pub struct Swarm2 {
    // Options so that Drop can stop both engines at once, before their LAN goes.
    manager: Option<PrivateEngine>,
    worker: Option<PrivateEngine>,
    lan: Option<Lan>,
    names: Vec<String>,
}

impl Swarm2 {
    /// Sets up both engines and the swarm (init, join, both nodes `Ready`), or
    /// `None` (the test skips) where private engines cannot run.
    pub fn start(name: &str) -> Option<Swarm2> {
        // The test images are built once per run, before the clock starts.
        world()?;
        let began = Instant::now();
        let lan = Lan::start(&format!("{name}-lan"))?;
        let engine = |node: &str, host: u8, hostname: &str| {
            let port = lan.port(host);
            // Its own default bridge: both engines' would otherwise be 172.17.0.1, which
            // the reference measured to break host-mode published ports.
            let bip = format!("10.215.{host}.1/24");
            let options = Options {
                hostname: Some(hostname.to_string()),
                dockerd_args: vec!["--bip".into(), bip, "--swarm-default-advertise-addr".into(), port.address().into()],
                lan: Some(port),
            };
            PrivateEngine::start_with(&format!("{name}-{node}"), options)
        };
        let (manager, worker) = thread::scope(|scope| {
            let manager = scope.spawn(|| engine("mgr", 2, MANAGER));
            let worker = scope.spawn(|| engine("wkr", 3, WORKER));
            (manager.join().unwrap(), worker.join().unwrap())
        });
        let names = [manager.as_ref(), worker.as_ref()].into_iter().flatten().map(|e| e.name().to_string()).collect();
        let swarm = Swarm2 { manager, worker, lan: Some(lan), names };
        swarm.manager.as_ref()?;
        swarm.worker.as_ref()?;
        let engines = began.elapsed();

        let (m, w) = (swarm.manager(), swarm.worker());
        let address = m.address();
        m.docker(&[
            "swarm",
            "init",
            "--advertise-addr",
            &address,
            "--listen-addr",
            &format!("{address}:2377"),
            "--data-path-addr",
            &address,
            "--default-addr-pool",
            "10.216.0.0/17",
            "--dispatcher-heartbeat",
            "2s",
        ]);
        // No IPVS here: the routing mesh never answers, and its network only gets in the way.
        let host = m.docker_host();
        let removed = Command::new("docker")
            .args(["-H", &host, "network", "rm", "ingress"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut rm| {
                use std::io::Write;
                rm.stdin.take().unwrap().write_all(b"y\n")?;
                rm.wait_with_output()
            })
            .unwrap();
        assert!(removed.status.success(), "removing ingress: {}", String::from_utf8_lossy(&removed.stderr));
        let token = m.docker(&["swarm", "join-token", "-q", "worker"]).trim().to_string();
        let worker_address = w.address();
        w.docker(&[
            "swarm",
            "join",
            "--token",
            &token,
            "--advertise-addr",
            &worker_address,
            "--listen-addr",
            &format!("{worker_address}:2377"),
            "--data-path-addr",
            &worker_address,
            &format!("{address}:2377"),
        ]);
        swarm.wait_node(WORKER, "ready");
        swarm.wait_node(MANAGER, "ready");
        eprintln!(
            "swarm {name}: up in {:?} (engines {engines:?}); manager {MANAGER} at {address}, worker {WORKER} at \
             {worker_address}",
            began.elapsed()
        );
        Some(swarm)
    }

    pub fn manager(&self) -> &PrivateEngine {
        self.manager.as_ref().unwrap()
    }

    pub fn worker(&self) -> &PrivateEngine {
        self.worker.as_ref().unwrap()
    }

    pub fn worker_mut(&mut self) -> &mut PrivateEngine {
        self.worker.as_mut().unwrap()
    }

    /// The status of the node `hostname` as the manager sees it (`Ready`, `Down`, `Unknown`).
    pub fn node_status(&self, hostname: &str) -> String {
        let out = self.manager().docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}}"]);
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{hostname} ")).map(str::to_string))
            .unwrap_or_else(|| "absent".into())
    }

    /// Waits until the manager reports the node `hostname` in `status` (any case).
    pub fn wait_node(&self, hostname: &str, status: &str) {
        let began = Instant::now();
        common::wait(format!("node {hostname} to be {status}"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(200))
            .showing(|| format!("it is {}", self.node_status(hostname)))
            .until_true(|| self.node_status(hostname).eq_ignore_ascii_case(status));
        eprintln!("swarm: node {hostname} {status} after {:?}", began.elapsed());
    }

    /// The docker CLI against the manager.
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> String {
        self.manager().docker(args)
    }

    /// Starts the stopped worker's dockerd again and waits until the manager sees it `Ready`.
    pub fn worker_back(&mut self) {
        self.worker_mut().start_again();
        self.wait_node(WORKER, "ready");
    }

    /// Cuts the worker's link to the LAN (`heal: false`) or puts it back: its
    /// dockerd and its containers run on, out of the manager's reach.
    pub fn partition_worker(&self, heal: bool) {
        self.lan.as_ref().unwrap().set_link(self.worker(), heal);
        eprintln!("swarm: worker {WORKER} {}", if heal { "linked again" } else { "cut off" });
    }
}

impl Drop for Swarm2 {
    fn drop(&mut self) {
        let began = Instant::now();
        // Both engines at once: each stop waits for its containers and its swarm to wind down.
        let (manager, worker) = (self.manager.take(), self.worker.take());
        thread::scope(|scope| {
            scope.spawn(move || drop(manager));
            scope.spawn(move || drop(worker));
        });
        drop(self.lan.take());
        eprintln!("swarm: removed in {:?}", began.elapsed());
        if !thread::panicking() {
            for name in &self.names {
                let remains = remains_of(name);
                assert!(remains.is_empty(), "{name} left behind: {remains:#?}");
            }
        }
    }
}

/// One stack on the two-node swarm: one service `web` on the test app's
/// image, published in host mode on `port` of every node that runs it.
struct Stack {
    /// The manager's `DOCKER_HOST`; not the swarm itself, which a test stops and starts nodes of meanwhile.
    manager: String,
    /// Where the host reaches each node's published ports.
    addresses: [(String, String); 2],
    name: String,
    repo: String,
    port: u16,
    sandbox: Sandbox,
}

/// How the stack's `web` is placed and what it keeps.
struct Shape {
    replicas: u64,
    /// YAML under `placement:` beside `max_replicas_per_node: 1`.
    constraints: &'static str,
    /// A named volume at /data: data upgraderd backs up.
    keeps_data: bool,
}

impl Stack {
    fn deploy(swarm: &Swarm2, test: &str, versions: &[&str], shape: &Shape) -> Stack {
        let world = world().unwrap();
        let name = format!("{}-mn-{test}", world.prefix);
        let repo = format!("{}/{name}/web", world.registry);
        let build = format!("{}-build", world.prefix);
        for version in versions {
            must(&["docker", "tag", &format!("{build}:{version}"), &format!("{repo}:{version}")]);
            must(&["docker", "push", &format!("{repo}:{version}")]);
            // The engines pull from the registry; the main engine keeps nothing of it.
            must(&["docker", "rmi", &format!("{repo}:{version}")]);
        }
        let sandbox = Sandbox::new();
        let port = free_port();
        let (volume, volumes) = match shape.keeps_data {
            true => ("    volumes:\n      - webdata:/data\n", "volumes:\n  webdata:\n"),
            // The app writes its SQLite file under /data even when nothing keeps it: a tmpfs keeps nothing.
            false => ("    volumes:\n      - type: tmpfs\n        target: /data\n", ""),
        };
        let file = format!(
            "version: '3.8'\nservices:\n  web:\n    image: {repo}:1.0.0\n{volume}    ports:\n      - target: 3001\n        \
             published: {port}\n        mode: host\n    labels:\n      upgraderd-e2e: {prefix}\n    deploy:\n      \
             endpoint_mode: dnsrr\n      replicas: {replicas}\n      placement:\n        max_replicas_per_node: 1\n\
             {constraints}      restart_policy:\n        condition: any\n        delay: 1s\n      update_config:\n        \
             order: stop-first\n        monitor: 2s\n        failure_action: pause\n{volumes}",
            prefix = world.prefix,
            replicas = shape.replicas,
            constraints = shape.constraints,
        );
        let path = sandbox.path().join("stack.yml");
        fs::write(&path, file).unwrap();
        swarm.docker(&["stack", "deploy", "--with-registry-auth", "-c", path.to_str().unwrap(), &name]);
        let addresses =
            [(MANAGER.to_string(), swarm.manager().address()), (WORKER.to_string(), swarm.worker().address())];
        let stack = Stack { manager: swarm.manager().docker_host(), addresses, name, repo, port, sandbox };
        stack.wait_tasks("1.0.0", shape.replicas as usize);
        stack
    }

    fn service(&self) -> String {
        format!("{}_web", self.name)
    }

    /// The docker CLI against the manager.
    #[track_caller]
    fn docker(&self, args: &[&str]) -> String {
        let mut all = vec!["docker", "-H", self.manager.as_str()];
        all.extend_from_slice(args);
        must(&all)
    }

    fn address(&self, hostname: &str) -> &str {
        &self.addresses.iter().find(|(h, _)| h == hostname).unwrap().1
    }

    /// The running tasks as `(node hostname, image)`, as the manager lists them.
    fn running_tasks(&self) -> Vec<(String, String)> {
        let format = "{{.Node}} {{.Image}} {{.CurrentState}}";
        let out =
            self.docker(&["service", "ps", "--filter", "desired-state=running", "--format", format, &self.service()]);
        out.lines()
            .filter(|l| l.contains(" Running "))
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                Some((words.next()?.to_string(), words.next()?.to_string()))
            })
            .collect()
    }

    /// Every task the manager remembers, with its node, state and error: what a failed wait shows.
    fn task_table(&self) -> String {
        let format = "{{.Name}} {{.Node}} {{.Image}} {{.DesiredState}} {{.CurrentState}} {{.Error}}";
        let service = self.service();
        crate::world::sh(&["docker", "-H", &self.manager, "service", "ps", "--no-trunc", "--format", format, &service])
            .1
    }

    /// Waits until `count` tasks run `version`, and only that version, each answering it on its node.
    fn wait_tasks(&self, version: &str, count: usize) -> Vec<(String, String)> {
        let tag = format!(":{version}");
        common::wait(format!("{count} tasks of {} to run {version}", self.service()))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(250))
            .showing(|| format!("running: {:?}\n{}", self.running_tasks(), self.task_table()))
            .until(|| {
                let tasks = self.running_tasks();
                let all = tasks.len() == count && tasks.iter().all(|(_, image)| image.contains(&tag));
                let answer = |node: &str| self.health(node).is_some_and(|h| h["version"] == version);
                (all && tasks.iter().all(|(node, _)| answer(node))).then_some(tasks)
            })
    }

    /// The app's health answer on the node `hostname`'s published port.
    fn health(&self, hostname: &str) -> Option<Value> {
        let address = self.address(hostname);
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        agent.get(&format!("http://{address}:{}/api/health", self.port)).call().ok()?.into_json().ok()
    }

    fn spec_image(&self) -> String {
        let format = "{{.Spec.TaskTemplate.ContainerSpec.Image}}";
        self.docker(&["service", "inspect", "--format", format, &self.service()]).trim().to_string()
    }

    fn replicas(&self) -> String {
        let format = "{{.Spec.Mode.Replicated.Replicas}}";
        self.docker(&["service", "inspect", "--format", format, &self.service()]).trim().to_string()
    }

    /// upgraderd on the manager, its health URL on the node `health_on`.
    fn upgraderd(&self, args: &[&str], health_on: &str) -> Command {
        let state = self.sandbox.state().display().to_string();
        let mut all = vec!["--state-dir", state.as_str()];
        all.extend_from_slice(args);
        let address = self.address(health_on);
        let mut cmd = self.sandbox.command(&all);
        cmd.env("DOCKER_HOST", &self.manager)
            .env("UPGRADERD_SWARM_SERVICE", self.service())
            .env("UPGRADERD_HEALTH_URL", format!("http://{address}:{}/api/health", self.port))
            .env("UPGRADERD_HEALTH_TIMEOUT", "30s")
            .env("UPGRADERD_HEALTH_STABLE", "2s")
            .env("UPGRADERD_HEALTH_VERSION_POINTER", "/version")
            .env("UPGRADERD_MIN_FREE", "1MB")
            .env("UPGRADERD_POLICY", "major")
            .env("UPGRADERD_TRIGGER_DIR", self.sandbox.path());
        cmd
    }

    fn run(&self, args: &[&str], health_on: &str) -> common::Run {
        let began = Instant::now();
        let run = common::Run::from_output(self.upgraderd(args, health_on).output().unwrap());
        eprintln!("upgraderd {args:?}: exit {} in {:?}", run.code, began.elapsed());
        run
    }

    /// upgraderd started in the background, with more settings.
    fn spawn_with(&self, args: &[&str], health_on: &str, extra: &[(&str, &str)]) -> Child {
        let mut cmd = self.upgraderd(args, health_on);
        cmd.envs(extra.iter().copied()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.spawn().unwrap()
    }

    /// Waits until the node `hostname` answers `version` on the stack's port.
    fn wait_answers(&self, hostname: &str, version: &str) {
        common::wait(format!("{version} to answer on {hostname}"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(250))
            .showing(|| format!("last answer: {:?}\n{}", self.health(hostname), self.task_table()))
            .until_true(|| self.health(hostname).is_some_and(|h| h["version"] == version));
    }

    /// Items written through the app on the node `hostname`.
    fn seed(&self, hostname: &str, items: &[&str]) {
        let address = self.address(hostname);
        for item in items {
            ureq::post(&format!("http://{address}:{}/api/items?name={item}", self.port)).call().expect("seed data");
        }
    }

    /// The SQLite data in the stack's volume on the manager, as text.
    fn dump(&self) -> String {
        let volume = format!("{}_webdata", self.name);
        let dir = self.docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
        crate::scenario::sqlite_dump(std::path::Path::new(dir.trim()))
    }

    fn last_history(&self) -> Value {
        let state = self.sandbox.state().display().to_string();
        self.sandbox.run(&["--state-dir", &state, "--json", "history", "--limit", "1"]).success().json()["history"][0]
            .clone()
    }

    fn try_status_file(&self) -> Option<Value> {
        serde_json::from_slice(&fs::read(self.sandbox.path().join(".upgrade-status.json")).ok()?).ok()
    }

    /// Waits until the status file says `status` (read every few milliseconds: a switch is quick).
    fn wait_status(&self, status: &str) {
        common::wait(format!("the upgrade to reach {status}"))
            .within(Duration::from_secs(90))
            .every(Duration::from_millis(20))
            .showing(|| format!("{:?}", self.try_status_file()))
            .until_true(|| self.try_status_file().is_some_and(|st| st["status"] == status));
    }

    /// Waits until every task runs `version`, one on each node: what a
    /// returned worker must converge to.
    fn wait_one_task_on_each_node(&self, version: &str) {
        let mut tasks = self.wait_tasks(version, 2);
        tasks.sort();
        assert_eq!(tasks.iter().map(|(node, _)| node.as_str()).collect::<Vec<_>>(), [MANAGER, WORKER], "{tasks:?}");
    }
}

/// Waits for a background upgraderd to end, prints its stderr, and returns how it exited.
fn ended(upgrader: Child, test: &str, began: Instant) -> std::process::ExitStatus {
    let output = upgrader.wait_with_output().unwrap();
    eprintln!("{}", String::from_utf8_lossy(&output.stderr));
    eprintln!("{test}: upgraderd ended ({}) after {:?}", output.status, began.elapsed());
    output.status
}

impl Drop for Stack {
    fn drop(&mut self) {
        // The engines go with the swarm; the registry's repository is the run's and goes with it.
        let _ = crate::world::sh(&["docker", "-H", &self.manager, "stack", "rm", &self.name]);
    }
}

const ON_WORKERS: &str = "        constraints:\n          - node.role == worker\n";
const ON_THE_MANAGER: &str = "        constraints:\n          - node.hostname == dk1\n";

#[test]
fn a_two_node_swarm_comes_up_and_goes_without_a_trace() {
    let Some(swarm) = Swarm2::start("up") else { return };
    let nodes = swarm.docker(&["node", "ls", "--format", "{{.Hostname}} {{.Status}} {{.ManagerStatus}}"]);
    assert!(nodes.contains(&format!("{MANAGER} Ready Leader")), "{nodes}");
    assert!(nodes.contains(&format!("{WORKER} Ready")), "{nodes}");
    let names: Vec<String> = swarm.names.clone();
    drop(swarm);
    for name in names {
        assert!(remains_of(&name).is_empty(), "{name}: {:#?}", remains_of(&name));
    }
}
#[test]
fn a_stateless_service_on_workers_only_is_upgraded_and_rolled_back_from_the_manager() {
    let Some(swarm) = Swarm2::start("wk") else { return };
    // Stateless: nothing to back up, as for a compose service without data.
    let shape = Shape { replicas: 1, constraints: ON_WORKERS, keeps_data: false };
    let s = Stack::deploy(&swarm, "wk", &["1.0.0", "2.0.0", "2.0.1"], &shape);
    assert_eq!(s.running_tasks()[0].0, WORKER, "placed on the worker");

    let run = s.run(&["upgrade", "--to", "2.0.0", "--no-backup"], WORKER);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let history = s.last_history();
    assert_eq!(history["status"], "complete", "{history}");
    assert_eq!(history["fromVersion"], "1.0.0", "the manager tells the version it does not run: {history}");
    let tasks = s.wait_tasks("2.0.0", 1);
    assert_eq!(tasks[0].0, WORKER, "{tasks:?}");
    assert!(s.spec_image().starts_with(&format!("{}:2.0.0@sha256:", s.repo)), "{}", s.spec_image());

    // 2.0.1 crashes: the gate sees it through the manager's task states, and the rollback puts 2.0.0 back.
    let run = s.run(&["upgrade", "--to", "2.0.1", "--no-backup"], WORKER);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let history = s.last_history();
    assert_eq!(history["status"], "rolled_back", "{history}\n{}", run.stderr);
    let error = history["errorMessage"].as_str().unwrap_or_default();
    // Swarm pauses its own update at the crash (or the gate sees the failed task): either names the service.
    assert!(error.contains(&s.service()), "{error}");
    let tasks = s.wait_tasks("2.0.0", 1);
    assert_eq!(tasks[0].0, WORKER, "{tasks:?}");
    assert!(s.spec_image().starts_with(&format!("{}:2.0.0@sha256:", s.repo)), "{}", s.spec_image());
}

#[test]
fn the_worker_lost_during_the_gate_of_a_spread_service_ends_the_attempt_on_one_version() {
    let Some(mut swarm) = Swarm2::start("loss") else { return };
    // One task on each node: `max_replicas_per_node: 1` and two replicas.
    let shape = Shape { replicas: 2, constraints: "", keeps_data: false };
    let s = Stack::deploy(&swarm, "loss", &["1.0.0", "2.0.0"], &shape);
    let mut nodes: Vec<String> = s.running_tasks().into_iter().map(|(node, _)| node).collect();
    nodes.sort();
    assert_eq!(nodes, [MANAGER, WORKER], "one task on each node");

    // A stable period long enough for the node to be seen Down (5–7 s) while the gate is open.
    let began = Instant::now();
    let upgrader =
        s.spawn_with(&["upgrade", "--to", "2.0.0", "--no-backup"], MANAGER, &[("UPGRADERD_HEALTH_STABLE", "25s")]);
    s.wait_status("health_check");
    eprintln!("loss: gate reached after {:?}; stopping the worker's dockerd", began.elapsed());
    swarm.worker_mut().stop();
    ended(upgrader, "loss", began);
    let history = s.last_history();
    // The gate failed on the lost node, and the previous version was judged healthy on the node that is up.
    assert_eq!(history["status"], "rolled_back", "{history}\n{}", s.task_table());
    let error = history["errorMessage"].as_str().unwrap_or_default();
    assert!(error.starts_with(&format!("node {WORKER} is down; its task cannot be judged (task ")), "{error}");
    assert!(error.contains(&format!("{}, {}:2.0.0)", s.service(), s.repo)), "{error}");
    assert!(!error.contains("rollback failed"), "{error}");
    // The lost node's slot is named in the log, not waited for.
    let logs = history["logs"].to_string();
    assert!(logs.contains(&format!("waits for node {WORKER}, which is down")), "{logs}");
    assert_eq!(s.replicas(), "2", "back at its previous replica count");
    assert!(s.spec_image().starts_with(&format!("{}:1.0.0@sha256:", s.repo)), "{}", s.spec_image());
    // The manager's task was put back before the attempt ended, by the revert itself.
    let here: Vec<(String, String)> = s.running_tasks().into_iter().filter(|(node, _)| node == MANAGER).collect();
    assert_eq!(here.len(), 1, "{here:?}\n{}", s.task_table());
    assert!(here[0].1.contains(":1.0.0"), "{here:?}\n{}", s.task_table());
    s.wait_answers(MANAGER, "1.0.0");
    assert_eq!(swarm.node_status(WORKER), "Down", "the worker is still lost when the attempt ends");

    // Once the worker is back, every task runs the version the record names.
    swarm.worker_back();
    s.wait_one_task_on_each_node("1.0.0");
    eprintln!("loss: converged on 1.0.0 after {:?}", began.elapsed());
    assert_eq!(s.replicas(), "2");
    assert!(s.spec_image().starts_with(&format!("{}:1.0.0@sha256:", s.repo)), "{}", s.spec_image());
}

#[test]
fn a_service_with_data_pinned_to_the_manager_is_moved_and_restored_with_the_worker_lost() {
    let Some(mut swarm) = Swarm2::start("pin") else { return };
    let shape = Shape { replicas: 1, constraints: ON_THE_MANAGER, keeps_data: true };
    let s = Stack::deploy(&swarm, "pin", &["1.0.0", "2.0.0", "2.0.5"], &shape);
    s.seed(MANAGER, &["alpha", "beta"]);
    let before = s.dump();
    assert!(before.starts_with("schema 1"), "{before}");

    // The worker is lost during the gate of the good version: the service's one task is on the manager.
    let began = Instant::now();
    let upgrader = s.spawn_with(&["upgrade", "--to", "2.0.0"], MANAGER, &[("UPGRADERD_HEALTH_STABLE", "8s")]);
    s.wait_status("health_check");
    swarm.worker_mut().stop();
    let status = ended(upgrader, "pin", began);
    let history = s.last_history();
    assert!(status.success(), "{history}");
    assert_eq!(history["status"], "complete", "{history}");
    assert!(history["backupPath"].is_string(), "the data was backed up: {history}");
    s.wait_tasks("2.0.0", 1);
    assert_eq!(s.replicas(), "1");
    let migrated = s.dump();
    assert!(migrated.starts_with("schema 2"), "2.0.0 migrated the data: {migrated}");

    // With the worker still lost, a version that migrates and crashes is rolled back with its data.
    let run = s.run(&["upgrade", "--to", "2.0.5"], MANAGER);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let history = s.last_history();
    assert_eq!(history["status"], "rolled_back", "{history}\n{}", run.stderr);
    assert_eq!(history["fromVersion"], "2.0.0", "{history}");
    let tasks = s.wait_tasks("2.0.0", 1);
    assert_eq!(tasks[0].0, MANAGER, "{tasks:?}");
    assert_eq!(s.dump(), migrated, "the data came back for 2.0.0");
    assert_eq!(s.replicas(), "1", "back at its previous replica count");
    assert_eq!(swarm.node_status(WORKER), "Down");

    // The worker back changes nothing: one task, on the version the record names.
    swarm.worker_back();
    let tasks = s.wait_tasks("2.0.0", 1);
    assert_eq!(tasks[0].0, MANAGER, "{tasks:?}");
    assert!(s.spec_image().starts_with(&format!("{}:2.0.0@sha256:", s.repo)), "{}", s.spec_image());
    eprintln!("pin: done in {:?}", began.elapsed());
}

#[test]
fn a_service_with_data_on_the_worker_or_free_to_go_there_is_refused_naming_the_node() {
    let Some(swarm) = Swarm2::start("ref") else { return };
    let on_worker = Stack::deploy(
        &swarm,
        "refw",
        &["1.0.0", "2.0.0"],
        &Shape { replicas: 1, constraints: ON_WORKERS, keeps_data: true },
    );
    let unpinned =
        Stack::deploy(&swarm, "refu", &["1.0.0", "2.0.0"], &Shape { replicas: 1, constraints: "", keeps_data: true });
    let run = on_worker.run(&["upgrade", "--to", "2.0.0"], WORKER);
    assert_eq!(run.code, 1, "refused in preflight: {}", run.stderr);
    let service = on_worker.service();
    assert!(
        run.stderr.contains(&format!("{service} keeps data in volumes and runs a task on node {WORKER} (id ")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(&format!("[node.hostname == {MANAGER}]")), "{}", run.stderr);
    assert!(
        run.stderr.contains(&format!("{WORKER} is a worker, where upgraderd cannot change services")),
        "{}",
        run.stderr
    );

    let here = unpinned.running_tasks()[0].0.clone();
    let run = unpinned.run(&["upgrade", "--to", "2.0.0"], &here);
    assert_eq!(run.code, 1, "refused in preflight: {}", run.stderr);
    let service = unpinned.service();
    if here == MANAGER {
        assert!(
            run.stderr.contains(&format!(
                "{service} keeps data in volumes on this node, but nothing keeps its tasks here: on a swarm of 2 nodes"
            )),
            "{}",
            run.stderr
        );
    } else {
        assert!(run.stderr.contains(&format!("runs a task on node {WORKER}")), "{}", run.stderr);
    }
    assert!(run.stderr.contains(&format!("node.hostname == {MANAGER}")), "{}", run.stderr);
    let row = unpinned.last_history();
    assert!(row["errorMessage"].as_str().unwrap().contains("refused in preflight"), "{row}");
    for s in [&on_worker, &unpinned] {
        assert!(s.spec_image().starts_with(&format!("{}:1.0.0", s.repo)), "nothing moved: {}", s.spec_image());
        assert_eq!(s.replicas(), "1");
    }
}

#[test]
fn a_partition_of_the_worker_during_the_gate_ends_rolled_back_and_on_one_version_once_it_heals() {
    let Some(swarm) = Swarm2::start("cut") else { return };
    let shape = Shape { replicas: 2, constraints: "", keeps_data: false };
    let s = Stack::deploy(&swarm, "cut", &["1.0.0", "2.0.0"], &shape);
    let began = Instant::now();
    let upgrader =
        s.spawn_with(&["upgrade", "--to", "2.0.0", "--no-backup"], MANAGER, &[("UPGRADERD_HEALTH_STABLE", "25s")]);
    s.wait_status("health_check");
    // Both tasks run 2.0.0 when the gate opens; the worker's keeps running through the partition.
    // Healed once the gate has judged the lost node (a heal before its look, on a loaded
    // machine, would leave the gate a node that came back, not one that was lost).
    swarm.partition_worker(false);
    swarm.wait_node(WORKER, "down");
    common::wait("the gate to end")
        .within(Duration::from_secs(90))
        .every(Duration::from_millis(20))
        .showing(|| format!("{:?}", s.try_status_file()))
        .until_true(|| s.try_status_file().is_some_and(|st| st["status"] != "health_check"));
    swarm.partition_worker(true);
    ended(upgrader, "cut", began);
    let history = s.last_history();
    let error = history["errorMessage"].as_str().unwrap_or_default();
    assert_eq!(history["status"], "rolled_back", "{history}\n{}", s.task_table());
    assert!(error.starts_with(&format!("node {WORKER} is down; its task cannot be judged")), "{error}");
    // Healed: every task on the version the record names, the worker's 2.0.0 container gone.
    swarm.wait_node(WORKER, "ready");
    s.wait_one_task_on_each_node("1.0.0");
    assert_eq!(s.replicas(), "2");
    common::wait("the worker's 2.0.0 container to go")
        .within(Duration::from_secs(60))
        .every(Duration::from_millis(250))
        .showing(|| swarm.worker().docker(&["ps", "--format", "{{.Image}}"]))
        .until_true(|| !swarm.worker().docker(&["ps", "--format", "{{.Image}}"]).contains(":2.0.0"));
    eprintln!("cut: converged on 1.0.0 after {:?}", began.elapsed());
}

#[test]
fn the_worker_lost_during_the_rollback_of_a_spread_service_ends_rolled_back() {
    let Some(mut swarm) = Swarm2::start("rbl") else { return };
    let shape = Shape { replicas: 2, constraints: "", keeps_data: false };
    let s = Stack::deploy(&swarm, "rbl", &["1.0.0", "2.0.1"], &shape);
    let began = Instant::now();
    let upgrader = s.spawn_with(&["upgrade", "--to", "2.0.1", "--no-backup"], MANAGER, &[]);
    s.wait_status("rolling_back");
    swarm.worker_mut().stop();
    ended(upgrader, "rbl", began);
    let history = s.last_history();
    assert_eq!(history["status"], "rolled_back", "{history}\n{}", s.task_table());
    let error = history["errorMessage"].as_str().unwrap_or_default();
    assert!(!error.contains("rollback failed"), "{error}");
    // Swarm's pause at the crash (or the gate's look at the failed task) says what the task did.
    assert!(error.contains("non-zero exit (1)"), "{error}");
    assert!(!error.contains("failure_action: continue"), "{error}");
    assert_eq!(s.replicas(), "2", "back at its previous replica count");
    assert!(s.spec_image().starts_with(&format!("{}:1.0.0@sha256:", s.repo)), "{}", s.spec_image());
    s.wait_answers(MANAGER, "1.0.0");

    swarm.worker_back();
    s.wait_one_task_on_each_node("1.0.0");
    eprintln!("rbl: converged on 1.0.0 after {:?}", began.elapsed());
}

#[test]
fn the_worker_lost_at_the_switch_of_a_spread_service_ends_on_one_version() {
    let Some(mut swarm) = Swarm2::start("sw") else { return };
    let shape = Shape { replicas: 2, constraints: "", keeps_data: false };
    let s = Stack::deploy(&swarm, "sw", &["1.0.0", "2.0.0"], &shape);
    let began = Instant::now();
    let upgrader = s.spawn_with(&["upgrade", "--to", "2.0.0", "--no-backup"], MANAGER, &[]);
    s.wait_status("restarting");
    swarm.worker_mut().stop();
    ended(upgrader, "sw", began);
    let history = s.last_history();
    let status = history["status"].as_str().unwrap_or_default().to_string();
    let runs = match status.as_str() {
        "complete" => "2.0.0",
        "rolled_back" => "1.0.0",
        other => panic!("ended {other}: {history}\n{}", s.task_table()),
    };
    let error = history["errorMessage"].as_str().unwrap_or_default();
    assert!(!error.contains("rollback failed"), "{error}");
    assert_eq!(s.replicas(), "2", "at its replica count");
    s.wait_answers(MANAGER, runs);

    swarm.worker_back();
    s.wait_one_task_on_each_node(runs);
    eprintln!("sw: {status}, converged on {runs} after {:?}", began.elapsed());
}
