#!/bin/sh
# Like the official image: flags alone mean redis-server; without a config file the server
# gets `--protected-mode no` so other containers may connect; it runs as `redis`.
set -e
case "$1" in -*) set -- redis-server "$@" ;; esac
if [ "$1" = redis-server ]; then
  shift
  set -- redis-server "$@" --protected-mode no
  chown -R redis:redis /data 2>/dev/null || true
  exec setpriv --reuid=redis --regid=redis --init-groups "$@"
fi
exec "$@"
