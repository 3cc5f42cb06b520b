#!/usr/bin/env bash
# End-to-end test of the TPM backend (docs/tee-backends.md) on a real software TPM: swtpm with its
# own EK certificate CA, the license server trusting that CA (--tpm-ek-ca), and a client whose
# trusted core runs with --platform tpm. It checks that the server verifies the TPM quote and
# issues a lease bound to the TPM (credential activation), that queries run, that a restored older
# state directory is refused by the TPM's NV counter, that a server without the EK CA or a policy
# without `tpm` refuses the evidence, and that a lease made for one TPM does not open on another.
# Every process it starts (swtpm, the server) is stopped by its PID.
# Usage: tee_tpm_e2e_test.sh MLCAPSULE NODE_DATA_DIR. Exit 77 (skip) when swtpm, curl, openssl,
# python3 or the model is missing.
set -uo pipefail
MLC=$(realpath "$1")
NODE="$2"
CORE="$(dirname "$MLC")/mlcapsule-core"
MODEL="$NODE/test_softmax_example/model.onnx"
for tool in swtpm swtpm_setup swtpm_localca curl openssl python3 b2sum; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
[[ -f "$MODEL" ]] || { echo "SKIP: $MODEL not found"; exit 77; }
if ! "$CORE" --help | grep -q "Backends in this build:.*tpm"; then
  echo "SKIP: this mlcapsule-core has no TPM backend (libtss2-dev missing at build time)"
  exit 77
fi

source "$(dirname "${BASH_SOURCE[0]}")/lib/swtpm.sh"
WORK=$(mktemp -d)
SERVER_PID=""
declare -A TPM_PIDS=()
stop_server() { [[ -n "$SERVER_PID" ]] && stop_pid "$SERVER_PID"; SERVER_PID=""; }
cleanup() {
  stop_server
  for name in "${!TPM_PIDS[@]}"; do stop_pid "${TPM_PIDS[$name]}"; done
  rm -rf "$WORK"
}
trap cleanup EXIT
cd "$WORK"
failures=0
check() {  # check NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; failures=$((failures + 1)); fi
}
contains() {  # contains NAME NEEDLE HAYSTACK
  if [[ "$3" == *"$2"* ]]; then echo "ok   $1"; else echo "FAIL $1: '$2' not in '$3'"; failures=$((failures + 1)); fi
}

make_tpm tpmA
make_tpm tpmB
start_tpm tpmA
SPEC_A=$TPM_SPEC

# --- license server with tpmA's EK CA --------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout tls.key -out tls.crt 2>/dev/null || exit 1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB="sqlite:$WORK/server.db"
start_server() {  # start_server [EXTRA SERVER OPTIONS]
  "$MLC" server --db "$DB" --keys keys --listen "127.0.0.1:$PORT" --tls-cert tls.crt \
    --tls-key tls.key "$@" >>server.out 2>>server.err &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -s --cacert tls.crt "https://127.0.0.1:$PORT/v1/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start"; cat server.err; exit 1
}
ADMIN=$("$MLC" server --db "$DB" --keys keys --create-admin-token ops 2>/dev/null)
export MLCAPSULE_ADMIN_TOKEN="$ADMIN"
start_server --tpm-ek-ca "$WORK/tpmA/ek-ca.pem"
URL="https://127.0.0.1:$PORT"
A=("$MLC" admin --server "$URL" --ca-cert tls.crt)

# --- a capsule that only a TPM running this exact core may open ------------------------------
"$MLC" keygen --out prov >/dev/null || exit 1
MEASUREMENT=$(b2sum -l 256 "$CORE" | cut -d' ' -f1)
cat > policy.json <<JSON
{"version": 1, "tee": {"accept": ["tpm"], "measurements": {"tpm": ["$MEASUREMENT"]}},
 "lease": {"max_queries": 1000, "max_days": 7, "seal_every": 1},
 "output": {"mode": "probabilities", "logits": false}}
JSON
"$MLC" pack "$MODEL" --key prov/provider.key --lease-signer keys/server.pub --policy policy.json \
  --out model.capsule >/dev/null || exit 1
"${A[@]}" provider add --name Acme --id acme >/dev/null
"${A[@]}" customer add --provider acme --name Bob --id bob >/dev/null
CAPSULE_ID=$("${A[@]}" capsule add model.capsule --provider acme | python3 -c 'import json,sys; print(json.load(sys.stdin)["capsule_id"])')
"${A[@]}" license add --customer bob --capsule "$CAPSULE_ID" --queries 100 --lease-queries 50 \
  --price 0.5 --id bob-1 > license.json
check "license add" 0 "$?"
python3 -c 'import json; print(json.load(open("license.json"))["token"])' > license.token

python3 - <<'PY'
import struct
open("x.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }".ljust(117) + "\n").encode()
    + struct.pack("<3f", 1, 2, 3))
