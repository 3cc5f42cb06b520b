#!/usr/bin/env bash
# The README's first command: set everything up, then run the main job. Until capsules exist
# (issue 3) the main job is: export real networks with PyTorch, compile them to plans, run them
# and check them against PyTorch's outputs, and time them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/install_deps.sh
scripts/build.sh
echo "== exporting lenet and resnet18 with PyTorch (tools/export_zoo.py)"
/usr/bin/python3 tools/export_zoo.py --out build/zoo --models lenet,resnet18
echo "== compiling resnet18 to a plan"
build/mlcapsule compile build/zoo/resnet18/model.onnx -o build/resnet18.plan
echo "== running the plan on PyTorch's reference input"
build/mlcapsule infer build/resnet18.plan -i build/zoo/resnet18/test_data_set_0/input_0.pb -o build/resnet18-output.npy
echo "== checking both models against PyTorch (max |diff| <= 1e-4 x output range), batch 1 and dynamic batch"
build/mlcapsule conformance build/zoo --range-tol 1e-4
echo "== timing resnet18 (batch 1, 1 thread)"
build/mlcapsule bench build/resnet18.plan --batch 1 --threads 1 --iters 20 --warmup 3
