#!/usr/bin/env bash
# Real database servers for the real-engine tests, each an image built on this
# machine from Debian bookworm's packages (no image can be pulled here).
#
#   tests/support/server-image.sh SERVER NAME:TAG   build NAME:TAG unless it is
#                                                   already there and current;
#                                                   print NAME:TAG
#   tests/support/server-image.sh SERVER --selftest build a throwaway image, prove
#                                                   a database lives and persists
#                                                   in it, remove everything again
#
# SERVER names a recipe directory beside this script: postgres (PostgreSQL 15),
# mariadb (MariaDB 10.11), redis (Redis 7.0), clickhouse (ClickHouse 18.16).
# A recipe holds:
#   rootfs.sh   installs the server's packages into a copy of the Debian base
#               (rootfs-base.sh: debootstrap minbase), with rootfs-lib.sh's helpers
#   config      the image configuration, one Dockerfile instruction a line, each
#               passed to `docker import --change` (free, unlike a build step)
#   Dockerfile  the thin layer over the imported rootfs (its start script ...);
#               this script passes BASE
#   probe.sh    what --selftest runs in the server's container (`sh -s ACTION`):
#               write N, count HOST, check, dump
#   clean-start (optional) a pattern the server's log shows when it starts on
#               data it shut down cleanly
# The label upgraderd-e2e-SERVER=<hash of the recipe> tells a current image
# from a stale one.
#
# The slow part (debootstrap + apt-get, minutes) is cached as rootfs tarballs,
# never as images, since tests must leave no images behind:
#   ${UPGRADERD_TEST_CACHE:-$CARGO_TARGET_DIR/test-cache}/
#     debian-<hash of rootfs-base.sh>.tar       the base, shared by every server
#     SERVER-<hash of base, lib and rootfs.sh>.tar
# With them in place a build is a `docker import` and a `docker build` (seconds).
# Building a tarball needs root (debootstrap, chroot); debootstrap is installed
# with apt-get then, as test.sh does.
#
# Safe to run concurrently (one flock for every build, so one debootstrap at a
# time) and after an interrupted run (tarballs are written to .partial and
# renamed; stale partial rootfs trees and import tags are removed under the lock).
#
# Progress and timings go to stderr, the image name alone to stdout.
# --selftest without a Docker engine prints SKIP and succeeds, unless
# UPGRADERD_E2E_REQUIRED=1 (CI), which makes a missing engine a failure.
set -euo pipefail

support=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$support/../.." && pwd)
cache=${UPGRADERD_TEST_CACHE:-${CARGO_TARGET_DIR:-$repo/target}/test-cache}

server=${1:-}
case "$server" in
  postgres | mariadb | redis | clickhouse) ;;
  *)
    echo "usage: $0 postgres|mariadb|redis|clickhouse NAME:TAG (build the image, print its name)" >&2
    echo "       $0 postgres|mariadb|redis|clickhouse --selftest" >&2
    exit 2
    ;;
esac
shift
recipe=$support/$server
label=upgraderd-e2e-$server
base_repo=upgraderd-$server-rootfs

