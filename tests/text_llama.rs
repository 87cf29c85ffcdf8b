//! `distill::text` against transformers 5: a random two-layer `LlamaForCausalLM` saved by
//! `save_pretrained`, and its outputs (plain, padded, packed, generated), from
//! scripts/gen_text_reference.py.

use std::collections::HashMap;
use std::path::PathBuf;

use distill::checkpoint::CheckpointError;
use distill::nn::VarStore;
use distill::prelude::*;
use distill::text::{
    self, AttentionImplementation, GenerateConfig, KvCache, LlamaConfig, LlamaForCausalLM, LlamaInputs,
};
use distill::{distill, DistillError, Mapping};
use tch::{Device, Kind, Tensor};

/// Parity bound, relative to the largest magnitude of the reference tensor.
///
/// Every output is a chain of dot products in f32 (ε = 2⁻²⁴ ≈ 6e-8): the projections (K ≤ 96 terms
/// here, 1536 in SmolLM2), softmax sums, RMS means. Rounding in a K-term sum is bounded by K·ε·Σ|terms|
/// and behaves like √K·ε·Σ|terms| for independent roundings; RMSNorm rescales each layer's input, so
/// relative errors add over the sequential ops rather than multiply. With about 10 such ops per
/// layer, the tiny model (2 layers, √96·ε ≈ 6e-7) stays near 2e-5 of the output scale, and the same
/// bound, √1536·ε ≈ 2.3e-6 × 10 ops × 30 layers ≈ 7e-5, covers SmolLM2. The two libraries also differ
/// in kernel order (fused attention vs. explicit softmax), which is inside the same bound. A single
/// bound of 1e-4 of the tensor's scale therefore holds on any CPU, and the mutation test below shows a
/// real mistake (a rotary base of 1e4 instead of 1e5) exceeds it many times over.
const RELATIVE: f64 = 1e-4;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/text")
}

fn reference() -> HashMap<String, Tensor> {
    Tensor::read_safetensors(data_dir().join("tiny_reference.safetensors"))
        .expect("tests/data/text/tiny_reference.safetensors")
        .into_iter()
        .collect()
}

fn tiny() -> text::Pretrained {
    text::load_pretrained(data_dir().join("tiny"), Device::Cpu).expect("the tiny checkpoint loads")
}

/// max |actual − expected| over max |expected|.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f64 {
    assert_eq!(actual.size(), expected.size(), "shapes differ");
    let scale = expected.abs().max().double_value(&[]);
    (actual - expected).abs().max().double_value(&[]) / scale
}

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    let error = relative_error(actual, expected);
    assert!(error <= RELATIVE, "{what}: max |Rust − transformers| / max |transformers| = {error:e} > {RELATIVE:e}");
}

#[test]
fn config_json_is_read_as_transformers_wrote_it() {
    let config = LlamaConfig::from_json_file(data_dir().join("tiny/config.json")).unwrap();
    let expected = LlamaConfig {
        vocab_size: 256,
        hidden_size: 64,
        intermediate_size: 96,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        max_position_embeddings: 128,
        rms_norm_eps: 1e-5,
        rope_theta: 1e5,
        tie_word_embeddings: true,
        attention_bias: false,
        mlp_bias: false,
        bos_token_id: Some(1),
        eos_token_id: Some(2),
    };
    assert_eq!(config, expected);
}

