#!/usr/bin/env bash
# License server load: attestations/s (SGX evidence verified by the server), usage reports/s,
# their latencies, and the crash test (SIGKILL the server under load, restart it, check that no
# acknowledged report was lost or counted twice), on SQLite and on PostgreSQL, over plain HTTP and
# TLS on loopback. Drives build/mlcapsule-loadgen (bench/loadgen/server_load.cc), which starts the
# server itself (it holds the synthetic Intel PKI the server is told to trust). Appends one JSON
# line per run to bench/results/server-YYYYMMDD.jsonl. bench/README.md, "License server load".
#
#   bench/server_load.sh [sqlite|postgresql|both] [--clients N] [--seconds S] [--kills K]
#                        [--tls plain|tls|both] [--no-crash] [--wait-idle S] [--build DIR]
#                        [--results FILE] [--note TEXT]
#
# Everything lives in a temporary directory; every process it starts (servers through the load
# generator, the PostgreSQL cluster through tests/with_postgres.sh) is stopped by its PID.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

usage() { sed -n '9,11p' "$0" | sed 's/^# \{0,1\}//'; }
BACKENDS=both CLIENTS=64 SECONDS_PER_PHASE=10 KILLS=5 TLS_MODES=both CRASH=1 WAIT_IDLE=0
BUILD="$ROOT/build" INNER="" NOTE="" RESULTS="$ROOT/bench/results/server-$(date -u +%Y%m%d).jsonl"
while [[ $# -gt 0 ]]; do
  case "$1" in
    sqlite|postgresql|both) BACKENDS="$1" ;;
    --clients) CLIENTS="$2"; shift ;;
    --seconds) SECONDS_PER_PHASE="$2"; shift ;;
    --kills) KILLS="$2"; shift ;;
    --tls) TLS_MODES="$2"; shift ;;
    --no-crash) CRASH=0 ;;
    --wait-idle) WAIT_IDLE="$2"; shift ;;
    --build) BUILD="$(cd "$2" && pwd)"; shift ;;
    --results) RESULTS="$(realpath -m "$2")"; shift ;;
    --note) NOTE="$2"; shift ;;  # what was measured (default: the commit and the binary's hash)
    --inside-postgres) INNER=postgresql ;;  # (internal: re-run under tests/with_postgres.sh)
    -h|--help) usage; exit 0 ;;
    *) echo "server_load: unknown argument '$1'" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
for f in "$BUILD/mlcapsule" "$BUILD/mlcapsule-loadgen"; do
  [[ -x "$f" ]] || { echo "server_load: $f is missing: cmake --build build --target mlcapsule mlcapsule-loadgen" >&2; exit 1; }
done
mkdir -p "$(dirname "$RESULTS")"
ARGS=(--clients "$CLIENTS" --seconds "$SECONDS_PER_PHASE" --kills "$KILLS" --tls "$TLS_MODES"
      --wait-idle "$WAIT_IDLE" --build "$BUILD" --results "$RESULTS" --note "$NOTE")
[[ $CRASH == 0 ]] && ARGS+=(--no-crash)

# PostgreSQL: run this script again inside a throwaway cluster (initdb in a temporary directory,
# Unix socket only, stopped by PID), which tests/with_postgres.sh provides.
if [[ -z "$INNER" && ( $BACKENDS == postgresql || $BACKENDS == both ) ]]; then
  if [[ $BACKENDS == both ]]; then "$0" sqlite "${ARGS[@]}" || exit $?; fi
  exec bash "$ROOT/tests/with_postgres.sh" "$0" postgresql --inside-postgres "${ARGS[@]}"
fi
BACKEND=sqlite
if [[ -n "$INNER" ]]; then
  BACKEND=postgresql
  [[ -n "${MLCAPSULE_TEST_POSTGRES_HOST:-}" ]] || { echo "server_load: no PostgreSQL here; skipped" >&2; exit 0; }
fi

WORK="$(mktemp -d /tmp/mlc-server-load.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
cd "$WORK"
# A copy of the binaries, so that a rebuild in the shared build tree cannot change them mid-run,
# and what they were built from, for the result lines.
mkdir bin && cp "$BUILD/mlcapsule" "$BUILD/mlcapsule-loadgen" bin/ || exit 1
MLC="$WORK/bin/mlcapsule"
LOADGEN="$WORK/bin/mlcapsule-loadgen"
if [[ -z "$NOTE" ]]; then
  NOTE="commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
  DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src 2>/dev/null | awk '{print $2}' | tr '\n' ' ')
  [[ -n "$DIRTY" ]] && NOTE+=" + uncommitted: ${DIRTY% }"
fi
NOTE+="; mlcapsule sha256 $(sha256sum "$MLC" | cut -c1-12), built $(date -u -r "$BUILD/mlcapsule" +%Y-%m-%dT%H:%M:%SZ)"

# The capsule: lenet, with a policy that accepts SGX evidence of the load generator's enclave.
MODEL="$ROOT/build/zoo/lenet/model.onnx"
if [[ ! -f "$MODEL" ]]; then
  /usr/bin/python3 "$ROOT/tools/export_zoo.py" --out "$ROOT/build/zoo" --models lenet >&2 || exit 1
