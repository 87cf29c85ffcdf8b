#!/usr/bin/env python3
"""Generates tests/data/criteria.json: PyTorch reference values for the criterion catalogue.

Run with `scripts/dev refs` (or `python3 scripts/gen_reference.py` after `source scripts/libtorch.sh`).
Needs torch only (no numpy). Output is deterministic for a given torch version.

Each case holds the inputs (flat lists + shapes, values rounded to 4 decimals so that they are exactly
the same f64 numbers on both sides; the f32 inputs are those f64 values rounded to nearest), optional
class targets, an optional weight, and for both float64 and float32 the loss and the gradient of
`weight * loss` with respect to the student input.

The reference formulas below are written as the papers' official code writes them (RepDistiller,
mdistiller, DIST_KD), not as the Rust code computes them, so that the Rust reformulations are tested.

A second list, `dkd_half`, holds DKD on f16 and bf16 logits: mdistiller's function computed in that
precision, and exactly (see the section that builds it).
"""

import json
import os
import sys

import torch
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "criteria.json")


# ---------------------------------------------------------------------------------------------
# Reference formulas (PyTorch functions, or the official implementations of the papers).
# ---------------------------------------------------------------------------------------------


def mse(s, t):
    return F.mse_loss(s, t)


def l1(s, t):
    return F.l1_loss(s, t)


def smooth_l1(s, t, beta):
    return F.smooth_l1_loss(s, t, beta=beta)


def cosine(s, t):
    return (1 - F.cosine_similarity(s, t, dim=1, eps=1e-8)).mean()


def kl_div(s, t, temperature):
    T = temperature
    return T * T * F.kl_div(F.log_softmax(s / T, dim=1), F.softmax(t / T, dim=1), reduction="batchmean")


def soft_cross_entropy(s, t, temperature):
    T = temperature
    return T * T * (-(F.softmax(t / T, dim=1) * F.log_softmax(s / T, dim=1)).sum(1)).mean()


def attention_transfer(s, t, p):
    # RepDistiller distiller_zoo/AT.py (same spatial size, so no pooling).
    def at(f):
        return F.normalize(f.pow(p).mean(1).view(f.size(0), -1))

    return (at(s) - at(t)).pow(2).mean()


def similarity_preserving(s, t):
    # RepDistiller distiller_zoo/SP.py (returns shape (1,); we compare the scalar).
    bsz = s.shape[0]
    f_s = s.reshape(bsz, -1)
    f_t = t.reshape(bsz, -1)
    G_s = F.normalize(torch.mm(f_s, f_s.t()))
    G_t = F.normalize(torch.mm(f_t, f_t.t()))
    G_diff = G_t - G_s
    return ((G_diff * G_diff).view(-1, 1).sum(0) / (bsz * bsz)).squeeze(0)


def _pdist(e, eps=1e-12):
    e_square = e.pow(2).sum(dim=1)
    prod = e @ e.t()
    res = (e_square.unsqueeze(1) + e_square.unsqueeze(0) - 2 * prod).clamp(min=eps).sqrt()
    res = res.clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def rkd(s, t, distance_weight, angle_weight):
    # RepDistiller distiller_zoo/RKD.py (RKDLoss).
    student = s.reshape(s.shape[0], -1)
    teacher = t.reshape(t.shape[0], -1)
    with torch.no_grad():
        t_d = _pdist(teacher)
        t_d = t_d / t_d[t_d > 0].mean()
    d = _pdist(student)
    d = d / d[d > 0].mean()
    loss_d = F.smooth_l1_loss(d, t_d)
    with torch.no_grad():
        td = teacher.unsqueeze(0) - teacher.unsqueeze(1)
        norm_td = F.normalize(td, p=2, dim=2)
        t_angle = torch.bmm(norm_td, norm_td.transpose(1, 2)).view(-1)
    sd = student.unsqueeze(0) - student.unsqueeze(1)
    norm_sd = F.normalize(sd, p=2, dim=2)
    s_angle = torch.bmm(norm_sd, norm_sd.transpose(1, 2)).view(-1)
    loss_a = F.smooth_l1_loss(s_angle, t_angle)
    return distance_weight * loss_d + angle_weight * loss_a


