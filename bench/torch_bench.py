#!/usr/bin/python3
"""PyTorch (Debian's torch 1.13.1, CPU) latency benchmark for one zoo model.

Run with Debian's interpreter: /usr/bin/python3 bench/torch_bench.py MODEL [options].
MODEL is a zoo model name (lenet, mlp, resnet18, mobilenet_v2, squeezenet1_1), a zoo directory
(zoo/resnet18) or a zoo model path (zoo/resnet18/model.onnx; the name is the parent directory,
an _opsetNN suffix is ignored). The network is built by tools/zoo_models.py exactly as
tools/export_zoo.py builds it (same seeded weights); the .onnx file itself is not read.

Prints ONE JSON line on stdout with the same fields as bench/ort_bench.js.
"""

import argparse
import json
import os
import sys
import time

ENGINE = "pytorch-1.13.1"  # Debian's python3-torch 1.13.1 (torch.__version__ says 1.13.0a0)

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.join(os.path.dirname(HERE), "tools")


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time a zoo model's forward pass in PyTorch (eval, inference_mode, float32) "
                    "and print one JSON line. Run with /usr/bin/python3.")
    p.add_argument("model", metavar="MODEL",
                   help="zoo model name, zoo directory, or zoo .../NAME/model.onnx path")
    p.add_argument("--batch", type=int, default=1, metavar="B", help="batch size (default 1)")
    p.add_argument("--threads", type=int, default=1, metavar="T",
                   help="intra-op threads: torch.set_num_threads(T), also OMP_NUM_THREADS and "
                        "OPENBLAS_NUM_THREADS (default 1); inter-op threads are 1")
    p.add_argument("--iters", type=int, default=20, metavar="N", help="timed runs (default 20)")
    p.add_argument("--warmup", type=int, default=3, metavar="W",
                   help="untimed runs before timing (default 3)")
    p.add_argument("--input-shape", metavar="D0,D1,...",
                   help="input shape; D0 is replaced by B (default: the zoo model's shape)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    a = p.parse_args(argv)
    for name, v, lo in (("--batch", a.batch, 1), ("--threads", a.threads, 1),
                        ("--iters", a.iters, 1), ("--warmup", a.warmup, 0)):
        if v < lo:
            p.error("%s must be >= %d (got %d)" % (name, lo, v))
    if a.input_shape:
        try:
            dims = [int(d) for d in a.input_shape.split(",")]
            if not dims or any(d <= 0 for d in dims):
                raise ValueError
        except ValueError:
            p.error("--input-shape: bad shape '%s'" % a.input_shape)
        a.input_shape = dims
    return a


def quantile(sorted_vals, q):
    pos = (len(sorted_vals) - 1) * q
    lo, hi = int(pos), min(int(pos) + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def main(argv=None):
    a = parse_args(sys.argv[1:] if argv is None else argv)

    # A path that names a file or directory must exist; a bare name is a zoo model name.
    looks_like_path = os.sep in a.model or a.model.endswith(".onnx")
    if looks_like_path and not os.path.exists(a.model):
        sys.exit("torch_bench.py: not found: %s" % a.model)

    # Thread pools read these when torch (libgomp, OpenBLAS) loads: set them before the import.
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["OPENBLAS_NUM_THREADS"] = str(a.threads)
    try:
        import torch
    except ImportError as e:
        sys.exit("torch_bench.py: %s\nRun it with Debian's interpreter: /usr/bin/python3" % e)
    sys.path.insert(0, TOOLS)
    try:
        import zoo_models
    except ImportError as e:
        sys.exit("torch_bench.py: cannot import tools/zoo_models.py (%s)" % e)

    try:
        name = zoo_models.model_name_from_path(a.model)
    except ValueError as e:
        sys.exit("torch_bench.py: %s" % e)

    torch.set_num_threads(a.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set

    model = zoo_models.build_model(name)
    if a.input_shape:
        shape = list(a.input_shape)
        shape[0] = a.batch
    else:
        shape = [a.batch] + list(zoo_models.INPUT_SHAPES[name])
    gen = torch.Generator().manual_seed(a.seed)
    x = torch.randn(*shape, generator=gen, dtype=torch.float32)

    times = []
    with torch.inference_mode():
        try:
            for _ in range(a.warmup):
                model(x)
        except RuntimeError as e:
            sys.exit("torch_bench.py: forward pass failed for input %s: %s" % (shape, e))
        c0 = time.process_time()
        w0 = time.perf_counter_ns()
        for _ in range(a.iters):
            t0 = time.perf_counter_ns()
            model(x)
            t1 = time.perf_counter_ns()
            times.append((t1 - t0) / 1e6)
        wall = (time.perf_counter_ns() - w0) / 1e9
        cpu = time.process_time() - c0

    s = sorted(times)
    median = quantile(s, 0.5)
    r3 = lambda v: round(v, 3)  # noqa: E731
    result = {
        "engine": ENGINE,
        "model": name,
        "model_path": a.model,
        "batch": a.batch,
        "threads": a.threads,
        "iters": a.iters,
        "warmup": a.warmup,
        "input_shape": shape,
        "median_ms": r3(median),
        "p10_ms": r3(quantile(s, 0.1)),
        "p90_ms": r3(quantile(s, 0.9)),
        "mean_ms": r3(sum(times) / len(times)),
        "min_ms": r3(s[0]),
        "max_ms": r3(s[-1]),
        "throughput_per_s": r3(a.batch * 1000.0 / median),
        "cpu_per_wall": r3(cpu / wall) if wall > 0 else None,
        "loadavg1": r3(os.getloadavg()[0]),
        "torch_version": torch.__version__,
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
