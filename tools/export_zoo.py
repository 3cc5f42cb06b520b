#!/usr/bin/python3
"""Exports MLCapsule's test model zoo to ONNX, in the ONNX test-data layout.

Needs Debian's interpreter: run as `/usr/bin/python3 tools/export_zoo.py` (or ./tools/export_zoo.py);
the `python3` on PATH may lack torch/torchvision/onnx.

For every model NAME it writes
    OUT/NAME/model.onnx
    OUT/NAME/test_data_set_0/input_0.pb, output_0.pb   batch 1
    OUT/NAME/test_data_set_1/input_0.pb, output_0.pb   batch 3 (lenet, mlp) or 2 (224x224 models)
and OUT/manifest.json. Inputs are seeded random normals, outputs are PyTorch's (eval mode, float32).
Each model has input 'input' and output 'output' with a dynamic batch axis.

BatchNormalization: by default the exported graphs KEEP their BatchNormalization nodes (PyTorch's
own export-time Conv+BN fusion is switched off) so that the engine's folding is exercised;
--fold-bn leaves PyTorch's fusion on. The BN layers have non-trivial gamma/beta/running stats.

Everything is seeded: two runs produce byte-identical files.
"""

import argparse
import contextlib
import hashlib
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

try:
    import torch
    import onnx
    from onnx import numpy_helper
except ImportError as e:  # pragma: no cover
    sys.exit("export_zoo.py: %s\nRun it with Debian's interpreter: /usr/bin/python3 %s"
             % (e, os.path.relpath(__file__)))

import zoo_models  # noqa: E402


@contextlib.contextmanager
def _keep_batchnorm(enabled):
    """Disables torch.onnx's eval-mode peephole pass, whose only job in torch 1.13 is fusing
    Conv+BatchNormalization, so BatchNormalization nodes survive into the ONNX graph."""
    if not enabled:
        yield
        return
    orig = torch._C._jit_pass_onnx_eval_peephole
    torch._C._jit_pass_onnx_eval_peephole = lambda graph, params_dict: params_dict
    try:
        yield
    finally:
        torch._C._jit_pass_onnx_eval_peephole = orig


def _write_tensor(path, array, name):
    t = numpy_helper.from_array(array, name=name)
    with open(path, "wb") as f:
        f.write(t.SerializeToString())


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_one(name, out_dir, dir_name, opset, fold_bn, check):
    t0 = time.time()
    model = zoo_models.build_model(name)
    d = os.path.join(out_dir, dir_name)
    os.makedirs(d, exist_ok=True)
    model_path = os.path.join(d, "model.onnx")

    sets = [(0, 1), (1, zoo_models.SECOND_BATCH[name])]
    x0 = zoo_models.reference_input(name, 1, 0)
    with _keep_batchnorm(not fold_bn), torch.no_grad():
        torch.onnx.export(
            model, x0, model_path,
            input_names=["input"], output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            opset_version=opset, do_constant_folding=True,
            training=torch.onnx.TrainingMode.EVAL,
        )
    t_export = time.time() - t0

    shapes = {}
    with torch.inference_mode():
        for idx, batch in sets:
            x = zoo_models.reference_input(name, batch, idx)
            y = model(x)
            sd = os.path.join(d, "test_data_set_%d" % idx)
            os.makedirs(sd, exist_ok=True)
            _write_tensor(os.path.join(sd, "input_0.pb"), x.numpy(), "input")
            _write_tensor(os.path.join(sd, "output_0.pb"), y.numpy(), "output")
            shapes["test_data_set_%d" % idx] = {"input": list(x.shape), "output": list(y.shape)}

    m = onnx.load(model_path)
    ops = {}
    for n in m.graph.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    status = ""
    if check:
        onnx.checker.check_model(m, full_check=True)
        status = ", onnx.checker OK"
    size = os.path.getsize(model_path)
    print("  %-22s opset %d  %7.1f KiB  %3d nodes  export %.1fs, total %.1fs%s"
          % (dir_name, opset, size / 1024.0, len(m.graph.node), t_export, time.time() - t0, status),
          flush=True)
    return {
        "name": dir_name,
        "model": name,
        "opset": opset,
        "batchnorm_folded_by_torch": bool(fold_bn),
        "input_shape": ["batch"] + list(zoo_models.INPUT_SHAPES[name]),
        "test_sets": shapes,
        "ops": dict(sorted(ops.items())),
        "model_sha256": _sha256(model_path),
    }


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Export the MLCapsule model zoo (ONNX + reference test data). "
                    "Run with /usr/bin/python3.")
    p.add_argument("--out", default="zoo", metavar="DIR", help="output directory (default: zoo)")
    p.add_argument("--models", default=",".join(zoo_models.MODEL_NAMES), metavar="a,b,c",
                   help="comma-separated subset of: %s (default: all)"
                        % ",".join(zoo_models.MODEL_NAMES))
    p.add_argument("--opset", type=int, default=13, choices=[13, 17],
                   help="ONNX opset (default: 13)")
    p.add_argument("--both-opsets", action="store_true",
                   help="export opsets 13 and 17, into NAME_opset13/ and NAME_opset17/")
    p.add_argument("--fold-bn", action="store_true",
                   help="let torch.onnx fuse Conv+BatchNormalization at export "
                        "(default: keep BatchNormalization nodes)")
    p.add_argument("--check", action="store_true",
                   help="verify each exported model with onnx.checker (full check)")
    args = p.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in zoo_models.INPUT_SHAPES]
    if unknown or not models:
        p.error("unknown model(s): %s (known: %s)"
                % (", ".join(unknown) or "<none given>", ", ".join(zoo_models.MODEL_NAMES)))

    opsets = [13, 17] if args.both_opsets else [args.opset]
    os.makedirs(args.out, exist_ok=True)
    print("exporting %d model(s) x opset %s to %s/ (torch %s, onnx %s, %d thread(s))"
          % (len(models), "/".join(map(str, opsets)), args.out, torch.__version__,
             onnx.__version__, torch.get_num_threads()), flush=True)
    t0 = time.time()

    manifest_path = os.path.join(args.out, "manifest.json")
    manifest = {}
    if os.path.exists(manifest_path):
        try:
            with open(manifest_path) as f:
                manifest = {e["name"]: e for e in json.load(f).get("models", [])}
        except (ValueError, KeyError, TypeError):
            manifest = {}

    for name in models:
        for opset in opsets:
            dir_name = name + ("_opset%d" % opset if args.both_opsets else "")
            try:
                manifest[dir_name] = export_one(name, args.out, dir_name, opset, args.fold_bn,
                                                args.check)
            except onnx.checker.ValidationError as e:
                sys.exit("export_zoo.py: %s: onnx.checker failed: %s" % (dir_name, e))

    with open(manifest_path, "w") as f:
        json.dump({"generator": "tools/export_zoo.py",
                   "torch": torch.__version__, "onnx": onnx.__version__,
                   "models": [manifest[k] for k in sorted(manifest)]}, f, indent=1)
        f.write("\n")
    print("done in %.1fs; manifest: %s" % (time.time() - t0, manifest_path), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
