# The selftest's look inside the MariaDB container (../server-image.sh):
# sh -s write N | count HOST | check | dump
set -eu
case "$1" in
  write) mariadb -e "CREATE DATABASE selftest;
                     CREATE TABLE selftest.notes (id int PRIMARY KEY, body text NOT NULL) ENGINE=InnoDB;
                     SET SESSION max_recursive_iterations = $2;
                     INSERT INTO selftest.notes WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < $2)
                       SELECT n, CONCAT('note ', n) FROM s;" ;;
  count) mariadb --host="$2" --user=root -N -e 'SELECT count(*) FROM selftest.notes' ;;
  # Every table of every database, and each must say OK.
  check) out=$(mariadb-check --all-databases) && echo "$out" && ! echo "$out" | grep -Ev '[[:space:]]OK$' ;;
  dump) mariadb-dump --skip-dump-date selftest ;;
  *) echo "probe: unknown action $1" >&2; exit 2 ;;
esac
