#!/usr/bin/env bash
# Crash test of the license server (bench/README.md, "License server load"): under a usage-report
# load of 16 clients, mlcapsule-loadgen SIGKILLs the server it started five times and restarts it;
# every client resends each report with the same bytes until it is acknowledged. Fails when a
# report acknowledged by the server is missing from the bill, when a report is billed twice, or
# when the server did not come back. Runs on SQLite, and on PostgreSQL when started through
# tests/with_postgres.sh (MLCAPSULE_TEST_POSTGRES_HOST set).
#   server_crash_test.sh MLCAPSULE LOADGEN NODE_DATA_DIR      (exit 77: skipped)
set -uo pipefail
MLC=$(realpath "$1")
LOADGEN=$(realpath "$2")
MODEL="$3/test_softmax_example/model.onnx"
[[ -f "$MODEL" ]] || { echo "SKIP: $MODEL not found"; exit 77; }
command -v python3 >/dev/null || { echo "SKIP: python3 is not installed"; exit 77; }

WORK=$(mktemp -d /tmp/mlc-crash-test.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
chmod 755 "$WORK"
cd "$WORK"
"$MLC" server --db "sqlite:$WORK/keys-init.db" --keys keys --create-admin-token init \
  >/dev/null 2>&1 || { echo "FAIL: cannot make the server keys"; exit 1; }
"$MLC" keygen --out provider >/dev/null || exit 1
cat > policy.json <<'EOF'
{"version": 1,
 "tee": {"accept": ["sgx"],
         "measurements": {"sgx": ["6d6c63617073756c652d6c6f616467656e2d62656e63682d656e636c61766531"]}},
 "lease": {"max_queries": 1000000000000, "max_days": 30}}
EOF
"$MLC" pack "$MODEL" --key provider/provider.key --lease-signer keys/server.pub \
  --policy policy.json --out model.capsule >/dev/null || { echo "FAIL: pack"; exit 1; }

failures=0
crash_test() {  # crash_test NAME DB_URL
  local name="$1" db="$2"
  "$MLC" server --db "$db" --keys keys --create-admin-token test >"admin-$name.token" 2>/dev/null \
    || { echo "FAIL $name: cannot create an admin token"; failures=$((failures + 1)); return; }
  "$LOADGEN" --capsule model.capsule --admin-token-file "admin-$name.token" \
    --write-pki "$WORK/pki-$name" --backend "$name" --clients 16 --attest-seconds 2 \
    --report-seconds 0 --crash-kills 5 --crash-seconds 12 --presign 1500 \
    -- "$MLC" server --db "$db" --keys "$WORK/keys" --listen '127.0.0.1:{PORT}' --plaintext \
    --intel-root-ca '{PKI}/root.der' --intel-collateral '{PKI}/collateral.json' \
    >"result-$name.json" 2>"loadgen-$name.log"
  local rc=$?
  local verdict
  verdict=$(python3 - "result-$name.json" <<'EOF'
import json, sys
try:
    line = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
except Exception as e:
    print(f"no result line ({e})"); sys.exit(0)
problems = []
for key, want in (("crash_kills", 5), ("crash_restarts", 5), ("crash_lost", 0),
                  ("crash_lost_queries", 0), ("crash_double_counted", 0), ("errors", 0), ("billed_check", "ok"),
                  ("passed", True)):
    if line.get(key) != want:
        problems.append(f"{key} is {line.get(key)!r}, expected {want!r}")
if line.get("crash_acked_reports", 0) <= 0:
    problems.append("no report was acknowledged")
print("; ".join(problems) if problems else
      f"ok: {line['crash_acked_reports']} reports acknowledged, {line['crash_retries']} retries, "
      f"{line['crash_duplicates_on_retry']} found already committed, lost 0, double-counted 0")
EOF
)
  if [[ $rc -eq 0 && $verdict == ok:* ]]; then
    echo "ok   $name crash test: ${verdict#ok: }"
  else
    echo "FAIL $name crash test (exit $rc): $verdict"
    tail -25 "loadgen-$name.log"
    tail -10 "$WORK/pki-$name/server.log" 2>/dev/null
    failures=$((failures + 1))
  fi
}

crash_test sqlite "sqlite:$WORK/server.db"
if [[ -n "${MLCAPSULE_TEST_POSTGRES_HOST:-}" ]]; then
  if psql -q -h "$MLCAPSULE_TEST_POSTGRES_HOST" -U postgres -d postgres \
    -c "CREATE DATABASE mlc_crash_test" >/dev/null; then
    crash_test postgresql \
      "postgresql:///mlc_crash_test?user=postgres&host=$MLCAPSULE_TEST_POSTGRES_HOST"
  else
    echo "FAIL postgresql: cannot create the database"
    failures=$((failures + 1))
  fi
else
  echo "skip postgresql crash test: no PostgreSQL (run through tests/with_postgres.sh)"
fi
[[ $failures -eq 0 ]] || { echo "$failures failure(s)"; exit 1; }
echo "all passed"
