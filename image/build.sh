#!/usr/bin/env bash
# Builds the container image of upgraderd, for running it as a compose
# sidecar next to the app (examples/*/docker-compose.upgrade.yml). `FROM
# scratch` with nothing but what upgraderd runs:
#
#   /usr/local/bin/upgraderd                        the static binary
#   /usr/bin/docker                                 the docker CLI
#   /usr/libexec/docker/cli-plugins/docker-compose  compose v2
#   the shared libraries those two load, as ldd lists them on this host
#
# No shell and no package manager at run time. Nothing is pulled: every piece
# comes from this host, so it builds where no registry is reachable.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  cat <<'USAGE'
Usage: image/build.sh [--binary PATH] [--docker PATH] [--compose PATH] [--tag NAME] [--label K=V]

Builds the upgraderd image from local pieces and prints its name and size.

Options:
  --binary PATH   the upgraderd binary (default: built here, static, release)
  --docker PATH   the docker CLI (default: `command -v docker`)
  --compose PATH  the compose v2 plugin (default: the first of
                  $DOCKER_CONFIG/cli-plugins, ~/.docker/cli-plugins,
                  /usr/local/lib/docker/cli-plugins, /usr/libexec/docker/cli-plugins,
                  /usr/lib/docker/cli-plugins that holds docker-compose)
  --tag NAME      the image name (default: upgraderd:VERSION, also tagged upgraderd:latest)
  --label K=V     one more image label (repeatable)
  -h, --help      print this help
USAGE
}

fail() {
  echo "image/build.sh: $*" >&2
  exit 1
}

binary='' docker_cli='' compose='' tag=''
labels=()
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --docker) docker_cli=${2:?--docker needs a path}; shift 2 ;;
    --compose) compose=${2:?--compose needs a path}; shift 2 ;;
    --tag) tag=${2:?--tag needs a name}; shift 2 ;;
    --label) labels+=(--label "${2:?--label needs KEY=VALUE}"); shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; fail "unknown argument $1" ;;
  esac
done

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
if [ -z "$binary" ]; then
  cargo build --release --locked >&2
  binary=target/x86_64-unknown-linux-gnu/release/upgraderd
fi
[ -x "$binary" ] || fail "$binary is not an executable (--binary)"
# glibc's ldd says "statically linked" (a static-pie) or "not a dynamic executable".
ldd "$binary" 2>&1 | grep -Eq 'statically linked|not a dynamic executable' ||
  fail "$binary is not static; build it with the project's flags (.cargo/config.toml)"

[ -n "$docker_cli" ] || docker_cli=$(command -v docker) || fail "no docker CLI here (--docker PATH)"
[ -x "$docker_cli" ] || fail "$docker_cli is not an executable (--docker)"
if [ -z "$compose" ]; then
  for dir in ${DOCKER_CONFIG:+"$DOCKER_CONFIG/cli-plugins"} "$HOME/.docker/cli-plugins" \
    /usr/local/lib/docker/cli-plugins /usr/libexec/docker/cli-plugins /usr/lib/docker/cli-plugins; do
    if [ -x "$dir/docker-compose" ]; then compose="$dir/docker-compose"; break; fi
  done
  [ -n "$compose" ] || fail "no compose v2 plugin found (--compose PATH)"
fi
"$compose" version 2>/dev/null | grep -Eq 'version v?2\.' || fail "$compose is not compose v2 (--compose)"

context=$(mktemp -d)
trap 'rm -rf "$context"' EXIT
root="$context/rootfs"
install -D -m 0755 "$binary" "$root/usr/local/bin/upgraderd"
install -D -m 0755 "$docker_cli" "$root/usr/bin/docker"
install -D -m 0755 "$compose" "$root/usr/libexec/docker/cli-plugins/docker-compose"
# The libraries the two Go programs load (glibc, its loader), at the same paths.
# (A static one lists none: ldd says "not a dynamic executable".)
for program in "$docker_cli" "$compose"; do
  for lib in $( (ldd "$program" 2>/dev/null || true) | grep -Eo '/[^ ]+' || true); do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
done
# upgraderd's state (database, lock, backups) goes to a volume there; /tmp for temporary files.
mkdir -p "$root/var/lib/upgraderd" "$root/tmp" "$root/root"
chmod 0700 "$root/var/lib/upgraderd"
chmod 1777 "$root/tmp"

cat >"$context/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/bin:/usr/bin HOME=/root UPGRADERD_STATE_DIR=/var/lib/upgraderd
LABEL org.opencontainers.image.title=upgraderd org.opencontainers.image.version=$version
# Alive: the daemon has written its heartbeat in the state directory lately.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s CMD ["/usr/local/bin/upgraderd", "watch", "--alive"]
ENTRYPOINT ["/usr/local/bin/upgraderd"]
CMD ["watch"]
DOCKERFILE

names=("${tag:-upgraderd:$version}")
[ -n "$tag" ] || names+=(upgraderd:latest)
args=()
for name in "${names[@]}"; do args+=(-t "$name"); done
# Its stderr only when it fails: the legacy builder always warns that it is deprecated.
if ! log=$(docker build -q "${args[@]}" "${labels[@]}" "$context" 2>&1); then
  echo "$log" >&2
  fail "docker build failed"
fi
size=$(docker image inspect --format '{{.Size}}' "${names[0]}")
echo "${names[0]} ($((size / 1024 / 1024)) MiB)"
