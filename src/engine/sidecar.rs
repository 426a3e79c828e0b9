//! upgraderd running in a container beside the app (a compose sidecar, from
//! an overlay file): which container it is, so that it never stops, moves or
//! backs up itself, and what of the host it can see. Compose names a
//! project's files by their host paths and the engine names bind mounts and
//! volumes by theirs, so every one of them must be mounted into the sidecar
//! at the same path; one that is not is refused in preflight, naming the
//! mount to add.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::engine::preflight::Problem;
use crate::ops::compose::{Orchestrator, Project};
use crate::ops::docker::{Container, Docker, Mount};
use crate::ops::socket_gate::docker_host_socket;

/// The container this process runs in, as its engine describes it.
#[derive(Debug, Clone)]
pub(crate) struct Sidecar {
    pub container: Container,
}

/// Where a host path is inside the sidecar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sight {
    /// At the same path.
    Same,
    /// Mounted, but at another path.
    Elsewhere(PathBuf),
    /// Not mounted at all.
    Unseen,
}

/// The id of the container this process runs in, read once from its mount
/// table; `None` outside a container.
pub(crate) fn own_container_id() -> Option<&'static str> {
    static ID: OnceLock<Option<String>> = OnceLock::new();
    ID.get_or_init(|| std::fs::read_to_string("/proc/self/mountinfo").ok().and_then(|t| container_id_in(&t))).as_deref()
}