def pkt(s, t, eps=1e-7):
    # RepDistiller distiller_zoo/PKT.py (cosine_similarity_loss), on features flattened to (N, -1).
    output_net = s.reshape(s.shape[0], -1)
    target_net = t.reshape(t.shape[0], -1)
    output_net = output_net / (torch.sqrt(torch.sum(output_net**2, dim=1, keepdim=True)) + eps)
    target_net = target_net / (torch.sqrt(torch.sum(target_net**2, dim=1, keepdim=True)) + eps)
    model_similarity = (torch.mm(output_net, output_net.t()) + 1.0) / 2.0
    target_similarity = (torch.mm(target_net, target_net.t()) + 1.0) / 2.0
    model_similarity = model_similarity / torch.sum(model_similarity, dim=1, keepdim=True)
    target_similarity = target_similarity / torch.sum(target_similarity, dim=1, keepdim=True)
    return torch.mean(target_similarity * torch.log((target_similarity + eps) / (model_similarity + eps)))


def dist(s, t, beta, gamma, tau):
    # DIST_KD (hunto/image_classification_sota lib/models/losses/dist_kd.py).
    def cosine_similarity(a, b, eps=1e-8):
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    def pearson_correlation(a, b, eps=1e-8):
        return cosine_similarity(a - a.mean(1).unsqueeze(1), b - b.mean(1).unsqueeze(1), eps)

    def inter_class_relation(y_s, y_t):
        return 1 - pearson_correlation(y_s, y_t).mean()

    def intra_class_relation(y_s, y_t):
        return inter_class_relation(y_s.transpose(0, 1), y_t.transpose(0, 1))

    y_s = (s / tau).softmax(dim=1)
    y_t = (t / tau).softmax(dim=1)
    inter_loss = tau**2 * inter_class_relation(y_s, y_t)
    intra_loss = tau**2 * intra_class_relation(y_s, y_t)
    return beta * inter_loss + gamma * intra_loss


def dkd(s, t, target, alpha, beta, temperature):
    # mdistiller mdistiller/distillers/DKD.py (dkd_loss); size_average=False is reduction="sum".
    target = target.reshape(-1)
    gt_mask = torch.zeros_like(s).scatter_(1, target.unsqueeze(1), 1).bool()
    other_mask = torch.ones_like(s).scatter_(1, target.unsqueeze(1), 0).bool()

    def cat_mask(x):
        return torch.cat([(x * gt_mask).sum(dim=1, keepdims=True), (x * other_mask).sum(1, keepdims=True)], dim=1)

    T = temperature
    pred_student = cat_mask(F.softmax(s / T, dim=1))
    pred_teacher = cat_mask(F.softmax(t / T, dim=1))
    tckd = F.kl_div(torch.log(pred_student), pred_teacher, reduction="sum") * (T**2) / target.shape[0]
    pred_teacher_part2 = F.softmax(t / T - 1000.0 * gt_mask, dim=1)
    log_pred_student_part2 = F.log_softmax(s / T - 1000.0 * gt_mask, dim=1)
    nckd = F.kl_div(log_pred_student_part2, pred_teacher_part2, reduction="sum") * (T**2) / target.shape[0]
    return alpha * tckd + beta * nckd


def top_k_encode(logits, k, temperature):
    # The packed teacher tensor (N, 2, k): top-k log-probabilities at T, then their class indices.
    values, indices = F.log_softmax(logits / temperature, dim=1).topk(k, dim=1)
    return torch.stack([values, indices.to(values.dtype)], dim=1)


def top_k_kl(s, packed, temperature):
    # KL over k + 1 buckets, written in probability space (the Rust side works in log space): the k
    # stored classes, and one bucket for the rest of the mass on each side.
    T = temperature
    values, idx = packed[:, 0, :], packed[:, 1, :].long()
    k, classes = idx.shape[1], s.shape[1]
    q = F.softmax(s / T, dim=1)
    p_buckets, q_buckets = values.exp(), q.gather(1, idx)
    if k < classes:
        rest = torch.ones_like(q, dtype=torch.bool).scatter(1, idx, False)
        q_other = (q * rest).sum(1, keepdim=True)
        p_other = (1 - p_buckets.sum(1, keepdim=True)).clamp(min=0)
        p_buckets = torch.cat([p_buckets, p_other], dim=1)
        q_buckets = torch.cat([q_buckets, q_other], dim=1)
    return T * T * F.kl_div(q_buckets.log(), p_buckets, reduction="sum") / s.shape[0]


