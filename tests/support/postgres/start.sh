#!/bin/sh
# Entrypoint of the test PostgreSQL image: makes the cluster in $PGDATA on
# the first start, then runs the server in the foreground as user postgres.
#
# The configuration comes from the command line and the image
# (pg_hba.conf next to this script), not from edits after initdb, so a
# data directory is exactly what initdb made and a start interrupted after
# initdb needs nothing finished later.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}

as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"
  fi
  exec "$@"
}

if [ "$(id -u)" = 0 ]; then
  # A bind mount or a volume made elsewhere may belong to someone else.
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 700 "$PGDATA"
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  # In a subshell: as_postgres execs, and this script goes on afterwards.
  (as_postgres initdb --pgdata="$PGDATA" --username=postgres --auth=trust \
    --encoding=UTF8 --locale=C.UTF-8)
fi

as_postgres postgres -D "$PGDATA" \
  -c listen_addresses='*' \
  -c hba_file="$(dirname "$0")/pg_hba.conf" \
  -c jit=off
