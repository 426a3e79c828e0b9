#!/usr/bin/env bash
# The root filesystem of the test Redis image (Redis 7.0, which also stands
# in for Valkey, its fork): the Debian base in DIR (../rootfs-base.sh) with
# redis-server and its tools (redis-cli, redis-check-rdb, redis-check-aof).
# Run as root by ../server-image.sh.
#
# Usage: rootfs.sh DIR
#
# The SHA-256 of this file keys the cached tarball: any change here rebuilds
# the rootfs on the next run.
. "$(dirname "$0")/../rootfs-lib.sh"

install_packages redis-server redis-tools

require_binaries /usr/bin/redis-server /usr/bin/redis-cli /usr/bin/redis-check-rdb /usr/bin/redis-check-aof
in_rootfs install -d -o redis -g redis -m 750 /var/lib/redis

finish_rootfs
