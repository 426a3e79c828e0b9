#!/usr/bin/env bash
# A real PostgreSQL 15 image for the real-engine tests, built on this machine
# from Debian packages (no image can be pulled here).
#
#   tests/support/postgres-image.sh NAME:TAG   build NAME:TAG unless it is already
#                                              there and current; print NAME:TAG
#   tests/support/postgres-image.sh --selftest build a throwaway image, prove a
#                                              database lives and persists in it,
#                                              remove everything again
#
# The slow part (debootstrap + apt-get, minutes) is cached as a rootfs tarball,
# never as an image, since tests must leave no images behind:
#   ${UPGRADERD_TEST_CACHE:-$CARGO_TARGET_DIR/test-cache}/postgres-<hash of postgres/rootfs.sh>.tar
# With it in place a build is a `docker import` and a `docker build` (seconds).
# Building the tarball needs root (debootstrap, chroot); what it needs is
# installed with apt-get then, as test.sh does.
#
# The image runs initdb on first start (trust auth, listening on *), then
# postgres as user postgres; PGDATA (/var/lib/postgresql/data) is a VOLUME,
# pg_isready the HEALTHCHECK, SIGINT (fast shutdown) the stop signal,
# PGUSER=postgres so `docker exec C psql` works, and the label
# upgraderd-e2e-postgres=<hash of the recipe in postgres/> tells a current
# image from a stale one. The recipe: postgres/rootfs.sh (the packages),
# postgres/config (the image configuration), postgres/Dockerfile (the start
# script and pg_hba.conf).
#
# Safe to run concurrently (one flock for the whole build) and after an
# interrupted run (the tarball is written to .partial and renamed; stale
# partial rootfs trees and import tags are removed under the lock).
#
# Progress and timings go to stderr, the image name alone to stdout.
# --selftest without a Docker engine prints SKIP and succeeds, unless
# UPGRADERD_E2E_REQUIRED=1 (CI), which makes a missing engine a failure.
set -euo pipefail

support=$(cd "$(dirname "$0")" && pwd)
recipe=$support/postgres
repo=$(cd "$support/../.." && pwd)
cache=${UPGRADERD_TEST_CACHE:-${CARGO_TARGET_DIR:-$repo/target}/test-cache}
label=upgraderd-e2e-postgres
base_repo=upgraderd-postgres-rootfs

say() { echo "postgres-image: $*" >&2; }
die() { say "$*"; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

rootfs_hash() { sha256sum "$recipe/rootfs.sh" | cut -c1-16; }
content_hash() {
  cat "$recipe/rootfs.sh" "$recipe/config" "$recipe/Dockerfile" "$recipe/start.sh" "$recipe/pg_hba.conf" |
    sha256sum | cut -c1-16
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

# Under the lock. Leaves exactly one tarball: the current one.
ensure_tarball() {
  local tarball=$1 tree=$1.rootfs.partial started mirror
  [ -s "$tarball" ] && return 0
  [ "$(id -u)" = 0 ] || die "the rootfs tarball $tarball is not built yet and that needs root (debootstrap, chroot); run this once as root"
  install_build_tools
  remove_rootfs_tree "$tree"
  rm -f "$tarball.partial"
  mirror=$(debian_mirror)
  started=$(now)
  say "building the rootfs from $mirror (debootstrap + postgresql-15, a few minutes; once)"
  local log=$cache/postgres-rootfs.log
  if ! "$recipe/rootfs.sh" "$tree" "$mirror" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    remove_rootfs_tree "$tree"
    die "building the rootfs failed (full log: $log)"
  fi
  # Docker provides /dev, /proc and /sys at run time.
  tar -C "$tree" --numeric-owner --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' \
    -cf "$tarball.partial" .
  mv "$tarball.partial" "$tarball"
  remove_rootfs_tree "$tree"
  find "$cache" -maxdepth 1 -name 'postgres-*.tar' ! -path "$tarball" -delete
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
  tarball=$cache/postgres-$(rootfs_hash).tar
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
  exec 9>"$cache/postgres.lock"
  flock -w 1800 9 || die "waited 30 minutes for $cache/postgres.lock; is another build stuck?"
  "$@"
  flock -u 9
}

# --- selftest: the image holds a real, persistent database ---------------------

selftest_marker=upgraderd-postgres-selftest
rows=1000

skip_or_fail() {
  [ "${UPGRADERD_E2E_REQUIRED:-0}" != 1 ] || die "UPGRADERD_E2E_REQUIRED=1 but $1"
  say "SKIP selftest: $1; the PostgreSQL image was NOT checked"
  exit 0
}

# Containers, volumes and images of selftests that were killed.
remove_selftest_leftovers() {
  local pid
  for pid in $({
    docker ps -a --filter "label=$selftest_marker" --format "{{.Label \"$selftest_marker\"}}"
    docker volume ls --filter "label=$selftest_marker" --format "{{.Label \"$selftest_marker\"}}"
    docker images --format '{{.Repository}}' | sed -n "s/^$selftest_marker-//p"
  } | sort -u); do
    kill -0 "$pid" 2>/dev/null && continue
    docker ps -aq --filter "label=$selftest_marker=$pid" | xargs -r docker rm -f >/dev/null
    docker volume ls -q --filter "label=$selftest_marker=$pid" | xargs -r docker volume rm -f >/dev/null
    docker rmi -f "$selftest_marker-$pid:15" >/dev/null 2>&1 || true
  done
}

selftest_cleanup() {
  docker rm -f "$run" >/dev/null 2>&1 || true
  docker volume rm -f "$run" >/dev/null 2>&1 || true
  docker rmi -f "$run:15" >/dev/null 2>&1 || true
}

start_server() {
  docker run -d --name "$run" --label "$selftest_marker=$$" \
    -v "$run:/var/lib/postgresql/data" "$run:15" >/dev/null
}

wait_healthy() {
  local deadline=$((SECONDS + 90)) status
  while :; do
    status=$(docker inspect --format '{{.State.Status}} {{.State.Health.Status}}' "$run")
    case "$status" in
      "running healthy") return 0 ;;
      exited* | dead*) docker logs "$run" >&2; die "the server container stopped: $status" ;;
    esac
    [ "$SECONDS" -lt "$deadline" ] || { docker logs "$run" >&2; die "not healthy after 90s: $status"; }
    sleep 0.2
  done
}

