//! A stateful fake `docker` (and `docker-compose`) for tests that need a
//! deployment without an engine.
//!
//! The fake keeps images as files (`images/<reference>` holding an id of the
//! form `sha256:v-<version>`), the service container's image in `running`
//! and its state in `state`. A new version "migrates" the data when it starts.
//! `FAIL_ON="up:2 tag:1"` makes the n-th call of a verb fail; `CRASH=2.0.0`
//! (or a list, `"2.0.0 1.0.0"`) makes those versions exit at start; `SLOW_PULL=5` makes pulls take that long;
//! `NO_LABEL=1` gives the images no version label;
//! `FILL_DISK=DIR` fills DIR's filesystem when `up` runs.
//! A health server on loopback answers with the running version.
//!
//! For the rebuild strategy (`common::fake_git`) the project's service has a
//! `build:` section, and `compose build` builds the version the fake
//! checkout is at: each build a new image id, `sha256:v-<version>+b<n>`.
//! Every call of either fake is appended, in order, to `runbook.log`.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use serde_json::Value;

use super::{tree, Sandbox};

pub const FAKE_DOCKER: &str = r#"#!/bin/sh
S="$FAKE_STATE"
echo "$*" >> "$S/argv.log"
echo "docker $*" >> "$S/runbook.log"
key() { printf '%s' "$1" | tr '/:' '__'; }
resolve() { if [ -f "$S/images/$(key "$1")" ]; then cat "$S/images/$(key "$1")"; else printf '%s\n' "$1"; fi; }
version_of() { id=$(resolve "$1"); v="${id#sha256:v-}"; echo "${v%%+*}"; }
# The n-th call of a verb fails when FAIL_ON names it.
count() {
  n=$(( $(cat "$S/count.$1" 2>/dev/null || echo 0) + 1 )); echo $n > "$S/count.$1"
  for f in $FAIL_ON; do
    if [ "$f" = "$1:$n" ]; then echo "fake docker: injected failure of $1 #$n" >&2; exit 1; fi
  done
}
container_json() {
  id=$(cat "$S/running"); state=$(cat "$S/state")
  if [ "$state" = running ]; then running=true; code=0; else running=false; code=$(cat "$S/exit_code"); fi
  cat <<EOF
[{"Id":"c0ffee","Name":"/demo-app-1","Image":"$id","RestartCount":0,
"Config":{"Image":"registry.example/demo/app:latest","Labels":{
 "com.docker.compose.project":"demo","com.docker.compose.service":"app",
 "com.docker.compose.project.working_dir":"$S",
 "com.docker.compose.project.config_files":"$S/docker-compose.yml,$S/docker-compose.prod.yml",
 "com.docker.compose.project.environment_file":"$S/.env"}},
"State":{"Status":"$state","Running":$running,"ExitCode":$code},
"Mounts":[{"Type":"bind","Source":"$S/data","Destination":"/data","RW":true}]}]
EOF
}
compose_verb() {
  case "$*" in
    *" config --services"*) echo app ;;
    *" config"*)
      if [ -f "$S/built" ] && [ -f "$S/v1" ]; then printf 'services:\n  app:\n    build:\n      context: %s\n    image: registry.example/demo/app:latest\nversion: "3.9"\n' "$S"
      elif [ -f "$S/built" ]; then echo '{"services":{"app":{"build":{"context":"'"$S"'"},"image":"registry.example/demo/app:latest"}}}'
      elif [ -f "$S/v1" ]; then printf 'services:\n  app:\n    image: registry.example/demo/app:latest\nversion: "3.9"\n'
      else echo '{"services":{"app":{"image":"registry.example/demo/app:latest"}}}'; fi ;;
    *" build")
      count build
      head=$(cat "$S/git/HEAD"); v=$(cut -d' ' -f2 "$S/git/commits/$head")
      echo "Building app at $v"
      echo "sha256:v-$v+b$(cat "$S/count.build")" > "$S/images/registry.example_demo_app_latest" ;;
    *" up "*)
      count up
      # Fill the filesystem of the given directory, as a runaway log would, once the switch began.
      if [ -n "$FILL_DISK" ] && [ ! -e "$S/filled" ]; then
        touch "$S/filled"; dd if=/dev/zero of="$FILL_DISK/filler" bs=64k 2>/dev/null || true
      fi
      resolve registry.example/demo/app:latest > "$S/running"
      v=$(version_of registry.example/demo/app:latest)
      [ "$v" = 1.0.0 ] || echo "migrated by $v" >> "$S/data/app.db"
      case " $CRASH " in *" $v "*) echo exited > "$S/state"; echo 1 > "$S/exit_code" ;; *) echo running > "$S/state" ;; esac ;;
    *" stop "*)
      count stop
      echo exited > "$S/state"; echo 0 > "$S/exit_code"
      # Damage the backup, as a failing disk would, when asked to: byte 200
      # of an archive (the first byte of each of a snapshot's files) becomes
      # `x`, or `y` where it was `x` already (one archive in 256).
      damage() { [ -f "$1" ] || return 0
        was=$(dd if="$1" bs=1 skip="$2" count=1 2>/dev/null); bad=x; [ "$was" != x ] || bad=y
        printf '%s' "$bad" | dd of="$1" bs=1 seek="$2" conv=notrunc 2>/dev/null; }
      case " $FAIL_ON " in *" backup "*)
        for f in "$S"/state-dir/backups/*.tar.gz; do damage "$f" 200; done
        for f in "$S"/state-dir/backups/*.snap/objects/*/*; do damage "$f" 0; done ;; esac ;;
    *" start "*) count cstart; echo running > "$S/state" ;;
    *) echo "fake compose: unexpected $*" >&2; exit 99 ;;
  esac
}
case "$*" in
  "compose version") if [ -f "$S/v1" ]; then echo "docker: 'compose' is not a docker command." >&2; exit 1; fi
                     echo "Docker Compose version v2.29.0" ;;
  compose\ *) compose_verb "$@" ;;
  "info --format {{.DockerRootDir}}") echo "$S" ;;
  "container inspect -- demo-app-1"|"container inspect -- c0ffee") container_json ;;
  container\ inspect\ --\ *) echo "Error: No such container: $4" >&2; exit 1 ;;
  "version --format {{.Server.Version}}") count version; echo 27.5.1 ;;
  "ps --quiet") count ps; echo c0ffee ;;
  ps\ -a\ *) echo c0ffee ;;
  logs\ *) echo "app: the last thing it said" ;;
  "manifest inspect registry.example/demo/app:2.0.0"|"manifest inspect registry.example/demo/app:latest") echo '{}' ;;
  manifest\ inspect\ *) echo "no such manifest: $3" >&2; exit 1 ;;
  image\ inspect\ --format\ {{.Id}}\ --\ *)
    if [ -f "$S/images/$(key "$6")" ]; then cat "$S/images/$(key "$6")"; else echo "Error: No such image: $6" >&2; exit 1; fi ;;
  image\ inspect\ --format\ *org.opencontainers.image.version*) [ -n "$NO_LABEL" ] || version_of "$6" ;;
  image\ inspect\ --format\ *RepoDigests*) echo '[]' ;;
  image\ inspect\ --format\ {{json\ .Config.Labels}}\ --\ *) echo null ;;
  "stop -t "*" -- c0ffee") count dstop; echo exited > "$S/state"; echo 0 > "$S/exit_code" ;;
  "start -- c0ffee") count dstart; echo running > "$S/state" ;;
  "image ls --format {{.Tag}} "*) prefix="$(key "$5")_"; ls "$S/images" | while read -r f; do case "$f" in "$prefix"*) echo "${f#"$prefix"}";; esac; done ;;
  "image rm "*) rm -f "$S/images/$(key "$3")" ;;
  tag\ *) count tag; resolve "$2" > "$S/images/$(key "$3")" ;;
  pull\ *) count pull; echo "Pulling $2"; [ -z "$SLOW_PULL" ] || sleep "$SLOW_PULL"
          t="${2##*:}"; [ "$t" != latest ] || t=2.0.0; echo "sha256:v-$t" > "$S/images/$(key "$2")" ;;
  *) echo "fake docker: unexpected $*" >&2; exit 99 ;;
