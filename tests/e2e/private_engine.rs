//! A private Docker engine for one test: an extra `dockerd` in a network
//! namespace of its own, which the test may stop, restart or SIGKILL while
//! upgraderd drives it through `DOCKER_HOST` (the machine's engine is shared
//! by every test and is never restarted).
//!
//! It owns, all named `<run marker>-engine-<name>` ([`crate::owner`]):
//! - the network namespace `/run/netns/<full>` and a veth pair to the host
//!   (host end `ue<hash>h`, its alias the full name), a /30 from
//!   10.213.0.0/16: the host is `.1`, the namespace `.2`, [`PrivateEngine::address`];
//! - the dockerd (`--storage-driver vfs`, an empty `--config-file`) with its
//!   socket, pid file and exec root (its containerd and shims) in `/run/<full>`,
//!   and its data root and log in `/tmp/<full>`;
//! - the cgroup parent `/<full>` of its containers;
//! - a TCP forwarder (threads of the test process) listening on the
//!   namespace's `127.0.0.1:<registry port>` and connecting to the test
//!   registry on the host's loopback, so the private engine pulls the same
//!   `127.0.0.1:PORT/…` references as the main one.
//!
//! With [`Options`] (for a multi-node swarm, `tests/e2e/multinode.rs`) it
//! may instead hang off a [`Lan`] — a bridge in a namespace of its own that
//! the host and every engine on it reach through veths, so the engines reach
//! each other — and run in a UTS namespace of its own with its own hostname
//! (Swarm's `node.hostname`).
//!
//! Dropping it removes all of that; a run killed before its drop leaves them
//! behind, and the next [`PrivateEngine::start`] removes those of runs whose
//! process is gone. A [`Lan`] is named like an engine, so it is found and
//! removed the same way.

use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common;
use crate::owner::{is_leftover, RunId, MARKER};
use crate::world::{must, sh, world};

/// What the full name of a private engine's resources holds after the run marker.
const TAG: &str = "-engine-";

pub struct PrivateEngine {
    /// `<run marker>-engine-<name>`: the netns, the directories, the veth alias, the cgroup.
    full: String,
    run_dir: PathBuf,
    data_dir: PathBuf,
    address: String,
    options: Options,
    dockerd: Option<Child>,
    forwarder: Option<Forwarder>,
}

/// How a private engine is wired and named; the default is a veth of its own to the host.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Runs dockerd in a UTS namespace of its own with this hostname: without
    /// one every engine reports the machine's, and `node.hostname` means nothing.
    pub hostname: Option<String>,
    /// A port on a [`Lan`] instead of a veth of its own to the host.
    pub lan: Option<LanPort>,
    /// More dockerd arguments.
    pub dockerd_args: Vec<String>,
}

impl PrivateEngine {
    /// Starts a private engine named `name` (unique within this run), or `None`
    /// (the test skips) without root, the tools or the main engine; with
    /// `UPGRADERD_E2E_REQUIRED=1` those are failures.
    pub fn start(name: &str) -> Option<PrivateEngine> {
        PrivateEngine::start_with(name, Options::default())
    }

    /// [`PrivateEngine::start`] with a hostname, a place on a [`Lan`] or more dockerd arguments.
    pub fn start_with(name: &str, options: Options) -> Option<PrivateEngine> {
        let world = world()?;
        if !can_run_engines() {
            return None;
        }
        remove_leftovers(RunId::current());

        let began = Instant::now();
        let full = format!("{}{TAG}{name}", world.prefix);
        let address = match &options.lan {
            Some(port) => port.plug(&full),
            None => set_up_network(&full),
        };
        let run_dir = PathBuf::from(format!("/run/{full}"));
        let data_dir = PathBuf::from(format!("/tmp/{full}"));
        fs::create_dir_all(run_dir.join("exec")).unwrap();
        fs::create_dir_all(data_dir.join("data")).unwrap();
        // An empty config: /etc/docker/daemon.json names the main engine's data root and driver.
        fs::write(data_dir.join("daemon.json"), "{}\n").unwrap();
        let registry_port: u16 = world.registry.rsplit_once(':').unwrap().1.parse().unwrap();
        let forwarder = Forwarder::start(&netns_path(&full), registry_port, &world.registry)
            .unwrap_or_else(|e| panic!("cannot forward the registry into {full}: {e}"));
        let mut engine =
            PrivateEngine { full, run_dir, data_dir, address, options, dockerd: None, forwarder: Some(forwarder) };
        let network = began.elapsed();
        engine.spawn_dockerd();
        eprintln!(
            "private engine {}: up in {:?} (namespace, veth and forwarder {network:?}), at {}",
            engine.full,
            began.elapsed(),
            engine.address
        );
        Some(engine)
    }

