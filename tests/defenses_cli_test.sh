#!/usr/bin/env bash
# The defenses end to end through the real software TEE, on the zoo's lenet: pack a capsule whose
# policy runs PRADA (action block) and DAWN watermarking with escrow after an alarm; `inspect` says
# what leaves the client; a stream of repeated queries (what an extraction tool that re-queries a
# small seed set looks like) makes PRADA alarm and block; the usage report carries the alarm, the
# defense counters and the escrowed watermarked inputs; the core stays blocked after a restart;
# PRADA's journal is stored beside the sealed state; `watermark verify` reads the escrow and
# refuses to call the victim's own model a thief; inputs PRADA cannot analyse are refused uncounted;
# a MemGuard capsule (its classifier packed with the model) answers distributions with the label kept.
set -uo pipefail
BIN="$(realpath "$1")"; ZOO="$2"
# The zoo fixture writes lenet_opset13/ (tools/export_zoo.py --out build/zoo); a hand export may be
# lenet/.
LENET="$ZOO/lenet_opset13"; [[ -d "$LENET" ]] || LENET="$ZOO/lenet"
ONNX="$LENET/model.onnx"
if [[ ! -f "$ONNX" ]]; then echo "SKIP: $ONNX is absent (the zoo fixture did not run)"; exit 77; fi
if [[ ! -x "$(dirname "$BIN")/mlcapsule-core" ]]; then echo "SKIP: mlcapsule-core is not built"; exit 77; fi
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; [[ -f "$T/err" ]] && cat "$T/err"; [[ -f "$T/out" ]] && cat "$T/out"; exit 1; }
expect_exit() { local want="$1"; shift; "$@" >"$T/out" 2>"$T/err"; local got=$?; [[ $got -eq $want ]] || fail "exit $got, expected $want: $*"; }
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

