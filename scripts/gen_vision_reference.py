#!/usr/bin/env python3
"""Generates tests/data/vision/: torchvision 0.28 reference outputs for `distill::vision`.

Run with `scripts/dev vision-refs` (it installs torchvision 0.28.0 beside the cached torch 2.13.0 once,
see scripts/torchvision.sh). Tests read the files below and never need Python.

No weights are stored. Every parameter, buffer and input is filled from a closed formula over its flat
index, seeded by its name, that tests/vision_weights/mod.rs computes bit for bit the same way:

    seed(name)  = FNV-1a 64 of the name's UTF-8 bytes
    u(name, i)  = (SplitMix64 output number i of a generator whose state starts at seed(name)) >> 40,
                  divided by 2^24 (an exact f64 in [0, 1))
    value       = f32(lo + (hi - lo) * u), computed in f64, with (lo, hi) chosen by the name:
                  `running_mean`, `bias`: (-0.1, 0.1); `running_var`: (0.5, 1.5); a 1-d `weight`
                  (batch norm): (0.5, 1.5); a conv or linear weight: ±sqrt(3 / fan_in) (variance
                  1 / fan_in), fan_in = the product of the shape after dimension 0;
                  the input (name `input`): (-1, 1).
`num_batches_tracked` keeps torchvision's 0 (it does not enter the forward: momentum is 0.1).

For each model variant, tests/data/vision/<variant>.safetensors holds
    eval.logits                       the output in eval mode;
    train.logits                      the output of the next forward, in train mode (batch statistics);
    train.<bn>.running_mean / _var    every batch norm's running statistics after that train forward;
and tests/data/vision/models.json the variant's configuration, input shape, the sum of all its float
parameters and buffers (a check of the fill formula alone), the paths of its modules
(`named_modules()`), and its state_dict keys with their dtypes and shapes, in order (what
`safetensors.torch.save_file(model.state_dict(), path)` writes).
"""

import json
import os

import numpy as np
import torch
import torchvision
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "vision")

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(name):
    h = 0xCBF29CE484222325
    for byte in name.encode("utf-8"):
        h = ((h ^ byte) * 0x100000001B3) & MASK
    return h


