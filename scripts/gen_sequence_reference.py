#!/usr/bin/env python3
"""Generates tests/data/sequence.json: reference values and student gradients for the token-level
sequence criteria (forward KL, reverse KL, generalised JSD, skew KL, skew reverse KL, total variation)
over logits [B, T, V] with masked reductions.

Run after `source scripts/libtorch.sh && source scripts/trl.sh` (trl.sh installs trl 1.16.0 beside
the cached torch). Tests never need Python.

- The generalised JSD comes from TRL's own `GKDTrainer.generalized_jsd_loss` (trl 1.16.0), in f64:
  with labels it is the mean over the tokens whose label is not -100 (`TokenReduction::Token`),
  without labels the sum divided by the batch size (`TokenReduction::Batch`).
- The other divergences are their textbook formulas in f64, written directly on probabilities (the
  Rust code works in log space): KL(p||q) = sum p (log p - log q); DistiLLM's skew KL
  KL(p || a p + (1 - a) q) and skew reverse KL KL(q || (1 - a) p + a q); total variation
  1/2 sum |p - q|; p = softmax(teacher / T), q = softmax(student / T).
- Reductions are written out here: token mean, per-sequence mean then mean over sequences with a
  valid token, sum over the batch size, sum.

Inputs are rounded to 4 decimals, so that both sides read the same f64 numbers.
"""

import json
import os

import torch

from trl.experimental.gkd import GKDTrainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "sequence.json")

torch.manual_seed(20261205)
D = torch.float64


def rounded(x):
    return torch.round(x * 1e4) / 1e4


def per_token(kind, params, s, t, temperature):
    p = torch.softmax(t / temperature, dim=-1)
    q = torch.softmax(s / temperature, dim=-1)

    def kl(a, b):
        return (a * (torch.log(a) - torch.log(b))).sum(-1)

    if kind == "ForwardKl":
        return kl(p, q)
    if kind == "ReverseKl":
        return kl(q, p)
    if kind == "SkewKl":
        a = params["alpha"]
        return kl(p, a * p + (1 - a) * q)
    if kind == "SkewReverseKl":
        a = params["alpha"]
        return kl(q, (1 - a) * p + a * q)
    if kind == "TotalVariation":
        return 0.5 * (p - q).abs().sum(-1)
    raise ValueError(kind)


def reduce(loss, valid, reduction):
    m = valid.to(D)
    if reduction == "token":
        return (loss * m).sum() / m.sum().clamp_min(1)
    if reduction == "sequence":
        n = m.sum(1, keepdim=True)
        sequences = (n > 0).to(D).sum().clamp_min(1)
        return ((loss * m) / n.clamp_min(1)).sum() / sequences
    if reduction == "batch":
        return (loss * m).sum() / loss.shape[0]
    if reduction == "sum":
        return (loss * m).sum()
    raise ValueError(reduction)


def tensor_spec(x):
    return {"shape": list(x.shape), "data": [float(v) for v in x.reshape(-1).tolist()]}


def case(name, kind, params, temperature, reduction, s, t, labels, use_labels):
    s = s.clone().requires_grad_(True)
    if kind == "Jsd":
        # TRL's function: with labels its batchmean is the token mean; without, sum / batch size.
        loss = GKDTrainer.generalized_jsd_loss(
            s, t, labels=labels if use_labels else None, beta=params["beta"], temperature=temperature
        )
        assert reduction == ("token" if use_labels else "batch")
    else:
        valid = labels != -100 if use_labels else torch.ones(labels.shape, dtype=torch.bool)
        loss = reduce(per_token(kind, params, s, t, temperature), valid, reduction)
    loss.backward()
    out = {
        "name": name,
        "divergence": kind,
        "params": params,
        "temperature": temperature,
        "reduction": reduction,
        "student": tensor_spec(s.detach()),
        "teacher": tensor_spec(t),
        "loss": float(loss.detach()),
        "grad": [float(v) for v in s.grad.reshape(-1).tolist()],
    }
    if use_labels:
        out["labels"] = {"shape": list(labels.shape), "data": [int(v) for v in labels.reshape(-1).tolist()]}
    return out


def inputs(b, t, v, scale):
    s = rounded(torch.randn(b, t, v, dtype=D) * scale)
    te = rounded(torch.randn(b, t, v, dtype=D) * scale)
    labels = torch.randint(0, v, (b, t))
    # Padding at the end of the first sequence, a prompt at the start of the second.
    labels[0, t - 2 :] = -100
    if b > 1:
        labels[1, :2] = -100
    return s, te, labels


def main():
    cases = []
    small = inputs(2, 5, 11, 3.0)
    wide = inputs(3, 4, 64, 2.0)
    # The TRL cross-check: its beta = 0 and beta = 1 equal the textbook forward and reverse KL.
    s, t, labels = small
    for beta, kind in ((0.0, "ForwardKl"), (1.0, "ReverseKl")):
        trl = GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=2.0)
        mine = reduce(per_token(kind, {}, s, t, 2.0), labels != -100, "token")
        assert abs(float(trl) - float(mine)) < 1e-12, (beta, float(trl), float(mine))

    for tag, (s, t, labels) in (("small", small), ("wide", wide)):
        for beta in (0.0, 0.1, 0.5, 0.9, 1.0):
            for temperature in (1.0, 2.0):
                cases.append(case(f"{tag}/jsd_{beta}_T{temperature}", "Jsd", {"beta": beta}, temperature, "token", s, t, labels, True))
            cases.append(case(f"{tag}/jsd_{beta}_nolabels", "Jsd", {"beta": beta}, 1.0, "batch", s, t, labels, False))
        for kind, params in (
            ("ForwardKl", {}),
            ("ReverseKl", {}),
            ("SkewKl", {"alpha": 0.1}),
            ("SkewKl", {"alpha": 0.5}),
            ("SkewReverseKl", {"alpha": 0.1}),
            ("SkewReverseKl", {"alpha": 0.7}),
            ("TotalVariation", {}),
        ):
            label = "_".join(f"{k}{v}" for k, v in params.items())
            for reduction in ("token", "sequence", "batch", "sum"):
                cases.append(case(f"{tag}/{kind}{label}_{reduction}", kind, params, 2.0, reduction, s, t, labels, True))
            cases.append(case(f"{tag}/{kind}{label}_all_tokens", kind, params, 1.0, "token", s, t, labels, False))

    with open(OUT, "w") as f:
        json.dump({"generator": "scripts/gen_sequence_reference.py", "torch": torch.__version__, "cases": cases}, f)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {OUT}")


if __name__ == "__main__":
    main()
