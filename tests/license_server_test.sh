#!/usr/bin/env bash
# End-to-end test of the license server over HTTPS (docs/server.md): a self-signed TLS certificate,
# the admin CLI (provider, customer, capsule, license), a client that gets and renews leases with
# `run --server` and keeps working offline while the server is down, billing, and bad input
# answered with a 4xx and a JSON message while the server keeps serving. Every process it starts
# is stopped by its PID. Usage: license_server_test.sh MLCAPSULE NODE_DATA_DIR.
# Exit 77 (skip) when curl, openssl, python3 or the model is missing.
set -uo pipefail
MLC=$(realpath "$1")
NODE="$2"
SRC=$(realpath "$(dirname "${BASH_SOURCE[0]}")/..")
MODEL="$NODE/test_softmax_example/model.onnx"
for tool in curl openssl python3; do
  command -v "$tool" >/dev/null || { echo "SKIP: $tool is not installed"; exit 77; }
done
[[ -f "$MODEL" ]] || { echo "SKIP: $MODEL not found"; exit 77; }

WORK=$(mktemp -d)
SERVER_PID=""
stop_server() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null
  fi
  SERVER_PID=""
}
cleanup() { stop_server; rm -rf "$WORK"; }
trap cleanup EXIT
cd "$WORK"
failures=0
check() {  # check NAME EXPECTED ACTUAL
  if [[ "$2" == "$3" ]]; then echo "ok   $1"; else echo "FAIL $1: expected '$2', got '$3'"; failures=$((failures + 1)); fi
}
contains() {  # contains NAME NEEDLE HAYSTACK
  if [[ "$3" == *"$2"* ]]; then echo "ok   $1"; else echo "FAIL $1: '$2' not in '$3'"; failures=$((failures + 1)); fi
}

# A throwaway CA-less self-signed certificate for 127.0.0.1.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout tls.key -out tls.crt 2>/dev/null || exit 1
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
DB="sqlite:$WORK/server.db"
start_server() {
  # Structured logs: the options go before or after the command's name (checked at the end).
  "$MLC" --log-level info server --log-format json --db "$DB" --keys keys \
    --listen "127.0.0.1:$PORT" --tls-cert tls.crt --tls-key tls.key >>server.out 2>>server.err &
  SERVER_PID=$!
  for _ in $(seq 100); do
    curl -s --cacert tls.crt "https://127.0.0.1:$PORT/v1/health" >/dev/null && return 0
    sleep 0.1
  done
  echo "the server did not start"; cat server.err; exit 1
}

# Without TLS material the server refuses to start (TLS by default).
err=$("$MLC" server --db "$DB" --keys keys --listen "127.0.0.1:$PORT" 2>&1)
check "no TLS: refused" 1 "$?"
contains "no TLS: message" "--tls-cert" "$err"
ADMIN=$("$MLC" server --db "$DB" --keys keys --create-admin-token ops 2>/dev/null)
contains "admin token" "mlcadm_" "$ADMIN"
export MLCAPSULE_ADMIN_TOKEN="$ADMIN"
start_server
URL="https://127.0.0.1:$PORT"
A=("$MLC" admin --server "$URL" --ca-cert tls.crt)

"$MLC" keygen --out prov >/dev/null || exit 1
cat > policy.json <<'JSON'
{"version": 1, "tee": {"accept": ["software"]},
 "lease": {"max_queries": 1000, "max_days": 7, "seal_every": 1},
 "output": {"mode": "probabilities", "logits": false}}
JSON
"$MLC" pack "$MODEL" --key prov/provider.key --lease-signer keys/server.pub --policy policy.json \
  --out model.capsule >/dev/null || exit 1
"${A[@]}" provider add --name Acme --id acme >/dev/null
check "provider add" 0 "$?"
"${A[@]}" customer add --provider acme --name Bob --id bob >/dev/null
check "customer add" 0 "$?"
CAPSULE_ID=$("${A[@]}" capsule add model.capsule --provider acme | python3 -c 'import json,sys; print(json.load(sys.stdin)["capsule_id"])')
check "capsule add" 32 "${#CAPSULE_ID}"
"${A[@]}" license add --customer bob --capsule "$CAPSULE_ID" --queries 10 --lease-queries 4 \
  --price 0.5 --id bob-1 > license.json
check "license add" 0 "$?"
python3 -c 'import json; print(json.load(open("license.json"))["token"])' > license.token

python3 - <<'PY'
import struct
open("x.npy", "wb").write(b"\x93NUMPY\x01\x00" + struct.pack("<H", 118) + (
    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3), }".ljust(117) + "\n").encode()
    + struct.pack("<3f", 1, 2, 3))
PY
run() { "$MLC" run model.capsule --state state --server "$URL" --ca-cert tls.crt \
          --license-file license.token -i x.npy 2>run.err; }
out=$(run)
check "first run (lease fetched)" 0 "$?"
contains "answer" "0.665" "$out"
contains "lease message" "new lease" "$(cat run.err)"
for _ in 1 2 3 4; do run >/dev/null || { echo "FAIL run"; cat run.err; failures=$((failures + 1)); }; done
contains "renewal after 80% of the lease" '"sequence":2' "$(cat run.err)"
bill=$("${A[@]}" billing --customer bob)
check "billed queries" 5 "$(echo "$bill" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lines"][0]["queries"])')"
check "bill total" "2.500000" "$(echo "$bill" | python3 -c 'import json,sys; print(json.load(sys.stdin)["total"]["EUR"])')"

