#!/bin/sh
# Entrypoint of the test Redis image: the server in the foreground as user
# redis, its data in /var/lib/redis (the volume).
set -eu
# A bind mount or a volume made elsewhere may belong to someone else.
mkdir -p /var/lib/redis
chown redis:redis /var/lib/redis
exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server "$(dirname "$0")/redis.conf"
