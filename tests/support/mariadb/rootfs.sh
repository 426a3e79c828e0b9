#!/usr/bin/env bash
# The root filesystem of the test MariaDB image: the Debian base in DIR
# (../rootfs-base.sh) with mariadb-server 10.11 and its client tools
# (mariadb, mariadb-admin, mariadb-check, mariadb-dump), no database yet.
# Run as root by ../server-image.sh.
#
# Usage: rootfs.sh DIR
#
# The SHA-256 of this file keys the cached tarball: any change here rebuilds
# the rootfs on the next run.
. "$(dirname "$0")/../rootfs-lib.sh"

install_packages mariadb-server mariadb-client

require_binaries /usr/sbin/mariadbd /usr/bin/mariadb /usr/bin/mariadb-admin /usr/bin/mariadb-check \
  /usr/bin/mariadb-dump /usr/bin/mariadb-install-db
# The package's postinst made a data directory; the container's start script
# makes the one the volume holds.
rm -rf "$dir"/var/lib/mysql/*
in_rootfs install -d -o mysql -g mysql -m 750 /var/lib/mysql
in_rootfs install -d -o mysql -g mysql -m 755 /run/mysqld

finish_rootfs
