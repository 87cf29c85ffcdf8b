"""TorchScript fixtures for the `distill::jit` tests (tests/jit.rs), written to tests/data/jit/.

Four exports of one tiny CNN — a dict of named features made by torchvision's
create_feature_extractor and traced with strict=False (how a PyTorch teacher is exported for
distill), a traced tuple, a traced single tensor, and a scripted single tensor — plus the outputs each
returns on a fixed input (`expected.json`), so the Rust tests compare against PyTorch without running
Python. Tracing freezes the mode a module was traced in (its batch norms stay in evaluation mode);
a scripted module follows train()/eval(), so its outputs are stored for both modes.

Run with `scripts/dev refs` (which sets up torch and torchvision), or by hand with both importable.
"""
import json
import os

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "jit")


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 3)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.conv2(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Pair(nn.Module):
    """Returns (features after block 1, logits) as a tuple."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        h = torch.relu(self.net.bn1(self.net.conv1(x)))
        logits = self.net.fc(torch.flatten(self.net.pool(torch.relu(self.net.conv2(h))), 1))
        return h, logits


def values(t):
    return {"shape": list(t.shape), "data": [float(v) for v in t.detach().flatten()]}


def main():
    torch.manual_seed(0)
    net = TinyNet()
    with torch.no_grad():  # running statistics that make eval and train mode differ
        net.bn1.running_mean.uniform_(-0.5, 0.5)
        net.bn1.running_var.uniform_(0.5, 2.0)
    net.eval()
    x = torch.randn(4, 1, 8, 8)

    features = create_feature_extractor(net, {"bn1": "block1", "conv2": "conv2", "fc": "logits"})
    exports = {
        "features": torch.jit.trace(features, x, strict=False),
        "tuple": torch.jit.trace(Pair(net), x),
        "tensor": torch.jit.trace(net, x),
        "scripted": torch.jit.script(net),
    }
    os.makedirs(OUT, exist_ok=True)
    expected = {"input": values(x)}
    for name, module in exports.items():
        module.save(os.path.join(OUT, f"{name}.pt"))
        for mode in ("eval", "train") if name == "scripted" else ("eval",):
            module.train(mode == "train")
            with torch.no_grad():
                out = module(x)
            if isinstance(out, dict):
                out = {k: values(v) for k, v in out.items()}
            elif isinstance(out, tuple):
                out = {str(i): values(v) for i, v in enumerate(out)}
            else:
                out = {"": values(out)}
            expected[f"{name}/{mode}"] = out
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f)
    print(f"wrote {len(exports)} modules and expected.json to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