def uniform01(name, n):
    """The first n outputs of SplitMix64 seeded with fnv1a64(name), as exact f64 in [0, 1)."""
    with np.errstate(over="ignore"):
        state = np.uint64(fnv1a64(name)) + (np.arange(n, dtype=np.uint64) + np.uint64(1)) * np.uint64(GOLDEN)
        z = (state ^ (state >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def bounds(name, shape):
    if name == "input":
        return -1.0, 1.0
    if name.endswith("running_mean") or name.endswith("bias"):
        return -0.1, 0.1
    if name.endswith("running_var"):
        return 0.5, 1.5
    if name.endswith("weight") and len(shape) == 1:
        return 0.5, 1.5
    if name.endswith("weight"):
        fan_in = int(np.prod(shape[1:]))
        bound = (3.0 / fan_in) ** 0.5
        return -bound, bound
    raise ValueError(f"no fill rule for {name}")


def filled(name, shape):
    lo, hi = bounds(name, shape)
    n = int(np.prod(shape)) if len(shape) else 1
    values = (lo + (hi - lo) * uniform01(name, n)).astype(np.float32)
    return torch.from_numpy(values).reshape(shape)


def fill(model):
    total = 0.0
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            tensor.copy_(filled(name, list(tensor.shape)))
            total += tensor.double().sum().item()
    return total


# ---------------------------------------------------------------------------------------------
# The variants: torchvision constructors, and the small-input changes `distill::vision` offers.
# ---------------------------------------------------------------------------------------------


def resnet_small_input(model, in_channels):
    """A 3×3 stride-1 conv1 with `in_channels` inputs and no max pool (for 28×28 / 32×32 inputs)."""
    model.conv1 = torch.nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def mobilenet_small_input(model, in_channels):
    """A stride-1 stem conv with `in_channels` inputs (for 28×28 / 32×32 inputs)."""
    stem = model.features[0][0]
    model.features[0][0] = torch.nn.Conv2d(
        in_channels, stem.out_channels, kernel_size=3, stride=1, padding=1, bias=False
    )
    return model


M = torchvision.models
VARIANTS = {
    "resnet18": (lambda: M.resnet18(num_classes=10), [2, 3, 64, 64], {"arch": "resnet18"}),
    "resnet34": (lambda: M.resnet34(num_classes=10), [2, 3, 64, 64], {"arch": "resnet34"}),
    "resnet50": (lambda: M.resnet50(num_classes=10), [2, 3, 64, 64], {"arch": "resnet50"}),
    "resnet18_small": (
        lambda: resnet_small_input(M.resnet18(num_classes=10), 1),
        [2, 1, 28, 28],
        {"arch": "resnet18", "in_channels": 1, "small_input": True},
    ),
    # Dropout 0 so that train mode is deterministic; eval mode ignores dropout anyway.
    "mobilenet_v2": (lambda: M.mobilenet_v2(num_classes=10, dropout=0.0), [2, 3, 64, 64], {"arch": "mobilenet_v2"}),
    "mobilenet_v2_small": (
        lambda: mobilenet_small_input(M.mobilenet_v2(num_classes=10, width_mult=0.5, dropout=0.0), 1),
        [2, 1, 32, 32],
        {"arch": "mobilenet_v2", "in_channels": 1, "small_input": True, "width_mult": 0.5},
    ),
}


def batch_norms(model):
    return [(name, m) for name, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]


def generate(name, build, input_shape, config):
    torch.manual_seed(0)
    model = build()
    param_sum = fill(model)
    state_dict = [[key, str(t.dtype).removeprefix("torch."), list(t.shape)] for key, t in model.state_dict().items()]
    xs = filled("input", input_shape)

    out = {}
    with torch.no_grad():
        model.eval()
        out["eval.logits"] = model(xs)
        model.train()
        out["train.logits"] = model(xs)
    for bn_name, bn in batch_norms(model):
        out[f"train.{bn_name}.running_mean"] = bn.running_mean
        out[f"train.{bn_name}.running_var"] = bn.running_var
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, f"{name}.safetensors"))
    print(f"{name}: {len(state_dict)} keys, eval logits |max| {out['eval.logits'].abs().max().item():.4f}")
    return {
        "config": {"num_classes": 10, **config},
        "input": input_shape,
        "param_sum": param_sum,
        "modules": [name for name, _ in model.named_modules() if name],
        "state_dict": state_dict,
    }


def main():
    assert torch.__version__.startswith("2.13."), torch.__version__
    assert torchvision.__version__.startswith("0.28."), torchvision.__version__
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    models = {name: generate(name, *spec) for name, spec in VARIANTS.items()}
    with open(os.path.join(OUT, "models.json"), "w") as f:
        f.write(models_json(models))


def models_json(models):
    """models.json with one state_dict entry per line (readable diffs, a third of the indented size)."""
    lines = [f'{{"torch": {json.dumps(torch.__version__)}, "torchvision": {json.dumps(torchvision.__version__)},']
    lines.append(' "models": {')
    for i, (name, model) in enumerate(models.items()):
        head = {k: v for k, v in model.items() if k not in ("modules", "state_dict")}
        lines.append(f"  {json.dumps(name)}: {json.dumps(head)[:-1]},")
        lines.append(f"   \"modules\": {json.dumps(model['modules'])},")
        lines.append('   "state_dict": [')
        entries = [f"   {json.dumps(entry)}" for entry in model["state_dict"]]
        lines.append(",\n".join(entries))
        lines.append("  ]}" + ("," if i + 1 < len(models) else ""))
    lines.append(" }")
    lines.append("}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
