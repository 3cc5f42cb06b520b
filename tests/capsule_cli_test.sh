#!/usr/bin/env bash
# The capsule commands end to end, through the real software TEE (mlcapsule-core): keygen (key
# file permissions), pack, verify (intact / tampered / truncated), inspect (header and policy, no
# weights), air-gapped licensing (lease request / issue / install), run (same answer as the plain
# engine), usage reports, quota exhaustion, replayed lease, restored older sealed state.
set -uo pipefail
BIN="$(realpath "$1")"; DATA="$2"; SRC="$(realpath "$3")"; EXAMPLES="${4:+$(realpath "$4")}"
M="$DATA/test_softmax_axis_1"
if [[ ! -d "$M" ]]; then echo "SKIP: $DATA is absent"; exit 77; fi
if [[ ! -x "$(dirname "$BIN")/mlcapsule-core" ]]; then echo "SKIP: mlcapsule-core is not built"; exit 77; fi
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; [[ -f "$T/err" ]] && cat "$T/err"; exit 1; }
expect_exit() { local want="$1"; shift; "$@" >"$T/out" 2>"$T/err"; local got=$?; [[ $got -eq $want ]] || fail "exit $got, expected $want: $*"; }

# keygen: the secret key is 0600; a readable copy is refused by pack.
expect_exit 0 "$BIN" keygen --out "$T/keys"
[[ "$(stat -c %a "$T/keys/provider.key")" == 600 ]] || fail "provider.key must be mode 0600"
expect_exit 1 "$BIN" keygen --out "$T/keys"  # never overwrites a key
# --json: one object with the files written and the public key.
expect_exit 0 "$BIN" keygen --out "$T/keys" --name j --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['kind']=='signing' and d['secret_key_file']=='$T/keys/j.key' and d['public_key_file']=='$T/keys/j.pub' and len(d['public_key'])==64, d" || fail "keygen JSON: $(cat "$T/out")"
expect_exit 0 "$BIN" keygen --escrow --out "$T/keys" --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['kind']=='escrow' and d['secret_key_file']=='$T/keys/escrow.key' and len(d['public_key'])==64, d" || fail "keygen --escrow JSON: $(cat "$T/out")"
cp "$T/keys/provider.key" "$T/loose.key"; chmod 644 "$T/loose.key"
expect_exit 1 "$BIN" pack "$M/model.onnx" --key "$T/loose.key" --policy "$SRC/examples/policies/probabilities.json" --out "$T/x.capsule"
grep -q "chmod 600" "$T/err" || fail "the loose key error should say chmod 600"

# pack with an invalid policy: the error names the field.
echo '{"version":1,"tee":{"accept":["software"]},"output":{"mode":"probabilities","kk":1}}' > "$T/bad.json"
expect_exit 1 "$BIN" pack "$M/model.onnx" --key "$T/keys/provider.key" --policy "$T/bad.json" --out "$T/x.capsule"
grep -q "output.kk" "$T/err" || fail "policy error must name output.kk"

cat > "$T/policy.json" <<'JSON'
{"version":1,"tee":{"accept":["software"]},"lease":{"max_queries":1000,"max_days":30,"seal_every":2},
 "output":{"mode":"probabilities"}}
JSON
expect_exit 0 "$BIN" pack "$M/model.onnx" --key "$T/keys/provider.key" --policy "$T/policy.json" --out "$T/m.capsule"
[[ "$(stat -c %a "$T/m.capsule.key")" == 600 ]] || fail "capsule key file must be mode 0600"
expect_exit 0 "$BIN" pack "$M/model.onnx" --key "$T/keys/provider.key" --policy "$T/policy.json" --out "$T/j.capsule" --json
/usr/bin/python3 -c "import json,os; d=json.load(open('$T/out')); assert d['capsule_file']=='$T/j.capsule' and d['capsule_key_file']=='$T/j.capsule.key' and d['capsule_bytes']==os.path.getsize('$T/j.capsule') and len(d['capsule_id'])>0 and d['output_mode']=='probabilities' and d['plan_bytes']>0, d" || fail "pack JSON: $(cat "$T/out")"