say() { echo "server-image $server: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

base_hash() { sha256sum "$support/rootfs-base.sh" | cut -c1-16; }
rootfs_hash() { cat "$support/rootfs-base.sh" "$support/rootfs-lib.sh" "$recipe/rootfs.sh" | sha256sum | cut -c1-16; }
content_hash() {
  (cd "$recipe" && find . -type f -print0 | sort -z | xargs -0 sha256sum) |
    cat - "$support/rootfs-base.sh" "$support/rootfs-lib.sh" | sha256sum | cut -c1-16
}

# The bookworm archive this machine's apt uses (one-line or deb822 sources).
debian_mirror() {
  if [ -n "${UPGRADERD_DEBIAN_MIRROR:-}" ]; then echo "$UPGRADERD_DEBIAN_MIRROR"; return; fi
  local found
  found=$(
    {
      cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk '$1 == "deb" { sub(/^deb +(\[[^]]*\] +)?/, ""); if ($2 == "bookworm") print $1 }'
      cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
        awk 'BEGIN { RS = ""; FS = "\n" }
             {
               types = uris = suites = ""
               for (i = 1; i <= NF; i++) {
                 if ($i ~ /^Types:/) types = $i
                 if ($i ~ /^URIs:/) uris = $i
                 if ($i ~ /^Suites:/) suites = $i
               }
               if (types ~ /[: ]deb( |$)/ && suites ~ /[: ]bookworm( |$)/) { sub(/^URIs: */, "", uris); split(uris, u, " "); print u[1] }
             }'
    } | head -n 1
  )
  [ -n "$found" ] || die "no Debian bookworm archive in /etc/apt/sources.list or /etc/apt/sources.list.d; set UPGRADERD_DEBIAN_MIRROR to one"
  echo "$found"
}

# Mounts debootstrap left behind if it was killed: never rm -rf through them.
unmount_below() {
  local mounts
  mounts=$(awk -v root="$1/" 'index($5, root) == 1 { print $5 }' /proc/self/mountinfo | sort -r)
  [ -z "$mounts" ] || echo "$mounts" | xargs -r -n 1 umount -l
  if awk -v root="$1/" 'index($5, root) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
    die "cannot unmount everything below $1; unmount it by hand, then remove it"
  fi
}

remove_rootfs_tree() {
  [ -e "$1" ] || return 0
  unmount_below "$1"
  rm -rf --one-file-system "$1"
}

install_build_tools() {
  command -v debootstrap >/dev/null 2>&1 && return 0
  command -v apt-get >/dev/null 2>&1 || die "debootstrap is missing and there is no apt-get to install it"
  say "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
}

need_root() {
  [ "$(id -u)" = 0 ] || die "the rootfs tarball $1 is not built yet and that needs root (debootstrap, chroot); run this once as root"
}

# Runs "$@" with its output in LOG; on failure shows the log's tail, removes TREE and dies.
logged() {
  local log=$1 tree=$2
  shift 2
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    remove_rootfs_tree "$tree"
    die "$* failed (full log: $log)"
  fi
}

# Under the lock. The Debian base, with its /dev (the chroot needs /dev/null).
ensure_base() {
  local tarball=$1 tree=$1.rootfs.partial started
  [ -s "$tarball" ] && return 0
  need_root "$tarball"
  install_build_tools
  remove_rootfs_tree "$tree"
  rm -f "$tarball.partial"
  started=$(now)
  say "building the Debian base from $(debian_mirror) (debootstrap, once for every server)"
  logged "$cache/debian-rootfs.log" "$tree" "$support/rootfs-base.sh" "$tree" "$(debian_mirror)"
  tar -C "$tree" --numeric-owner -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  remove_rootfs_tree "$tree"
  find "$cache" -maxdepth 1 -name 'debian-*.tar' ! -path "$tarball" -delete
  say "Debian base built in $(since "$started")s: $tarball ($(du -m "$tarball" | cut -f1) MiB)"
}

# Under the lock. Leaves exactly one tarball for the server: the current one.
ensure_tarball() {
  local tarball=$1 tree=$1.rootfs.partial started base
  [ -s "$tarball" ] && return 0
  need_root "$tarball"
  base=$cache/debian-$(base_hash).tar
  ensure_base "$base"
  remove_rootfs_tree "$tree"
  rm -f "$tarball.partial"
  started=$(now)
  say "building the rootfs (the base + $server's Debian packages, a minute or two; once)"
  mkdir -p "$tree"
  tar -C "$tree" --numeric-owner -xpf "$base"
  cp /etc/resolv.conf "$tree/etc/resolv.conf"
  logged "$cache/$server-rootfs.log" "$tree" "$recipe/rootfs.sh" "$tree"
  # Docker provides /dev, /proc and /sys at run time.
  tar -C "$tree" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  remove_rootfs_tree "$tree"
  find "$cache" -maxdepth 1 -name "$server-*.tar" ! -path "$tarball" -delete
  say "rootfs tarball built in $(since "$started")s: $tarball ($(du -m "$tarball" | cut -f1) MiB)"
}

# Import tags and unfinished builds only ever exist under the lock: any found
# there belong to a killed run. (An untagged image still in use stays.)
remove_killed_builds() {
  docker images --format '{{.Repository}}:{{.Tag}}' "$base_repo" | xargs -r docker rmi >/dev/null 2>&1 || true
  docker images -q --filter dangling=true --filter "label=$label" | xargs -r docker rmi >/dev/null 2>&1 || true
}

current_label() { docker image inspect --format "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true; }

build_image() {
  local name=$1 hash tarball base previous started log line
  hash=$(content_hash)
  if [ "$(current_label "$name")" = "$hash" ]; then
    say "$name is current ($label=$hash)"
    return 0
  fi
  tarball=$cache/$server-$(rootfs_hash).tar
  ensure_tarball "$tarball"
  remove_killed_builds
  previous=$(docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)
  local changes=()
  while read -r line; do
    changes+=(--change "$line")
  done < <(grep -Ev '^[[:space:]]*(#|$)' "$recipe/config")
  started=$(now)
  base=$base_repo:$hash-$$
  log=$(mktemp)
  if ! docker import "${changes[@]}" --change "LABEL $label=$hash" "$tarball" "$base" >"$log" 2>&1 ||
    ! docker build --build-arg "BASE=$base" -t "$name" "$recipe" >>"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    docker rmi "$base" >/dev/null 2>&1 || true
    die "building $name from $tarball failed"
  fi
  rm -f "$log"
  # Untags only: the image's layers stay, as the parent of $name.
  docker rmi "$base" >/dev/null
  if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect --format '{{.Id}}' "$name")" ]; then
    docker rmi "$previous" >/dev/null 2>&1 || say "the stale image $previous is still in use; left in place"
  fi
  say "imported and built $name in $(since "$started")s ($(image_mib "$name") MiB)"
}

image_mib() { docker image inspect --format '{{.Size}}' "$1" | awk '{ printf "%d", $1 / 1048576 }'; }

with_lock() {
  mkdir -p "$cache"
  exec 9>"$cache/server-image.lock"
  flock -w 1800 9 || die "waited 30 minutes for $cache/server-image.lock; is another build stuck?"
  "$@"
  flock -u 9
}

# --- selftest: the image holds a real, persistent database ---------------------

selftest_marker=upgraderd-server-selftest
rows=1000

skip_or_fail() {
  [ "${UPGRADERD_E2E_REQUIRED:-0}" != 1 ] || die "UPGRADERD_E2E_REQUIRED=1 but $1"
  say "SKIP selftest: $1; the $server image was NOT checked"
  exit 0
}

# Containers, volumes and images of selftests that were killed.
remove_selftest_leftovers() {
  local pid
  for pid in $({
    docker ps -a --filter "label=$selftest_marker" --format "{{.Label \"$selftest_marker\"}}"
    docker volume ls --filter "label=$selftest_marker" --format "{{.Label \"$selftest_marker\"}}"
    docker images --format '{{.Repository}}' | sed -n "s/^$selftest_marker-[a-z]*-//p"
  } | sort -u); do
    kill -0 "$pid" 2>/dev/null && continue
    docker ps -aq --filter "label=$selftest_marker=$pid" | xargs -r docker rm -f >/dev/null
    docker volume ls -q --filter "label=$selftest_marker=$pid" | xargs -r docker volume rm -f >/dev/null
    docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "^$selftest_marker-[a-z]+-$pid:" |
      xargs -r docker rmi -f >/dev/null 2>&1 || true
  done
}

selftest_cleanup() {
  docker rm -f "$run" >/dev/null 2>&1 || true
  docker volume rm -f "$run" >/dev/null 2>&1 || true
  docker rmi -f "$run:selftest" >/dev/null 2>&1 || true
}

data_dir() { awk '$1 == "VOLUME" { print $2; exit }' "$recipe/config"; }

start_server() {
  docker run -d --name "$run" --label "$selftest_marker=$$" -v "$run:$(data_dir)" "$run:selftest" >/dev/null
}

wait_healthy() {
  local deadline=$((SECONDS + 120)) status
  while :; do
    status=$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$run")
    case "$status" in
      "running healthy") return 0 ;;
      exited* | dead*) docker logs "$run" >&2; die "the server container stopped: $status" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || { docker logs "$run" >&2; die "not healthy after 120s: $status"; }
    sleep 0.2
  done
}

