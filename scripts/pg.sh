#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for tests: `pg.sh start DIR` prints its SQLAlchemy URL on stdout,
# `pg.sh stop DIR` shuts it down. Exit status 3 means the PostgreSQL binaries are not installed.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# -eq 2 ] || usage
action=$1
dir=$2

find_bin() {
  local name=$1 bindir
  if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
  # Debian and Ubuntu keep the server binaries off PATH; prefer the newest major version.
  for bindir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$bindir/$name" ]; then echo "$bindir/$name"; return 0; fi
  done
  return 1
}

# initdb and postgres refuse to run as root, so as root everything runs as the postgres user.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    su postgres -s /bin/bash -c "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

# Stopping what never started needs no binaries, so `stop` works where PostgreSQL is missing.
if [ "$action" = stop ] && [ ! -f "$dir/data/postmaster.pid" ]; then exit 0; fi
pg_ctl=$(find_bin pg_ctl) || { echo "pg.sh: PostgreSQL (pg_ctl) is not installed" >&2; exit 3; }
initdb=$(find_bin initdb) || { echo "pg.sh: PostgreSQL (initdb) is not installed" >&2; exit 3; }

stop() {
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null 2>&1 || true
  fi
}

case $action in
  stop)
    stop
    ;;
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    stop  # a server left over from an earlier run in DIR
    rm -rf "$dir/data"
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir"
      # The postgres user must also be able to reach DIR through its parents.
      if ! su postgres -s /bin/bash -c "test -w $(printf '%q' "$dir")"; then
        echo "pg.sh: user postgres cannot write to $dir (check the permissions of its parents)" >&2
        exit 1
      fi
    fi
    as_pg "$initdb" -D "$dir/data" -A trust -U postgres --no-sync >"$dir/initdb.log" 2>&1 || {
      echo "pg.sh: initdb failed, see $dir/initdb.log:" >&2
      tail -n 20 "$dir/initdb.log" >&2
      exit 1
    }
    # Try private ports until one is free; a port in use fails the start within a second.
    for port in $(seq 55432 55463); do
      opts="-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off"
      opts="$opts -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
      if as_pg "$pg_ctl" -D "$dir/data" -o "$opts" -l "$dir/server.log" -w -t 30 start \
        >/dev/null 2>&1; then
        echo "$port" >"$dir/port"
        echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
        exit 0
      fi
      stop
    done
    echo "pg.sh: could not start PostgreSQL on any port 55432-55463, see $dir/server.log:" >&2
    tail -n 20 "$dir/server.log" >&2 || true
    exit 1
    ;;
  *)
    usage
    ;;
esac
