#!/usr/bin/env python3
"""The PyTorch side of benches/text.rs: transformers' LlamaForCausalLM, eager PyTorch (no compile),
f32, without gradient, SmolLM2-135M's shape with random weights (speed does not depend on the
values). Serves timed forwards over a pipe: prints "ready", then for each line "run" on stdin times
one forward of the same [batch, tokens] ids and prints its seconds.

Needs transformers on PYTHONPATH: `source scripts/libtorch.sh && source scripts/text.sh`.
"""

import argparse
import sys
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--attention", default="sdpa", choices=["sdpa", "eager"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
        num_key_value_heads=3, max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=1e5,
        tie_word_embeddings=True,
    )
    config._attn_implementation = args.attention
    model = LlamaForCausalLM(config).eval().to(args.device)
    ids = torch.randint(0, config.vocab_size, (args.batch, args.tokens), generator=torch.Generator().manual_seed(1))
    ids = ids.to(args.device)
    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "run":
            break
        with torch.no_grad():
            start = time.perf_counter()
            logits = model(ids, use_cache=False).logits
            sync()
            elapsed = time.perf_counter() - start
        assert logits.shape == (args.batch, args.tokens, config.vocab_size)
        print(f"{elapsed:.6f}", flush=True)


if __name__ == "__main__":
    main()