    /// For `DOCKER_HOST`: `unix:///run/<full>/docker.sock`.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Where the host reaches the ports its containers publish (on 0.0.0.0,
    /// not 127.0.0.1: the namespace's loopback is not the host's).
    pub fn address(&self) -> String {
        self.address.clone()
    }

    /// The full name of its resources, `<run marker>-engine-<name>`.
    pub fn name(&self) -> &str {
        &self.full
    }

    /// The docker CLI against this engine; asserts it succeeds and returns its output.
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> String {
        let host = self.docker_host();
        let mut all = vec!["docker", "-H", host.as_str()];
        all.extend_from_slice(args);
        must(&all)
    }

    /// Copies `tag` from the main engine: `docker save | docker -H … load` (the image ID stays the same).
    pub fn load_image(&self, tag: &str) {
        let mut save = Command::new("docker")
            .args(["save", tag])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn docker save");
        let load = Command::new("docker")
            .args(["-H", &self.docker_host(), "load", "-q"])
            .stdin(save.stdout.take().unwrap())
            .output()
            .expect("spawn docker load");
        let saved = save.wait_with_output().unwrap();
        assert!(saved.status.success(), "docker save {tag}: {}", String::from_utf8_lossy(&saved.stderr));
        assert!(
            load.status.success(),
            "docker load of {tag} into {}: {}",
            self.full,
            String::from_utf8_lossy(&load.stderr)
        );
    }

    /// Whether it answers `/_ping`.
    pub fn answers(&self) -> bool {
        ping(&self.socket())
    }

