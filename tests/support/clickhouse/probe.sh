# The selftest's look inside the ClickHouse container (../server-image.sh):
# sh -s write N | count HOST | check | dump
set -eu
q() { clickhouse-client --query "$@"; }
case "$1" in
  write) q "CREATE TABLE notes (id UInt32, body String) ENGINE = Log" &&
         q "INSERT INTO notes SELECT toUInt32(number + 1), concat('note ', toString(number + 1)) FROM system.numbers LIMIT $2" ;;
  count) clickhouse-client --host "$2" --query 'SELECT count() FROM notes' ;;
  # ClickHouse 18.16 checks the Log family's tables (MergeTree's only from 19).
  check) out=$(q 'CHECK TABLE notes') && echo "$out" && [ "$out" = 1 ] ;;
  dump) q 'SELECT * FROM notes ORDER BY id FORMAT TSV' ;;
  *) echo "probe: unknown action $1" >&2; exit 2 ;;
esac
