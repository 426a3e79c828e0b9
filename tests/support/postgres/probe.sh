# The selftest's look inside the PostgreSQL container (../server-image.sh):
# sh -s write N | count HOST | check | dump
set -eu
sql() { psql --no-psqlrc --quiet --tuples-only --no-align -v ON_ERROR_STOP=1 "$@"; }
case "$1" in
  write) sql -c "CREATE TABLE notes (id integer PRIMARY KEY, body text NOT NULL);
                 INSERT INTO notes SELECT n, 'note ' || n FROM generate_series(1, $2) AS n;" ;;
  count) sql --host="$2" -c 'SELECT count(*) FROM notes' ;;
  check) pg_amcheck --install-missing --all --heapallindexed && pg_dumpall --globals-only >/dev/null ;;
  # pg_dump (15.14 on) fences its output with \restrict and a random key: a
  # fixed one makes two dumps of the same data comparable.
  dump) pg_dump --dbname=postgres --restrict-key=selftest ;;
  *) echo "probe: unknown action $1" >&2; exit 2 ;;
esac
