#!/usr/bin/env bash
# The flows `mlcapsule demo` does not show, as a shell script: a real ImageNet network (resnet18,
# exported with PyTorch) packed into a capsule, licensed AIR-GAPPED (lease request / issue /
# install, no server), answered offline, its usage exported, the guarded path timed against the
# plain engine; then lenet through the license server with `run --server`. Sets up like
# scripts/main.sh (Debian packages, build) first; about 15 s after that.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
scripts/build.sh
M=build/mlcapsule
W=build/main-job
rm -rf "$W"; mkdir -p "$W"
echo "== exporting lenet and resnet18 with PyTorch (tools/export_zoo.py)"
/usr/bin/python3 tools/export_zoo.py --out build/zoo --models lenet,resnet18
echo "== checking both models against PyTorch (max |diff| <= 1e-4 x output range)"
$M conformance build/zoo --range-tol 1e-4
echo "== provider: key pair, and resnet18 packed into a capsule (policy: top-3 classes)"
$M keygen --out "$W/provider"
$M pack build/zoo/resnet18/model.onnx --key "$W/provider/provider.key" \
  --policy examples/policies/top3.json --out "$W/resnet18.capsule"
$M verify "$W/resnet18.capsule"
echo "== client: evidence request from the software TEE (air-gapped licensing)"
$M lease request "$W/resnet18.capsule" --state "$W/client-state" --out "$W/request.bin"
echo "== provider: lease for 1000 queries, 7 days"
$M lease issue --key "$W/provider/provider.key" --capsule "$W/resnet18.capsule" \
  --request "$W/request.bin" --license-id demo-customer --queries 1000 --days 7 --out "$W/lease.bin"
echo "== client: install the lease, answer a query offline (only the top 3 classes come back)"
$M lease install "$W/resnet18.capsule" --state "$W/client-state" "$W/lease.bin"
$M run "$W/resnet18.capsule" --state "$W/client-state" \
  -i build/zoo/resnet18/test_data_set_0/input_0.pb
echo "== client: signed usage report for the provider"
$M usage "$W/resnet18.capsule" --state "$W/client-state" --out "$W/usage.bin"
echo "== timing the guarded path against the plain engine (resnet18, batch 1, 1 thread)"
$M bench "$W/resnet18.capsule" --state "$W/client-state" --baseline build/zoo/resnet18/model.onnx \
  --batch 1 --threads 1 --iters 20 --warmup 3

echo "== online: the license server (HTTPS, SQLite, a self-signed certificate for 127.0.0.1)"
S="$W/server"; mkdir -p "$S"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=127.0.0.1 \
  -addext subjectAltName=IP:127.0.0.1 -keyout "$S/tls.key" -out "$S/tls.crt" 2>/dev/null
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
$M server --db "sqlite:$S/server.db" --keys "$S/keys" --create-admin-token ops >"$S/admin.token"
$M server --db "sqlite:$S/server.db" --keys "$S/keys" --listen "127.0.0.1:$PORT" \
  --tls-cert "$S/tls.crt" --tls-key "$S/tls.key" >"$S/server.out" 2>"$S/server.err" &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null; wait "$SERVER_PID" 2>/dev/null' EXIT
for _ in $(seq 100); do grep -q '^listening' "$S/server.out" && break; sleep 0.1; done
cat "$S/server.out"
A=($M admin --server "https://127.0.0.1:$PORT" --ca-cert "$S/tls.crt" --token-file "$S/admin.token")
echo "== provider: pin the server's lease key in a lenet capsule, register provider, customer, capsule, license"
$M pack build/zoo/lenet/model.onnx --key "$W/provider/provider.key" --lease-signer "$S/keys/server.pub" \
  --policy examples/policies/top3.json --out "$W/lenet.capsule"
"${A[@]}" provider add --name "Acme Models" --id acme >/dev/null
"${A[@]}" customer add --provider acme --name "Bob Ltd" --id bob >/dev/null
CAPSULE_ID=$("${A[@]}" capsule add "$W/lenet.capsule" --provider acme | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["capsule_id"])')
"${A[@]}" license add --customer bob --capsule "$CAPSULE_ID" --queries 1000 --lease-queries 100 \
  --price 0.002 --id bob-lenet | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])' >"$W/license.token"
echo "== client: run with --server (attest -> lease, query, usage synced), three times"
for _ in 1 2 3; do
  $M run "$W/lenet.capsule" --state "$W/lenet-state" --server "https://127.0.0.1:$PORT" \
    --ca-cert "$S/tls.crt" --license-file "$W/license.token" -i build/zoo/lenet/test_data_set_0/input_0.pb
done
echo "== provider: the bill"
"${A[@]}" billing --customer bob
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null; trap - EXIT
echo "== files: $W (provider keys, capsules + keys, request, lease, usage report, client states, server/ (database, keys, TLS))"