# ---------------------------------------------------------------------------------------------
# Cases.
# ---------------------------------------------------------------------------------------------

GEN = torch.Generator().manual_seed(20240613)


def rand(shape, scale=1.0):
    x = torch.randn(shape, generator=GEN, dtype=torch.float64) * scale
    return torch.round(x * 1e4) / 1e4


def f32_list(x):
    return [float("%.9g" % v) for v in x.reshape(-1).tolist()]


def f64_list(x):
    return x.reshape(-1).tolist()


def run(fn, s, t, targets, params, weight, dtype):
    s = s.detach().to(dtype).clone().requires_grad_(True)
    t = t.to(dtype)
    args = (s, t) + ((targets,) if targets is not None else ()) + tuple(params.values())
    loss = fn(*args)
    if weight is not None:
        loss = loss * weight
    assert loss.dim() == 0, loss.shape
    loss.backward()
    conv = f64_list if dtype == torch.float64 else f32_list
    value = loss.item()
    return {"loss": value if dtype == torch.float64 else float("%.9g" % value), "grad": conv(s.grad)}


CASES = []


def case(name, criterion, fn, s_shape, t_shape=None, params=None, weight=None, scale=1.0, targets=None):
    params = params or {}
    t_shape = t_shape or s_shape
    s = rand(s_shape, scale)
    t = rand(t_shape, scale)
    pass_targets = targets is not None  # whether the Rust side is given the targets
    if targets == "random":
        targets = torch.randint(0, s_shape[1], (s_shape[0],), generator=GEN)
    elif targets == "argmax":
        # No targets given: the Rust side uses the teacher's argmax, which must then be unique.
        top2 = t.topk(2, dim=1).values
        assert bool((top2[:, 0] > top2[:, 1]).all()), name
        targets = t.argmax(1)
        pass_targets = False
    entry = {
        "name": name,
        "criterion": criterion,
        "params": params,
        "weight": weight,
        "student": {"shape": list(s_shape), "data": f64_list(s)},
        "teacher": {"shape": list(t_shape), "data": f64_list(t)},
        "targets": targets.tolist() if pass_targets else None,
        "f64": run(fn, s, t, targets, params, weight, torch.float64),
        "f32": run(fn, s, t, targets, params, weight, torch.float32),
    }
    for key in ("f64", "f32"):
        v = entry[key]["loss"]
        assert v == v and abs(v) != float("inf"), (name, key, v)
    CASES.append(entry)


LOGITS = [(4, 10), (8, 5)]
FEATURES = [(2, 3, 4, 4), (3, 8, 5, 5)]

for shape in LOGITS + FEATURES:
    tag = "x".join(map(str, shape))
    case(f"mse/{tag}", "Mse", mse, shape)
    case(f"l1/{tag}", "L1", l1, shape)
    case(f"cosine/{tag}", "Cosine", cosine, shape)
    for beta in (1.0, 0.5) if len(shape) == 2 else (1.0,):
        case(f"smooth_l1/{tag}/beta{beta}", "SmoothL1", smooth_l1, shape, params={"beta": beta})
case("mse/4x10/w2.5", "Mse", mse, (4, 10), weight=2.5)
case("l1/2x3x4x4/w0.1", "L1", l1, (2, 3, 4, 4), weight=0.1)
case("smooth_l1/4x10/beta2/w3", "SmoothL1", smooth_l1, (4, 10), params={"beta": 2.0}, weight=3.0, scale=2.0)
case("cosine/8x5/w4", "Cosine", cosine, (8, 5), weight=4.0)

