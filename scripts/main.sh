#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job: a provider packs a real
# network into a capsule, an air-gapped client licenses it and answers queries offline inside the
# software TEE, reports its usage, and the guarded path is timed against the plain engine.
# (Issue 8 turns this into `mlcapsule demo` with the license server and the attacks.)
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
echo "== files: $W (provider keys, capsule + capsule key, request, lease, usage report, client state)"