# pg_dump (15.14 on) fences its output with \restrict and a random key: a fixed
# one makes two dumps of the same data comparable.
dump() { docker exec "$run" pg_dump --dbname=postgres --restrict-key=selftest; }

sql() { docker exec "$run" psql --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 -c "$1"; }

expect() {
  [ "$2" = "$3" ] || die "selftest: $1: expected '$3', got '$2'"
}

selftest() {
  docker info >/dev/null 2>&1 || skip_or_fail "no Docker engine answers"
  if [ "$(id -u)" != 0 ] && [ ! -s "$cache/postgres-$(rootfs_hash).tar" ]; then
    skip_or_fail "not root and no cached rootfs tarball to build the image from"
  fi
  remove_selftest_leftovers
  run=$selftest_marker-$$
  trap selftest_cleanup EXIT
  local started before
  started=$(now)
  with_lock build_image "$run:15"
  say "selftest: image ready in $(since "$started")s, $(image_mib "$run:15") MiB"

  docker volume create --label "$selftest_marker=$$" "$run" >/dev/null
  started=$(now)
  start_server
  wait_healthy
  say "selftest: first start (initdb) healthy in $(since "$started")s"
  expect "the server's user" "$(docker exec "$run" stat -c %U /proc/1)" postgres
  sql "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
       INSERT INTO notes SELECT n, 'note ' || n FROM generate_series(1, $rows) AS n;"
  docker exec "$run" pg_amcheck --install-missing --all --heapallindexed >/dev/null ||
    die "selftest: pg_amcheck found corruption in a fresh cluster"
  before=$(dump)
  docker exec "$run" pg_dumpall --globals-only >/dev/null
  local address
  address=$(docker inspect --format '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$run")
  expect "a query over TCP to $address" \
    "$(docker exec "$run" psql --no-psqlrc -Atc 'SELECT count(*) FROM notes' --host="$address")" "$rows"

  started=$(now)
  docker stop "$run" >/dev/null
  docker start "$run" >/dev/null
  wait_healthy
  say "selftest: stop + start healthy in $(since "$started")s"
  expect "rows after a restart" "$(sql 'SELECT count(*) FROM notes')" "$rows"

  docker stop "$run" >/dev/null
  docker rm "$run" >/dev/null
  start_server
  wait_healthy
  expect "rows in a new container on the same volume" "$(sql 'SELECT count(*) FROM notes')" "$rows"
  [ "$(dump)" = "$before" ] || die "selftest: pg_dump differs after restarts"
  docker logs "$run" 2>&1 | grep -q 'database system was shut down at' ||
    die "selftest: the server did not find a cleanly shut down cluster on the volume"

  selftest_cleanup
  trap - EXIT
  say "selftest: ok (initdb, $rows rows via psql, pg_amcheck, pg_dump, TCP, restart, new container on the volume)"
}

main() {
  case "${1:-}" in
    --selftest) selftest; return ;;
    "" | -*) die "usage: $0 NAME:TAG (build the image, print its name) | $0 --selftest" ;;
  esac
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed); cannot build $1"
  with_lock build_image "$1"
  echo "$1"
}

main "$@"
