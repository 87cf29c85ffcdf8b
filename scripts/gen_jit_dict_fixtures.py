"""TorchScript fixtures for the dict-reading tests of `distill::jit` (tests/integrity/jit.rs),
written to tests/data/jit/.

Scripted modules whose dict outputs TorchScript writes in ways a literal does not show: keys of 34
characters or more hoisted into variables (`_0 = "features_denseblock4_…"`, as DenseNet's fx node names
are), a dict filled by `d["b"] = …` (`torch._set_item`), and one filled by `d.update(…)`
(`torch.update`). Each output is an exact function of the input (x * 2, x + 1, x), so the Rust tests
check the values without a reference file.

Run with torch importable: `python3 scripts/gen_jit_dict_fixtures.py`.
"""
import os

import torch
from torch import nn

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "jit")


class LongKeys(nn.Module):
    def forward(self, x):
        return {
            "features_denseblock4_denselayer16_conv2": x * 2,
            "logits": x + 1,
            "features_denseblock4_denselayer15_conv2": x,
        }


class SetItem(nn.Module):
    def forward(self, x):
        d = {"a": x * 2}
        d["b"] = x + 1
        return d


class Update(nn.Module):
    def forward(self, x):
        d = {"a": x * 2}
        d.update({"c": x})
        return d


def main():
    os.makedirs(OUT, exist_ok=True)
    for name, module in [("long_keys", LongKeys()), ("set_item", SetItem()), ("update", Update())]:
        torch.jit.script(module).save(os.path.join(OUT, f"{name}.pt"))
    print(f"wrote long_keys.pt, set_item.pt and update.pt to {os.path.normpath(OUT)}")


if __name__ == "__main__":
    main()