expect_exit 0 "$BIN" keygen --out "$T/keys"
expect_exit 0 "$BIN" keygen --escrow --out "$T/keys"
[[ "$(stat -c %a "$T/keys/escrow.key")" == 600 ]] || fail "escrow.key must be mode 0600"
ESCROW=$(tail -n 1 "$T/keys/escrow.pub")
[[ ${#ESCROW} -eq 64 ]] || fail "escrow.pub should end with the 64-hex public key"

cat > "$T/policy.json" <<JSON
{"version":1,"description":"defenses e2e","tee":{"accept":["software"]},
 "lease":{"max_queries":100000,"max_days":30,"seal_every":50},
 "output":{"mode":"probabilities","logits":true},
 "defenses":{"prada":{"enabled":true,"action":"block"},
             "watermark":{"enabled":true,"rate":0.5,"escrow":"after_alarm","escrow_key":"$ESCROW"}}}
JSON
# after_alarm without PRADA is refused at pack time, naming the field.
sed 's/"prada":{"enabled":true,"action":"block"}/"prada":{"enabled":false}/' "$T/policy.json" > "$T/bad.json"
expect_exit 1 "$BIN" pack "$ONNX" --key "$T/keys/provider.key" --policy "$T/bad.json" --out "$T/x.capsule"
grep -q "defenses.watermark.escrow" "$T/err" || fail "the error must name defenses.watermark.escrow"

# The watermark key is random per capsule, so whether any of the stream's 11 distinct inputs is
# watermarked is chance (rate 0.5: all unmarked with probability 2^-11). An attempt where none was
# retries with a fresh capsule, at most three times.
for attempt in 1 2 3; do
  rm -rf "$T/state" "$T/m.capsule" "$T/m.capsule.key"
  expect_exit 0 "$BIN" pack "$ONNX" --key "$T/keys/provider.key" --policy "$T/policy.json" --out "$T/m.capsule"
  expect_exit 0 "$BIN" inspect "$T/m.capsule"
  grep -q "only after a PRADA alarm" "$T/out" || fail "inspect must say when watermarked inputs leave"
  S="$T/state"
  expect_exit 0 "$BIN" lease request "$T/m.capsule" --state "$S" --out "$T/req"
  expect_exit 0 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" --request "$T/req" \
    --license-id L1 --queries 100000 --days 30 --out "$T/lease"
  expect_exit 0 "$BIN" lease install "$T/m.capsule" --state "$S" "$T/lease"

  # A benign query is answered; before any alarm no input leaves the client.
  expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$LENET/test_data_set_0/input_0.pb"
  expect_exit 0 "$BIN" usage "$T/m.capsule" --state "$S" --out "$T/r0.bin"
  [[ $(json "$T/out" 'd["escrow_records"]') == 0 ]] || fail "nothing may be escrowed before an alarm"
  [[ $(json "$T/out" 'd["defenses"]["prada_observed"]') == 1 ]] || fail "PRADA should have seen 1 query"

  # Inputs PRADA cannot analyse are refused and not counted.
  /usr/bin/python3 - "$T/nan.pb" <<'PY'
import sys, numpy as np
from onnx import numpy_helper
x = np.zeros((1, 1, 28, 28), np.float32); x[0, 0, 3, 3] = np.nan
open(sys.argv[1], "wb").write(numpy_helper.from_array(x, "input").SerializeToString())
PY
  expect_exit 1 "$BIN" run "$T/m.capsule" --state "$S" -i "$T/nan.pb"
  grep -q "PRADA" "$T/err" || fail "a NaN input must be refused, naming PRADA"

  # Ten inputs re-queried in turn: PRADA alarms and, per the policy, blocks.
  expect_exit 1 "$BIN" bench "$T/m.capsule" --state "$S" --iters 400 --warmup 0 --distinct 10
  grep -q "blocked" "$T/err" || fail "the bench should end blocked by PRADA"
  [[ -s "$S/journal.bin" ]] || fail "PRADA's journal should be stored in the state directory"
  expect_exit 0 "$BIN" usage "$T/m.capsule" --state "$S" --out "$T/r1.bin"
  [[ $(json "$T/out" '[a["kind"] for a in d["alerts"]].count("prada")') == 1 ]] || fail "the report must carry the PRADA alarm"
  [[ $(json "$T/out" 'd["defenses"]["prada_alarmed"]') == True ]] || fail "prada_alarmed must be set"
  [[ $(json "$T/out" 'd["to_count"]') -lt 40 ]] || fail "the block should stop the stream early"
  records=$(json "$T/out" 'd["escrow_records"]')
  watermarked=$(json "$T/out" 'd["defenses"]["watermarked"]')
  [[ $records -eq $watermarked ]] || fail "after the alarm every watermarked input ($watermarked) is escrowed, not $records"
  [[ $watermarked -ge 1 ]] && break
  echo "attempt $attempt: no input of the stream was watermarked; packing a fresh capsule"
done
[[ $watermarked -ge 1 ]] || fail "three capsules in a row watermarked none of 11 inputs at rate 0.5"

# Still blocked after a restart from the sealed state.
expect_exit 1 "$BIN" run "$T/m.capsule" --state "$S" -i "$LENET/test_data_set_0/input_0.pb"
grep -q "blocked" "$T/err" || fail "the block must survive a restart"

# The provider opens the escrow; the victim's own model does not reproduce the watermark labels.
expect_exit 1 "$BIN" watermark verify --escrow-key "$T/keys/escrow.key" --model "$ONNX" "$T/r1.bin" --json
[[ $(json "$T/out" 'd["verdict"]') == "not identified" ]] || fail "the victim must not be identified as a thief"
[[ $(json "$T/out" 'd["samples"]') -ge 1 ]] || fail "watermark verify should find the escrowed samples"
# Another key opens nothing.
expect_exit 0 "$BIN" keygen --escrow --out "$T/other"
expect_exit 1 "$BIN" watermark verify --escrow-key "$T/other/escrow.key" --model "$ONNX" "$T/r1.bin"
# MemGuard: the defender's classifier ships in the capsule; answers stay probability vectors with
# the model's own top-1 label. (The classifier's weights are untrained: this checks the path.)
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
/usr/bin/python3 "$SRC/tools/export_membership_classifier.py" --classes 10 --out "$T/member.onnx" >/dev/null 2>&1 ||
  fail "could not export the membership classifier"
cat > "$T/memguard.json" <<'JSON'
{"version":1,"tee":{"accept":["software"]},"output":{"mode":"probabilities","logits":true},
 "defenses":{"memguard":{"enabled":true,"budget":2}}}
JSON
expect_exit 1 "$BIN" pack "$ONNX" --key "$T/keys/provider.key" --policy "$T/memguard.json" --out "$T/g.capsule"
grep -q "memguard-classifier" "$T/err" || fail "pack must ask for --memguard-classifier"
expect_exit 0 "$BIN" pack "$ONNX" --key "$T/keys/provider.key" --policy "$T/memguard.json" --out "$T/g.capsule" \
  --memguard-classifier "$T/member.onnx"
G="$T/gstate"
expect_exit 0 "$BIN" lease request "$T/g.capsule" --state "$G" --out "$T/greq"
expect_exit 0 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/g.capsule" --request "$T/greq" \
  --license-id L2 --queries 100 --days 30 --out "$T/glease"
expect_exit 0 "$BIN" lease install "$T/g.capsule" --state "$G" "$T/glease"
for set in 0 1; do
  expect_exit 0 "$BIN" run "$T/g.capsule" --state "$G" -i "$LENET/test_data_set_$set/input_0.pb" -o "$T/g$set.npy"
  expect_exit 0 "$BIN" infer "$ONNX" -i "$LENET/test_data_set_$set/input_0.pb" -o "$T/p$set.npy"
  /usr/bin/python3 - "$T/g$set.npy" "$T/p$set.npy" <<'PY' || fail "MemGuard answer $set: not a distribution or the label changed"
import sys, numpy as np
g, p = np.load(sys.argv[1]), np.load(sys.argv[2])
assert g.shape == p.shape, (g.shape, p.shape)
assert (g >= 0).all() and np.allclose(g.sum(axis=-1), 1, atol=1e-5), g
assert (g.argmax(axis=-1) == p.argmax(axis=-1)).all(), (g, p)
PY
done
expect_exit 0 "$BIN" usage "$T/g.capsule" --state "$G" --out "$T/g.report"
rows=$(/usr/bin/python3 -c "import sys, numpy as np; print(sum(np.load(f).shape[0] for f in sys.argv[1:]))" "$T/g0.npy" "$T/g1.npy")
[[ $(json "$T/out" 'd["to_count"]') == "$rows" ]] || fail "the MemGuard capsule should have counted $rows rows"
echo "defenses end to end: PASS ($records escrowed records)"