esac
"#;

pub const FAKE_COMPOSE_V1: &str = r#"#!/bin/sh
echo "$*" >> "$FAKE_STATE/compose-v1.log"
if [ "$*" = version ]; then echo "docker-compose version 1.29.2, build unknown"; exit 0; fi
exec docker compose "$@"
"#;

/// A deployment of `registry.example/demo/app:latest` running 1.0.0, with its data and a health server.
pub struct Deployment {
    pub sb: Sandbox,
}

impl Deployment {
    pub fn new() -> Deployment {
        let mut sb = Sandbox::new();
        let dir = sb.path().to_path_buf();
        for file in ["docker-compose.yml", "docker-compose.prod.yml", ".env"] {
            fs::write(dir.join(file), "").unwrap();
        }
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::write(dir.join("data/app.db"), "items: a, b, c\n").unwrap();
        fs::create_dir_all(dir.join("images")).unwrap();
        fs::create_dir_all(dir.join("trigger")).unwrap();
        fs::write(dir.join("images/registry.example_demo_app_latest"), "sha256:v-1.0.0\n").unwrap();
        fs::write(dir.join("running"), "sha256:v-1.0.0\n").unwrap();
        fs::write(dir.join("state"), "running\n").unwrap();
        sb.fake("docker", FAKE_DOCKER);
        let port = serve_health(&dir);
        sb.env("FAKE_STATE", dir.display().to_string())
            .env("UPGRADERD_STATE_DIR", dir.join("state-dir").display().to_string())
            .env("UPGRADERD_CONTAINER", "demo-app-1")
            .env("UPGRADERD_MIN_FREE", "1MB")
            .env("UPGRADERD_TRIGGER_DIR", dir.join("trigger").display().to_string())
            .env("UPGRADERD_HEALTH_URL", format!("http://127.0.0.1:{port}/api/health"))
            .env("UPGRADERD_HEALTH_TIMEOUT", "10s")
            .env("UPGRADERD_HEALTH_STABLE", "300ms")
            .env("UPGRADERD_HEALTH_VERSION_POINTER", "/version")
            // The fake compose acts when it is run, not when its requests reach an engine: a compose
            // started ahead behind the gate would switch before the backup. The e2e tests prove the gate.
            .env("UPGRADERD_EARLY_COMPOSE", "false")
            // The app's triggers ask for 1.0.0 -> 2.0.0, a major step: allow it unless a test says otherwise.
            .env("UPGRADERD_POLICY", "major");
        Deployment { sb }
    }

