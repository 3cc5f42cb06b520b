#!/usr/bin/env bash
# Measures what the guarded path costs against the plain engine, on the same model in the same
# run (issue 3's figures):
#   - per-query overhead: `mlcapsule bench M.capsule --baseline zoo/M/model.onnx` times the whole
#     guarded path (host -> socket -> mlcapsule-core under seccomp with memfd_secret weights ->
#     quota, counter, chain, engine, output policy -> back) and the plain engine on the same
#     inputs, alternating in blocks of a tenth of the iterations;
#   - open time: opening a licensed capsule (spawn the core, verify the signature, decrypt, load)
#     against loading the same model's plan (read, parse, validate, set up kernels).
#
#   bench/capsule_overhead.sh [--models lenet,mobilenet_v2,resnet18] [--rounds 5] [--out FILE]
#
# Needs the model zoo (zoo/, made by /usr/bin/python3 tools/export_zoo.py) and a build. Writes one
# JSON line per measurement to bench/results/capsule-<date>.jsonl and prints a Markdown summary
# (medians over the rounds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODELS="lenet,mobilenet_v2,resnet18"
ROUNDS=5
OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --models) MODELS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "capsule_overhead.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
M="$ROOT/build/mlcapsule"
[[ -x "$M" && -x "$ROOT/build/mlcapsule-core" ]] || { echo "build first: scripts/build.sh" >&2; exit 1; }
OUT="${OUT:-$ROOT/bench/results/capsule-$(date +%Y%m%d-%H%M%S).jsonl}"
mkdir -p "$(dirname "$OUT")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cat > "$WORK/policy.json" <<'JSON'
{"version":1,"description":"benchmark: software TEE, full probabilities",
 "tee":{"accept":["software"]},
 "lease":{"max_queries":1000000000,"max_days":30,"seal_every":1000},
 "output":{"mode":"probabilities"}}
JSON
"$M" keygen --out "$WORK/keys" >/dev/null
iters_for() { case "$1" in lenet) echo 5000 ;; resnet18) echo 40 ;; *) echo 200 ;; esac; }
for model in ${MODELS//,/ }; do
  onnx="$ROOT/zoo/$model/model.onnx"
  [[ -f "$onnx" ]] || { echo "missing $onnx (run /usr/bin/python3 tools/export_zoo.py)" >&2; exit 1; }
  cap="$WORK/$model.capsule"; state="$WORK/$model.state"
  "$M" pack "$onnx" --key "$WORK/keys/provider.key" --policy "$WORK/policy.json" --out "$cap" >/dev/null
  "$M" compile "$onnx" -o "$WORK/$model.plan" >/dev/null
  "$M" lease request "$cap" --state "$state" --out "$WORK/req" >/dev/null
  "$M" lease issue --key "$WORK/keys/provider.key" --capsule "$cap" --request "$WORK/req" \
    --license-id bench --queries 1000000000 --days 30 --out "$WORK/lease" >/dev/null
  "$M" lease install "$cap" --state "$state" "$WORK/lease" >/dev/null
  iters=$(iters_for "$model")
  for round in $(seq 1 "$ROUNDS"); do
    echo "== $model round $round/$ROUNDS" >&2
    "$M" bench "$cap" --state "$state" --baseline "$onnx" --batch 1 --threads 1 \
      --iters "$iters" --warmup $((iters / 10 + 1)) | sed 's/^{/{"kind":"guarded",/' >> "$OUT"
    "$M" bench "$WORK/$model.plan" --batch 1 --threads 1 --iters 1 --warmup 0 \
      | sed 's/^{/{"kind":"plan-load",/' >> "$OUT"
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
models = []
for r in rows:
    m = r["model"].replace(".capsule", "").replace(".plan", "")
    if m not in models: models.append(m)
print(f"results: {sys.argv[1]}\n")
print("| model | plain median ms | guarded median ms | overhead | capsule open ms | plan load ms | open / load |")
print("|---|---|---|---|---|---|---|")
for m in models:
    g = [r for r in rows if r["kind"] == "guarded" and r["model"].startswith(m + ".")]
    p = [r for r in rows if r["kind"] == "plan-load" and r["model"].startswith(m + ".")]
    med = lambda k, rs: statistics.median(x[k] for x in rs)
    over_us = med("overhead_us", g); over_pct = med("overhead_pct", g)
    print(f"| {m} | {med('baseline_median_ms', g):.3f} | {med('median_ms', g):.3f} | "
          f"{over_us:.1f} us ({over_pct:.1f}%) | {med('open_ms', g):.0f} | {med('load_ms', p):.0f} | "
          f"{med('open_ms', g) / med('load_ms', p):.2f}x |")
PY
