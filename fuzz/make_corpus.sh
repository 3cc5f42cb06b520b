#!/usr/bin/env bash
# Builds the seed corpora of the fuzz targets from the repository's inputs:
#   OUT/onnx_compile/    small ONNX models from the ONNX node tests
#   OUT/plan_loader/     the plans `mlcapsule compile` makes of them (default and --no-channels-last)
#   OUT/tensor_parsers/  their test-data TensorProtos (.pb) and .npy outputs from `mlcapsule infer`
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

mkdir -p "$out/onnx_compile" "$out/plan_loader" "$out/tensor_parsers"
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
for target in onnx_compile plan_loader tensor_parsers; do
  echo "$target: $(find "$out/$target" -type f | wc -l) seeds"
done