for shape in LOGITS:
    tag = "x".join(map(str, shape))
    for T in (1.0, 4.0):
        case(f"kl_div/{tag}/T{T}", "KlDiv", kl_div, shape, params={"temperature": T}, scale=2.0)
        case(f"soft_ce/{tag}/T{T}", "SoftCrossEntropy", soft_cross_entropy, shape, params={"temperature": T}, scale=2.0)
case("kl_div/2x3x4x4/T2", "KlDiv", kl_div, (2, 3, 4, 4), params={"temperature": 2.0}, scale=2.0)
case("kl_div/4x10/T4/w0.5", "KlDiv", kl_div, (4, 10), params={"temperature": 4.0}, weight=0.5, scale=2.0)
case("soft_ce/8x5/T2/w2", "SoftCrossEntropy", soft_cross_entropy, (8, 5), params={"temperature": 2.0}, weight=2.0)

for s_shape, t_shape in [((2, 3, 4, 4), (2, 3, 4, 4)), ((3, 8, 5, 5), (3, 16, 5, 5)), ((2, 4, 3, 5), (2, 2, 3, 5))]:
    tag = "x".join(map(str, s_shape)) + "_" + "x".join(map(str, t_shape))
    case(f"at/{tag}/p2", "AttentionTransfer", attention_transfer, s_shape, t_shape, params={"p": 2.0})
case("at/2x3x4x4_2x6x4x4/p4", "AttentionTransfer", attention_transfer, (2, 3, 4, 4), (2, 6, 4, 4), params={"p": 4.0})
case("at/2x3x4x4/p2/w1000", "AttentionTransfer", attention_transfer, (2, 3, 4, 4), params={"p": 2.0}, weight=1000.0)

RELATIONAL = [
    ((4, 10), (4, 10)),
    ((8, 5), (8, 12)),
    ((3, 3, 4, 4), (3, 6, 4, 4)),  # RKD is identically 0 for a batch of 2: use 3
    ((3, 8, 5, 5), (3, 4, 2, 2)),
]
for s_shape, t_shape in RELATIONAL:
    tag = "x".join(map(str, s_shape)) + "_" + "x".join(map(str, t_shape))
    case(f"sp/{tag}", "SimilarityPreserving", similarity_preserving, s_shape, t_shape)
    case(f"pkt/{tag}", "Pkt", pkt, s_shape, t_shape)
    case(f"rkd/{tag}", "Rkd", rkd, s_shape, t_shape, params={"distance_weight": 25.0, "angle_weight": 50.0})
case("sp/8x5_8x12/w3000", "SimilarityPreserving", similarity_preserving, (8, 5), (8, 12), weight=3000.0)
case("pkt/4x10_4x6/w30000", "Pkt", pkt, (4, 10), (4, 6), weight=30000.0)
case("rkd/8x5_8x12/d1a2", "Rkd", rkd, (8, 5), (8, 12), params={"distance_weight": 1.0, "angle_weight": 2.0})
case("rkd/8x5_8x12/d1a0", "Rkd", rkd, (8, 5), (8, 12), params={"distance_weight": 1.0, "angle_weight": 0.0})
case("rkd/4x10_4x10/w0.5", "Rkd", rkd, (4, 10), params={"distance_weight": 25.0, "angle_weight": 50.0}, weight=0.5)
case("rkd/4x10_4x6/d0a1", "Rkd", rkd, (4, 10), (4, 6), params={"distance_weight": 0.0, "angle_weight": 1.0})

for shape in LOGITS + [(16, 100)]:
    tag = "x".join(map(str, shape))
    case(f"dist/{tag}", "Dist", dist, shape, params={"beta": 1.0, "gamma": 1.0, "tau": 1.0}, scale=2.0)
case("dist/4x10/b2g2t4", "Dist", dist, (4, 10), params={"beta": 2.0, "gamma": 2.0, "tau": 4.0}, scale=3.0)
case("dist/8x5/b1g0.5t2/w2", "Dist", dist, (8, 5), params={"beta": 1.0, "gamma": 0.5, "tau": 2.0}, weight=2.0)

