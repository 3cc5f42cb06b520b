#!/usr/bin/env bash
# Runs COMMAND... with a throwaway PostgreSQL cluster: initdb in a temporary directory, the server
# listening only on a Unix socket there (no TCP), MLCAPSULE_TEST_POSTGRES_HOST set to that
# directory; the server is stopped by its PID afterwards. Without PostgreSQL's binaries the command
# runs without the variable (its PostgreSQL tests skip with a message). As root, the cluster runs
# as the 'postgres' user (PostgreSQL refuses to run as root).
set -uo pipefail
PGBIN="${PGBIN:-/usr/lib/postgresql/15/bin}"
if [[ ! -x "$PGBIN/initdb" || ! -x "$PGBIN/postgres" ]]; then
  echo "with_postgres: no PostgreSQL at $PGBIN; running without it" >&2
  exec "$@"
fi
DIR="$(mktemp -d /tmp/mlc-pg.XXXXXX)"
RUN=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || { echo "with_postgres: running as root needs a 'postgres' user" >&2; exit 1; }
  chown postgres "$DIR"
  RUN=(runuser -u postgres --)
fi
PID=""
cleanup() {
  # Stop the server by its own PID (postmaster.pid), else by the launcher's.
  [[ -f "$DIR/data/postmaster.pid" ]] && PID="$(head -1 "$DIR/data/postmaster.pid")"
  if [[ -n "$PID" ]]; then
    kill -INT "$PID" 2>/dev/null
    for _ in $(seq 1 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT
"${RUN[@]}" "$PGBIN/initdb" -D "$DIR/data" -U postgres -A trust --no-sync >"$DIR/initdb.log" 2>&1 \
  || { cat "$DIR/initdb.log" >&2; exit 1; }
"${RUN[@]}" "$PGBIN/postgres" -D "$DIR/data" -k "$DIR" -c listen_addresses='' -c fsync=on \
  >"$DIR/server.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do
  [[ -S "$DIR/.s.PGSQL.5432" ]] && break
  kill -0 "$PID" 2>/dev/null || { cat "$DIR/server.log" >&2; PID=""; exit 1; }
  sleep 0.1
done
[[ -S "$DIR/.s.PGSQL.5432" ]] || { echo "with_postgres: the server did not start" >&2; cat "$DIR/server.log" >&2; exit 1; }
chmod 755 "$DIR"
MLCAPSULE_TEST_POSTGRES_HOST="$DIR" "$@"