#[test]
fn config_mistakes_are_errors() {
    let cases = [
        (r#"{"hidden_act": "gelu"}"#, "hidden_act `gelu`"),
        (r#"{"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}"#, "rotary embedding type `llama3`"),
        (
            r#"{"num_attention_heads": 9, "num_key_value_heads": 2, "hidden_size": 576}"#,
            "multiple of num_key_value_heads",
        ),
        (r#"{"hidden_size": 0}"#, "hidden_size must be at least 1"),
        (r#"{"head_dim": 15}"#, "head_dim must be even"),
        ("not json", "not a Hugging Face config.json"),
    ];
    for (json, expected) in cases {
        let error = LlamaConfig::from_json_str(json).unwrap_err().to_string();
        assert!(error.contains(expected), "{json}: `{error}` does not say `{expected}`");
    }
    let error = LlamaConfig::from_json_file(data_dir().join("absent/config.json")).unwrap_err().to_string();
    assert!(error.contains("absent/config.json"), "{error}");
}

#[test]
fn parameter_names_and_module_paths_are_hugging_face_s() {
    let loaded = tiny();
    let mut names: Vec<String> = loaded.vs.variables().into_keys().collect();
    names.sort();
    let file: Vec<String> = {
        let mut keys: Vec<String> = Tensor::read_safetensors(data_dir().join("tiny/model.safetensors"))
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(names, file, "the variables are exactly the checkpoint's tensors (tied: no lm_head.weight)");
    let paths: Vec<String> = loaded.model.named_modules().into_iter().map(|m| m.path).collect();
    for path in [
        "model",
        "model.embed_tokens",
        "model.layers",
        "model.layers.1",
        "model.layers.1.self_attn",
        "model.layers.1.self_attn.q_proj",
        "model.layers.1.self_attn.k_proj",
        "model.layers.1.self_attn.v_proj",
        "model.layers.1.self_attn.o_proj",
        "model.layers.1.mlp",
        "model.layers.1.mlp.gate_proj",
        "model.layers.1.mlp.up_proj",
        "model.layers.1.mlp.down_proj",
        "model.layers.1.mlp.act_fn",
        "model.layers.1.input_layernorm",
        "model.layers.1.post_attention_layernorm",
        "model.norm",
        "lm_head",
    ] {
        assert!(paths.iter().any(|p| p == path), "no module `{path}` in {paths:?}");
    }
    // Tied: the head reads the embedding's storage, so training one trains the other.
    assert_eq!(loaded.model.lm_head.ws.data_ptr(), loaded.model.model.embed_tokens.ws.data_ptr());
}

#[test]
fn logits_and_hidden_states_equal_transformers_with_both_attention_kernels() {
    let reference = reference();
    let mut loaded = tiny();
    for implementation in [AttentionImplementation::Sdpa, AttentionImplementation::Eager] {
        loaded.model.set_attention_implementation(implementation);
        let ids = &reference["ids"];
        let logits = tch::no_grad(|| loaded.model.forward(ids)).unwrap();
        assert_close(&logits, &reference["logits"], &format!("{implementation:?} logits"));
        let hidden = tch::no_grad(|| loaded.model.forward_hidden(&LlamaInputs::new(ids))).unwrap();
        assert_eq!(hidden.layers.len(), 2);
        for (i, layer) in hidden.layers.iter().enumerate() {
            assert_close(layer, &reference[&format!("hidden.{i}")], &format!("{implementation:?} layer {i}"));
        }
        assert_close(&hidden.last, &reference["last_hidden"], &format!("{implementation:?} last hidden"));
    }
}

#[test]
fn a_wrong_rotary_base_is_rejected_by_the_tolerance() {
    let reference = reference();
    let mut config = LlamaConfig::from_json_file(data_dir().join("tiny/config.json")).unwrap();
    config.rope_theta = 1e4;
    let mut vs = VarStore::new(Device::Cpu);
    let model = LlamaForCausalLM::new(vs.root(), &config).unwrap();
    text::load_safetensors(&mut vs, "", data_dir().join("tiny")).unwrap();
    let logits = tch::no_grad(|| model.forward(&reference["ids"])).unwrap();
    let error = relative_error(&logits, &reference["logits"]);
    assert!(error > 10.0 * RELATIVE, "a rotary base of 1e4 gives {error:e}, not clearly above {RELATIVE:e}");
}

#[test]
fn padding_masks_equal_transformers_on_the_real_tokens() {
    let reference = reference();
    let ids = &reference["ids"];
    for implementation in [AttentionImplementation::Sdpa, AttentionImplementation::Eager] {
        let mut model = tiny().model;
        model.set_attention_implementation(implementation);
        // Right padding: row 1 keeps 11 tokens.
        let mask = &reference["pad.mask"];
        let logits = tch::no_grad(|| model.forward_inputs(&LlamaInputs::new(ids).attention_mask(mask))).unwrap();
        let expected = &reference["pad.logits"];
        assert_close(&logits.get(0), &expected.get(0), "right padding, full row");
        assert_close(&logits.get(1).narrow(0, 0, 11), &expected.get(1).narrow(0, 0, 11), "right padding, real tokens");
        // A padded query with real tokens before it attends to them alone, as in transformers (not
        // to itself too): the padded positions' logits are transformers' as well.
        assert_close(&logits.get(1), &expected.get(1), "right padding, padded positions");
        // Padding never reaches a real token: the real tokens' logits are those of the unpadded row.
        let alone = tch::no_grad(|| model.forward(&ids.get(1).narrow(0, 0, 11).unsqueeze(0))).unwrap();
        assert_close(&logits.get(1).narrow(0, 0, 11), &alone.get(0), "right padding = the row alone");

        // Left padding with explicit positions, as generation does.
        let (mask, positions) = (&reference["left.mask"], &reference["left.positions"]);
        let inputs = LlamaInputs::new(ids).attention_mask(mask).position_ids(positions);
        let logits = tch::no_grad(|| model.forward_inputs(&inputs)).unwrap();
        let expected = &reference["left.logits"];
        assert_close(&logits.get(0), &expected.get(0), "left padding, full row");
        assert_close(&logits.get(1).narrow(0, 4, 12), &expected.get(1).narrow(0, 4, 12), "left padding, real tokens");
        assert!(logits.isfinite().all().int64_value(&[]) == 1, "padded positions stay finite");
    }
}

#[test]
fn packed_documents_equal_each_document_run_alone() {
    let reference = reference();
    for implementation in [AttentionImplementation::Sdpa, AttentionImplementation::Eager] {
        let mut model = tiny().model;
        model.set_attention_implementation(implementation);
        let inputs = LlamaInputs::new(&reference["packed.ids"]).document_ids(&reference["packed.documents"]);
        let logits = tch::no_grad(|| model.forward_inputs(&inputs)).unwrap();
        assert_close(&logits, &reference["packed.logits"], &format!("{implementation:?} packed documents"));
    }
}

#[test]
fn the_kv_cache_gives_the_full_forward_s_logits() {
    let reference = reference();
    let model = tiny().model;
    let ids = &reference["ids"];
    let full = tch::no_grad(|| model.forward(ids)).unwrap();
    let mut cache = KvCache::new();
    // A prefill of 9 tokens, a chunk of 4 (explicit causal mask after the cache), then one at a time.
    let mut pieces = Vec::new();
    for (start, len) in [(0, 9), (9, 4), (13, 1), (14, 1), (15, 1)] {
        let chunk = ids.narrow(1, start, len);
        pieces.push(tch::no_grad(|| model.forward_cached(&LlamaInputs::new(&chunk), &mut cache)).unwrap());
        assert_eq!(cache.len(), start + len);
    }
    assert_close(&Tensor::cat(&pieces, 1), &full, "cached decoding");
}

#[test]
fn captures_by_path_equal_the_hidden_states() {
    let reference = reference();
    let student = tiny().model;
    let teacher = tiny().model;
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("model.layers.0", "model.layers.1", "layers").unwrap();
    mapping.add("model.layers.1.mlp", "model.layers.1.mlp.down_proj", "mlp").unwrap();
    mapping.add("model.norm", "model", "norm").unwrap();
    let dm = distill::distill(&student, &teacher, mapping);
    let out = tch::no_grad(|| dm.forward_t(&reference["ids"], false)).unwrap();
    let pairs: Vec<_> = out.pairs().collect();
    assert_close(pairs[0].0, &reference["hidden.0"], "student model.layers.0");
    assert_close(pairs[0].1, &reference["hidden.1"], "teacher model.layers.1");
    assert_eq!(pairs[1].0.size(), [2, 16, 64]);
    assert!(pairs[1].0.equal(pairs[1].1), "mlp output = its down_proj output");
    assert_close(pairs[2].0, &reference["last_hidden"], "model.norm");
    assert_close(pairs[2].1, &reference["last_hidden"], "model");
    assert_close(&out.student_output, &reference["logits"], "student output");
}

distill! {
    /// Layer-wise distillation between two LLaMA models, paths checked by rustc.
    struct LayerKd for LlamaForCausalLM => LlamaForCausalLM {
        mlp: student.model.layers[1].mlp => teacher.model.layers[1].mlp with Mse;
        attention: student.model.layers[0].self_attn.o_proj => "model.layers.0.self_attn.o_proj" with Mse;
        logits: student => teacher with KlDiv::new(2.0);
    }
}

#[test]
fn distill_macro_paths_read_as_in_pytorch() {
    let reference = reference();
    let student = tiny().model;
    let teacher = tiny().model;
    let kd = LayerKd::new(VarStore::new(Device::Cpu).root(), &student, &teacher).unwrap();
    let out = tch::no_grad(|| kd.forward_t(&reference["ids"], false)).unwrap();
    // The same weights on both sides: every term is zero.
    assert_eq!(out.mlp.student.size(), [2, 16, 64]);
    let losses = out.losses();
    // Identical modules run identically: the feature terms are exactly zero.
    assert_eq!(losses.mlp.double_value(&[]), 0.0);
    assert_eq!(losses.attention.double_value(&[]), 0.0);
    // KL(p‖p) = Σ p·(log p − log_softmax) is zero up to the rounding of log(softmax) against
    // log_softmax (a few ε per element, weighted by p, summed over the 16 positions of each row,
    // times T² = 4): far below 1e-4.
    let kl = losses.logits.double_value(&[]);
    assert!(kl.abs() < 1e-4, "KL of a model with itself: {kl:e}");
}

#[test]
fn strict_loading_lists_every_problem_in_one_error() {
    let dir = tempdir("strict");
    let mut file: Vec<(String, Tensor)> = Tensor::read_safetensors(data_dir().join("tiny/model.safetensors")).unwrap();
    file.retain(|(name, _)| name != "model.norm.weight");
    file.push(("model.layers.0.mlp.extra.weight".into(), Tensor::zeros([2], (Kind::Float, Device::Cpu))));
    for (name, tensor) in &mut file {
        if name == "model.layers.1.mlp.up_proj.weight" {
            *tensor = Tensor::zeros([95, 64], (Kind::Float, Device::Cpu));
        }
    }
    let path = dir.join("broken.safetensors");
    Tensor::write_safetensors(&file, &path).unwrap();
    let config = LlamaConfig::from_json_file(data_dir().join("tiny/config.json")).unwrap();
    let mut vs = VarStore::new(Device::Cpu);
    let _model = LlamaForCausalLM::new(vs.root(), &config).unwrap();
    let error = text::load_safetensors(&mut vs, "", &path).unwrap_err();
    let DistillError::Checkpoint(CheckpointError::StateDict { .. }) = &error else { panic!("{error:?}") };
    let message = error.to_string();
    for part in [
        "broken.safetensors",
        "1 variables missing from the file (`model.norm.weight`)",
        "1 keys of the file the model does not have (`model.layers.0.mlp.extra.weight`)",
        "`model.layers.1.mlp.up_proj.weight`: [95, 64] in the file, [96, 64] in the model",
    ] {
        assert!(message.contains(part), "`{message}` does not say `{part}`");
    }
    let error = text::load_pretrained(dir.join("nothing"), Device::Cpu).unwrap_err().to_string();
    assert!(error.contains("nothing/config.json"), "{error}");
}

#[test]
fn a_sharded_checkpoint_loads_like_the_single_file() {
    let reference = reference();
    let dir = tempdir("sharded");
    std::fs::copy(data_dir().join("tiny/config.json"), dir.join("config.json")).unwrap();
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(data_dir().join("tiny/model.safetensors")).unwrap();
    let (first, second): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(name, _)| name.contains("layers.0"));
    let mut weight_map = serde_json::Map::new();
    for (shard, tensors) in
        [("model-00001-of-00002.safetensors", &first), ("model-00002-of-00002.safetensors", &second)]
    {
        Tensor::write_safetensors(tensors, dir.join(shard)).unwrap();
        for (name, _) in tensors {
            weight_map.insert(name.clone(), shard.into());
        }
    }
    let index = serde_json::json!({ "metadata": {}, "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let loaded = text::load_pretrained(&dir, Device::Cpu).unwrap();
    let logits = tch::no_grad(|| loaded.model.forward(&reference["ids"])).unwrap();
    assert_close(&logits, &reference["logits"], "sharded");

    // An index that puts a tensor in the wrong shard is an error naming it.
    let (moved, _) = weight_map.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
    weight_map.insert(moved.clone(), "model-00002-of-00002.safetensors".into());
    weight_map.insert("model.norm.weight".into(), "model-00001-of-00002.safetensors".into());
    let index = serde_json::json!({ "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let error = text::load_pretrained(&dir, Device::Cpu).unwrap_err().to_string();
    assert!(error.contains("index does not list it there"), "{error}");
}

#[test]
fn bad_inputs_are_errors() {
    let model = tiny().model;
    let ids = Tensor::from_slice2(&[[1_i64, 2, 3]]);
    let float_ids = Tensor::ones([1, 3], (Kind::Float, Device::Cpu));
    let out_of_vocab = Tensor::from_slice2(&[[1_i64, 256]]);
    let flat = Tensor::from_slice(&[1_i64, 2]);
    let short_mask = Tensor::from_slice2(&[[1_i64, 1]]);
    for (inputs, expected) in [
        (LlamaInputs::new(&float_ids), "input_ids must be integers"),
        (LlamaInputs::new(&out_of_vocab), "found 256"),
        (LlamaInputs::new(&flat), "input_ids must be [batch, tokens]"),
        (LlamaInputs::new(&ids).attention_mask(&short_mask), "attention_mask must be [1, 3]"),
        (LlamaInputs::new(&ids).document_ids(&short_mask), "document_ids must be [1, 3]"),
    ] {
        let error = model.forward_inputs(&inputs).unwrap_err().to_string();
        assert!(error.contains(expected), "`{error}` does not say `{expected}`");
    }
}

fn tempdir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-text-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn greedy_generation_equals_transformers_generate() {
    let reference = reference();
    let model = tiny().model;
    let prompt: Vec<i64> = Vec::try_from(reference["greedy.prompt"].get(0)).unwrap();
    let expected: Vec<i64> = Vec::try_from(reference["greedy.tokens"].get(0)).unwrap();
    let out = model.generate(&prompt, &GenerateConfig::greedy(10)).unwrap();
    assert_eq!(out.tokens, expected);
    assert!(out.tokens_per_second > 0.0 && out.tokens_per_second.is_finite());
    // A stop token ends generation after it.
    let stop = expected[1];
    let out = model.generate(&prompt, &GenerateConfig::greedy(10).stop_at(stop)).unwrap();
    assert_eq!(out.tokens, expected[..2]);
}

#[test]
fn sampling_is_seeded_and_top_p_narrows_it() {
    let reference = reference();
    let model = tiny().model;
    let prompt: Vec<i64> = Vec::try_from(reference["greedy.prompt"].get(0)).unwrap();
    let greedy = model.generate(&prompt, &GenerateConfig::greedy(10)).unwrap().tokens;
    let draw = |temperature, top_p, seed| {
        model.generate(&prompt, &GenerateConfig::sample(10, temperature, top_p, seed)).unwrap().tokens
    };
    assert_eq!(draw(1.0, 1.0, 7), draw(1.0, 1.0, 7), "the same seed draws the same tokens");
    let seeds: Vec<Vec<i64>> = (0..4).map(|seed| draw(1.5, 1.0, seed)).collect();
    assert!(seeds.iter().any(|tokens| *tokens != seeds[0]), "different seeds draw different tokens: {seeds:?}");
    // A top_p below every probability keeps only the most likely token: greedy decoding.
    assert_eq!(draw(1.0, 1e-9, 3), greedy);
    for (temperature, top_p, expected) in [(0.0, 1.0, "temperature"), (1.0, 0.0, "top_p"), (1.0, 1.5, "top_p")] {
        let error = model.generate(&prompt, &GenerateConfig::sample(3, temperature, top_p, 0)).unwrap_err();
        assert!(error.to_string().contains(expected), "{error}");
    }
    assert!(model.generate(&[], &GenerateConfig::greedy(3)).is_err());
}

#[test]
fn only_llama_family_model_types_are_read() {
    // Other architectures are refused by their type before any size is read (a GPT-2 config has no
    // LLaMA key, so it used to read as LLaMA-7B's defaults).
    let gpt2 = r#"{"model_type": "gpt2", "n_embd": 768, "n_layer": 12, "activation_function": "gelu_new"}"#;
    let bert = r#"{"model_type": "bert", "hidden_size": 768, "hidden_act": "gelu"}"#;
    // Qwen2 has q/k/v biases and no o_proj bias, which `attention_bias` cannot say.
    let qwen2 = r#"{"model_type": "qwen2", "hidden_size": 64, "num_attention_heads": 4, "use_sliding_window": false}"#;
    for (json, model_type) in [(gpt2, "gpt2"), (bert, "bert"), (qwen2, "qwen2")] {
        let error = LlamaConfig::from_json_str(json).unwrap_err();
        let DistillError::Text(inner) = &error else { panic!("{error:?}") };
        let found = inner.downcast_ref::<text::ModelError>();
        assert!(
            matches!(found, Some(text::ModelError::ModelType { model_type: t }) if t == model_type),
            "{json}: {error}"
        );
    }
    // A Mistral config attends within a sliding window unless it says `null`; absent is 4096.
    let mistral =
        |window: &str| format!(r#"{{"model_type": "mistral", "hidden_size": 64, {window} "num_attention_heads": 16}}"#);
    for (window, expected) in [
        (r#""sliding_window": 4096,"#, 4096),
        (r#""sliding_window": 512, "use_sliding_window": false,"#, 512),
        ("", 4096),
    ] {
        let error = LlamaConfig::from_json_str(&mistral(window)).unwrap_err();
        let message = error.to_string();
        assert!(message.contains(&format!("sliding-window attention ({expected} tokens)")), "{window}: {message}");
    }
    // Without one it reads with MistralConfig()'s defaults, and without biases whatever the keys say.
    let config = LlamaConfig::from_json_str(&mistral(r#""sliding_window": null, "attention_bias": true,"#)).unwrap();
    let expected = LlamaConfig {
        hidden_size: 64,
        num_attention_heads: 16,
        head_dim: 4,
        intermediate_size: 14336,
        num_key_value_heads: 8,
        max_position_embeddings: 131072,
        bos_token_id: None,
        eos_token_id: None,
        ..LlamaConfig::default()
    };
    assert_eq!(config, expected);
    let config =
        LlamaConfig::from_json_str(&mistral(r#""sliding_window": null, "num_key_value_heads": null,"#)).unwrap();
    assert_eq!(config.num_key_value_heads, 16, "null key/value heads: one per query head");
    // A config without a model_type is LLaMA's, as transformers' LlamaConfig reads it.
    let config = LlamaConfig::from_json_str(r#"{"hidden_size": 64, "num_attention_heads": 4}"#).unwrap();
    assert_eq!((config.intermediate_size, config.num_key_value_heads), (11008, 4));
}

#[test]
fn sizes_whose_products_overflow_are_errors() {
    for (json, what) in [
        (
            r#"{"num_attention_heads": 4294967296, "num_key_value_heads": 1, "head_dim": 4294967296}"#,
            "num_attention_heads · head_dim overflows",
        ),
        (
            r#"{"vocab_size": 4611686018427387904, "hidden_size": 4, "num_attention_heads": 2}"#,
            "vocab_size · hidden_size overflows",
        ),
        (
            r#"{"hidden_size": 4294967296, "num_attention_heads": 1, "head_dim": 4294967296}"#,
            "num_attention_heads · head_dim · hidden_size overflows",
        ),
    ] {
        let error = LlamaConfig::from_json_str(json).unwrap_err().to_string();
        assert!(error.contains(what), "{json}: `{error}` does not say `{what}`");
    }
}

#[test]
fn load_pretrained_checks_the_config_against_the_checkpoint_before_building() {
    let dir = tempdir("hostile-config");
    std::fs::copy(data_dir().join("tiny/model.safetensors"), dir.join("model.safetensors")).unwrap();
    let original: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(data_dir().join("tiny/config.json")).unwrap()).unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut config = original.clone();
        config[key] = value;
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        text::load_pretrained(&dir, Device::Cpu).unwrap_err()
    };
    // A GPT-2 config beside the checkpoint: refused by its type.
    let error = with("model_type", "gpt2".into());
    assert!(error.to_string().contains("model_type `gpt2`"), "{error}");
    // Sizes no tensor has (a 1 PB embedding): the strict loader's error, before any allocation.
    let error = with("hidden_size", (1_i64 << 40).into());
    let DistillError::Checkpoint(CheckpointError::StateDict { .. }) = &error else { panic!("{error:?}") };
    assert!(
        error
            .to_string()
            .contains("`model.embed_tokens.weight`: [256, 64] in the file, [256, 1099511627776] in the model"),
        "{error}"
    );
    // More layers than the checkpoint's 20 tensors can hold.
    let error = with("num_hidden_layers", (1_i64 << 40).into());
    assert!(error.to_string().contains("1099511627776 layers cannot be in a checkpoint of 20 tensors"), "{error}");
    // A third layer the checkpoint does not have: listed as missing, as the strict loader lists it.
    let error = with("num_hidden_layers", 3.into());
    assert!(error.to_string().contains("9 variables missing from the file (`model.layers.2."), "{error}");
}

#[test]
fn a_tensor_two_shards_hold_is_named_as_such() {
    let dir = tempdir("two-shards");
    std::fs::copy(data_dir().join("tiny/config.json"), dir.join("config.json")).unwrap();
    let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(data_dir().join("tiny/model.safetensors")).unwrap();
    let (mut first, second): (Vec<_>, Vec<_>) = tensors.into_iter().partition(|(name, _)| name.contains("layers.0"));
    let mut weight_map = serde_json::Map::new();
    for (name, _) in &first {
        weight_map.insert(name.clone(), "a.safetensors".into());
    }
    for (name, _) in &second {
        weight_map.insert(name.clone(), "b.safetensors".into());
    }
    // The second shard's model.norm.weight, with other values, in the first shard too.
    let norm = second.iter().find(|(name, _)| name == "model.norm.weight").unwrap().1.zeros_like();
    first.push(("model.norm.weight".into(), norm));
    Tensor::write_safetensors(&first, dir.join("a.safetensors")).unwrap();
    Tensor::write_safetensors(&second, dir.join("b.safetensors")).unwrap();
    let index = serde_json::json!({ "weight_map": weight_map });
    std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    let error = text::load_pretrained(&dir, Device::Cpu).unwrap_err();
    let DistillError::Text(inner) = &error else { panic!("{error:?}") };
    let found = inner.downcast_ref::<text::ModelError>();
    assert!(
        matches!(found, Some(text::ModelError::Index { problem: text::IndexProblem::InTwoShards { key }, .. }) if key == "model.norm.weight"),
        "{error}"
    );
}

#[test]
fn a_kv_cache_of_another_batch_or_model_is_an_error() {
    let reference = reference();
    let model = tiny().model;
    let ids = &reference["ids"]; // [2, 16]
    let mut cache = KvCache::new();
    let _prefill = tch::no_grad(|| model.forward_cached(&LlamaInputs::new(&ids.narrow(1, 0, 4)), &mut cache)).unwrap();
    // One row after two: refused, and the cache is left as it was.
    let one = ids.narrow(0, 0, 1).narrow(1, 4, 1);
    let error = tch::no_grad(|| model.forward_cached(&LlamaInputs::new(&one), &mut cache)).unwrap_err();
    assert!(error.to_string().contains("the KvCache was filled for batch size 2, not 1"), "{error}");
    assert_eq!(cache.len(), 4);
    // The same shapes from another model (its own weights): refused rather than mixed.
    let other = tiny().model;
    let next = ids.narrow(1, 4, 1);
    let error = tch::no_grad(|| other.forward_cached(&LlamaInputs::new(&next), &mut cache)).unwrap_err();
    assert!(error.to_string().contains("the KvCache was filled by another model"), "{error}");
    // A model of another shape: refused too.
    let config = LlamaConfig { num_hidden_layers: 3, ..model.config().clone() };
    let vs = VarStore::new(Device::Cpu);
    let deeper = LlamaForCausalLM::new(vs.root(), &config).unwrap();
    assert!(tch::no_grad(|| deeper.forward_cached(&LlamaInputs::new(&next), &mut cache)).is_err());
    // The model that filled it continues, with the full forward's logits; a cleared cache is anyone's.
    let logits = tch::no_grad(|| model.forward_cached(&LlamaInputs::new(&next), &mut cache)).unwrap();
    let full = tch::no_grad(|| model.forward(&ids.narrow(1, 0, 5))).unwrap();
    assert_close(&logits, &full.narrow(1, 4, 1), "cached step after refused ones");
    cache.clear();
    assert!(tch::no_grad(|| other.forward_cached(&LlamaInputs::new(&one), &mut cache)).is_ok());
}

#[test]
fn generation_until_a_stop_token_takes_usize_max() {
    let reference = reference();
    let model = tiny().model;
    let prompt: Vec<i64> = Vec::try_from(reference["greedy.prompt"].get(0)).unwrap();
    let expected: Vec<i64> = Vec::try_from(reference["greedy.tokens"].get(0)).unwrap();
    // "Until the stop token": no bound but the stop token, which greedy decoding reaches third.
    let out = model.generate(&prompt, &GenerateConfig::greedy(usize::MAX).stop_at(expected[2])).unwrap();
    let stop = expected.iter().position(|&t| t == expected[2]).unwrap();
    assert_eq!(out.tokens, expected[..=stop]);
}
