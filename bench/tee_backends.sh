#!/usr/bin/env bash
# The TEE backends' costs (bench/README.md, "TEE backends"):
#   1. mlcapsule-tee-bench: evidence, counter increments and verification per backend (software,
#      tpm on swtpm; sgx/tdx/snp verification of the real vectors);
#   2. NV increments per 10^6 queries: a capsule under the default policy (seal_every 1000; only
#      lease.max_queries raised to 10^6 so that one lease covers the run), a lease from the
#      license server for a core on swtpm, then 10^6 queries through `mlcapsule bench` (one
#      process, the full guarded path), counting the TPM's NV counter before and after.
# Every process it starts (swtpm, the server) is stopped by its PID.
# Usage: bench/tee_backends.sh [BUILD_DIR (default build)] [QUERIES (default 1000000)]
set -euo pipefail
SRC=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
BUILD=$(realpath "${1:-$SRC/build}")
QUERIES=${2:-1000000}
MLC="$BUILD/mlcapsule"
CORE="$BUILD/mlcapsule-core"
MODEL=/usr/share/libonnx-testdata/data/node/test_softmax_example/model.onnx
VECTORS="$SRC/../shared/attest-vectors"

echo "== evidence, counters and verification per backend (median of 200)"
"$BUILD/mlcapsule-tee-bench" --n 200 --vectors "$VECTORS" 2>/dev/null

source "$SRC/tests/lib/swtpm.sh"
WORK=$(mktemp -d)
SERVER_PID=""
declare -A TPM_PIDS=()
cleanup() {
  [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"
  for name in "${!TPM_PIDS[@]}"; do stop_pid "${TPM_PIDS[$name]}"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
make_tpm tpm
start_tpm tpm
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
ADMIN=$("$MLC" server --db "sqlite:$WORK/server.db" --keys keys --create-admin-token ops 2>/dev/null)
export MLCAPSULE_ADMIN_TOKEN="$ADMIN"
"$MLC" server --db "sqlite:$WORK/server.db" --keys keys --listen "127.0.0.1:$PORT" --plaintext \
  --tpm-ek-ca "$WORK/tpm/ek-ca.pem" >server.out 2>server.err &
SERVER_PID=$!
URL="http://127.0.0.1:$PORT"
for _ in $(seq 100); do curl -s "$URL/v1/health" >/dev/null && break; sleep 0.1; done
A=("$MLC" admin --server "$URL")

"$MLC" keygen --out prov >/dev/null
cat > policy.json <<JSON
{"version": 1, "tee": {"accept": ["tpm"],
                       "measurements": {"tpm": ["$(b2sum -l 256 "$CORE" | cut -d' ' -f1)"]}},
 "lease": {"max_queries": $QUERIES}}
JSON
"$MLC" pack "$MODEL" --key prov/provider.key --lease-signer keys/server.pub --policy policy.json \
  --out model.capsule >/dev/null
"${A[@]}" provider add --name Bench --id bench >/dev/null
"${A[@]}" customer add --provider bench --name Bench --id bench >/dev/null
ID=$("${A[@]}" capsule add model.capsule --provider bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["capsule_id"])')
"${A[@]}" license add --customer bench --capsule "$ID" --queries $((2 * QUERIES)) \
  --lease-queries "$QUERIES" --id bench-1 |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > license.token
python3 - <<'PY'
import struct
open("x.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }".ljust(117) + "\n").encode()
    + struct.pack("<3f", 1, 2, 3))
PY
"$MLC" run model.capsule --state state --tee tpm --tpm "$TPM_SPEC" --server "$URL" \
  --license-file license.token -i x.npy >/dev/null 2>run.err || { cat run.err; exit 1; }
before=$("$BUILD/mlcapsule-tee-bench" --read-counter "$TPM_SPEC" state "$CORE")
echo
echo "== $QUERIES queries through the TPM-backed core (seal_every 1000, one process)"
start=$(date +%s.%N)
"$MLC" bench model.capsule --state state --tee tpm --tpm "$TPM_SPEC" --batch 1 --threads 1 \
  --iters "$((QUERIES - 1))" --warmup 0
end=$(date +%s.%N)
after=$("$BUILD/mlcapsule-tee-bench" --read-counter "$TPM_SPEC" state "$CORE")
python3 - "$before" "$after" "$QUERIES" "$start" "$end" <<'PY'
import sys
before, after, queries, start, end = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print(f"NV counter {before} -> {after}: {after - before} increments for {queries - 1} queries "
      f"plus one open and close ({(after - before) * 1e6 / queries:.0f} per 10^6 queries); "
      f"wall {end - start:.1f} s")
PY
