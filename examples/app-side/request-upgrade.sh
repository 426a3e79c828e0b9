#!/bin/sh
# App side of the upgraderd trigger protocol, in POSIX shell.
#   request-upgrade.sh DATA_DIR [VERSION]     (VERSION defaults to latest)
# Writes the request into the spool `.upgrade-trigger.d/` (one file per
# request, temp file + rename in the same directory), so no request ever
# replaces another one still waiting; then follows the status file until the
# upgrade ends. (A rename over the single `.upgrade-trigger` file replaces a
# trigger upgraderd has not taken yet.)
set -eu
dir=${1:?usage: request-upgrade.sh DATA_DIR [VERSION]}
version=${2:-latest}
id=$(cat /proc/sys/kernel/random/uuid)
spool="$dir/.upgrade-trigger.d"
mkdir -p "$spool"
tmp="$spool/.$id.tmp"
printf '{"upgradeId":"%s","version":"%s","backup":true,"timestamp":%s000}\n' \
  "$id" "$version" "$(date +%s)" > "$tmp"
# Names sort in the order requests were made; upgraderd ignores names starting with a dot.
mv "$tmp" "$spool/$(date +%s%N)-$id.json"
echo "requested upgrade $id to $version"

last=""
while :; do
  status=$(cat "$dir/.upgrade-status.json" 2>/dev/null || true)
  case "$status" in *"\"$id\""*) ;; *) sleep 1; continue ;; esac
  state=$(printf '%s' "$status" | sed -n 's/.*"status": *"\([a-z_]*\)".*/\1/p' | head -n1)
  [ "$state" = "$last" ] || echo "status: $state"
  last=$state
  case "$state" in complete) exit 0 ;; rolled_back|failed) printf '%s\n' "$status"; exit 1 ;; esac
  sleep 1
done
