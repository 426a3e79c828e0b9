# Sourced by each server's rootfs.sh (tests/support/SERVER/rootfs.sh DIR),
# which runs as root over a copy of the Debian base (rootfs-base.sh) in DIR.
# Its SHA-256 is part of the key of every server's cached tarball.
set -euo pipefail
dir=$1

# A command in the rootfs, with a clean environment.
in_rootfs() {
  chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 LANG=C.UTF-8 "$@"
}

# Installs Debian packages (no recommends) into the rootfs.
install_packages() {
  in_rootfs apt-get update -qq
  in_rootfs apt-get install -y -qq --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@" >/dev/null
  in_rootfs apt-get clean
}

# Fails unless every file given (paths inside the rootfs: programs, shared
# libraries) is there and finds all its libraries (nothing left out by a dpkg
# exclude).
require_binaries() {
  local binary
  for binary in "$@"; do
    [ -f "$dir$binary" ] || { echo "rootfs.sh: $binary is missing" >&2; exit 1; }
    if in_rootfs ldd "$binary" 2>/dev/null | grep 'not found'; then
      echo "rootfs.sh: $binary misses a library (left out by a dpkg exclude?)" >&2
      exit 1
    fi
  done
}

# Nothing of this machine or of the build goes into the image.
finish_rootfs() {
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/tmp/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
  find "$dir/var/log" -type f -delete
  : >"$dir/etc/resolv.conf"
  : >"$dir/etc/machine-id"
  echo localhost >"$dir/etc/hostname"
}
