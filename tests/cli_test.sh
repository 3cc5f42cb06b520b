#!/usr/bin/env bash
# The CLI contract: --help/--version, exit codes, compile/infer with .pb and .npy, bench JSON.
set -uo pipefail
BIN="$1"; DATA="$2"
if [[ ! -d "$DATA/test_conv_with_strides_padding" ]]; then echo "SKIP: $DATA is absent"; exit 77; fi
T="$(mktemp -d)"; trap 'rm -rf "$T"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BIN" --version | grep -q "^mlcapsule [0-9]" || fail "--version"
"$BIN" --help | grep -q "conformance" || fail "--help lists commands"
"$BIN" bench --help | grep -q -- "--threads" || fail "bench --help"
"$BIN" >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "no subcommand must exit 2"
"$BIN" bench --bogus >/dev/null 2>&1; [[ $? -eq 2 ]] || fail "unknown option must exit 2"
M="$DATA/test_conv_with_strides_padding"
"$BIN" compile "$M/model.onnx" -o "$T/conv.plan" | grep -q "compiled" || fail "compile"
"$BIN" compile "$M/model.onnx" -o "$T/conv2.plan" --json >"$T/compile.json" || fail "compile --json"
/usr/bin/python3 -c "import json,os; d=json.load(open('$T/compile.json')); assert d['plan_file']=='$T/conv2.plan' and d['plan_bytes']==os.path.getsize('$T/conv2.plan') and d['opset']>0 and d['onnx_nodes']>=1 and d['plan_nodes']>=1 and 'weight_bytes' in d, d" || fail "compile JSON: $(cat "$T/compile.json")"
# W is a graph input here, so infer takes both inputs. The .onnx (compiled in-process) and the
# compiled .plan run the same plan, so their outputs must be the same bytes, in either format.
IN=(-i "$M/test_data_set_0/input_0.pb" -i "$M/test_data_set_0/input_1.pb")
"$BIN" infer "$T/conv.plan" "${IN[@]}" -o "$T/plan_out.npy" >/dev/null || fail "infer plan -> npy"
"$BIN" infer "$M/model.onnx" "${IN[@]}" -o "$T/out.npy" >/dev/null || fail "infer onnx -> npy"
cmp -s "$T/plan_out.npy" "$T/out.npy" || fail "plan and onnx outputs differ"
"$BIN" infer "$M/model.onnx" "${IN[@]}" -o "$T/out.pb" >/dev/null || fail "infer onnx -> pb"
"$BIN" infer "$T/conv.plan" "${IN[@]}" -o "$T/plan_out.pb" >/dev/null || fail "infer plan -> pb"
cmp -s "$T/plan_out.pb" "$T/out.pb" || fail "plan and onnx .pb outputs differ"
"$BIN" infer "$M/model.onnx" -i "$T/out.npy" >/dev/null 2>&1; [[ $? -ne 0 ]] || fail "wrong input count must fail"
head -c 100 "$M/model.onnx" > "$T/trunc.onnx"
"$BIN" compile "$T/trunc.onnx" -o "$T/x.plan" 2>"$T/err"; s=$?
[[ $s -eq 1 ]] || fail "truncated model must exit 1 (got $s)"
grep -q "error" "$T/err" || fail "truncated model error message"
head -c 200 "$T/conv.plan" > "$T/trunc.plan"
"$BIN" infer "$T/trunc.plan" -i "$M/test_data_set_0/input_0.pb" -i "$M/test_data_set_0/input_1.pb" 2>"$T/err"; [[ $? -eq 1 ]] || fail "truncated plan must exit 1"
grep -q "truncated" "$T/err" || fail "truncated plan message: $(cat "$T/err")"
U="$DATA/test_lstm_defaults/model.onnx"
if [[ -f "$U" ]]; then
  "$BIN" compile "$U" -o "$T/u.plan" 2>"$T/err"; [[ $? -eq 3 ]] || fail "unsupported op must exit 3"
  grep -q "LSTM" "$T/err" || fail "unsupported op message names the op"
fi
G="$DATA/test_gemm_default_single_elem_vector_bias"
J="$("$BIN" bench "$G/model.onnx" --batch 1 --threads 1 --iters 3 --warmup 1)" || fail "bench"
for k in engine model batch threads median_ms p10_ms p90_ms throughput_per_s; do
  echo "$J" | grep -q "\"$k\"" || fail "bench JSON lacks $k: $J"
done
# conformance: the text contract, and --json (one object with counts and reasons).
"$BIN" conformance "$M" "$G" >"$T/conf.txt" 2>/dev/null || fail "conformance on passing tests"
[[ "$(tail -1 "$T/conf.txt")" == "conformance: 2 passed, 0 failed, 0 skipped" ]] || fail "conformance summary line: $(cat "$T/conf.txt")"
"$BIN" conformance "$M" "$G" --json >"$T/conf.json" 2>/dev/null || fail "conformance --json"
/usr/bin/python3 -c "import json; d=json.load(open('$T/conf.json')); assert (d['tests'],d['passed'],d['failed'],d['skipped'])==(2,2,0,0) and d['failures']==[] and d['skips']==[] and 'seconds' in d, d" || fail "conformance JSON: $(cat "$T/conf.json")"
cp -r "$M" "$T/bad"; cp "$G/test_data_set_0/output_0.pb" "$T/bad/test_data_set_0/output_0.pb"
"$BIN" conformance "$T/bad" --json >"$T/conf.json" 2>/dev/null; [[ $? -eq 1 ]] || fail "conformance --json with a failure must exit 1"
/usr/bin/python3 -c "import json; d=json.load(open('$T/conf.json')); assert d['failed']==1 and d['failures'][0]['name']=='bad' and 'shape' in d['failures'][0]['reason'], d" || fail "conformance JSON failure: $(cat "$T/conf.json")"
if [[ -f "$U" ]]; then
  "$BIN" conformance "$(dirname "$U")" --json >"$T/conf.json" 2>/dev/null || fail "conformance --json with a skip"
  /usr/bin/python3 -c "import json; d=json.load(open('$T/conf.json')); assert d['skipped']==1 and d['skips'][0]['name']=='test_lstm_defaults' and 'LSTM' in d['skips'][0]['reason'], d" || fail "conformance JSON skip: $(cat "$T/conf.json")"
fi
echo "cli contract: all checks passed"
