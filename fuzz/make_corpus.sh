#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets from the repository's inputs:
#   OUT/onnx_compile/    small ONNX models from the ONNX node tests
#   OUT/plan_loader/     the plans `mlcapsule compile` makes of them (default and --no-channels-last)
#   OUT/tensor_parsers/  their test-data TensorProtos (.pb) and .npy outputs from `mlcapsule infer`
#   OUT/capsule_parsers/ hand-built, well-formed capsule, payload, sealed update, escrow record,
#                        lease, evidence request, usage report (version 2, with defense counters
#                        and an escrow blob) and tensor list (structure only: signatures are
#                        filler), plus a real capsule
#                        from `mlcapsule keygen` + `mlcapsule pack` when those succeed
#   OUT/evidence/        TEE evidence (see below); OUT/tpm_evidence/ TPM evidence and structures
# Usage: fuzz/make_corpus.sh OUT_DIR [MLCAPSULE_BINARY] [ONNX_NODE_TEST_DIR]
set -euo pipefail

out=${1:?usage: make_corpus.sh OUT_DIR [MLCAPSULE_BINARY] [ONNX_NODE_TEST_DIR]}
here=$(cd "$(dirname "$0")" && pwd)
mlcapsule=${2:-$here/../build/mlcapsule}
node_dir=${3:-/usr/share/libonnx-testdata/data/node}
models=(
  test_conv_with_strides_padding
  test_gemm_default_single_elem_vector_bias
  test_reshape_reordered_all_dims
  test_slice
  test_maxpool_2d_pads
  test_matmul_2d
  test_relu
  test_globalaveragepool
)

if [[ ! -x $mlcapsule ]]; then
  echo "make_corpus.sh: $mlcapsule is not an executable (build the mlcapsule CLI first)" >&2
  exit 1
fi
if [[ ! -d $node_dir ]]; then
  echo "make_corpus.sh: ONNX node tests not found at $node_dir (apt install libonnx-testdata)" >&2
  exit 1
fi

