#!/usr/bin/env bash
# Builds and installs upgraderd: the static binary, man pages, completions,
# the systemd unit (upgraderd.service), an example configuration (never
# overwriting one that exists) and the state directory (0700). Idempotent.
#
#   ./install.sh                      build with cargo and install under /usr/local
#   ./install.sh --binary PATH        install a prebuilt binary instead of building
#   ./install.sh --uninstall          remove what install put there (keeps config and state)
#   DESTDIR=/tmp/pkg PREFIX=/usr ./install.sh   stage into a package root
set -euo pipefail

PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
SYSCONFDIR=${SYSCONFDIR:-/etc}
STATEDIR=${STATEDIR:-/var/lib/upgraderd}
here=$(cd "$(dirname "$0")" && pwd)
binary=""
action=install

while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary=${2:?--binary needs a path}; shift 2 ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

bindir="$DESTDIR$PREFIX/bin"
mandir="$DESTDIR$PREFIX/share/man/man1"
bashdir="$DESTDIR$PREFIX/share/bash-completion/completions"
zshdir="$DESTDIR$PREFIX/share/zsh/site-functions"
fishdir="$DESTDIR$PREFIX/share/fish/vendor_completions.d"
confdir="$DESTDIR$SYSCONFDIR/upgraderd"
statedir="$DESTDIR$STATEDIR"
unitdir="$DESTDIR${UNITDIR:-$SYSCONFDIR/systemd/system}"

if [ "$action" = uninstall ]; then
  rm -f "$bindir/upgraderd" "$bashdir/upgraderd" "$zshdir/_upgraderd" "$fishdir/upgraderd.fish" \
    "$unitdir/upgraderd.service"
  for page in "$here"/man/*.1; do rm -f "$mandir/$(basename "$page")"; done
  echo "upgraderd removed; configuration in $confdir and state in $statedir were kept"
  exit 0
fi

if [ -z "$binary" ]; then
  if ! command -v cargo >/dev/null 2>&1; then
    echo "install.sh: cargo not found; install Rust (https://rustup.rs) or pass --binary PATH" >&2
    exit 1
  fi
  echo "building upgraderd (static, release)..."
  (cd "$here" && cargo build --release --locked)
  binary="$here/target/x86_64-unknown-linux-gnu/release/upgraderd"
fi
[ -x "$binary" ] || { echo "install.sh: $binary is not an executable" >&2; exit 1; }

install -d -m 0755 "$bindir" "$mandir" "$bashdir" "$zshdir" "$fishdir"
install -m 0755 "$binary" "$bindir/upgraderd"
install -m 0644 "$here"/man/*.1 "$mandir/"
install -m 0644 "$here/completions/upgraderd.bash" "$bashdir/upgraderd"
install -m 0644 "$here/completions/_upgraderd" "$zshdir/_upgraderd"
install -m 0644 "$here/completions/upgraderd.fish" "$fishdir/upgraderd.fish"
install -d -m 0755 "$unitdir"
sed "s|/usr/local/bin/upgraderd|$PREFIX/bin/upgraderd|" "$here/updater.service" > "$unitdir/upgraderd.service.tmp"
chmod 0644 "$unitdir/upgraderd.service.tmp"
mv "$unitdir/upgraderd.service.tmp" "$unitdir/upgraderd.service"
install -d -m 0755 "$confdir"
if [ -e "$confdir/upgraderd.env" ]; then
  echo "kept existing $confdir/upgraderd.env"
else
  install -m 0600 "$here/examples/upgraderd.env" "$confdir/upgraderd.env"
fi
install -d -m 0700 "$statedir"
chmod 0700 "$statedir"
echo "installed $bindir/upgraderd ($("$bindir/upgraderd" --version))"
echo "next: edit $SYSCONFDIR/upgraderd/upgraderd.env, then: systemctl daemon-reload && systemctl enable --now upgraderd"
