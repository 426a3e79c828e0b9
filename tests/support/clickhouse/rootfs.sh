#!/usr/bin/env bash
# The root filesystem of the test ClickHouse image (ClickHouse 18.16, the one
# Debian bookworm has): the Debian base in DIR (../rootfs-base.sh) with
# clickhouse-server and clickhouse-client. Run as root by ../server-image.sh.
#
# Usage: rootfs.sh DIR
#
# The SHA-256 of this file keys the cached tarball: any change here rebuilds
# the rootfs on the next run.
. "$(dirname "$0")/../rootfs-lib.sh"

install_packages clickhouse-server clickhouse-client

require_binaries /usr/sbin/clickhouse-server /usr/bin/clickhouse-client
rm -rf "$dir"/var/lib/clickhouse
in_rootfs install -d -o clickhouse -g clickhouse -m 750 /var/lib/clickhouse

finish_rootfs