DKD_DEFAULT = {"alpha": 1.0, "beta": 8.0, "temperature": 4.0}
for shape in LOGITS:
    tag = "x".join(map(str, shape))
    case(f"dkd/{tag}/targets", "Dkd", dkd, shape, params=DKD_DEFAULT, scale=2.0, targets="random")
    case(f"dkd/{tag}/teacher_argmax", "Dkd", dkd, shape, params=DKD_DEFAULT, scale=2.0, targets="argmax")
case("dkd/4x10/a2b1T1/targets", "Dkd", dkd, (4, 10), params={"alpha": 2.0, "beta": 1.0, "temperature": 1.0},
     scale=2.0, targets="random")
case("dkd/8x5/w0.5/targets", "Dkd", dkd, (8, 5), params=DKD_DEFAULT, weight=0.5, scale=2.0, targets="random")

# The edges of what the criteria accept (the Rust side rejects what lies beyond them, and computes
# these): beta = 0 is plain L1, p = 1 for AT, a batch of one for SP and PKT, two classes for DKD.
case("smooth_l1/4x10/beta0", "SmoothL1", smooth_l1, (4, 10), params={"beta": 0.0})
case("at/2x3x4x4_2x5x4x4/p1", "AttentionTransfer", attention_transfer, (2, 3, 4, 4), (2, 5, 4, 4), params={"p": 1.0})
case("sp/1x10_1x4", "SimilarityPreserving", similarity_preserving, (1, 10), (1, 4))
case("pkt/1x10_1x4", "Pkt", pkt, (1, 10), (1, 4))
case("dkd/6x2/targets", "Dkd", dkd, (6, 2), params=DKD_DEFAULT, scale=2.0, targets="random")



def top_k_case(name, shape, k, temperature, weight=None, dominant=None):
    """A TopKKlDiv case: the teacher tensor is the packed encoding of random teacher logits (computed
    here in f64, and separately in f32 for the encoding check); `dominant` = (sample, class, logit)
    gives one sample a class that holds almost all of its mass."""
    s = rand(shape, 2.0)
    logits = rand(shape, 2.0)
    if dominant is not None:
        sample, cls, value = dominant
        logits[sample, cls] = value
    top = F.log_softmax(logits / temperature, dim=1).topk(min(k + 1, shape[1]), dim=1).values
    if k < shape[1]:
        assert bool((top[:, k - 1] - top[:, k] > 1e-3).all()), name  # no near-tie at the k-th class
    packed = top_k_encode(logits, k, temperature)
    params = {"temperature": temperature}
    entry = {
        "name": name,
        "criterion": "TopKKlDiv",
        "params": params,
        "weight": weight,
        "student": {"shape": list(shape), "data": f64_list(s)},
        "teacher": {"shape": list(packed.shape), "data": f64_list(packed)},
        "targets": None,
        "f64": run(top_k_kl, s, packed, None, params, weight, torch.float64),
        "f32": run(top_k_kl, s, packed, None, params, weight, torch.float32),
        "encoding": {
            "k": k,
            "logits": {"shape": list(shape), "data": f64_list(logits)},
            "f64": f64_list(top_k_encode(logits, k, temperature)),
            "f32": f32_list(top_k_encode(logits.to(torch.float32), k, temperature)),
        },
    }
    for key in ("f64", "f32"):
        v = entry[key]["loss"]
        assert v == v and abs(v) != float("inf"), (name, key, v)
    CASES.append(entry)


for k in (1, 3, 10):
    for T in (1.0, 4.0):
        top_k_case(f"top_k_kl/4x10/k{k}/T{T}", (4, 10), k, T)
top_k_case("top_k_kl/8x5/k2/T2/w0.5", (8, 5), 2, 2.0, weight=0.5)
top_k_case("top_k_kl/3x100/k5/T1", (3, 100), 5, 1.0)
# Sample 1's class 3 holds all but ~1e-8 of its mass at T = 1 (all but ~1e-4 at T = 2).
top_k_case("top_k_kl/4x10/k2/T1/dominant", (4, 10), 2, 1.0, dominant=(1, 3, 25.0))
top_k_case("top_k_kl/4x10/k3/T2/dominant", (4, 10), 3, 2.0, dominant=(1, 3, 25.0))