    pub fn compose_v1(self) -> Deployment {
        fs::write(self.sb.path().join("v1"), "").unwrap();
        self.sb.fake("docker-compose", FAKE_COMPOSE_V1);
        self
    }

    pub fn with(mut self, key: &str, value: &str) -> Deployment {
        self.sb.env(key, value);
        self
    }

    pub fn running_version(&self) -> String {
        version_of(&self.running_image())
    }

    /// The id of the image the service's container runs.
    pub fn running_image(&self) -> String {
        fs::read_to_string(self.sb.path().join("running")).unwrap().trim().to_string()
    }

    /// The image references the fake engine holds, as `repository:tag`.
    pub fn image_tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = fs::read_dir(self.sb.path().join("images"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().replace("registry.example_demo_app_", "app:"))
            .collect();
        tags.sort();
        tags
    }

    pub fn data(&self) -> std::collections::BTreeMap<String, String> {
        tree(&self.sb.path().join("data"))
    }

    pub fn argv(&self) -> Vec<String> {
        fs::read_to_string(self.sb.path().join("argv.log")).unwrap_or_default().lines().map(str::to_string).collect()
    }

    /// The mutating docker calls, in order, without the project's compose flags.
    pub fn actions(&self) -> Vec<String> {
        self.argv()
            .into_iter()
            .filter_map(|line| {
                let words: Vec<&str> = line.split(' ').collect();
                match words[0] {
                    "tag" | "pull" => Some(format!(
                        "{} {}",
                        words[0],
                        words[1..].join(" ").replace("registry.example/demo/app", "app")
                    )),
                    "compose" if line.contains(" up ") => Some("up".into()),
                    "compose" if line.contains(" stop ") => Some("stop".into()),
                    "compose" if line.contains(" start ") => Some("start".into()),
                    _ => None,
                }
            })
            .collect()
    }

    pub fn last_history(&self) -> Value {
        self.sb.run(&["--json", "history", "--limit", "1"]).success().json()["history"][0].clone()
    }

    /// The directory the deployment shares with upgraderd (UPGRADERD_TRIGGER_DIR).
    pub fn trigger_dir(&self) -> std::path::PathBuf {
        self.sb.path().join("trigger")
    }

    /// Writes the trigger the way the app should: a temp file renamed into place.
    pub fn write_trigger(&self, bytes: &[u8]) {
        let tmp = self.trigger_dir().join(".upgrade-trigger.tmp");
        fs::write(&tmp, bytes).unwrap();
        fs::rename(&tmp, self.trigger_dir().join(".upgrade-trigger")).unwrap();
    }

    /// The status file, when there is one to read.
    pub fn status(&self) -> Option<Value> {
        serde_json::from_slice(&fs::read(self.trigger_dir().join(".upgrade-status.json")).ok()?).ok()
    }

    pub fn status_file(&self) -> Value {
        serde_json::from_slice(&fs::read(self.sb.path().join("trigger/.upgrade-status.json")).unwrap()).unwrap()
    }
}

/// Answers every request with the version the fake container runs.
pub fn serve_health(state: &Path) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let running = state.join("running");
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf);
            let id = fs::read_to_string(&running).unwrap_or_default();
            let body = format!(r#"{{"version":"{}"}}"#, version_of(id.trim()));
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    port
}

/// The version an image id of the fake stands for: `sha256:v-2.0.0+b1` → `2.0.0`.
pub fn version_of(image_id: &str) -> String {
    let version = image_id.trim_start_matches("sha256:v-");
    version.split('+').next().unwrap_or(version).to_string()
}
