#!/usr/bin/env bash
# Exports the zoo with Debian's PyTorch, opsets 13 and 17 (skipped when torch is absent).
set -euo pipefail
SCRIPT="$1"; OUT="$2"
if ! /usr/bin/python3 -c "import torch, torchvision, onnx" 2>/dev/null; then
  echo "SKIP: python3-torch/python3-torchvision/python3-onnx are not installed"; exit 77
fi
/usr/bin/python3 "$SCRIPT" --out "$OUT" --both-opsets --check
