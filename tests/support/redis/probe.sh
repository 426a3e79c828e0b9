# The selftest's look inside the Redis container (../server-image.sh):
# sh -s write N | count HOST | check | dump
set -eu
case "$1" in
  write) seq 1 "$2" | sed 's/.*/SET note:& "note &"/' | redis-cli | grep -vx OK && exit 1 || true ;;
  count) redis-cli -h "$2" DBSIZE ;;
  # The append-only file (every write) and the snapshot, when one was saved.
  check) cd /var/lib/redis && redis-check-aof appendonlydir/appendonly.aof.manifest &&
         { [ ! -e dump.rdb ] || redis-check-rdb dump.rdb; } ;;
  dump) keys=$(redis-cli --scan | sort) && echo "$keys" && echo "$keys" | xargs redis-cli MGET ;;
  *) echo "probe: unknown action $1" >&2; exit 2 ;;
esac