/// The id's first 12 characters, as `docker ps` shows it.
pub(crate) fn short_id(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// The container id in a mount table: Docker bind-mounts each container's
/// `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` from
/// `<data root>/containers/<id>/`.
pub(crate) fn container_id_in(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, mount_point) = (fields.get(3)?, fields.get(4)?);
        if !["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"].contains(mount_point) {
            return None;
        }
        let after = &root[root.find("/containers/")? + "/containers/".len()..];
        let id = after.split('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

impl Sidecar {
    /// What it must see to upgrade `project`: the Docker socket writable, and
    /// the project's directory, files and env file at the same paths as on the
    /// host. A rebuild, which stops and starts the whole project, is refused
    /// when the sidecar is in that project.
    pub(crate) fn problems(&self, project: &Project, rebuild: bool) -> Vec<Problem> {
        let mut problems = Vec::new();
        problems.extend(docker_host_socket().and_then(|socket| self.socket_problem(&socket)));
        if project.orchestrator == Orchestrator::Compose {
            let dir = &project.working_dir;
            problems.extend(self.problem("the compose project directory", dir, dir));
            for file in project.files.iter().chain(&project.env_file) {
                let holder = if file.starts_with(dir) { dir.as_path() } else { file.parent().unwrap_or(file) };
                problems.extend(self.problem("the compose file", file, holder));
            }
            let in_project = self.container.label("com.docker.compose.project") == Some(project.name.as_str());
            if rebuild && in_project {
                problems.push(Problem::new(
                    "sidecar",
                    format!(
                        "upgraderd runs in container {}, a service of compose project {} itself: a rebuild stops \
                         and starts every service of the project, upgraderd's own container included; run \
                         upgraderd on the host, or as a compose project of its own (`-p upgraderd`)",
                        self.name(),
                        project.name
                    ),
                ));
            }
        }
        problems
    }

    /// The data paths (host paths) it cannot read and restore at the same path.
    pub(crate) fn data_problems(&self, paths: &[PathBuf]) -> Vec<Problem> {
        paths.iter().filter_map(|path| self.problem("the data path", path, &mount_for_data(path))).collect()
    }

    /// The container this process runs in, when it runs in one that `docker`'s
    /// engine knows (not, say, one of another engine's).
    pub(crate) fn find(docker: &Docker) -> Option<Sidecar> {
        let id = own_container_id()?;
        docker.inspect_container(id).ok().map(|container| Sidecar { container })
    }

    pub(crate) fn name(&self) -> &str {
        self.container.name.trim_start_matches('/')
    }

    /// Where the host path `host` is inside this container.
    pub(crate) fn sight(&self, host: &Path) -> Sight {
        sight(&self.container.mounts, host)
    }

    /// A problem when `host` (what it is: `what`) is not inside this container
    /// at the same path, naming `dir`, the host directory to mount.
    pub(crate) fn problem(&self, what: &str, host: &Path, dir: &Path) -> Option<Problem> {
        let mount = format!("`- {0}:{0}` under its `volumes:`", dir.display());
        let why = "compose and the engine name it by its host path";
        let message = match self.sight(host) {
            Sight::Same => return None,
            Sight::Elsewhere(inside) => format!(
                "upgraderd runs in container {}, where {what} {} is at {}, not at the same path: mount {} at the \
                 same path ({mount}); {why}",
                self.name(),
                host.display(),
                inside.display(),
                dir.display()
            ),
            Sight::Unseen => format!(
                "upgraderd runs in container {} and cannot see {what} {}: mount {} into it at the same path \
                 ({mount}); {why}",
                self.name(),
                host.display(),
                dir.display()
            ),
        };
        Some(Problem::new("sidecar", message))
    }

    /// A problem when the Docker socket at `socket` is mounted read-only:
    /// upgraderd changes containers, and `:ro` does not limit the API anyway.
    pub(crate) fn socket_problem(&self, socket: &Path) -> Option<Problem> {
        let mount = self.container.mounts.iter().find(|m| m.destination == socket)?;
        (!mount.rw).then(|| {
            Problem::new(
                "sidecar",
                format!(
                    "the Docker socket {} is mounted read-only into container {} (`:ro`): upgraderd creates and \
                     stops containers through it; mount it without `:ro` (which never limited what the API allows)",
                    socket.display(),
                    self.name()
                ),
            )
        })
    }
}

/// When this process runs in a container without the Docker socket that
/// `DOCKER_HOST` (or the default) names: what to mount. Checked before any
/// docker call, which would otherwise wait for an engine that never comes.
pub(crate) fn missing_socket() -> Option<String> {
    let id = own_container_id()?;
    let socket = docker_host_socket()?;
    (!socket.exists()).then(|| {
        format!(
            "upgraderd runs in a container ({}) without the Docker socket {}: mount it into the container \
             (`- /var/run/docker.sock:{}` under its `volumes:`)",
            short_id(id),
            socket.display(),
            socket.display()
        )
    })
}

/// Where `host` is inside a container with `mounts`: through the mount whose
/// source holds it most closely.
fn sight(mounts: &[Mount], host: &Path) -> Sight {
    let Some(mount) =
        mounts.iter().filter(|m| host.starts_with(&m.source)).max_by_key(|m| m.source.components().count())
    else {
        return Sight::Unseen;
    };
    let rest = host.strip_prefix(&mount.source).unwrap_or(host);
    match (mount.source == mount.destination, rest.as_os_str().is_empty()) {
        (true, _) => Sight::Same,
        // Joining "" would add a trailing slash.
        (false, true) => Sight::Elsewhere(mount.destination.clone()),
        (false, false) => Sight::Elsewhere(mount.destination.join(rest)),
    }
}

/// The directory to mount for the data path `path`: the engine's volumes
/// directory for a named volume (`…/volumes/NAME/_data`), else the path.
fn mount_for_data(path: &Path) -> PathBuf {
    let is_volume = path.ends_with("_data")
        && path.parent().and_then(Path::parent).is_some_and(|volumes| volumes.ends_with("volumes"));
    match is_volume {
        true => path.parent().and_then(Path::parent).unwrap_or(path).to_path_buf(),
        false => path.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e8c1d2b7a90e6f5d4c3b2a1908f7e6d5c4b3a29180f7e6d5c4b3a2918f7e6";

    #[test]
    fn the_container_id_is_read_from_the_files_docker_mounts_into_it() {
        let table = format!(
            "845 712 0:52 / / rw,relatime master:306 - overlay overlay rw,lowerdir=/x\n\
             861 845 254:1 /var/lib/docker/containers/{ID}/resolv.conf /etc/resolv.conf rw,relatime - ext4 /dev/vda1 rw\n\
             862 845 254:1 /var/lib/docker/containers/{ID}/hostname /etc/hostname rw,relatime - ext4 /dev/vda1 rw\n"
        );
        assert_eq!(container_id_in(&table).as_deref(), Some(ID));
        // Another data root, mounted on its own device: the root field is relative to it.
        let elsewhere = format!("861 845 254:3 /docker/containers/{ID}/hosts /etc/hosts rw - xfs /dev/vdb rw\n");
        assert_eq!(container_id_in(&elsewhere).as_deref(), Some(ID));
        // A host's own table, and a container path mounted somewhere else, name no container.
        assert_eq!(container_id_in("22 1 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n"), None);
        let other = format!("9 1 254:1 /var/lib/docker/containers/{ID}/hostname /mnt/x rw - ext4 /dev/vda1 rw\n");
        assert_eq!(container_id_in(&other), None);
        assert_eq!(container_id_in("9 1 254:1 /containers/abc/hostname /etc/hostname rw - ext4 /dev/vda1 rw\n"), None);
    }

    fn mount(source: &str, destination: &str) -> Mount {
        Mount { kind: "bind".into(), source: source.into(), destination: destination.into(), rw: true }
    }

    #[test]
    fn a_host_path_is_seen_through_the_mount_that_holds_it_most_closely() {
        let mounts = [
            mount("/srv", "/srv"),
            mount("/srv/app", "/compose"),
            mount("/var/lib/docker/volumes", "/var/lib/docker/volumes"),
        ];
        assert_eq!(sight(&mounts, Path::new("/srv/other/x")), Sight::Same);
        assert_eq!(
            sight(&mounts, Path::new("/srv/app/docker-compose.yml")),
            Sight::Elsewhere("/compose/docker-compose.yml".into())
        );
        assert_eq!(sight(&mounts, Path::new("/var/lib/docker/volumes/app_data/_data")), Sight::Same);
        assert_eq!(sight(&mounts, Path::new("/opt/app")), Sight::Unseen);
        // `/srvx` is not under `/srv`.
        assert_eq!(sight(&mounts, Path::new("/srvx/app")), Sight::Unseen);
    }

    /// A sidecar of project `shop`, its project directory mounted at /compose and the socket read-only.
    fn sidecar() -> Sidecar {
        let container = serde_json::from_str(
            r#"{"Id":"abc","Name":"/shop-upgraderd","Image":"sha256:1","RestartCount":0,
            "Config":{"Image":"upgraderd","Labels":{"com.docker.compose.project":"shop"}},
            "State":{"Status":"running","Running":true,"ExitCode":0},
            "Mounts":[
              {"Type":"bind","Source":"/var/run/docker.sock","Destination":"/var/run/docker.sock","RW":false},
              {"Type":"bind","Source":"/srv/shop","Destination":"/compose","RW":true}]}"#,
        )
        .unwrap();
        Sidecar { container }
    }

    #[test]
    fn what_the_sidecar_cannot_see_is_refused_naming_the_mount_to_add() {
        let project = Project {
            name: "shop".into(),
            working_dir: "/srv/shop".into(),
            files: vec!["/srv/shop/docker-compose.yml".into(), "/etc/shop/override.yml".into()],
            env_file: None,
            service: "web".into(),
            services: vec!["web".into()],
            orchestrator: Orchestrator::Compose,
        };
        let socket = sidecar().socket_problem(Path::new("/var/run/docker.sock")).unwrap().message;
        assert!(socket.contains("the Docker socket /var/run/docker.sock is mounted read-only"), "{socket}");
        let mut problems: Vec<String> = sidecar().problems(&project, true).into_iter().map(|p| p.message).collect();
        // Less the socket's, there when this test's DOCKER_HOST names the default one.
        problems.retain(|p| !p.contains("Docker socket"));
        assert_eq!(problems.len(), 4, "{problems:#?}");
        let directory = &problems[0];
        assert!(directory.contains("where the compose project directory /srv/shop is at /compose, not at the same"));
        assert!(directory.contains("(`- /srv/shop:/srv/shop` under its `volumes:`)"), "{directory}");
        assert!(problems[1].contains("the compose file /srv/shop/docker-compose.yml is at /compose/docker-compose.yml"));
        assert!(problems[2].contains("cannot see the compose file /etc/shop/override.yml: mount /etc/shop into it"));
        assert!(problems[3].contains("a rebuild stops and starts every service of the project"), "{}", problems[3]);
        let data = sidecar().data_problems(&["/var/lib/docker/volumes/shop_db/_data".into()]);
        assert!(data[0].message.contains("(`- /var/lib/docker/volumes:/var/lib/docker/volumes` under"), "{data:?}");
        // A pull of it is fine on that count, and a Swarm stack has no files to see.
        let count = |project: &Project, rebuild: bool| {
            sidecar().problems(project, rebuild).iter().filter(|p| !p.message.contains("Docker socket")).count()
        };
        assert_eq!(count(&project, false), 3);
        let stack = Project { orchestrator: Orchestrator::Swarm, ..project };
        assert_eq!(count(&stack, true), 0);
    }

    #[test]
    fn a_named_volume_is_mounted_through_the_engines_volumes_directory() {
        assert_eq!(
            mount_for_data(Path::new("/var/lib/docker/volumes/shop_db/_data")),
            PathBuf::from("/var/lib/docker/volumes")
        );
        assert_eq!(mount_for_data(Path::new("/srv/shop/data")), PathBuf::from("/srv/shop/data"));
    }
}
