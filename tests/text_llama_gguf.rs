//! `distill::text::load_gguf` against transformers loading the same GGUF file: the tiny generated
//! one (every dequantised tensor type, tied embeddings) always, and SmolLM2-135M-Instruct when it is
//! provisioned (scripts/text.sh), from the vectors of scripts/gen_text_reference.py.

mod text_model;

use std::collections::HashMap;
use std::path::PathBuf;

use distill::text::{self, GenerateConfig, GgufFile, LlamaConfig, LlamaInputs};
use tch::{Device, Tensor};

/// Parity bound relative to the largest magnitude of the reference tensor; derived in
/// tests/text_llama.rs (f32 rounding of K-term sums, √K·ε per op, added over the ~10 ops of each of
/// up to 30 layers: ≈ 7e-5 for SmolLM2's K ≤ 1536).
const RELATIVE: f64 = 1e-4;

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text").join(name)
}

fn reference(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data(name)).expect("reference vectors").into_iter().collect()
}

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.size(), expected.size(), "{what}: shapes differ");
    let scale = expected.abs().max().double_value(&[]);
    let error = (actual - expected).abs().max().double_value(&[]) / scale;
    assert!(error <= RELATIVE, "{what}: max |Rust − transformers| / max |transformers| = {error:e} > {RELATIVE:e}");
}

#[test]
fn llama_cpp_names_map_to_hugging_face_names() {
    for (gguf, hf) in [
        ("token_embd.weight", Some("model.embed_tokens.weight")),
        ("blk.12.attn_q.weight", Some("model.layers.12.self_attn.q_proj.weight")),
        ("blk.0.attn_k.bias", Some("model.layers.0.self_attn.k_proj.bias")),
        ("blk.3.attn_v.weight", Some("model.layers.3.self_attn.v_proj.weight")),
        ("blk.3.attn_output.weight", Some("model.layers.3.self_attn.o_proj.weight")),
        ("blk.3.ffn_gate.weight", Some("model.layers.3.mlp.gate_proj.weight")),
        ("blk.3.ffn_up.weight", Some("model.layers.3.mlp.up_proj.weight")),
        ("blk.3.ffn_down.weight", Some("model.layers.3.mlp.down_proj.weight")),
        ("blk.3.attn_norm.weight", Some("model.layers.3.input_layernorm.weight")),
        ("blk.3.ffn_norm.weight", Some("model.layers.3.post_attention_layernorm.weight")),
        ("output_norm.weight", Some("model.norm.weight")),
        ("output.weight", Some("lm_head.weight")),
        ("rope_freqs.weight", None),
        ("blk.x.attn_q.weight", None),
        ("blk.0.attn_q.scale", None),
    ] {
        assert_eq!(text::hf_name(gguf).as_deref(), hf, "{gguf}");
    }
}

#[test]
fn the_tiny_gguf_equals_transformers_loading_it() {
    let reference = reference("tiny_gguf_reference.safetensors");
    let file = GgufFile::open(data("tiny.gguf")).unwrap();
    let config = LlamaConfig::from_gguf(&file).unwrap();
    assert_eq!((config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads), (1, 4, 2));
    assert!(config.tie_word_embeddings, "tiny.gguf has no output.weight");
    let loaded = text::load_gguf(data("tiny.gguf"), Device::Cpu).unwrap();
    // The rotary row order restored exactly as transformers restores it.
    let variables = loaded.vs.variables();
    let mut compared = 0;
    for (key, expected) in &reference {
        if let Some(name) = key.strip_prefix("weight.") {
            assert!(variables[name].equal(expected), "{name} differs from transformers' after the row permutation");
            compared += 1;
        }
    }
    assert_eq!(compared, 2, "q_proj and k_proj compared");
    let ids = &reference["ids"];
    let logits = tch::no_grad(|| loaded.model.forward(ids)).unwrap();
    assert_close(&logits, &reference["logits"], "tiny.gguf logits");
    let hidden = tch::no_grad(|| loaded.model.forward_hidden(&LlamaInputs::new(ids))).unwrap();
    assert_close(&hidden.layers[0], &reference["hidden.0"], "tiny.gguf layer 0");
}

#[test]
fn without_the_row_permutation_undone_the_tolerance_fails() {
    // The mutation check of the GGUF path: q/k loaded in llama.cpp's row order are rejected.
    let reference = reference("tiny_gguf_reference.safetensors");
    let loaded = text::load_gguf(data("tiny.gguf"), Device::Cpu).unwrap();
    let file = GgufFile::open(data("tiny.gguf")).unwrap();
    tch::no_grad(|| {
        for (gguf_name, var) in [("blk.0.attn_q.weight", "q_proj"), ("blk.0.attn_k.weight", "k_proj")] {
            let mut variable = loaded.vs.variables()[&format!("model.layers.0.self_attn.{var}.weight")].shallow_clone();
            variable.copy_(&file.tensor(gguf_name, Device::Cpu).unwrap());
        }
    });
    let logits = tch::no_grad(|| loaded.model.forward(&reference["ids"])).unwrap();
    let expected = &reference["logits"];
    let error = (&logits - expected).abs().max().double_value(&[]) / expected.abs().max().double_value(&[]);
    assert!(error > 10.0 * RELATIVE, "llama.cpp's row order gives {error:e}, not clearly above {RELATIVE:e}");
}

#[test]
fn a_gguf_of_another_architecture_is_an_error() {
    let error = LlamaConfig::from_gguf(&GgufFile::open(data("value_types.gguf")).unwrap()).unwrap_err().to_string();
    assert!(error.contains("value_types.gguf") && error.contains("not a LLaMA-family one"), "{error}");
}

#[test]
fn smollm2_equals_transformers() {
    let Some(path) = text_model::smollm2_or_skip("smollm2_equals_transformers") else { return };
    let reference = reference("smollm2_reference.safetensors");
    let loaded = text::load_gguf(&path, Device::Cpu).unwrap();
    let config = loaded.model.config();
    assert_eq!(
        (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.num_key_value_heads),
        (30, 576, 9, 3)
    );
    assert_eq!((config.vocab_size, config.rope_theta, config.tie_word_embeddings), (49152, 1e5, true));
    let ids = &reference["ids"];
    let hidden = tch::no_grad(|| loaded.model.forward_hidden(&LlamaInputs::new(ids))).unwrap();
    for layer in [0, 14, 29] {
        assert_close(&hidden.layers[layer], &reference[&format!("hidden.{layer}")], &format!("SmolLM2 layer {layer}"));
    }
    let logits = tch::no_grad(|| loaded.model.forward(ids)).unwrap();
    let positions = &reference["logits.positions"];
    assert_close(&logits.get(0).index_select(0, positions), &reference["logits"], "SmolLM2 logits");

    let prompt: Vec<i64> = Vec::try_from(reference["greedy.prompt"].get(0)).unwrap();
    let expected: Vec<i64> = Vec::try_from(reference["greedy.tokens"].get(0)).unwrap();
    let out = loaded.model.generate(&prompt, &GenerateConfig::greedy(20)).unwrap();
    assert_eq!(out.tokens, expected, "20 greedy tokens");
    eprintln!("SmolLM2: 20 greedy tokens at {:.1} tokens/s", out.tokens_per_second);
}