mkdir -p "$out/onnx_compile" "$out/plan_loader" "$out/tensor_parsers" "$out/capsule_parsers"
# The CLI may be built with ASan; its leak reports are not what this script is about.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
for model in "${models[@]}"; do
  dir=$node_dir/$model
  [[ -f $dir/model.onnx ]] || { echo "skip $model (not found)" >&2; continue; }
  cp "$dir/model.onnx" "$out/onnx_compile/$model.onnx"
  # Models with shape-parameter inputs (Reshape, Slice) compile only with those inputs bound; a
  # failure here just means one seed fewer.
  "$mlcapsule" compile "$dir/model.onnx" -o "$out/plan_loader/$model.plan" >/dev/null 2>&1 ||
    rm -f "$out/plan_loader/$model.plan"
  "$mlcapsule" compile --no-channels-last --no-optimize "$dir/model.onnx" \
    -o "$out/plan_loader/$model.nchw.plan" >/dev/null 2>&1 || rm -f "$out/plan_loader/$model.nchw.plan"
  inputs=()
  for pb in "$dir"/test_data_set_0/*.pb; do
    cp "$pb" "$out/tensor_parsers/$model.$(basename "$pb")"
    [[ $(basename "$pb") == input_* ]] && inputs+=("$pb")
  done
  if ((${#inputs[@]})); then
    "$mlcapsule" infer "$dir/model.onnx" -i "${inputs[@]}" -o "$out/tensor_parsers/$model.output_0.npy" \
      >/dev/null 2>&1 || rm -f "$out/tensor_parsers/$model.output_0.npy"
  fi
done

# ---- capsule_parsers: byte formats of docs/capsule-format.md, written as little-endian hex ----
le() {  # le WIDTH VALUE: VALUE as WIDTH little-endian bytes, in hex
  local hex result="" i
  hex=$(printf "%0$(($1 * 2))x" "$2")
  for ((i = ${#hex} - 2; i >= 0; i -= 2)); do result+=${hex:i:2}; done
  printf '%s' "$result"
}
fill() { local i; for ((i = 0; i < $2; i++)); do printf '%s' "$1"; done; }  # fill HEXBYTE COUNT
text() { printf '%s' "$1" | od -An -tx1 | tr -d ' \n'; }                  # raw bytes of a string
str() { le 4 "${#1}"; text "$1"; }                                          # length:u32 bytes
emit() { printf "$(printf '%s' "$1" | sed 's/../\\x&/g')" >"$2"; }          # hex -> file
seeds=$out/capsule_parsers

io() { str "$1"; le 1 1; le 1 2; le 8 1; le 1 1; le 8 10; le 1 0; }  # float32 [N,10]
header=$(fill 11 16)$(le 8 1700000000)$(fill 22 32)$(le 1 1)$(fill 22 32)$(str seed)$(str '{}')
header+=$(le 1 1)$(io x)$(le 1 1)$(io y)$(fill 33 32)$(le 8 100)$(le 4 4096)$(le 8 1)$(fill 44 24)
emit "$(text MLCAPSUL)$(le 4 2)$(le 4 $((${#header} / 2)))$header$(fill 5a 117)$(fill 00 64)" \
  "$seeds/capsule.bin"
# The decrypted payload (plan + membership plan + watermark key) and a core's sealed update.
emit "$(text MLCPAYL1)$(le 8 36)$(le 8 20)$(fill 77 32)$(fill 00 8)$(fill 5a 36)$(fill 00 28)$(fill 6b 20)" \
  "$seeds/payload.bin"
emit "$(le 4 10)$(fill 21 10)$(le 8 0)$(le 4 16)$(fill 43 16)" "$seeds/sealed_update.bin"
# An escrow record's plaintext: one float32 [1,4] input.
emit "$(text MLCESCRW)$(le 4 1)$(fill 12 16)$(le 8 7)$(le 4 10)$(le 4 3)$(le 2 1)$(le 1 1)$(le 1 2)$(le 8 1)$(le 8 4)$(fill 3f 16)" \
  "$seeds/escrow_record.bin"

usage=$(text MLCUSAGE)$(le 4 2)$(fill 12 16)$(str lic-1)$(fill 34 16)$(le 8 1)$(fill 56 32)
usage+=$(le 8 0)$(fill 00 32)$(le 8 5)$(fill 78 32)$(le 8 1700000000)$(le 2 1)
usage+=$(str prada)$(le 8 3)$(str 'distribution shift')
# defenses: observed 5, stored 3, last W 0.5 (f64 0x3fe0000000000000), alarmed, 1 watermarked,
# 1 escrowed, 0 dropped, 0 memguard, 0 rate-limited; one escrow blob of 49 bytes.
usage+=$(le 8 5)$(le 8 3)$(le 8 4602678819172646912)$(le 1 1)$(le 8 1)$(le 8 1)$(le 8 0)$(le 8 0)$(le 8 0)
usage+=$(le 2 1)$(le 4 49)$(fill 5e 49)$(fill 00 64)
emit "$usage" "$seeds/usage_report.bin"

evidence=$(text MLCSWEV1)$(fill 9a 32)$(fill bc 64)
request=$(text MLCEVREQ)$(le 4 1)$(fill 12 16)$(fill 01 32)$(fill 02 32)$(fill 03 32)$(le 1 1)
request+=$(le 4 $((${#evidence} / 2)))$evidence
emit "${request}$(le 1 0)" "$seeds/evidence_request.bin"
emit "${request}$(le 1 1)$(le 4 $((${#usage} / 2)))$usage" "$seeds/evidence_request_report.bin"

lease=$(text MLCLEASE)$(le 4 1)$(fill 12 16)$(str lic-1)$(fill 34 16)$(le 8 1)$(le 8 1700000000)
lease+=$(le 8 1700000000)$(le 8 1700086400)$(le 8 1000)$(le 8 0)$(fill 00 32)$(fill 02 32)
lease+=$(fill 03 32)$(fill 0e 80)$(fill 22 32)$(fill 00 64)
emit "$lease" "$seeds/lease.bin"

# float32 [2,3]: header to offset 36, zero pad to 64, 24 data bytes; then an int64 scalar whose
# header ends at 104, padded to 128.
list=$(le 4 2)$(le 1 1)$(le 1 2)$(fill 00 6)$(le 8 2)$(le 8 3)$(le 8 24)$(fill 00 28)$(fill 3f 24)
list+=$(le 1 7)$(le 1 0)$(fill 00 6)$(le 8 8)$(fill 00 24)$(le 8 42)
emit "$list" "$seeds/tensor_list.bin"

# A real capsule (4 KiB chunks, so a few of them) when the CLI can make one.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '{"version": 1, "tee": {"accept": ["software"]}}\n' >"$work/policy.json"
if "$mlcapsule" keygen --out "$work" --name provider >/dev/null 2>&1 &&
  "$mlcapsule" pack "$node_dir/test_conv_with_strides_padding/model.onnx" --key "$work/provider.key" \
    --policy "$work/policy.json" --chunk-kib 4 --out "$work/conv.capsule" >/dev/null 2>&1; then
  cp "$work/conv.capsule" "$seeds/conv.capsule"
else
  echo "skip packed capsule seed (mlcapsule keygen/pack failed)" >&2
fi

# ---- evidence: the first byte picks the type (0 sgx, 1 tdx, 2 snp blob, 3 snp report, 4 software,
# 5 patches of a valid synthetic SGX quote)
seeds=$out/evidence
mkdir -p "$seeds"
vectors=${MLCAPSULE_ATTEST_VECTORS:-$here/../../shared/attest-vectors}
if [[ -d $vectors ]]; then
  { printf '\x00'; cat "$vectors/dcap-qvl_sgx_quote.bin"; } >"$seeds/sgx_real"
  { printf '\x01'; cat "$vectors/dcap-qvl_tdx_quote_v4.bin"; } >"$seeds/tdx_real"
  { printf '\x03'; cat "$vectors/go-sev-guest_snp_attestation.bin"; } >"$seeds/snp_report"
else
  echo "skip the real evidence seeds ($vectors not found)" >&2
fi
printf '\x05\x00\x01\x00' >"$seeds/sgx_synthetic_patch"  # one patch of the synthetic quote
{ printf '\x04MLCSWEV1'; head -c 96 /dev/zero; } >"$seeds/software"

# ---- tpm_evidence: the first byte picks the case (0 container, 1 TPM structures, 2 patches of a
# valid synthetic evidence, 3 attest, 4 AK public, 5 signature); the TPM structures are a real AK
# public area, quote and signature from swtpm 0.7.1 (tee-backends-plan.md §4.2)
seeds=$out/tpm_evidence
mkdir -p "$seeds"
ak_public=0023000b00050072000000100018000b0003001000206558c54134141fd526a4a6f4da49799eac10b41302b9
ak_public+=17c159a8cc51cdba9b9900200cd3999a258c4abba8ea1d54b7a8c64b0b1e28b0b761908ccc318c41d93b3eb8
attest=ff54434780180022000b9581e488e4364ced9ce76df3ff831c57d57592b8bd74ca120d351b3fb1a24970002024
attest+=2b6c15460d9f2fa0f3e16bbc7f9bb4221b4bcb05f756a543bf9c0cf514b1a80000000000004cc6a954406e495b
attest+=f38601fd50d873138e5a3300000001000b030000800020cc2695b5ae7f0859491e2c54d2676328e3aa6928a283
attest+=11f819ab5662c8c498e9
signature=0018000b00209f7e84ddc91e9dbc7e0d192d1877e79f253f6ba0e1b0744909dbcd20cddf3bb10020f650dfe1
signature+=78a393be9fe8bfcf7d6a53abf85828c310addb77f957abac7db07954
emit "01$ak_public" "$seeds/ak_public"
emit "01$attest" "$seeds/attest"
emit "01$signature" "$seeds/signature"
emit "03$attest" "$seeds/attest_in_evidence"
emit "04$ak_public" "$seeds/ak_public_in_evidence"
emit "05$signature" "$seeds/signature_in_evidence"
emit "02" "$seeds/valid_synthetic"
blob() { le 4 $((${#1} / 2)); printf '%s' "$1"; }  # blob HEX: length:u32 LE + bytes
emit "00$(text MLCTPMEV)$(le 4 1)$(fill 00 96)$(blob 3000)$(le 1 0)$(blob "$ak_public")$(blob "$attest")$(blob "$signature")" \
  "$seeds/container"

for target in onnx_compile plan_loader tensor_parsers capsule_parsers evidence tpm_evidence; do
  echo "$target: $(find "$out/$target" -type f | wc -l) seeds"
done