    /// Stops dockerd with SIGTERM (it stops its containers and its containerd)
    /// and waits until it is gone and its socket refuses.
    pub fn stop(&mut self) {
        let began = Instant::now();
        if let Some(mut dockerd) = self.dockerd.take() {
            unsafe { libc::kill(dockerd.id() as i32, libc::SIGTERM) };
            // --shutdown-timeout 5 bounds its wait for containers; past 30 s it hangs.
            let deadline = Instant::now() + Duration::from_secs(30);
            while dockerd.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = dockerd.kill();
                    panic!("dockerd of {} did not stop within 30 s of SIGTERM\n{}", self.full, self.log_tail());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        common::wait(format!("the socket of {} to refuse", self.full))
            .within(Duration::from_secs(10))
            .until_true(|| UnixStream::connect(self.socket()).is_err());
        eprintln!("private engine {}: stopped in {:?}", self.full, began.elapsed());
    }

    /// SIGKILLs dockerd. Its containerd dies with it (dockerd starts it with a
    /// parent-death signal); the shims and so the containers keep running
    /// until dockerd starts again, which then stops them.
    pub fn kill(&mut self) {
        if let Some(mut dockerd) = self.dockerd.take() {
            let _ = dockerd.kill();
            // Reaped at once: a zombie's pid in the pid file would make the next dockerd refuse to start.
            dockerd.wait().unwrap();
        }
        // Its containerd gets SIGKILL from the kernel as dockerd dies. Orphaned,
        // it stays a zombie here (pid 1 of this machine reaps nothing), and a new
        // dockerd that finds its pid in the pid file takes it for "still running",
        // waits for its socket and fails ("timeout waiting for containerd to start").
        let pidfile = self.run_dir.join("exec/containerd/containerd.pid");
        if let Some(pid) = fs::read_to_string(&pidfile).ok().and_then(|p| p.trim().parse::<i32>().ok()) {
            let deadline = Instant::now() + Duration::from_secs(5);
            while running(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            if running(pid) {
                unsafe { libc::kill(pid, libc::SIGKILL) };
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = fs::remove_file(&pidfile);
        }
    }

    /// Starts dockerd again on the same data root and waits until it answers.
    pub fn start_again(&mut self) {
        assert!(self.dockerd.is_none(), "start_again: dockerd of {} still runs", self.full);
        let began = Instant::now();
        self.clear_overlay_leftovers();
        self.spawn_dockerd();
        eprintln!("private engine {}: started again in {:?}", self.full, began.elapsed());
    }

    /// Removes what a stopped dockerd can leave of its overlay networks: the
    /// sandbox namespaces bound under its exec root and `vx-*` links in its
    /// namespace. A vxlan device left there keeps its id taken, and the next
    /// dockerd fails every task on that network with "error creating vxlan
    /// interface: file exists" (moby/libnetwork#1765) until a reboot.
    fn clear_overlay_leftovers(&self) {
        let sandboxes = self.run_dir.join("exec/netns");
        for entry in fs::read_dir(&sandboxes).into_iter().flatten().flatten() {
            let path = std::ffi::CString::new(entry.path().into_os_string().into_encoded_bytes()).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
            let _ = fs::remove_file(entry.path());
            eprintln!("private engine {}: left sandbox {:?} removed", self.full, entry.file_name());
        }
        let (_, links) = sh(&["ip", "-n", &self.full, "-o", "link", "show"]);
        for name in links.lines().filter_map(|line| line.split(": ").nth(1)).map(|n| n.split('@').next().unwrap_or(n)) {
            if name.starts_with("vx-") {
                let _ = sh(&["ip", "-n", &self.full, "link", "del", name]);
                eprintln!("private engine {}: left vxlan link {name} removed", self.full);
            }
        }
    }

    fn socket(&self) -> PathBuf {
        self.run_dir.join("docker.sock")
    }

    fn spawn_dockerd(&mut self) {
        // dockerd refuses to start over a pid file naming a live process; the last one is gone.
        let _ = fs::remove_file(self.run_dir.join("docker.pid"));
        let log = fs::OpenOptions::new().create(true).append(true).open(self.data_dir.join("dockerd.log")).unwrap();
        let mut command = Command::new("nsenter");
        // Not `ip netns exec`: it remounts /sys, and dockerd then finds no devices cgroup.
        command.arg(format!("--net={}", netns_path(&self.full).display()));
        if let Some(hostname) = &self.options.hostname {
            // Each step execs the next: the child's pid is dockerd's, and its command line starts with `dockerd`.
            command.args(["unshare", "--uts", "sh", "-c", "hostname \"$0\" && exec \"$@\"", hostname]);
        }
        let dockerd = command
            .arg("dockerd")
            .arg("--config-file")
            .arg(self.data_dir.join("daemon.json"))
            .arg("--data-root")
            .arg(self.data_dir.join("data"))
            .arg("--exec-root")
            .arg(self.run_dir.join("exec"))
            .arg("--pidfile")
            .arg(self.run_dir.join("docker.pid"))
            .arg("-H")
            .arg(self.docker_host())
            .args(["--storage-driver", "vfs", "--shutdown-timeout", "5"])
            // Its containers' cgroups under one parent: a killed run's container processes are found there.
            .arg("--cgroup-parent")
            .arg(format!("/{}", self.full))
            .args(&self.options.dockerd_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn nsenter dockerd");
        let mut dockerd = dockerd;
        let socket = self.socket();
        let (full, data_dir) = (&self.full, &self.data_dir);
        common::wait(format!("the private engine {full} to answer"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(20))
            .showing(|| log_tail(data_dir))
            .until_true(|| {
                if let Some(status) = dockerd.try_wait().unwrap() {
                    panic!("dockerd of {full} exited with {status}\n{}", log_tail(data_dir));
                }
                ping(&socket)
            });
        self.dockerd = Some(dockerd);
    }

    fn log_tail(&self) -> String {
        log_tail(&self.data_dir)
    }
}

/// Whether private engines can run here; prints SKIP when not, and fails under `UPGRADERD_E2E_REQUIRED=1`.
pub fn can_run_engines() -> bool {
    let required = std::env::var("UPGRADERD_E2E_REQUIRED").is_ok_and(|v| v == "1");
    let missing: Vec<&str> = ["dockerd", "nsenter", "unshare", "hostname", "ip", "umount"]
        .into_iter()
        .filter(|tool| !sh(&["sh", "-c", &format!("command -v {tool}")]).0)
        .collect();
    let root = unsafe { libc::geteuid() } == 0;
    if !root || !missing.is_empty() {
        let why = if root { format!("{} missing", missing.join(", ")) } else { "not root".to_string() };
        assert!(!required, "UPGRADERD_E2E_REQUIRED=1 but a private Docker engine cannot run: {why}");
        eprintln!("SKIP private engine: {why}; tests on a private engine were NOT exercised");
        return false;
    }
    true
}

/// A LAN for private engines: a bridge in a network namespace of its own
/// (`<run marker>-engine-<name>`), a /24 from 10.214.0.0/16 that only its
/// interfaces use, and a veth from the host to it (the host is `.1`). Being
/// in no namespace of the host's, the bridge needs no iptables rule of the
/// host's. Engines plug into it with [`Lan::port`]; each port is a veth from
/// the engine's namespace to the bridge, which goes with either namespace.
pub struct Lan {
    full: String,
    /// `10.214.N`.
    net: String,
}

impl Lan {
    /// Sets the LAN up, or `None` (the test skips) where private engines cannot run.
    pub fn start(name: &str) -> Option<Lan> {
        let world = world()?;
        if !can_run_engines() {
            return None;
        }
        remove_leftovers(RunId::current());
        let full = format!("{}{TAG}{name}", world.prefix);
        let hash = short_hash(&full);
        let (_, addresses) = sh(&["ip", "-o", "-4", "addr"]);
        let third = (0..256u32)
            .map(|i| (hash + i) % 256)
            .find(|third| !addresses.contains(&format!("10.214.{third}.")))
            .expect("a free /24 in 10.214.0.0/16");
        let net = format!("10.214.{third}");
        let host_veth = format!("ue{hash:08x}h");
        must(&["ip", "netns", "add", &full]);
        must(&["ip", "-n", &full, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &full, "link", "add", "br0", "type", "bridge"]);
        must(&["ip", "-n", &full, "link", "set", "br0", "up"]);
        must(&["ip", "link", "add", &host_veth, "type", "veth", "peer", "name", "uplink", "netns", &full]);
        // The alias carries the marker, so a killed run's veth is found by its owner.
        must(&["ip", "link", "set", &host_veth, "alias", &full]);
        must(&["ip", "addr", "add", &format!("{net}.1/24"), "dev", &host_veth]);
        must(&["ip", "link", "set", &host_veth, "up"]);
        must(&["ip", "-n", &full, "link", "set", "uplink", "master", "br0"]);
        must(&["ip", "-n", &full, "link", "set", "uplink", "up"]);
        Some(Lan { full, net })
    }

    /// Takes the link of `engine` (plugged into this LAN) down or up again
    /// at its switch port: a partition, for the engine and its containers,
    /// which keep running.
    pub fn set_link(&self, engine: &PrivateEngine, up: bool) {
        let port = port_name(engine.name());
        must(&["ip", "-n", &self.full, "link", "set", &port, if up { "up" } else { "down" }]);
    }

    /// The port at `10.214.N.<host>` (2..=254; the host is 1).
    pub fn port(&self, host: u8) -> LanPort {
        assert!((2..=254).contains(&host), "LAN host number {host}");
        LanPort { switch: self.full.clone(), address: format!("{}.{host}", self.net) }
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        remove_engine(&self.full);
    }
}

/// An engine's place on a [`Lan`].
#[derive(Debug, Clone)]
pub struct LanPort {
    switch: String,
    address: String,
}

impl LanPort {
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The namespace `full` with loopback up and a veth (`eth0` inside) on the
    /// bridge; returns the namespace's address.
    fn plug(&self, full: &str) -> String {
        let port = port_name(full);
        must(&["ip", "netns", "add", full]);
        must(&["ip", "-n", full, "link", "set", "lo", "up"]);
        must(&["ip", "-n", &self.switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", full]);
        must(&["ip", "-n", &self.switch, "link", "set", &port, "master", "br0"]);
        must(&["ip", "-n", &self.switch, "link", "set", &port, "up"]);
        must(&["ip", "-n", full, "addr", "add", &format!("{}/24", self.address), "dev", "eth0"]);
        must(&["ip", "-n", full, "link", "set", "eth0", "up"]);
        self.address.clone()
    }
}

/// The name of the switch's end of the veth that plugs the namespace `full` into a [`Lan`].
fn port_name(full: &str) -> String {
    format!("ue{:08x}p", short_hash(full))
}

/// The end of dockerd's log, without its gRPC chatter.
fn log_tail(data_dir: &Path) -> String {
    let log = fs::read_to_string(data_dir.join("dockerd.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().filter(|l| !l.contains("module=grpc")).collect();
    format!("dockerd log (last lines):\n{}", lines[lines.len().saturating_sub(15)..].join("\n"))
}

impl Drop for PrivateEngine {
    fn drop(&mut self) {
        let began = Instant::now();
        if self.dockerd.is_some() && self.answers() {
            // Everything on it is this test's: its containers go first, so the stop does not wait for them.
            let host = self.docker_host();
            let (_, ids) = sh(&["docker", "-H", &host, "ps", "-aq"]);
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut rm = vec!["docker", "-H", &host, "rm", "-f", "-v"];
                rm.extend(ids);
                let _ = sh(&rm);
            }
        }
        if let Some(mut dockerd) = self.dockerd.take() {
            unsafe { libc::kill(dockerd.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while dockerd.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = dockerd.kill();
            let _ = dockerd.wait();
        }
        if let Some(forwarder) = self.forwarder.take() {
            forwarder.stop();
        }
        remove_engine(&self.full);
        eprintln!("private engine {}: removed in {:?}", self.full, began.elapsed());
    }
}

/// Whether `pid` is a process that still runs (not gone, not a zombie).
fn running(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next());
    state.is_some_and(|s| s != "Z" && s != "X")
}

fn netns_path(full: &str) -> PathBuf {
    PathBuf::from(format!("/run/netns/{full}"))
}

/// Whether the engine on `socket` answers `GET /_ping` with 200.
fn ping(socket: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(socket) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream.write_all(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n").is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200")
}

/// A short hash of the full name: interface names hold at most 15 bytes.
fn short_hash(full: &str) -> u32 {
    // FNV-1a: stable across runs, unlike the std hasher's random keys.
    full.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

/// The namespace with loopback up and a veth pair to the host on a /30 no
/// interface of the host uses yet; returns the namespace's address.
fn set_up_network(full: &str) -> String {
    let hash = short_hash(full);
    let host_veth = format!("ue{hash:08x}h");
    let inner_veth = format!("ue{hash:08x}n");
    let (_, addresses) = sh(&["ip", "-o", "-4", "addr"]);
    let subnet = (0..16384u32)
        .map(|i| (hash + i) % 16384)
        .map(|n| (n / 64, (n % 64) * 4))
        .find(|(third, fourth)| !addresses.contains(&format!("10.213.{third}.{} ", fourth + 1)))
        .expect("a free /30 in 10.213.0.0/16");
    let host_address = format!("10.213.{}.{}", subnet.0, subnet.1 + 1);
    let address = format!("10.213.{}.{}", subnet.0, subnet.1 + 2);
    must(&["ip", "netns", "add", full]);
    must(&["ip", "-n", full, "link", "set", "lo", "up"]);
    // The peer is created inside the namespace: no clash with the host's interface names.
    must(&["ip", "link", "add", &host_veth, "type", "veth", "peer", "name", &inner_veth, "netns", full]);
    // The alias carries the marker, so a killed run's veth is found by its owner.
    must(&["ip", "link", "set", &host_veth, "alias", full]);
    must(&["ip", "addr", "add", &format!("{host_address}/30"), "dev", &host_veth]);
    must(&["ip", "link", "set", &host_veth, "up"]);
    must(&["ip", "-n", full, "addr", "add", &format!("{address}/30"), "dev", &inner_veth]);
    must(&["ip", "-n", full, "link", "set", &inner_veth, "up"]);
    address
}

/// Listens on `127.0.0.1:port` inside a network namespace and forwards each
/// connection to `target` on the host. The listening socket is made by a
/// thread that enters the namespace (a socket stays in the namespace it was
/// made in); the accepting and copying threads stay in the host's, so their
/// connections reach the host's loopback.
pub struct Forwarder {
    listener: TcpListener,
    stopping: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    accepting: JoinHandle<()>,
}

impl Forwarder {
    pub fn start(netns: &Path, port: u16, target: &str) -> io::Result<Forwarder> {
        let netns = netns.to_path_buf();
        let listener = std::thread::spawn(move || -> io::Result<TcpListener> {
            let ns = fs::File::open(&netns)?;
            // Only this thread moves; it ends once the socket is made.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            TcpListener::bind(("127.0.0.1", port))
        })
        .join()
        .expect("the forwarder's namespace thread")?;
        let stopping = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let accepting = {
            let listener = listener.try_clone()?;
            let (stopping, connections) = (stopping.clone(), connections.clone());
            let target = target.to_string();
            std::thread::spawn(move || {
                for incoming in listener.incoming() {
                    if stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(inside) = incoming else { continue };
                    let Ok(outside) = TcpStream::connect(&target) else { continue };
                    let mut all = connections.lock().unwrap();
                    all.retain(|s: &TcpStream| s.peer_addr().is_ok());
                    all.extend([inside.try_clone().unwrap(), outside.try_clone().unwrap()]);
                    drop(all);
                    pipe(inside.try_clone().unwrap(), outside.try_clone().unwrap());
                    pipe(outside, inside);
                }
            })
        };
        Ok(Forwarder { listener, stopping, connections, accepting })
    }

    /// Stops accepting and closes every connection: no socket of it keeps the namespace alive.
    pub fn stop(self) {
        self.stopping.store(true, Ordering::SeqCst);
        // shutdown(2) on a listening socket makes a blocked accept(2) fail at once.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        let _ = self.accepting.join();
        for stream in self.connections.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

/// Copies `from` to `to` on a thread of its own until `from` ends.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let _ = io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
}

/// Removes private engines of runs whose process is gone, found by their
/// names: namespaces, directories, veth aliases, cgroups.
fn remove_leftovers(me: RunId) {
    let mut names = Vec::new();
    let mut entries = |dir: &str| {
        if let Ok(read) = fs::read_dir(dir) {
            names.extend(read.flatten().map(|e| e.file_name().to_string_lossy().into_owned()));
        }
    };
    for dir in ["/run/netns", "/run", "/tmp", "/sys/fs/cgroup/pids", "/sys/fs/cgroup/memory"] {
        entries(dir);
    }
    let (_, links) = sh(&["ip", "-o", "link", "show"]);
    // `ip -o` ends each folded line with a backslash, which may stick to the alias.
    names.extend(
        links
            .split_whitespace()
            .map(|w| w.trim_end_matches('\\'))
            .filter(|w| w.starts_with(MARKER))
            .map(str::to_string),
    );
    names.retain(|n| n.starts_with(MARKER) && n.contains(TAG) && is_leftover(n, me));
    names.sort();
    names.dedup();
    for name in names {
        eprintln!("private engine: removing {name}, left by a run that is gone");
        remove_engine(&name);
    }
}

/// Removes everything of the private engine `full`, whatever state it is in:
/// its processes, mounts, namespace, veth, cgroups and directories.
fn remove_engine(full: &str) {
    let run_dir = format!("/run/{full}");
    let data_dir = format!("/tmp/{full}");
    // Its dockerd first, gently: it stops its containers and its containerd.
    for pid in pids_where(|_, cmdline| cmdline.starts_with("dockerd") && cmdline.contains(&run_dir)) {
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !pids_where(|_, c| c.starts_with("dockerd") && c.contains(&run_dir)).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    // Then whatever is left: container processes (its cgroups), processes in
    // its namespace (containerd, docker-proxy), shims (they name its exec root).
    let netns = fs::metadata(netns_path(full)).ok().map(|m| format!("net:[{}]", m.ino()));
    let cgroup = format!("/{full}/");
    let stray = |pid: i32, cmdline: &str| {
        cmdline.contains(&run_dir)
            || netns
                .as_deref()
                .is_some_and(|ns| fs::read_link(format!("/proc/{pid}/ns/net")).is_ok_and(|l| l.to_string_lossy() == ns))
            || fs::read_to_string(format!("/proc/{pid}/cgroup")).is_ok_and(|c| c.contains(&cgroup))
    };
    for _ in 0..50 {
        let pids = pids_where(stray);
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Mounts under its directories (the data root dockerd binds on itself, the
    // containers' namespaces and shm), deepest first and lazily, before any removal.
    for dir in [&run_dir, &data_dir] {
        for mount in mounts_under(dir) {
            let path = std::ffi::CString::new(mount).unwrap();
            unsafe { libc::umount2(path.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let (_, links) = sh(&["ip", "-o", "link", "show"]);
    for line in links.lines().filter(|l| l.split_whitespace().any(|w| w.trim_end_matches('\\') == full)) {
        if let Some(name) = line.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n)) {
            let _ = sh(&["ip", "link", "del", name]);
        }
    }
    if netns_path(full).exists() {
        let _ = sh(&["ip", "netns", "del", full]);
    }
    for controller in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        remove_cgroup(&controller.path().join(full));
    }
    for dir in [&run_dir, &data_dir] {
        // Never through a mount: one that did not go stays, and so does the directory.
        if Path::new(dir).exists() && mounts_under(dir).is_empty() {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// Removes a cgroup directory and those under it, deepest first (their files go with them).
fn remove_cgroup(dir: &Path) {
    if !dir.is_dir() {
        return;
    }
    for child in fs::read_dir(dir).into_iter().flatten().flatten() {
        if child.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup(&child.path());
        }
    }
    let _ = fs::remove_dir(dir);
}

/// The pids whose command line (arguments joined by spaces) matches.
fn pids_where(matches: impl Fn(i32, &str) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            // Zombies have no command line; they are gone already.
            !cmdline.is_empty() && matches(*pid, &String::from_utf8_lossy(&cmdline).replace('\0', " "))
        })
        .collect()
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &str) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<String> = info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(unescape_mount)
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.len()));
    mounts.dedup();
    mounts
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_mount(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = (0..3).filter_map(|_| chars.next()).collect();
            out.push(u8::from_str_radix(&digits, 8).map(char::from).unwrap_or('?'));
        } else {
            out.push(c);
        }
    }
    out
}

/// What of the private engine `full` is still there: processes, mounts, namespace, veth, directories.
pub fn remains_of(full: &str) -> Vec<String> {
    let run_dir = format!("/run/{full}");
    let mut left = Vec::new();
    left.extend(pids_where(|_, c| c.contains(&run_dir)).iter().map(|p| format!("process {p}")));
    left.extend(mounts_under(&run_dir).into_iter().map(|m| format!("mount {m}")));
    left.extend(mounts_under(&format!("/tmp/{full}")).into_iter().map(|m| format!("mount {m}")));
    for path in [netns_path(full), PathBuf::from(&run_dir), PathBuf::from(format!("/tmp/{full}"))] {
        if path.exists() {
            left.push(format!("path {}", path.display()));
        }
    }
    let (_, links) = sh(&["ip", "-o", "link", "show"]);
    left.extend(
        links
            .lines()
            .filter(|l| l.split_whitespace().any(|w| w.trim_end_matches('\\') == full))
            .map(|l| format!("link {l}")),
    );
    for controller in fs::read_dir("/sys/fs/cgroup").into_iter().flatten().flatten() {
        if controller.path().join(full).exists() {
            left.push(format!("cgroup {}", controller.path().join(full).display()));
        }
    }
    left
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use serde_json::Value;

    use super::{remains_of, PrivateEngine};
    use crate::common;
    use crate::compose::ComposeVersion;
    use crate::world::{free_port, must, sh, world};

    /// The test app's health answer at `address:port`, when it answers.
    fn health(address: &str, port: u16) -> Option<Value> {
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(2)).build();
        agent.get(&format!("http://{address}:{port}/api/health")).call().ok()?.into_json().ok()
    }

    fn wait_health(address: &str, port: u16, version: &str) {
        common::wait(format!("{version} to answer on {address}:{port}"))
            .within(Duration::from_secs(60))
            .every(Duration::from_millis(100))
            .showing(|| format!("last answer: {:?}", health(address, port)))
            .until_true(|| health(address, port).is_some_and(|h| h["version"] == version));
    }

    /// The app on the private engine, its port published on all of the namespace's addresses.
    fn compose_file(image: &str, port: u16) -> String {
        format!(
            "version: '3.7'\nservices:\n  app:\n    image: {image}\n    restart: unless-stopped\n    ports:\n      - \"{port}:3001\"\n    \
             volumes:\n      - appdata:/data\nvolumes:\n  appdata:\n"
        )
    }

    fn compose(engine: &PrivateEngine, version: ComposeVersion, config: Option<&Path>, dir: &Path, args: &[&str]) {
        let out = version.command(config, dir, args).env("DOCKER_HOST", engine.docker_host()).output().unwrap();
        assert!(
            out.status.success(),
            "{} {args:?} on the private engine: {}",
            version.program(),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn a_private_engine_runs_a_compose_app_and_survives_a_restart() {
        let Some(mut engine) = PrivateEngine::start("restart") else { return };
        let world = world().unwrap();
        let full = engine.name().to_string();

        // From the main engine without a registry: the same image ID.
        let build = format!("{}-build:2.0.0", world.prefix);
        engine.load_image(&build);
        let id = |out: String| out.trim().to_string();
        assert_eq!(
            id(engine.docker(&["image", "inspect", "--format", "{{.Id}}", &build])),
            id(must(&["docker", "image", "inspect", "--format", "{{.Id}}", &build]))
        );

        // Through the registry: the private engine pulls the same 127.0.0.1:PORT reference.
        let image = format!("{}/{full}/app:1.0.0", world.registry);
        must(&["docker", "tag", &format!("{}-build:1.0.0", world.prefix), &image]);
        must(&["docker", "push", &image]);
        must(&["docker", "rmi", &image]);

        let mut projects = vec![(ComposeVersion::V1, None)];
        if let Ok(config) = &world.compose_v2 {
            projects.push((ComposeVersion::V2, Some(config.clone())));
        }
        let dir = tempfile::tempdir().unwrap();
        let address = engine.address();
        let mut ports = Vec::new();
        for (version, config) in &projects {
            let project = format!("{full}{}", version.suffix());
            let project_dir = dir.path().join(&project);
            std::fs::create_dir_all(&project_dir).unwrap();
            let port = free_port();
            std::fs::write(project_dir.join("docker-compose.yml"), compose_file(&image, port)).unwrap();
            compose(&engine, *version, config.as_deref(), &project_dir, &["-p", &project, "up", "-d"]);
            wait_health(&address, port, "1.0.0");
            let on_main =
                must(&["docker", "ps", "-q", "--filter", &format!("label=com.docker.compose.project={project}")]);
            assert!(on_main.trim().is_empty(), "{project} runs on the main engine: {on_main}");
            ports.push(port);
        }

        engine.stop();
        for port in &ports {
            assert!(health(&address, *port).is_none(), "the app on {port} answers with its engine stopped");
        }
        engine.start_again();
        // `restart: unless-stopped`: the containers come back with their engine.
        for port in &ports {
            wait_health(&address, *port, "1.0.0");
        }

        // SIGKILL: the shims outlive dockerd, so the apps still answer; the next dockerd stops them.
        engine.kill();
        assert!(!engine.answers(), "a killed engine answers");
        for port in &ports {
            assert!(health(&address, *port).is_some(), "the app on {port} died with its engine");
        }
        engine.start_again();
        let states = engine.docker(&["ps", "-a", "--format", "{{.Names}} {{.Status}}"]);
        // Measured: the new dockerd stops the containers it finds still running
        // (Exited (0)) and their `restart: unless-stopped` does not start them
        // again (none answered within 5 s). A test of a crash starts them itself.
        eprintln!("after SIGKILL and a new start:\n{states}");

        for ((version, config), port) in projects.iter().zip(&ports) {
            let project = format!("{full}{}", version.suffix());
            compose(&engine, *version, config.as_deref(), &dir.path().join(&project), &["-p", &project, "down", "-v"]);
            assert!(health(&address, *port).is_none());
        }
        drop(engine);
        let remains = remains_of(&full);
        assert!(remains.is_empty(), "the private engine left behind: {remains:#?}");
        let (_, netns) = sh(&["ip", "netns", "list"]);
        assert!(!netns.contains(&full), "its namespace remains: {netns}");
    }
}
