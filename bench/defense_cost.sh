#!/usr/bin/env bash
# Per-query cost of each defense on lenet, through the whole guarded path (host -> mlcapsule-core
# -> quota, counter, chain, engine, defenses -> back): one capsule per policy, each timed with
# `mlcapsule bench CAPSULE --baseline zoo/lenet/model.onnx --distinct N` (N different random
# inputs in turn, so PRADA and the watermark see distinct queries), and the cost of a defense is
# its capsule's guarded median minus the undefended capsule's (output mode probabilities) in the
# same round.
#
#   bench/defense_cost.sh [--iters 4000] [--rounds 3] [--distinct 1000] [--out FILE]
#
# Needs zoo/lenet (made by /usr/bin/python3 tools/export_zoo.py --out zoo --models lenet) and a
# build. Writes JSON lines to bench/results/defenses-<date>.jsonl and prints a Markdown table
# (medians over the rounds).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ITERS=4000; ROUNDS=3; DISTINCT=1000; OUT=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --iters) ITERS="$2"; shift 2 ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --distinct) DISTINCT="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "defense_cost.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
M="$ROOT/build/mlcapsule"
[[ -x "$M" && -x "$ROOT/build/mlcapsule-core" ]] || { echo "build first: scripts/build.sh" >&2; exit 1; }
ONNX="$ROOT/zoo/lenet/model.onnx"
[[ -f "$ONNX" ]] || { echo "missing $ONNX (/usr/bin/python3 tools/export_zoo.py --out zoo --models lenet)" >&2; exit 1; }
OUT="${OUT:-$ROOT/bench/results/defenses-$(date +%Y%m%d-%H%M%S).jsonl}"
mkdir -p "$(dirname "$OUT")"
WORK="$(mktemp -d)"; trap 'rm -rf "$WORK"' EXIT
"$M" keygen --out "$WORK/keys" >/dev/null
"$M" keygen --escrow --out "$WORK/keys" >/dev/null
ESCROW=$(tail -n 1 "$WORK/keys/escrow.pub")  # escrow.pub := "MLCEPUB1\n" hex "\n"
/usr/bin/python3 "$ROOT/tools/export_membership_classifier.py" --classes 10 --out "$WORK/membership.onnx" >/dev/null

QUOTA=1000000000
policy() {  # name, output json, extra json
  printf '{"version":1,"description":"bench: %s","tee":{"accept":["software"]},"lease":{"max_queries":%s,"max_days":30,"seal_every":1000},"output":%s%s}\n' \
    "$1" "$QUOTA" "$2" "${3:+,$3}" > "$WORK/$1.json"
}
policy none '{"mode":"probabilities","logits":true}'
policy top_k '{"mode":"top_k","k":3,"logits":true}'
policy rounded '{"mode":"rounded","decimals":2,"logits":true}'
policy label '{"mode":"label","logits":true}'
policy reverse_sigmoid '{"mode":"reverse_sigmoid","logits":true}'
policy gaussian '{"mode":"gaussian","logits":true}'
policy rate_limit '{"mode":"probabilities","logits":true}' '"rate_limit":{"per_second":1000000000,"per_day":1000000000000}'
policy prada '{"mode":"probabilities","logits":true}' '"defenses":{"prada":{"enabled":true}}'
policy watermark '{"mode":"probabilities","logits":true}' "\"defenses\":{\"watermark\":{\"enabled\":true,\"rate\":0.01,\"escrow\":\"always\",\"escrow_key\":\"$ESCROW\"}}"
policy memguard '{"mode":"probabilities","logits":true}' '"defenses":{"memguard":{"enabled":true}}'
VARIANTS="none top_k rounded label reverse_sigmoid gaussian rate_limit prada watermark memguard"

for v in $VARIANTS; do
  extra=(); [[ $v == memguard ]] && extra=(--memguard-classifier "$WORK/membership.onnx")
  "$M" pack "$ONNX" --key "$WORK/keys/provider.key" --policy "$WORK/$v.json" --out "$WORK/$v.capsule" "${extra[@]}" >/dev/null
done
for round in $(seq 1 "$ROUNDS"); do
  for v in $VARIANTS; do
    echo "== round $round/$ROUNDS: $v" >&2
    state="$WORK/$v.state.$round"
    "$M" lease request "$WORK/$v.capsule" --state "$state" --out "$WORK/req" >/dev/null
    "$M" lease issue --key "$WORK/keys/provider.key" --capsule "$WORK/$v.capsule" --request "$WORK/req" \
      --license-id bench --queries "$QUOTA" --days 30 --out "$WORK/lease" >/dev/null
    "$M" lease install "$WORK/$v.capsule" --state "$state" "$WORK/lease" >/dev/null
    "$M" bench "$WORK/$v.capsule" --state "$state" --baseline "$ONNX" --batch 1 --threads 1 \
      --iters "$ITERS" --warmup $((ITERS / 10)) --distinct "$DISTINCT" \
      | sed "s/^{/{\"defense\":\"$v\",\"round\":$round,/" >> "$OUT"
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
rounds = sorted({r["round"] for r in rows})
base = {r["round"]: r["median_ms"] for r in rows if r["defense"] == "none"}
order = []
for r in rows:
    if r["defense"] not in order: order.append(r["defense"])
print(f"results: {sys.argv[1]}\n")
print("| defense | guarded median us | cost vs undefended capsule, us (median of rounds) | plain engine median us |")
print("|---|---|---|---|")
for d in order:
    rs = [r for r in rows if r["defense"] == d]
    g = statistics.median(r["median_ms"] for r in rs) * 1000
    cost = statistics.median((r["median_ms"] - base[r["round"]]) * 1000 for r in rs)
    plain = statistics.median(r["baseline_median_ms"] for r in rs) * 1000
    print(f"| {d} | {g:.1f} | {'-' if d == 'none' else f'{cost:+.1f}'} | {plain:.1f} |")
PY
