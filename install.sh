#!/usr/bin/env bash
# Builds and installs upgraderd: the static binary, man pages, completions,
# the systemd units (upgraderd.service, and upgraderd@.service for several
# apps on one host), an example configuration (never overwriting one that
# exists) and the state directory (0700). Idempotent. `./install.sh --help`
# says how to use it.
set -euo pipefail

usage() {
  cat <<'USAGE'
Usage: ./install.sh [--binary PATH] [--uninstall] [--help]

Builds upgraderd (static, release) and installs it with its man pages, shell
completions, the systemd units upgraderd.service (one app) and
upgraderd@.service (one instance per app: upgraderd@NAME reads
/etc/upgraderd/NAME.env and keeps its state in /var/lib/upgraderd/NAME), an
example /etc/upgraderd/upgraderd.env (an existing one is kept) and the state
directory /var/lib/upgraderd (mode 0700). Running it again is harmless.

Options:
  --binary PATH   install this prebuilt binary instead of building with cargo
  --uninstall     remove what install put there (configuration and state are kept)
  -h, --help      print this help

Environment:
  PREFIX=/usr/local           where bin/ and share/ go
  DESTDIR=                    stage everything under this root (packaging)
  SYSCONFDIR=/etc             where upgraderd/ (configuration) and systemd/system/ go
  UNITDIR=$SYSCONFDIR/systemd/system
  STATEDIR=/var/lib/upgraderd

Examples:
  ./install.sh
  ./install.sh --binary target/x86_64-unknown-linux-gnu/release/upgraderd
  DESTDIR=/tmp/pkg PREFIX=/usr ./install.sh
  ./install.sh --uninstall
USAGE
}

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
    -h|--help) usage; exit 0 ;;
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
    "$unitdir/upgraderd.service" "$unitdir/upgraderd@.service"
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
# The units, under their own names, with the binary path of PREFIX, each
# replaced in one rename.
install_unit() {
  sed "s|/usr/local/bin/upgraderd|$PREFIX/bin/upgraderd|" "$here/$1" > "$unitdir/$1.tmp"
  chmod 0644 "$unitdir/$1.tmp"
  mv "$unitdir/$1.tmp" "$unitdir/$1"
}
install_unit upgraderd.service
install_unit upgraderd@.service
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
echo "several apps: one $SYSCONFDIR/upgraderd/NAME.env each, then: systemctl enable --now upgraderd@NAME"
