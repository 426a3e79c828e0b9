#!/usr/bin/env bash
# The root filesystem of the test PostgreSQL image: the Debian base in DIR
# (../rootfs-base.sh) with postgresql-15 and its client tools, no cluster, no
# JIT. Run as root by ../server-image.sh.
#
# Usage: rootfs.sh DIR
#
# The SHA-256 of this file keys the cached tarball: any change here rebuilds
# the rootfs on the next run.
. "$(dirname "$0")/../rootfs-lib.sh"

# No JIT compilation: LLVM and Z3 alone are a third of the image and of its
# import time. Without llvmjit.so the server disables JIT by itself (and the
# start script says jit=off).
cat >"$dir/etc/dpkg/dpkg.cfg.d/excludes-postgres" <<'CFG'
path-exclude=/usr/lib/postgresql/15/lib/llvmjit*
path-exclude=/usr/lib/postgresql/15/lib/bitcode/*
path-exclude=/usr/lib/*/libLLVM-*
path-exclude=/usr/lib/*/libz3.so*
CFG
# The container's start script makes the one cluster; the package must not
# make a second one under /etc/postgresql. postgresql-common reads this when
# it is installed, so it has to be in place before.
mkdir -p "$dir/etc/postgresql-common"
echo 'create_main_cluster = false' >"$dir/etc/postgresql-common/createcluster.conf"

install_packages postgresql-15 postgresql-client-15

bin=/usr/lib/postgresql/15/bin
require_binaries $bin/postgres $bin/initdb $bin/pg_ctl $bin/pg_isready $bin/psql $bin/pg_dump $bin/pg_dumpall \
  $bin/pg_restore $bin/pg_amcheck
for binary in "$dir"$bin/* "$dir"/usr/lib/postgresql/15/lib/*.so; do
  require_binaries "${binary#"$dir"}"
done
if [ -n "$(ls -A "$dir/etc/postgresql" 2>/dev/null)" ]; then
  echo "rootfs.sh: the package created a cluster despite create_main_cluster = false" >&2
  exit 1
fi

# The start script runs as root only to hand these to postgres.
in_rootfs install -d -o postgres -g postgres -m 700 /var/lib/postgresql/data
in_rootfs install -d -o postgres -g postgres -m 2775 /run/postgresql

finish_rootfs
