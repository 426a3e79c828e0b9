#!/bin/sh
# Entrypoint of the test MariaDB image: makes the system tables in the data
# directory on the first start (root over the socket as the container's root;
# root from any host without a password, for the test networks only), then
# runs the server in the foreground as user mysql. (--bootstrap starts without
# the grant tables: FLUSH PRIVILEGES loads them.)
set -eu
datadir=/var/lib/mysql

# A bind mount or a volume made elsewhere may belong to someone else.
mkdir -p "$datadir" /run/mysqld
chown mysql:mysql "$datadir" /run/mysqld

if [ ! -d "$datadir/mysql" ]; then
  mariadb-install-db --user=mysql --datadir="$datadir" --skip-test-db \
    --auth-root-authentication-method=socket >/dev/null
  mariadbd --user=mysql --datadir="$datadir" --bootstrap --skip-networking <<'SQL'
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'root'@'%';
GRANT ALL ON *.* TO 'root'@'%' WITH GRANT OPTION;
SQL
fi

exec mariadbd --user=mysql --datadir="$datadir" --bind-address=0.0.0.0 --skip-name-resolve
