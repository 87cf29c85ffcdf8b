#!/usr/bin/env python3
"""The distillation step of benches/step.rs in PyTorch eager, capturing with forward hooks.

This is what Python distillation frameworks (torchdistill, mdistiller, ENOT, ...) do: register
forward hooks on the paired modules, run teacher (no_grad, eval) and student, then compute the
losses from the captured tensors.  Same model, shapes, losses and optimizer as the Rust bench:

  teacher 16/32/64 channels, student 8/16/32 (a channel slice of the teacher), 28x28 inputs,
  3 blocks conv3x3(no bias)+BN+ReLU with strides 1,2,2, global average pool, linear(10);
  pairs: f0, f1 = student conv0/conv1 vs teacher conv0/conv1 through 1x1 selection adapters (MSE),
         at2 = block 2 outputs (attention transfer, p = 2), logits (KL, T = 4); plus cross-entropy;
  SGD lr 0.01 momentum 0.9 over the student and the adapters.

Modes:
  step_hooks.py --batch 8 --steps 200         prints the median step time of rounds (standalone)
  step_hooks.py --batch 8 --serve             line protocol for the Rust bench: reads "N\n",
                                              runs N steps, answers with the elapsed seconds
  step_hooks.py --batch 8 --steps 200 --rss   runs the steps and prints peak RSS (KiB)
"""
import argparse
import os
import sys
import time


def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--serve", action="store_true")
    p.add_argument("--rss", action="store_true")
    return p.parse_args()


args = parse()
# Pin threads before torch starts its pools, as the Rust side does with tch::set_num_threads.
for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[var] = str(args.threads)

import warnings  # noqa: E402

# The pip torch warns at import when numpy is absent; it needs none here.
warnings.filterwarnings("ignore", message="Failed to initialize NumPy")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)

TEACHER = [16, 32, 64]
STUDENT = [8, 16, 32]
STRIDES = [1, 2, 2]


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Net(nn.Module):
    def __init__(self, widths):
        super().__init__()
        cins = [1] + widths[:-1]
        self.features = nn.Sequential(*[Block(i, o, s) for i, o, s in zip(cins, widths, STRIDES)])
        self.classifier = nn.Linear(widths[-1], 10)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


def sliced_student(teacher):
    """The student's weights are the first channels of the teacher's (a pruned copy)."""
    student = Net(STUDENT)
    with torch.no_grad():
        cin = 1
        for tb, sb, w in zip(teacher.features, student.features, STUDENT):
            sb.conv.weight.copy_(tb.conv.weight[:w, :cin])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(sb.bn, name).copy_(getattr(tb.bn, name)[:w])
            cin = w
        student.classifier.weight.copy_(teacher.classifier.weight[:, :cin])
        student.classifier.bias.copy_(teacher.classifier.bias)
    return student


def selection_adapter(teacher_channels, student_channels):
    """1x1 conv without bias selecting, for each student channel, the teacher channel it came from."""
    conv = nn.Conv2d(teacher_channels, student_channels, 1, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        for j in range(student_channels):
            conv.weight[j, j, 0, 0] = 1.0
    return conv


def attention(x):
    return F.normalize(x.pow(2).mean(1).flatten(1))


def at_loss(s, t):
    return (attention(s) - attention(t)).pow(2).mean()


def kd_loss(s, t, temperature=4.0):
    return temperature**2 * F.kl_div(
        F.log_softmax(s / temperature, dim=1), F.softmax(t / temperature, dim=1), reduction="batchmean"
    )


class Hooks:
    """Forward hooks that store the output of each named module."""

    def __init__(self, model, names):
        self.out = {}
        modules = dict(model.named_modules())
        self.handles = [modules[n].register_forward_hook(self._hook(n)) for n in names]

    def _hook(self, name):
        def hook(_module, _inputs, output):
            self.out[name] = output

        return hook


POINTS = ["features.0.conv", "features.1.conv", "features.2"]

teacher = Net(TEACHER).eval()
for p in teacher.parameters():
    p.requires_grad_(False)
student = sliced_student(teacher).train()
adapters = nn.ModuleList([selection_adapter(TEACHER[i], STUDENT[i]) for i in range(2)])
opt = torch.optim.SGD(list(student.parameters()) + list(adapters.parameters()), lr=0.01, momentum=0.9)
t_hooks, s_hooks = Hooks(teacher, POINTS), Hooks(student, POINTS)
xs = torch.randn(args.batch, 1, 28, 28)
ys = torch.randint(0, 10, (args.batch,))


def step():
    with torch.no_grad():
        t_logits = teacher(xs)
    s_logits = student(xs)
    t, s = t_hooks.out, s_hooks.out
    loss = (
        F.cross_entropy(s_logits, ys)
        + F.mse_loss(s["features.0.conv"], adapters[0](t["features.0.conv"]))
        + F.mse_loss(s["features.1.conv"], adapters[1](t["features.1.conv"]))
        + at_loss(s["features.2"], t["features.2"])
        + kd_loss(s_logits, t_logits)
    )
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def run(n):
    start = time.perf_counter()
    for _ in range(n):
        step()
    return time.perf_counter() - start


if not args.rss:
    run(20)  # warm-up (in --rss mode the steps are measured from the first one, as in Rust)
if args.serve:
    print("ready", flush=True)
    for line in sys.stdin:
        line = line.strip()
        if not line or line == "quit":
            break
        n = int(line)
        run(max(2, n // 10))  # untimed warm-up, as the Rust side does before each round
        print(f"{run(n):.9f}", flush=True)
elif args.rss:
    import resource

    def status_kib(field):
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])

    # Reset the kernel's high-water mark so that it covers the training steps only, as in Rust.
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        before = status_kib("VmRSS")
    except OSError:
        before = None
    run(args.steps)
    print(f"maxrss_kib {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}")
    if before is not None:
        print(f"steps_kib {status_kib('VmHWM') - before}")
else:
    times = sorted(run(args.steps) / args.steps for _ in range(args.rounds))
    print(f"batch {args.batch}: median {times[len(times) // 2] * 1e3:.3f} ms/step (torch {torch.__version__}, {torch.get_num_threads()} threads)")
