#!/usr/bin/python3
"""Model definitions shared by tools/export_zoo.py and bench/torch_bench.py.

Run with Debian's interpreter (/usr/bin/python3: torch 1.13.1, torchvision 0.14.1).

Every model is built deterministically: torch.manual_seed(0) right before construction, then
(for models with BatchNorm) non-trivial affine parameters and running statistics, so that an
engine's Conv+BatchNorm folding is really exercised. build_model(name) always returns the same
weights, in eval mode, in float32.
"""

import zlib

import torch
import torch.nn as nn

MODEL_SEED = 0

# name -> per-sample input shape (C, H, W)
INPUT_SHAPES = {
    "lenet": (1, 28, 28),
    "mlp": (1, 28, 28),
    "resnet18": (3, 224, 224),
    "mobilenet_v2": (3, 224, 224),
    "squeezenet1_1": (3, 224, 224),
}
MODEL_NAMES = list(INPUT_SHAPES)

# batch sizes of the reference test sets: test_data_set_0 is always batch 1,
# test_data_set_1 checks the dynamic batch axis.
SECOND_BATCH = {"lenet": 3, "mlp": 3, "resnet18": 2, "mobilenet_v2": 2, "squeezenet1_1": 2}


class LeNet(nn.Module):
    """LeNet-5 style CNN for 1x28x28 inputs."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, padding=2)   # 6x28x28 -> pool -> 6x14x14
        self.conv2 = nn.Conv2d(6, 16, 5)             # 16x10x10 -> pool -> 16x5x5
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


class MLP(nn.Module):
    """784 -> 256 -> 128 -> 10 with ReLU; takes [N,1,28,28] and flattens inside."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 256)
        self.fc2 = nn.Linear(256, 128)
        self.fc3 = nn.Linear(128, 10)

    def forward(self, x):
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def _randomize_batchnorm(model, input_shape, calib_batches=2, calib_batch=4):
    """Gives every BatchNorm non-trivial gamma/beta and running statistics.

    gamma ~ U(0.5, 1.5), beta ~ N(0, 0.1); then the running mean/var are recomputed as an exact
    cumulative average (momentum=None) over a few train-mode forward passes on random data, so they
    match the activations (outputs stay well scaled) and are far from the default 0/1.
    Uses the global torch RNG, which the caller has seeded.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    with torch.no_grad():
        for bn in bns:
            if bn.affine:
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.normal_(0.0, 0.1)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative moving average
        model.train()
        for _ in range(calib_batches):
            model(torch.randn(calib_batch, *input_shape))
        for bn in bns:
            bn.momentum = 0.1
            bn.num_batches_tracked.zero_()
    model.eval()


def build_model(name):
    """Returns the zoo model `name` in eval mode (deterministic weights)."""
    if name not in INPUT_SHAPES:
        raise ValueError("unknown model '%s' (known: %s)" % (name, ", ".join(MODEL_NAMES)))
    torch.manual_seed(MODEL_SEED)
    if name == "lenet":
        model = LeNet()
    elif name == "mlp":
        model = MLP()
    else:
        import torchvision
        ctor = getattr(torchvision.models, name)
        model = ctor(weights=None)
        _randomize_batchnorm(model, INPUT_SHAPES[name])
    model = model.float().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def reference_input(name, batch, set_index):
    """Deterministic random-normal float32 input of shape [batch, C, H, W]."""
    seed = (zlib.crc32(name.encode()) + 7919 * set_index) & 0x7FFFFFFF
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *INPUT_SHAPES[name], generator=gen, dtype=torch.float32)


def model_name_from_path(arg):
    """Maps a zoo directory name, a zoo directory or a .../<name>/model.onnx path to a zoo model
    name. Strips the _opset13/_opset17 suffix that export_zoo.py --both-opsets adds."""
    import os
    import re
    a = arg.rstrip("/")
    if a.endswith(".onnx"):
        a = os.path.dirname(os.path.abspath(a))
    base = os.path.basename(a)
    base = re.sub(r"_opset\d+$", "", base)
    if base not in INPUT_SHAPES:
        raise ValueError("cannot derive a zoo model name from '%s' (got '%s'; known: %s)"
                         % (arg, base, ", ".join(MODEL_NAMES)))
    return base