PY
run() {  # run STATE SPEC: one query through the TPM-backed core
  "$MLC" run model.capsule --state "$1" --tee tpm --tpm "$2" --server "$URL" --ca-cert tls.crt \
    --license-file license.token -i x.npy 2>run.err
}

# --- attest, bound lease, queries -----------------------------------------------------------
out=$(run stateA "$SPEC_A")
check "first run on the TPM" 0 "$?"
contains "answer" "0.665" "$out"
contains "lease fetched" "new lease" "$(cat run.err)"
contains "server verified TPM evidence" '"evidence":"tpm, measurement' "$(cat run.err)"
contains "lease bound to the TPM" '"tee_bound":true' "$(cat run.err)"
for _ in 1 2; do run stateA "$SPEC_A" >/dev/null || { echo "FAIL run"; cat run.err; failures=$((failures + 1)); }; done

# --- rollback: a copy of the state taken earlier is refused by the TPM's NV counter ----------
cp -a stateA stateA.snapshot
for _ in 1 2; do run stateA "$SPEC_A" >/dev/null; done
rm -rf stateA.now && mv stateA stateA.now && cp -a stateA.snapshot stateA
out=$(run stateA "$SPEC_A")
check "restored older state refused" 1 "$?"
contains "rollback named" "counter" "$(cat run.err)"
echo "    ($(head -c 300 run.err))"
rm -rf stateA && mv stateA.now stateA
run stateA "$SPEC_A" >/dev/null
check "the current state still works" 0 "$?"

# --- the TPM disappears: a clear error, nothing lost ------------------------------------------
stop_tpm tpmA
out=$(run stateA "$SPEC_A")
check "TPM gone: refused" 1 "$?"
contains "TPM gone: message names the TPM" "TPM" "$(cat run.err)"
start_tpm tpmA
SPEC_A=$TPM_SPEC
run stateA "$SPEC_A" >/dev/null
check "TPM back: the state opens" 0 "$?"

# --- another TPM: its EK chains to a CA this server does not trust ---------------------------
start_tpm tpmB
SPEC_B=$TPM_SPEC
"${A[@]}" license add --customer bob --capsule "$CAPSULE_ID" --queries 100 --lease-queries 50 \
  --price 0.5 --id bob-2 > license2.json
python3 -c 'import json; print(json.load(open("license2.json"))["token"])' > license.token
out=$(run stateB "$SPEC_B")
check "unknown EK CA refused" 1 "$?"
contains "unknown EK CA: the chain check" "ek_chain" "$(cat run.err)"

# --- the server trusts tpmB's CA too: a policy without tpm refuses ---------------------------
stop_server
start_server --tpm-ek-ca "$WORK/tpmA/ek-ca.pem" --tpm-ek-ca "$WORK/tpmB/ek-ca.pem"
out=$(run stateB "$SPEC_B")
check "second TPM accepted once its CA is trusted" 0 "$?"

# --- a lease made for TPM A does not open on TPM B -------------------------------------------
rm -rf stateC && cp -a stateA stateC
out=$("$MLC" run model.capsule --state stateC --tee tpm --tpm "$SPEC_B" -i x.npy 2>&1)
check "state of TPM A on TPM B refused" 1 "$?"
echo "    ($out)" | head -c 400; echo

# --- the policy decides: a capsule that accepts only other TEEs, or another core build ---------
for variant in software-only other-build; do
  if [[ $variant == software-only ]]; then
    tee='{"accept": ["software"]}'
  else
    tee='{"accept": ["tpm"], "measurements": {"tpm": ["'$(printf '%064d' 0)'"]}}'
  fi
  printf '{"version": 1, "tee": %s, "lease": {"max_queries": 1000, "max_days": 7}}\n' "$tee" \
    > "policy-$variant.json"
  "$MLC" pack "$MODEL" --key prov/provider.key --lease-signer keys/server.pub \
    --policy "policy-$variant.json" --out "$variant.capsule" >/dev/null || exit 1
  id=$("${A[@]}" capsule add "$variant.capsule" --provider acme | python3 -c 'import json,sys; print(json.load(sys.stdin)["capsule_id"])')
  "${A[@]}" license add --customer bob --capsule "$id" --queries 10 --id "bob-$variant" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' > "$variant.token"
  out=$("$MLC" run "$variant.capsule" --state "state-$variant" --tee tpm --tpm "$SPEC_A" \
    --server "$URL" --ca-cert tls.crt --license-file "$variant.token" -i x.npy 2>&1)
  check "policy $variant: TPM evidence refused" 1 "$?"
  contains "policy $variant: the reason" "policy" "$out"
done

stop_server
if [[ $failures -ne 0 ]]; then echo "tpm end-to-end: $failures checks failed"; exit 1; fi
echo "tpm end-to-end: all checks passed"