# verify: exit 0 only if intact.
expect_exit 0 "$BIN" verify "$T/m.capsule"
cp "$T/m.capsule" "$T/tampered.capsule"
size=$(stat -c %s "$T/m.capsule")
# A byte of the last encrypted chunk (just before the 64-byte signature): covered only by the
# signature. (A byte in the middle may land on a header count, which the parser refuses first.)
printf '\x55' | dd of="$T/tampered.capsule" bs=1 seek=$((size - 80)) conv=notrunc 2>/dev/null
expect_exit 1 "$BIN" verify "$T/tampered.capsule"
grep -q "signature" "$T/err" || fail "tampered capsule error must mention the signature"
head -c $((size - 10)) "$T/m.capsule" > "$T/short.capsule"
expect_exit 1 "$BIN" verify "$T/short.capsule"
expect_exit 0 "$BIN" verify "$T/m.capsule" --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['intact'] is True and d['file']=='$T/m.capsule' and len(d['provider_key'])==64 and d['capsule_id'], d" || fail "verify JSON: $(cat "$T/out")"
expect_exit 1 "$BIN" verify "$T/tampered.capsule" --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['intact'] is False and 'signature' in d['reason'], d" || fail "verify JSON, tampered: $(cat "$T/out")"
grep -q "signature" "$T/err" || fail "verify --json still reports the error on stderr"

# inspect: JSON header and policy; the capsule key never appears.
expect_exit 0 "$BIN" inspect "$T/m.capsule"
/usr/bin/python3 -c "import json,sys; d=json.load(open('$T/out')); assert d['signature_valid'] and d['policy']['output']['mode']=='probabilities'" || fail "inspect JSON"
key_hex=$(sed -n 3p "$T/m.capsule.key")
grep -q "$key_hex" "$T/out" && fail "inspect printed the capsule key"

# Air-gapped licensing.
S="$T/state"
expect_exit 1 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb"
grep -q "no lease" "$T/err" || fail "run without a lease must say so"
expect_exit 0 "$BIN" lease request "$T/m.capsule" --state "$S" --out "$T/req.bin" --json
/usr/bin/python3 -c "import json,os; d=json.load(open('$T/out')); assert d['request_file']=='$T/req.bin' and d['request_bytes']==os.path.getsize('$T/req.bin') and d['backend'] and d['usage_report_attached'] is False, d" || fail "lease request JSON: $(cat "$T/out")"
expect_exit 0 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" --request "$T/req.bin" \
  --license-id acme --queries 3 --days 1 --out "$T/lease.bin"
expect_exit 1 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" --request "$T/req.bin" \
  --license-id acme --queries 5000 --days 1 --out "$T/too-big.bin"   # over lease.max_queries
expect_exit 0 "$BIN" lease install "$T/m.capsule" --state "$S" "$T/lease.bin"
grep -q '"state":"ready"' "$T/out" || fail "lease install must leave the core ready"
expect_exit 1 "$BIN" lease install "$T/m.capsule" --state "$S" "$T/lease.bin"
grep -q "replayed" "$T/err" || fail "a replayed lease must be refused as such"

# run answers exactly what the plain engine answers (policy: probabilities, no softmax added).
expect_exit 0 "$BIN" infer "$M/model.onnx" -i "$M/test_data_set_0/input_0.pb" -o "$T/plain.npy"
expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb" -o "$T/guarded.npy"
cmp -s "$T/plain.npy" "$T/guarded.npy" || fail "guarded and plain outputs differ"
cp "$S/sealed-state.bin" "$T/older-state.bin"
# run --json: outputs as arrays (or their files with -o) and the lease counts.
expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb" -o "$T/guarded2.npy" --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); o=d['outputs'][0]; assert o['file']=='$T/guarded2.npy' and o['dtype'] and o['shape'] and 'values' not in o and d['lease']['license_id']=='acme' and d['lease']['queries_used']==2 and d['lease']['query_quota']==3 and 'sync' not in d, d" || fail "run JSON with -o: $(cat "$T/out")"
cmp -s "$T/plain.npy" "$T/guarded2.npy" || fail "run --json -o wrote different outputs"
expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb" --json
/usr/bin/python3 -c "
import json, math
d = json.load(open('$T/out')); o = d['outputs'][0]
n = math.prod(o['shape'])
assert len(o['values']) == n and n > 0 and d['lease']['queries_used'] == 3, d
" || fail "run JSON values: $(cat "$T/out")"
expect_exit 1 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb"
grep -q "quota exhausted" "$T/err" || fail "the fourth query must exhaust the quota of 3"

