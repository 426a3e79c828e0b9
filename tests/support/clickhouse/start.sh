#!/bin/sh
# Entrypoint of the test ClickHouse image: the server in the foreground as
# user clickhouse, its data in /var/lib/clickhouse (the volume).
set -eu
# A bind mount or a volume made elsewhere may belong to someone else.
mkdir -p /var/lib/clickhouse
chown clickhouse:clickhouse /var/lib/clickhouse
exec setpriv --reuid=clickhouse --regid=clickhouse --init-groups -- \
  clickhouse-server --config-file="$(dirname "$0")/config.xml"