# Offline: the server is down, the client works within its lease and says so.
stop_server
out=$(run)
check "offline run" 0 "$?"
contains "offline message" "offline" "$(cat run.err)"
start_server
"$MLC" run model.capsule --state state --server "$URL" --ca-cert tls.crt \
  --license-file license.token -i x.npy --log-format json >/dev/null 2>run.err
check "back online" 0 "$?"
check "client JSON log" ok "$(python3 - <<'PY'
import json
events = [json.loads(line) for line in open("run.err") if line.strip()]
print("ok" if any(e["event"] == "license.sync" for e in events) else "no license.sync in %s" % events)
PY
)"
bill=$("${A[@]}" billing --customer bob)
check "offline query billed after reconnect" 7 "$(echo "$bill" | python3 -c 'import json,sys; print(json.load(sys.stdin)["lines"][0]["queries"])')"

# Bad input: a 4xx with a JSON message, and the server keeps serving.
code() { curl -s --cacert tls.crt -o body.out -w '%{http_code}' "$@"; }
message() { python3 -c 'import json; print(json.load(open("body.out"))["error"]["message"])' 2>/dev/null; }
TOKEN=$(cat license.token)
H=(-H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json')
check "malformed JSON" 400 "$(code "${H[@]}" -d '{"usage_report": ' "$URL/v1/usage")"
contains "malformed JSON message" "not valid JSON" "$(message)"
check "unknown field" 400 "$(code "${H[@]}" -d '{"usage_report": "AAAA", "x": 1}' "$URL/v1/usage")"
contains "unknown field message" "unknown field 'x'" "$(message)"
check "wrong type" 400 "$(code "${H[@]}" -d '{"usage_report": 7}' "$URL/v1/usage")"
check "truncated evidence" 400 "$(code "${H[@]}" -d '{"evidence_request": "TUxDRVZSRVE="}' "$URL/v1/attest")"
head -c 3000000 /dev/zero | tr '\0' 'A' > big.json
check "oversized body" 413 "$(code "${H[@]}" --data-binary @big.json "$URL/v1/usage")"
check "no token" 401 "$(code -H 'Content-Type: application/json' -d '{}' "$URL/v1/nonce")"
check "admin token on client API" 401 "$(code -H "Authorization: Bearer $ADMIN" -d '{}' "$URL/v1/nonce")"
check "license token on admin API" 401 "$(code -H "Authorization: Bearer $TOKEN" "$URL/v1/admin/providers")"
check "unknown endpoint" 404 "$(code "$URL/v1/nothing")"
check "still serving" 200 "$(code "$URL/v1/health")"
check "nothing written by bad input" 7 "$("${A[@]}" license show bob-1 | python3 -c 'import json,sys; print(json.load(sys.stdin)["billed_queries"])')"

# Revocation: the next renewal is refused with the reason.
"${A[@]}" license revoke bob-1 >/dev/null
check "revoke" 0 "$?"
for _ in 1 2; do run >/dev/null; done  # the last query of the lease, then a renewal is needed
check "revoked: no more queries" 1 "$?"
contains "revoked renewal refused" "revoked" "$(cat run.err)"

# The OpenAPI description lists exactly the routes the server has.
routes=$(python3 - "$SRC" <<'PY'
import re, sys
src = open(sys.argv[1] + "/src/server/http_server.cc").read()
code = {(m, re.sub(r"\(\[[^)]*\)", "{id}", p)) for m, p in re.findall(r'h\.(Get|Post)\(R?"\(?([^"]*?)\)?"', src)}
code = {(m.lower(), p) for m, p in code}
doc, path = set(), None
for line in open(sys.argv[1] + "/docs/server-api.yaml"):
    if re.match(r"^  /v1/", line): path = line.strip().rstrip(":")
    elif path and re.match(r"^    (get|post):", line): doc.add((line.strip().rstrip(":"), path))
print("same" if code == doc else "differ: code-only %s doc-only %s" % (sorted(code - doc), sorted(doc - code)))
PY
)
check "OpenAPI lists every route" same "$routes"

stop_server
# The server's log (--log-format json): one JSON object per line with the fixed keys, the
# attestations accepted and refused with the license id, the usage reports, the start line; and
# no token anywhere.
check "server JSON log" ok "$(python3 - "$(cat license.token)" "$ADMIN" <<'PY'
import json, re, sys
lines = [line for line in open("server.err") if line.strip()]
problems = []
events = []
for line in lines:
    try:
        e = json.loads(line)
    except ValueError:
        problems.append("not JSON: " + line[:200])
        continue
    if not isinstance(e, dict) or not all(isinstance(e.get(k), str) for k in ("time", "level", "msg", "component")):
        problems.append("missing time/level/msg/component: " + line[:200])
        continue
    events.append(e)
def has(event, **fields):
    return any(e.get("event") == event and all(e.get(k) == v for k, v in fields.items()) for e in events)
for event, fields in [("server.started", {"tls": True}), ("attest.accepted", {"license": "bob-1", "tee": "software"}),
                      ("attest.refused", {"license": "bob-1"}), ("usage.recorded", {"license": "bob-1"}),
                      ("usage.refused", {"status": 400}), ("server.stopped", {})]:
    if not has(event, **fields): problems.append("no %s %s" % (event, fields))
text = "".join(lines)
for secret in sys.argv[1:]:
    if secret and secret in text: problems.append("a token is in the log")
if re.search(r"mlc(lic|adm)_[A-Za-z0-9_-]{8}", text): problems.append("a token-like string is in the log")
print("ok" if not problems else "; ".join(problems[:5]))
PY
)"
if [[ $failures -ne 0 ]]; then echo "license server: $failures checks failed"; exit 1; fi
echo "license server: all checks passed"
