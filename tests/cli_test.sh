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
echo "cli contract: all checks passed"