fi
"$MLC" server --db "sqlite:$WORK/keys-init.db" --keys "$WORK/keys" --create-admin-token init \
  >/dev/null 2>&1 || { echo "server_load: cannot make the server keys" >&2; exit 1; }
"$MLC" keygen --out provider >/dev/null || exit 1
MRENCLAVE=6d6c63617073756c652d6c6f616467656e2d62656e63682d656e636c61766531
cat > policy.json <<EOF
{"version": 1,
 "tee": {"accept": ["sgx"], "measurements": {"sgx": ["$MRENCLAVE"]}},
 "lease": {"max_queries": 1000000000000, "max_days": 30}}
EOF
"$MLC" pack "$MODEL" --key provider/provider.key --lease-signer keys/server.pub \
  --policy policy.json --out lenet.capsule >/dev/null || exit 1

# TLS: a self-signed certificate for 127.0.0.1 (the clients trust exactly it).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -keyout tls.key -out tls.pem \
  >/dev/null 2>&1 || { echo "server_load: openssl could not make a certificate" >&2; exit 1; }

busy_cpus() {  # CPUs busy over the next 3 seconds (other users of this shared machine)
  local a b
  a=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat); sleep 3
  b=$(awk '/^cpu /{print $2+$3+$4+$7+$8+$9, $5+$6}' /proc/stat)
  awk -v a="$a" -v b="$b" -v n="$(nproc)" 'BEGIN {split(a, x); split(b, y);
    printf "%.2f", n * (y[1] - x[1]) / ((y[1] - x[1]) + (y[2] - x[2]))}'
}
wait_idle() {  # up to WAIT_IDLE seconds for the machine to be idle (< 0.2 CPUs busy)
  local waited=0 busy
  while (( waited < WAIT_IDLE )); do
    busy=$(busy_cpus)
    awk -v b="$busy" 'BEGIN {exit !(b < 0.2)}' && return
    echo "server_load: machine busy ($busy CPUs), waiting" >&2
    sleep 7; waited=$((waited + 10))
  done
}

RUN=0
new_db() {  # a fresh, empty database of this back end, with an admin token in $WORK/admin.token
  RUN=$((RUN + 1))
  if [[ $BACKEND == sqlite ]]; then
    DB="sqlite:$WORK/server-$RUN.db"
  else
    psql -q -h "$MLCAPSULE_TEST_POSTGRES_HOST" -U postgres -d postgres \
      -c "CREATE DATABASE mlcbench_$RUN" >/dev/null || return 1
    DB="postgresql:///mlcbench_$RUN?user=postgres&host=$MLCAPSULE_TEST_POSTGRES_HOST"
  fi
  "$MLC" server --db "$DB" --keys keys --create-admin-token bench >admin.token 2>/dev/null
}

status=0
run() {  # run TLS_MODE LOADGEN_ARGS...
  local mode="$1"; shift
  new_db || { status=1; return; }
  local server=("$MLC" server --db "$DB" --keys "$WORK/keys" --listen '127.0.0.1:{PORT}'
                --intel-root-ca '{PKI}/root.der' --intel-collateral '{PKI}/collateral.json')
  local tls_args=() db_pid=()
  if [[ $BACKEND == postgresql && -f "$MLCAPSULE_TEST_POSTGRES_HOST/data/postmaster.pid" ]]; then
    db_pid=(--database-pid "$(head -1 "$MLCAPSULE_TEST_POSTGRES_HOST/data/postmaster.pid")")
  fi
  if [[ $mode == tls ]]; then
    server+=(--tls-cert "$WORK/tls.pem" --tls-key "$WORK/tls.key")
    tls_args=(--ca-cert "$WORK/tls.pem")
  else
    server+=(--plaintext)
  fi
  wait_idle
  echo "== $BACKEND, $mode: $*" >&2
  "$LOADGEN" --capsule lenet.capsule --admin-token-file admin.token --write-pki "$WORK/pki-$RUN" \
    --backend "$BACKEND" --clients "$CLIENTS" --json-out "$RESULTS" --note "$NOTE" "${tls_args[@]}" "${db_pid[@]}" "$@" \
    -- "${server[@]}" || { status=1; tail -20 "$WORK/pki-$RUN/server.log" >&2; }
}

case "$TLS_MODES" in plain) MODES=(plain) ;; tls) MODES=(tls) ;; *) MODES=(plain tls) ;; esac
for mode in "${MODES[@]}"; do
  run "$mode" --attest-seconds "$SECONDS_PER_PHASE" --report-seconds "$SECONDS_PER_PHASE" \
    --crash-kills 0
done
if [[ $CRASH == 1 ]]; then
  run plain --attest-seconds 0 --report-seconds 0 --crash-kills "$KILLS" \
    --crash-seconds $((4 * KILLS + 4))
fi
echo "server_load: results appended to $RESULTS" >&2
exit $status
