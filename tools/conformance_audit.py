#!/usr/bin/python3
"""Audit `mlcapsule conformance` output against the operator list of issue 2.

Reads the conformance output (stdin or a file), loads each skipped test's model with Debian's
python3-onnx, and reports every skipped test whose operators are all in the required list but
whose skip reason is not an element type. Exit status 1 when there is such a test.

  build/mlcapsule conformance /usr/share/libonnx-testdata/data/node | tools/conformance_audit.py
"""
import re
import sys

import onnx

REQUIRED = set("""Conv Gemm MatMul Add Sub Mul Div Relu Clip Sigmoid HardSigmoid HardSwish Tanh LeakyRelu
Softmax LogSoftmax MaxPool AveragePool GlobalAveragePool GlobalMaxPool BatchNormalization Concat
Flatten Reshape Transpose Squeeze Unsqueeze Shape Gather Slice Cast Constant ConstantOfShape
ReduceMean Pad Identity Dropout Split""".split())
ROOT = "/usr/share/libonnx-testdata/data/node"


def main():
    text = open(sys.argv[1]).read() if len(sys.argv) > 1 else sys.stdin.read()
    bad = 0
    for line in text.splitlines():
        m = re.match(r"(SKIP|FAIL) (\S+): (.*)", line)
        if not m:
            continue
        kind, name, reason = m.groups()
        model = onnx.load(f"{ROOT}/{name}/model.onnx", load_external_data=False)
        ops = {n.op_type for n in model.graph.node}
        if not ops <= REQUIRED:
            continue
        if kind == "SKIP" and "element type" in reason:
            continue
        bad += 1
        print(f"{kind} {name} (ops {sorted(ops)}): {reason}")
    print(f"audit: {bad} tests with only required operators are not passing for a reason other than an element type")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