probe() { docker exec -i "$run" sh -s "$@" <"$recipe/probe.sh"; }

expect() {
  [ "$2" = "$3" ] || die "selftest: $1: expected '$3', got '$2'"
}

selftest() {
  docker info >/dev/null 2>&1 || skip_or_fail "no Docker engine answers"
  if [ "$(id -u)" != 0 ] && [ ! -s "$cache/$server-$(rootfs_hash).tar" ]; then
    skip_or_fail "not root and no cached rootfs tarball to build the image from"
  fi
  remove_selftest_leftovers
  run=$selftest_marker-$server-$$
  trap selftest_cleanup EXIT
  local started before address
  started=$(now)
  with_lock build_image "$run:selftest"
  say "selftest: image ready in $(since "$started")s, $(image_mib "$run:selftest") MiB"

  docker volume create --label "$selftest_marker=$$" "$run" >/dev/null
  started=$(now)
  start_server
  wait_healthy
  say "selftest: first start healthy in $(since "$started")s"
  probe write "$rows" >/dev/null || die "selftest: writing $rows rows failed"
  probe check >/dev/null || die "selftest: the server's check failed on fresh data"
  before=$(probe dump)
  address=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$run")
  expect "rows counted over TCP to $address" "$(probe count "$address")" "$rows"

  started=$(now)
  docker stop "$run" >/dev/null
  docker start "$run" >/dev/null
  wait_healthy
  say "selftest: stop + start healthy in $(since "$started")s"
  expect "rows after a restart" "$(probe count 127.0.0.1)" "$rows"

  docker stop "$run" >/dev/null
  docker rm "$run" >/dev/null
  start_server
  wait_healthy
  expect "rows in a new container on the same volume" "$(probe count 127.0.0.1)" "$rows"
  [ "$(probe dump)" = "$before" ] || die "selftest: the dump differs after restarts"
  probe check >/dev/null || die "selftest: the server's check failed after restarts"
  if [ -f "$recipe/clean-start" ]; then
    docker logs "$run" 2>&1 | grep -Eq -f "$recipe/clean-start" ||
      die "selftest: the server did not find cleanly shut down data on the volume"
  fi

  selftest_cleanup
  trap - EXIT
  say "selftest: ok (first start, $rows rows, the server's check, a dump, TCP, restart, new container on the volume)"
}

main() {
  case "${1:-}" in
    --selftest) selftest; return ;;
    "" | -*) die "usage: $0 $server NAME:TAG (build the image, print its name) | $0 $server --selftest" ;;
  esac
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed); cannot build $1"
  with_lock build_image "$1"
  echo "$1"
}

main "$@"
