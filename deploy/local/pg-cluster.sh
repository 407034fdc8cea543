#!/usr/bin/env bash
# A private PostgreSQL cluster under a directory of ours, for the local stack and the tests.
#
#   pg-cluster.sh start DIR [PORT]   initdb if needed, start; prints the conninfo on stdout
#   pg-cluster.sh stop DIR           fast shutdown
#   pg-cluster.sh conninfo DIR       prints the conninfo of a running cluster
#   pg-cluster.sh running DIR        exit status 0 if the cluster is running
#
# PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres` user
# (created by Debian's postgresql package), otherwise to the caller. It listens on
# 127.0.0.1 only, and on a Unix socket inside DIR. PORT 0 or absent picks a free port.
set -euo pipefail

cmd=${1:?usage: pg-cluster.sh start|stop|conninfo|running DIR [PORT]}
dir=${2:?usage: pg-cluster.sh start|stop|conninfo|running DIR [PORT]}
port=${3:-0}

pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ]; then
  echo "pg-cluster: PostgreSQL server binaries not found (run deploy/install-deps.sh)" >&2
  exit 1
fi

as_owner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

conninfo() {
  local p
  p=$(cat "$dir/port")
  local user=postgres
  [ "$(id -u)" -eq 0 ] || user=$(id -un)
  echo "host=127.0.0.1 port=$p user=$user dbname=postgres"
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    if [ "$(id -u)" -eq 0 ]; then
      chown postgres: "$dir"
      # postgres must be able to reach DIR through its parents.
      d=$dir
      while [ "$d" != "/" ]; do d=$(dirname "$d"); chmod o+x "$d" 2>/dev/null || true; done
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "$pg_bin/initdb" -D "$dir/data" -A trust -U "$( [ "$(id -u)" -eq 0 ] && echo postgres || id -un)" \
        --no-sync >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if as_owner "$pg_bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
      conninfo
      exit 0
    fi
    [ "$port" = "0" ] && port=$(free_port)
    echo "$port" >"$dir/port"
    as_owner "$pg_bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=${REPTRACE_PG_FSYNC:-on} -c max_connections=200" \
      start >/dev/null || { tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    conninfo
    ;;
  stop)
    if [ -f "$dir/data/PG_VERSION" ]; then
      as_owner "$pg_bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
    ;;
  conninfo)
    conninfo
    ;;
  running)
    [ -f "$dir/data/PG_VERSION" ] && as_owner "$pg_bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1
    ;;
  *)
    echo "pg-cluster: unknown command $cmd" >&2
    exit 2
    ;;
esac
