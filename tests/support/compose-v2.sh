#!/usr/bin/env bash
# Docker Compose v2 for the e2e tests, beside the system's compose v1.
#
# Fetches Debian trixie's `docker-compose` package (compose 2.x, a static Go
# binary needing only glibc >= 2.34) with a private apt sources file (the
# machine's Debian archive, suite trixie, component main) and private apt
# state and cache dirs, extracts it with `dpkg-deb -x`, and places the plugin
# as <DOCKER_CONFIG>/cli-plugins/docker-compose in a private DOCKER_CONFIG.
# Nothing is installed system-wide: `docker compose` works only with that
# DOCKER_CONFIG, so compose v1 stays testable.
#
# Idempotent, cached under target/test-cache/compose-v2/. Prints the
# DOCKER_CONFIG dir on stdout; exits non-zero, saying why on stderr, when
# compose v2 cannot be had here.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache="$PWD/target/test-cache/compose-v2"
config="$cache/docker-config"
plugin="$config/cli-plugins/docker-compose"

fail() {
  echo "compose-v2: $*" >&2
  exit 1
}

# The plugin runs and says it is compose 2.x.
works() {
  [ -x "$plugin" ] && "$plugin" version 2>/dev/null | grep -Eq 'version v?2\.'
}

if works; then
  echo "$config"
  exit 0
fi

for tool in apt-get dpkg-deb ldd; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing; compose v2 is fetched as a Debian package"
done
glibc=$(ldd --version 2>/dev/null | head -n1 | grep -Eo '[0-9]+\.[0-9]+$' || true)
if [ -z "$glibc" ] || [ "$(printf '%s\n' 2.34 "$glibc" | sort -V | head -n1)" != 2.34 ]; then
  fail "glibc ${glibc:-unknown} is older than 2.34, which trixie's docker-compose needs"
fi

# The Debian archive the machine already uses (deb822 or one-line sources),
# and the keyring it trusts; deb.debian.org when none is configured.
archive=$(
  {
    grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list | sed -E 's/\[[^]]*\]//' | awk '{print $2}'
  } | grep -E '/debian/?$' | head -n1 || true
)
archive=${archive:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || fail "$keyring is missing (package debian-archive-keyring): the trixie archive cannot be verified"

apt="$cache/apt"
rm -rf "$apt"
mkdir -p "$apt/state/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$apt/download"
touch "$apt/state/status"
echo "deb [signed-by=$keyring] $archive trixie main" >"$apt/trixie.list"
opts=(
  -o "Dir::State=$apt/state"
  -o "Dir::State::status=$apt/state/status"
  -o "Dir::Cache=$apt/cache"
  -o "Dir::Etc::SourceList=$apt/trixie.list"
  -o "Dir::Etc::SourceParts=$apt/sources.list.d"
  -o "Debug::NoLocking=1"
  -o "APT::Sandbox::User=$(id -un)"
  -o "Acquire::Languages=none"
  -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
  -o "Acquire::IndexTargets::deb::DEP-11-icons-small::DefaultEnabled=false"
)
echo "compose-v2: fetching docker-compose from $archive trixie" >&2
apt-get -qq "${opts[@]}" update >&2 || fail "apt-get update of $archive trixie failed"
(cd "$apt/download" && apt-get -qq "${opts[@]}" download docker-compose >&2) ||
  fail "apt-get download docker-compose from $archive trixie failed"
deb=$(ls "$apt"/download/docker-compose_*.deb)
dpkg-deb -x "$deb" "$apt/root"
mkdir -p "$config/cli-plugins"
install -m 0755 "$apt/root/usr/libexec/docker/cli-plugins/docker-compose" "$plugin"
rm -rf "$apt"
works || fail "$plugin does not run here: $("$plugin" version 2>&1 | head -n1)"
echo "compose-v2: $("$plugin" version) in $config" >&2
echo "$config"