# usage report, then a renewal carries it to the provider.
expect_exit 0 "$BIN" usage "$T/m.capsule" --state "$S" --out "$T/usage.bin"
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['to_count']==3 and d['from_count']==0, d" || fail "usage report counts"
expect_exit 0 "$BIN" lease request "$T/m.capsule" --state "$S" --out "$T/req2.bin"
expect_exit 0 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" --request "$T/req2.bin" \
  --license-id acme --queries 10 --days 1 --out "$T/lease2.bin"
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); assert d['usage_report']['queries_billed']==3, d" || fail "renewal bills the report"
expect_exit 0 "$BIN" lease install "$T/m.capsule" --state "$S" "$T/lease2.bin"
expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb"
# run --json --server with the server unreachable: offline within the lease, said in "sync".
expect_exit 0 "$BIN" run "$T/m.capsule" --state "$S" -i "$M/test_data_set_0/input_0.pb" \
  --server https://127.0.0.1:1 --license not-a-token --json
/usr/bin/python3 -c "import json; d=json.load(open('$T/out')); s=d['sync']; assert s['before']['online'] is False and s['before']['reason'] and s['after']['online'] is False and d['lease']['queries_used']==2, d" || fail "run JSON offline sync: $(cat "$T/out")"

# A restored older sealed state is refused (the core's counter has moved on).
cp "$T/older-state.bin" "$S/sealed-state.bin"
expect_exit 1 "$BIN" lease status "$T/m.capsule" --state "$S"
grep -q "rollback" "$T/err" || fail "a restored older state must be refused as a rollback"

# A state directory belongs to one capsule.
expect_exit 0 "$BIN" pack "$M/model.onnx" --key "$T/keys/provider.key" --policy "$T/policy.json" --out "$T/other.capsule"
expect_exit 1 "$BIN" lease status "$T/other.capsule" --state "$S"
grep -q "one directory per capsule" "$T/err" || fail "state directory reuse message"
# The example programs on the C API and the C++ SDK: a fresh client asks for a lease (exit 3 and
# evidence-request.bin), the provider answers, the client answers a query.
if [[ -n "$EXAMPLES" && -x "$EXAMPLES/classify_c" && -x "$EXAMPLES/classify_cpp" ]]; then
  /usr/bin/python3 -c "import numpy as np; np.save('$T/x.npy', np.linspace(-1, 1, 60, dtype='<f4').reshape(3, 4, 5))" \
    || fail "numpy is needed for the example input"
  for program in classify_c classify_cpp; do
    mkdir -p "$T/$program" && cd "$T/$program"
    expect_exit 3 "$EXAMPLES/$program" "$T/m.capsule" "$T/$program/state" "$T/x.npy"
    [[ -s evidence-request.bin ]] || fail "$program must write evidence-request.bin"
    expect_exit 0 "$BIN" lease issue --key "$T/keys/provider.key" --capsule "$T/m.capsule" \
      --request evidence-request.bin --license-id example --queries 5 --days 1 --out lease.bin
    expect_exit 0 "$EXAMPLES/$program" "$T/m.capsule" "$T/$program/state" "$T/x.npy" lease.bin
    cd "$T"
  done
else
  echo "note: example programs not built, not run"
fi
echo "capsule CLI: all checks passed"
