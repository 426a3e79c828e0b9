#!/usr/bin/env bash
# The project's test command: formatting, lints, and every test, the
# end-to-end ones against the local Docker engine included.
#
# Installs what the tests need (Debian's docker-registry, busybox-static,
# sqlite3, zstd, xfsprogs, btrfs-progs, python3-venv) when it can, and fetches
# compose v2 (tests/support/compose-v2.sh) and ansible-core
# (tests/support/ansible.sh) for them. Without a Docker engine the e2e tests
# say so and skip; with UPGRADERD_E2E_REQUIRED=1 (set by CI) a missing engine,
# compose v2 or ansible-core fails the run instead.
set -euo pipefail
cd "$(dirname "$0")"

need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
[ -x /bin/busybox ] || command -v busybox >/dev/null 2>&1 || need+=(busybox-static)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
# `tar --zstd` unpacks a .tar.zst export (tests/cli/backup/snapshots.rs).
command -v zstd >/dev/null 2>&1 || need+=(zstd)
command -v mount >/dev/null 2>&1 || need+=(mount)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
# Snapshots clone on XFS and btrfs: tests/cli/backup/snapshots.rs makes both in loop files.
command -v mkfs.xfs >/dev/null 2>&1 || need+=(xfsprogs)
command -v mkfs.btrfs >/dev/null 2>&1 || need+=(btrfs-progs)
# The fleet tests run ansible-core from a private virtualenv (tests/support/ansible.sh).
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "warning: missing ${need[*]}; install them (apt-get install -y ${need[*]}) for the e2e tests" >&2
  fi
fi
# promtool checks the metrics file (tests/cli/metrics.rs). Without recommends:
# they would add prometheus-node-exporter, a service of its own.
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing prometheus (for promtool)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  else
    echo "warning: no promtool; install it (apt-get install -y --no-install-recommends prometheus) to check the metrics file" >&2
  fi
fi

# The e2e tests run under compose v1 (the system's) and v2 (a private plugin
# from Debian trixie, never installed system-wide; cached in target/).
if command -v docker >/dev/null 2>&1; then
  if compose_v2=$(tests/support/compose-v2.sh); then
    export UPGRADERD_E2E_COMPOSE_V2="$compose_v2"
  else
    echo "warning: no compose v2 for the e2e tests; they run under compose v1 only" >&2
  fi
fi

# The fleet tests run the Ansible role of examples/ansible/ with ansible-core
# from PyPI, in a virtualenv cached in target/.
if ansible_playbook=$(tests/support/ansible.sh); then
  export UPGRADERD_E2E_ANSIBLE="$ansible_playbook"
else
  echo "warning: no ansible-core for the fleet e2e tests; they skip" >&2
fi

cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
# The end-to-end tests spend their time waiting on Docker, not on the CPU:
# run more of them at once than there are cores.
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
cargo test --locked "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole run (cargo's last line is the empty doc-test run),
# summed from cargo's own result lines only: a test's output may say "N failed".
sum() { grep -E '^test result: ' "$log" | grep -Eo "[0-9]+ $1" | awk '{n += $1} END {print n + 0}'; }
echo "tests: $(sum passed) passed, $(sum failed) failed"
exit "$status"
