#!/usr/bin/env bash
# ansible-core for the fleet e2e tests (tests/e2e/fleet.rs), in a private
# virtualenv under target/test-cache/ansible: nothing is installed for the
# machine. Installs from PyPI the first time; later runs reuse it.
#
# Prints the path of ansible-playbook on stdout; exits non-zero, saying why
# on stderr, when ansible-core cannot be had here.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="$PWD/target/test-cache/ansible"
playbook="$venv/bin/ansible-playbook"
# The newest release line the tests were written against.
spec='ansible-core>=2.16,<2.20'

fail() {
  echo "ansible: $*" >&2
  exit 1
}

works() {
  [ -x "$playbook" ] && LC_ALL=C.UTF-8 "$playbook" --version >/dev/null 2>&1
}

if works; then
  echo "$playbook"
  exit 0
fi

command -v python3 >/dev/null 2>&1 || fail "python3 is missing (apt-get install -y python3-venv)"
rm -rf "$venv"
python3 -m venv "$venv" >&2 || fail "python3 cannot make a virtualenv (apt-get install -y python3-venv)"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$spec" >&2 ||
  fail "pip could not install $spec from PyPI"
works || fail "$playbook does not run"
echo "ansible: $("$playbook" --version | head -n1) in $venv" >&2
echo "$playbook"
