#!/usr/bin/env python3
"""The PyTorch half of the torch_teacher example: trains the teacher and exports it for Rust.

Trains torchvision's ResNet-18 with the small-input stem (1 input channel, 3×3 stride-1 conv1, no max
pool: `distill::vision::resnet18_with(p, 10, ResNetConfig { in_channels: 1, small_input: true, .. })`
in Rust) on Fashion-MNIST with the pip torch, then writes to OUT (default out/torch_teacher):

  teacher.safetensors        safetensors.torch.save_file(model.state_dict()): loads into the Rust
                             resnet18 with `distill::vision::load_torchvision` (or `VarStore::load`);
  teacher.pt                 a TorchScript feature extractor (create_feature_extractor, traced with
                             strict=False, eval mode) whose outputs are a dict of the fx nodes below,
                             named as in NODES: layer1…layer4 (block-stage outputs) and logits;
  teacher_check.safetensors  the first 64 standardised test images (`images`) and their logits
                             (`logits`), to check a Rust model against PyTorch's numbers;
  teacher.json               the test accuracy (correct predictions of 10 000), the standardisation
                             (mean, std of the training pixels in [0, 1], std unbiased — what the
                             Rust example's data loader computes), the settings and the timings.

Data: the gzipped IDX files of Fashion-MNIST in /usr/share/datasets/fashion-mnist (Debian package
`dataset-fashion-mnist`), or --data DIR. Run with the cached torch and torchvision on the path:

  source scripts/libtorch.sh && source scripts/torchvision.sh
  python3 examples/torch_teacher/train_teacher.py [--train-images 3000] [--epochs 1] …

Training: SGD momentum 0.9, weight decay 5e-4, one-cycle learning rate up to 0.05, batch 64, one
epoch over the first --train-images images of a seeded shuffle of the training set (all 60 000 with
0), 2 threads. A ResNet-18 at 28×28 costs about 40 times the main example's CNN per image (about 30
training and 75 test images per second here), so the default is small: 3000 images (about 2 minutes),
tested on the first 2000 test images (--test-images; 74.65% there, 74.31% on all 10 000, which take
2.2 minutes more); 6000 images give 78.62% on all 10 000 in 5.8 minutes. Deterministic for a given seed
and thread count.
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import torch
import torch.nn.functional as F
import torchvision
from safetensors.torch import save_file
from torchvision.models.feature_extraction import create_feature_extractor

# fx node → output name of the TorchScript teacher.
NODES = {"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4", "fc": "logits"}
CHECK_IMAGES = 64
EVAL_BATCH = 500


def read_idx(path, magic, dims):
    """The array of an IDX file (uint8), checked against its header."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    header = struct.unpack(">" + "I" * (1 + dims), data[: 4 * (1 + dims)])
    if header[0] != magic:
        sys.exit(f"{path}: not an IDX file of {dims} dimensions (magic {header[0]:#x})")
    shape = header[1:]
    body = data[4 * (1 + dims) :]
    count = 1
    for d in shape:
        count *= d
    if len(body) != count:
        sys.exit(f"{path}: {len(body)} bytes of data for a shape {shape}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(shape)


def load(data_dir):
    def images(name):
        return read_idx(os.path.join(data_dir, name), 0x803, 3).float().div(255.0).unsqueeze(1)

    def labels(name):
        return read_idx(os.path.join(data_dir, name), 0x801, 1).long()

    if not os.path.isdir(data_dir):
        sys.exit(f"no Fashion-MNIST folder at {data_dir}: install the Debian package dataset-fashion-mnist or pass --data")
    train_x, train_y = images("train-images-idx3-ubyte.gz"), labels("train-labels-idx1-ubyte.gz")
    test_x, test_y = images("t10k-images-idx3-ubyte.gz"), labels("t10k-labels-idx1-ubyte.gz")
    mean = train_x.double().mean().item()
    std = train_x.double().std().item()
    return (train_x - mean) / std, train_y, (test_x - mean) / std, test_y, mean, std


def resnet18_small_input():
    """torchvision's ResNet-18 for 28×28 grey images: 3×3 stride-1 conv1 on 1 channel, no max pool."""
    model = torchvision.models.resnet18(num_classes=10)
    model.conv1 = torch.nn.Conv2d(1, 64, kernel_size=3, stride=1, padding=1, bias=False)
    torch.nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = torch.nn.Identity()
    return model


def train(model, xs, ys, args):
    optimizer = torch.optim.SGD(model.parameters(), lr=args.max_lr, momentum=0.9, weight_decay=5e-4)
    steps_per_epoch = (len(xs) + args.batch_size - 1) // args.batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.max_lr, total_steps=args.epochs * steps_per_epoch
    )
    generator = torch.Generator().manual_seed(args.seed + 1)
    model.train()
    for epoch in range(args.epochs):
        order = torch.randperm(len(xs), generator=generator)
        total, correct, seen, start = 0.0, 0, 0, time.time()
        for step in range(steps_per_epoch):
            index = order[step * args.batch_size : (step + 1) * args.batch_size]
            logits = model(xs[index])
            loss = F.cross_entropy(logits, ys[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.item() * len(index)
            correct += (logits.argmax(1) == ys[index]).sum().item()
            seen += len(index)
            if step % 10 == 0 or step + 1 == steps_per_epoch:
                rate = seen / max(time.time() - start, 1e-9)
                print(
                    f"\repoch {epoch + 1}/{args.epochs} step {step + 1}/{steps_per_epoch} "
                    f"loss {total / seen:.4f} train acc {100 * correct / seen:.2f}% ({rate:.0f} images/s)",
                    end="",
                    flush=True,
                )
        print()


@torch.no_grad()
def evaluate(model, xs, ys):
    model.eval()
    correct = 0
    for start in range(0, len(xs), EVAL_BATCH):
        logits = model(xs[start : start + EVAL_BATCH])
        correct += (logits.argmax(1) == ys[start : start + EVAL_BATCH]).sum().item()
    return correct


def export(model, test_x, out):
    model.eval()
    state_dict = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state_dict, os.path.join(out, "teacher.safetensors"))

    extractor = create_feature_extractor(model, return_nodes=NODES)
    example = test_x[:1]
    with torch.no_grad():
        traced = torch.jit.trace(extractor, example, strict=False)
    traced.save(os.path.join(out, "teacher.pt"))

    # The exported teacher must compute what the trained model computes.
    check = test_x[:CHECK_IMAGES].contiguous()
    with torch.no_grad():
        logits = model(check)
        loaded = torch.jit.load(os.path.join(out, "teacher.pt"))
        outputs = loaded(check)
    if sorted(outputs) != sorted(NODES.values()):
        sys.exit(f"the TorchScript teacher's outputs are {sorted(outputs)}, not {sorted(NODES.values())}")
    if not torch.allclose(outputs["logits"], logits, atol=1e-5, rtol=0):
        sys.exit("the TorchScript teacher's logits differ from the model's")
    save_file({"images": check, "logits": logits.contiguous()}, os.path.join(out, "teacher_check.safetensors"))
    return {name: list(t.shape[1:]) for name, t in outputs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--out", default="out/torch_teacher")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=3000, help="0 for all 60 000")
    parser.add_argument("--test-images", type=int, default=2000, help="the first N test images; 0 for all 10 000")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-lr", type=float, default=0.05)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.epochs < 1 or args.batch_size < 1 or args.train_images < 0 or args.test_images < 0 or args.threads < 1:
        parser.error("--epochs, --batch-size and --threads must be at least 1, --train-images and --test-images at least 0")

    started = time.time()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)
    train_x, train_y, test_x, test_y, mean, std = load(args.data)
    if args.train_images:
        subset = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(args.seed))[: args.train_images]
        train_x, train_y = train_x[subset], train_y[subset]
    if args.test_images:
        test_x, test_y = test_x[: args.test_images], test_y[: args.test_images]
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {args.threads} threads; "
          f"training on {len(train_x)} images for {args.epochs} epochs")

    model = resnet18_small_input()
    train_start = time.time()
    train(model, train_x, train_y, args)
    train_seconds = time.time() - train_start
    eval_start = time.time()
    correct = evaluate(model, test_x, test_y)
    eval_seconds = time.time() - eval_start
    accuracy = 100.0 * correct / len(test_x)
    print(f"test accuracy {accuracy:.2f}% ({correct}/{len(test_x)})")

    shapes = export(model, test_x, args.out)
    report = {
        "model": "torchvision.models.resnet18(num_classes=10), conv1 = Conv2d(1, 64, 3, 1, 1, bias=False), "
        "maxpool = Identity()",
        "test_correct": correct,
        "test_images": len(test_x),
        "test_accuracy_percent": round(accuracy, 2),
        "mean": mean,
        "std": std,
        "nodes": NODES,
        "output_shapes": shapes,
        "train_images": len(train_x),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "max_lr": args.max_lr,
        "threads": args.threads,
        "seed": args.seed,
        "train_seconds": round(train_seconds, 1),
        "eval_seconds": round(eval_seconds, 1),
        "total_seconds": round(time.time() - started, 1),
        # CPU time of all threads: with N threads on N idle cores, wall time is about this / N.
        "cpu_seconds": round(time.process_time(), 1),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
    }
    with open(os.path.join(args.out, "teacher.json"), "w") as f:
        json.dump(report, f, indent=2)
        f.write("\n")
    print(f"wrote teacher.safetensors, teacher.pt, teacher_check.safetensors, teacher.json to {args.out} "
          f"({report['total_seconds']} s)")


if __name__ == "__main__":
    main()
