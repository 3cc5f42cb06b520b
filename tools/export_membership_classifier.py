#!/usr/bin/env python3
"""Writes an ONNX membership classifier of the shape MemGuard runs (float32 [N, C] confidences in,
[N, 1] member probability out): C -> 64 -> 64 -> 1 with ReLU and a sigmoid.

The weights are seeded random values, NOT a trained attack model: this file exists so benchmarks
and tests can pack a MemGuard capsule and measure its cost (which does not depend on the weight
values). `mlcapsule lab` trains the real defender's classifier on member/non-member confidences.

  /usr/bin/python3 tools/export_membership_classifier.py --classes 10 --out build/membership.onnx
"""
import argparse

import torch


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(args.classes, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 64), torch.nn.ReLU(),
        torch.nn.Linear(64, 1), torch.nn.Sigmoid()).eval()
    example = torch.softmax(torch.randn(1, args.classes), dim=1)
    torch.onnx.export(model, example, args.out, opset_version=13, input_names=["confidences"],
                      output_names=["member"], dynamic_axes={"confidences": {0: "batch"},
                                                             "member": {0: "batch"}})
    print(f"wrote {args.out} ({args.classes} classes -> member probability; untrained weights)")


if __name__ == "__main__":
    main()