# ---------------------------------------------------------------------------------------------
# DKD in half precision: mdistiller's own function on f16 / bf16 logits, where its bool mask
# promotes the non-target term to f32 (`t / T - 1000.0 * gt_mask`), and the loss is an f32 scalar.
# A list of its own ("dkd_half"), from a generator of its own: the cases above are unchanged.
#
# Each case holds the half-precision inputs (exactly representable in f64), and for three weightings
# — (alpha, beta), the non-target term alone (0, beta), the target term alone (alpha, 0) — mdistiller's
# loss and student gradient computed in that precision, and the exact loss: the same function in f64
# on the same inputs. T is a power of two, so that `s / T` rounds nowhere and both precisions
# start from the same scaled logits.
# ---------------------------------------------------------------------------------------------

HALF_GEN = torch.Generator().manual_seed(20260702)
HALF_CASES = []


def half_case(name, dtype, shape, alpha, beta, temperature, scale, targets):
    assert temperature == 2.0 ** round(torch.log2(torch.tensor(temperature)).item()), name
    s = (torch.randn(shape, generator=HALF_GEN, dtype=torch.float64) * scale).to(dtype)
    t = (torch.randn(shape, generator=HALF_GEN, dtype=torch.float64) * scale).to(dtype)
    for x in (s, t):
        assert torch.equal((x / temperature).double(), x.double() / temperature), name  # no subnormal
    if targets == "random":
        target = torch.randint(0, shape[1], (shape[0],), generator=HALF_GEN)
    else:
        # No targets given: the Rust side takes the teacher's argmax, which must be unique.
        top2 = t.double().topk(2, dim=1).values
        assert bool((top2[:, 0] > top2[:, 1]).all()), name
        target = t.double().argmax(1)
    terms = []
    for a, b in ((alpha, beta), (0.0, beta), (alpha, 0.0)):
        sh = s.clone().requires_grad_(True)
        loss = dkd(sh, t, target, a, b, temperature)
        loss.backward()
        exact = dkd(s.double(), t.double(), target, a, b, temperature)
        assert loss.dim() == 0 and loss.dtype == torch.float32, (name, loss.dtype)
        terms.append({
            "alpha": a,
            "beta": b,
            "loss": loss.item(),
            "loss_dtype": str(loss.dtype).replace("torch.", ""),
            "grad": f64_list(sh.grad.double()),
            "exact_loss": exact.item(),
        })
    HALF_CASES.append({
        "name": name,
        "dtype": str(dtype).replace("torch.", ""),
        "temperature": temperature,
        "student": {"shape": list(shape), "data": f64_list(s.double())},
        "teacher": {"shape": list(shape), "data": f64_list(t.double())},
        "targets": target.tolist() if targets == "random" else None,
        "terms": terms,
    })


for dtype in (torch.bfloat16, torch.float16):
    tag = str(dtype).replace("torch.", "")
    # CIFAR-100-like: mdistiller's defaults (alpha 1, beta 8, T 4).
    half_case(f"dkd_half/{tag}/8x100/targets", dtype, (8, 100), 1.0, 8.0, 4.0, 3.0, "random")
    half_case(f"dkd_half/{tag}/8x64/T2/targets", dtype, (8, 64), 1.0, 8.0, 2.0, 2.0, "random")
    half_case(f"dkd_half/{tag}/4x10/teacher_argmax", dtype, (4, 10), 1.0, 8.0, 4.0, 2.0, "argmax")
    half_case(f"dkd_half/{tag}/6x50/a2b1T1/targets", dtype, (6, 50), 2.0, 1.0, 1.0, 2.0, "random")

doc = {
    "generator": "scripts/gen_reference.py",
    "torch_version": torch.__version__,
    "cases": CASES,
    "dkd_half": HALF_CASES,
}
os.makedirs(os.path.dirname(OUT), exist_ok=True)
with open(OUT, "w") as f:
    json.dump(doc, f, separators=(",", ":"))
    f.write("\n")
print(f"wrote {len(CASES)} cases and {len(HALF_CASES)} half-precision DKD cases to {os.path.relpath(OUT, ROOT)} ({os.path.getsize(OUT)} bytes)", file=sys.stderr)
