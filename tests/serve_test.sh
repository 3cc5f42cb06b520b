#!/usr/bin/env bash
# End-to-end test of `mlcapsule serve` (docs/serve.md): pack a small ONNX model into a capsule,
# serve it on 127.0.0.1:0, license it through the endpoint, then check answers, errors, quota and
# a clean stop. Usage: serve_test.sh MLCAPSULE NODE_DATA_DIR. Exit 77 (skip) when curl, python3
# or the model is missing.
set -uo pipefail
MLC=$(realpath "$1")
NODE="$2"
MODEL="$NODE/test_softmax_example/model.onnx"
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
[[ -f "$MODEL" ]] || { echo "SKIP: $MODEL not found"; exit 77; }

WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then kill "$SERVER_PID"; fi
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

"$MLC" keygen --out keys >/dev/null || exit 1
cat > policy.json <<'EOF'
{"version": 1, "tee": {"accept": ["software"]},
 "lease": {"max_queries": 100, "max_days": 7, "seal_every": 1},
 "output": {"mode": "probabilities", "logits": false}}
EOF
"$MLC" pack "$MODEL" --key keys/provider.key --policy policy.json --out model.capsule >/dev/null || exit 1

# Refused before anything starts: a non-loopback address is a usage error naming it.
err=$("$MLC" serve model.capsule --state state --listen 0.0.0.0:8080 2>&1)
check "non-loopback exit status" 2 "$?"
contains "non-loopback message" "0.0.0.0:8080" "$err"

"$MLC" serve model.capsule --state state --listen 127.0.0.1:0 >serve.out 2>serve.err &
SERVER_PID=$!
for _ in $(seq 100); do grep -q '^listening on ' serve.out && break; sleep 0.1; done
check "one listening line" 1 "$(grep -c '^listening on http://127.0.0.1:[0-9]*$' serve.out)"
URL=$(sed -n 's/^listening on //p' serve.out)
[[ -n "$URL" ]] || { cat serve.err; exit 1; }

code() { curl -s -o body.out -w '%{http_code}' "$@"; }
json_field() { python3 -c "import json,sys; print(json.load(open('body.out'))$1)"; }

check "healthz" 200 "$(code "$URL/healthz")"
check "info" 200 "$(code "$URL/v1/info")"
check "info state" needs-lease "$(json_field "['state']")"
check "info input name" x "$(json_field "['inputs'][0]['name']")"
check "infer without lease" 409 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":{"x":[[1,2,3]]}}')"
check "error code" failed-precondition "$(json_field "['code']")"

check "evidence request" 200 "$(curl -s -o request.bin -w '%{http_code}' -d '' "$URL/v1/evidence-request")"
"$MLC" lease issue --key keys/provider.key --capsule model.capsule --request request.bin \
  --license-id serve-test --queries 3 --days 1 --out lease.bin >/dev/null || exit 1
check "install lease" 200 "$(code "$URL/v1/lease" --data-binary @lease.bin)"
check "ready" ready "$(json_field "['state']")"
check "quota" 3 "$(json_field "['queries_left']")"

check "infer json" 200 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":{"x":{"shape":[1,3],"data":[1,2,3]}}}')"
check "softmax" "[0.09, 0.245, 0.665]" "$(json_field "['outputs']['y']['data']" | python3 -c "import sys,ast; print([round(v,3) for v in ast.literal_eval(sys.stdin.read())])")"

python3 - <<'EOF' >in.bin
import struct, sys
head = struct.pack('<IBB6x2qQ', 1, 1, 2, 1, 3, 12)
sys.stdout.buffer.write(head + bytes(64 - len(head)) + struct.pack('<3f', 1, 2, 3))
EOF
check "infer binary" 200 "$(code "$URL/v1/infer" -H 'Content-Type: application/x-mlcapsule-tensors' --data-binary @in.bin)"
check "binary answer" "0.665" "$(python3 -c "import struct; b=open('body.out','rb').read(); print(round(struct.unpack('<3f', b[64:76])[2], 3))")"

check "bad shape" 400 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":{"x":{"shape":[1,4],"data":[1,2,3]}}}')"
contains "bad shape message" "shape [1,4] holds 4 values" "$(cat body.out)"
check "unknown input" 400 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":{"nope":[[1,2,3]]}}')"
check "bad json" 400 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{')"
check "bad media type" 415 "$(code "$URL/v1/infer" -H 'Content-Type: text/plain' -d 'x')"
check "no endpoint" 404 "$(code "$URL/v1/nothing")"

check "third query" 200 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":[[[1,2,3]]]}')"
check "quota exhausted" 429 "$(code "$URL/v1/infer" -H 'Content-Type: application/json' -d '{"inputs":[[[1,2,3]]]}')"
check "quota code" resource-exhausted "$(json_field "['code']")"
check "usage report" 200 "$(curl -s -o usage.bin -w '%{http_code}' -d '' "$URL/v1/usage-report")"
check "usage report magic" MLCUSAGE "$(head -c 8 usage.bin)"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID"
check "clean stop" 0 "$?"
SERVER_PID=""

# The state survives the restart: the quota stays used up.
"$MLC" serve model.capsule --state state --listen 127.0.0.1:0 >serve2.out 2>serve2.err &
SERVER_PID=$!
for _ in $(seq 100); do grep -q '^listening on ' serve2.out && break; sleep 0.1; done
URL=$(sed -n 's/^listening on //p' serve2.out)
check "restart info" 200 "$(code "$URL/v1/info")"
check "restart quota" 0 "$(json_field "['queries_left']")"
kill -INT "$SERVER_PID"
wait "$SERVER_PID"
check "clean stop on SIGINT" 0 "$?"
SERVER_PID=""

if [[ "$failures" -ne 0 ]]; then
  echo "serve: $failures checks failed"
  cat serve.err
  exit 1
fi
echo "serve: all checks passed"
