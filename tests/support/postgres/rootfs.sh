#!/usr/bin/env bash
# The root filesystem of the test PostgreSQL image, built from Debian
# packages into DIR: bookworm (minbase) with postgresql-15 and its client
# tools, no cluster, no docs, no apt caches. Run as root.
#
# Usage: rootfs.sh DIR DEBIAN_MIRROR
#
# The SHA-256 of this file keys the cached tarball (see ../postgres-image.sh):
# any change here rebuilds the rootfs on the next run.
set -euo pipefail
dir=$1
mirror=$2

in_rootfs() { chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 LANG=C.UTF-8 "$@"; }

debootstrap --variant=minbase bookworm "$dir" "$mirror"

# Docs, manuals and translations are of no use in a test image, nor is JIT
# compilation: LLVM and Z3 alone are a third of the image and of its import
# time. Without llvmjit.so the server disables JIT by itself (and the start
# script says jit=off).
cat >"$dir/etc/dpkg/dpkg.cfg.d/excludes" <<'CFG'
path-exclude=/usr/share/doc/*
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
path-exclude=/usr/lib/postgresql/15/lib/llvmjit*
path-exclude=/usr/lib/postgresql/15/lib/bitcode/*
path-exclude=/usr/lib/*/libLLVM-*
path-exclude=/usr/lib/*/libz3.so*
CFG
# Packages must not try to start services inside the chroot or the image.
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"
chmod 755 "$dir/usr/sbin/policy-rc.d"
# The container's start script makes the one cluster; the package must not
# make a second one under /etc/postgresql. postgresql-common reads this when
# it is installed, so it has to be in place before.
mkdir -p "$dir/etc/postgresql-common"
echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"

in_rootfs apt-get update -qq
in_rootfs apt-get install -y -qq --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  postgresql-15 postgresql-client-15 >/dev/null
in_rootfs apt-get clean

for tool in postgres initdb pg_ctl pg_isready psql pg_dump pg_dumpall pg_restore pg_amcheck; do
  [ -x "$dir/usr/lib/postgresql/15/bin/$tool" ] || { echo "rootfs.sh: $tool is missing after installing postgresql-15" >&2; exit 1; }
done
for binary in "$dir"/usr/lib/postgresql/15/bin/* "$dir"/usr/lib/postgresql/15/lib/*.so; do
  if in_rootfs ldd "${binary#"$dir"}" | grep 'not found'; then
    echo "rootfs.sh: ${binary#"$dir"} misses a library (left out by the dpkg excludes?)" >&2
    exit 1
  fi
done
if [ -n "$(ls -A "$dir/etc/postgresql" 2>/dev/null)" ]; then
  echo "rootfs.sh: the package created a cluster despite create_main_cluster = false" >&2
  exit 1
fi

# The start script runs as root only to hand these to postgres.
in_rootfs install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
in_rootfs install -d -o postgres -g postgres -m 2775 /run/postgresql

# Nothing of this machine or of the build goes into the image.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
  "$dir"/tmp/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/*
find "$dir/var/log" -type f -delete
: >"$dir/etc/resolv.conf"
: >"$dir/etc/machine-id"
echo localhost >"$dir/etc/hostname"
