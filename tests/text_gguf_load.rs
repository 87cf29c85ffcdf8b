//! `text::load_gguf` on GGUF files written here: a valid tiny LLaMA, and variants whose metadata or
//! tensor names a hostile or broken file could hold. Each is an error, raised before the model's
//! variables are allocated (so never a panic or an allocation the metadata sizes).

use std::path::PathBuf;

use distill::checkpoint::CheckpointError;
use distill::text::gguf::GgufError;
use distill::text::{self, ModelError};
use distill::DistillError;
use tch::Device;

/// A metadata value of the file.
#[derive(Clone)]
enum Meta {
    U32(u32),
    U64(u64),
    F32(f32),
    Str(&'static str),
}

/// One tensor: llama.cpp name, GGUF dimensions (innermost first) and ggml type (0: F32).
#[derive(Clone)]
struct Info {
    name: String,
    dims: Vec<u64>,
    ggml_type: u32,
}

fn info(name: &str, dims: &[u64]) -> Info {
    Info { name: name.to_owned(), dims: dims.to_vec(), ggml_type: 0 }
}

/// A little-endian GGUF v3 file with 32-byte alignment; F32 tensors hold small distinct values, a
/// tensor of another type no bytes (its start is still inside the file).
fn gguf(metadata: &[(&str, Meta)], tensors: &[Info]) -> Vec<u8> {
    fn string(bytes: &mut Vec<u8>, s: &str) {
        bytes.extend((s.len() as u64).to_le_bytes());
        bytes.extend(s.as_bytes());
    }
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend((tensors.len() as u64).to_le_bytes());
    bytes.extend((metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        string(&mut bytes, key);
        match value {
            Meta::U32(v) => {
                bytes.extend(4u32.to_le_bytes());
                bytes.extend(v.to_le_bytes());
            }
            Meta::U64(v) => {
                bytes.extend(10u32.to_le_bytes());
                bytes.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                bytes.extend(6u32.to_le_bytes());
                bytes.extend(v.to_le_bytes());
            }
            Meta::Str(v) => {
                bytes.extend(8u32.to_le_bytes());
                string(&mut bytes, v);
            }
        }
    }
    let mut data = Vec::new();
    for tensor in tensors {
        string(&mut bytes, &tensor.name);
        bytes.extend((tensor.dims.len() as u32).to_le_bytes());
        for dim in &tensor.dims {
            bytes.extend(dim.to_le_bytes());
        }
        bytes.extend(tensor.ggml_type.to_le_bytes());
        bytes.extend((data.len() as u64).to_le_bytes());
        if tensor.ggml_type == 0 {
            let count: u64 = tensor.dims.iter().product();
            for i in 0..count {
                data.extend((((i % 7) as f32 - 3.0) * 0.05).to_le_bytes());
            }
            data.resize(data.len().div_ceil(32) * 32, 0);
        }
    }
    bytes.resize(bytes.len().div_ceil(32) * 32, 0);
    bytes.extend(data);
    bytes
}

/// A one-layer LLaMA: vocabulary 8, hidden 4, 2 query heads and 1 key/value head of width 2, MLP
/// 8, tied embeddings.
fn tiny_metadata() -> Vec<(&'static str, Meta)> {
    vec![
        ("general.architecture", Meta::Str("llama")),
        ("llama.block_count", Meta::U32(1)),
        ("llama.embedding_length", Meta::U32(4)),
        ("llama.feed_forward_length", Meta::U32(8)),
        ("llama.attention.head_count", Meta::U32(2)),
        ("llama.attention.head_count_kv", Meta::U32(1)),
        ("llama.attention.layer_norm_rms_epsilon", Meta::F32(1e-5)),
    ]
}

fn tiny_tensors() -> Vec<Info> {
    vec![
        info("token_embd.weight", &[4, 8]),
        info("output_norm.weight", &[4]),
        info("blk.0.attn_norm.weight", &[4]),
        info("blk.0.ffn_norm.weight", &[4]),
        info("blk.0.attn_q.weight", &[4, 4]),
        info("blk.0.attn_k.weight", &[4, 2]),
        info("blk.0.attn_v.weight", &[4, 2]),
        info("blk.0.attn_output.weight", &[4, 4]),
        info("blk.0.ffn_gate.weight", &[4, 8]),
        info("blk.0.ffn_up.weight", &[4, 8]),
        info("blk.0.ffn_down.weight", &[8, 4]),
    ]
}

/// `load_gguf` of the file `bytes` (written to a temporary file, as it reads a path).
fn load(name: &str, bytes: &[u8]) -> Result<text::Pretrained, DistillError> {
    let dir = std::env::temp_dir().join(format!("distill-gguf-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path: PathBuf = dir.join(format!("{name}.gguf"));
    std::fs::write(&path, bytes).unwrap();
    let result = text::load_gguf(&path, Device::Cpu);
    std::fs::remove_file(&path).unwrap();
    result
}

/// The tiny model with one metadata value replaced (or added).
fn with_metadata(key: &'static str, value: Meta) -> Vec<u8> {
    let mut metadata = tiny_metadata();
    metadata.retain(|(k, _)| *k != key);
    metadata.push((key, value));
    gguf(&metadata, &tiny_tensors())
}

fn model_error(error: &DistillError) -> &ModelError {
    let DistillError::Text(inner) = error else { panic!("{error:?}") };
    match inner.downcast_ref::<ModelError>() {
        Some(ModelError::GgufConfig { problem, .. }) => problem,
        _ => panic!("{error:?}"),
    }
}

#[test]
fn the_tiny_file_loads() {
    let loaded = load("tiny", &gguf(&tiny_metadata(), &tiny_tensors())).unwrap();
    let config = loaded.model.config();
    assert_eq!((config.vocab_size, config.hidden_size, config.head_dim, config.num_hidden_layers), (8, 4, 2, 1));
    assert!(loaded.model.forward(&tch::Tensor::from_slice2(&[[1_i64, 2, 3]])).is_ok());
}

#[test]
fn a_layer_number_not_in_plain_decimal_is_not_a_second_name_for_the_layer() {
    for alias in ["blk.00.attn_q.weight", "blk.+0.attn_q.weight"] {
        assert_eq!(text::hf_name(alias), None, "{alias}");
        // Beside blk.0.attn_q.weight it would have replaced it silently; it is an unexpected tensor.
        let mut tensors = tiny_tensors();
        tensors.push(info(alias, &[4, 4]));
        let error = load("alias", &gguf(&tiny_metadata(), &tensors)).expect_err("an alias is refused");
        let DistillError::Checkpoint(CheckpointError::StateDict { problems, .. }) = &error else { panic!("{error:?}") };
        assert_eq!(problems.unexpected, [format!("{alias} (llama.cpp name)")], "{error}");
        assert!(problems.missing.is_empty() && problems.shapes.is_empty(), "{error}");
    }
    for (name, hf) in [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.10.ffn_up.bias", "model.layers.10.mlp.up_proj.bias"),
    ] {
        assert_eq!(text::hf_name(name).as_deref(), Some(hf));
    }
    for name in
        ["blk.-1.attn_q.weight", "blk. 1.attn_q.weight", "blk..attn_q.weight", "blk.99999999999999999999.attn_q.weight"]
    {
        assert_eq!(text::hf_name(name), None, "{name}");
    }
}

#[test]
fn sizes_the_tensors_do_not_have_are_refused_before_allocating() {
    // Projections of 4 TB, an embedding of 16 TB, an MLP of 68 GB, queries of 2 TB (and rotary
    // frequencies of 128 GB): the tensor infos contradict them all.
    for (key, value, differing) in [
        (
            "llama.embedding_length",
            Meta::U64(1 << 20),
            "`model.embed_tokens.weight`: [8, 4] in the file, [8, 1048576] in the model",
        ),
        (
            "llama.vocab_size",
            Meta::U64(1 << 40),
            "`model.embed_tokens.weight`: [8, 4] in the file, [1099511627776, 4] in the model",
        ),
        (
            "llama.feed_forward_length",
            Meta::U32(u32::MAX - 1),
            "`model.layers.0.mlp.down_proj.weight`: [4, 8] in the file, [4, 4294967294] in the model",
        ),
        (
            "llama.attention.key_length",
            Meta::U64(1 << 36),
            "`model.layers.0.self_attn.q_proj.weight`: [4, 4] in the file, [137438953472, 4] in the model",
        ),
    ] {
        let error = load("sizes", &with_metadata(key, value)).expect_err("refused");
        let DistillError::Checkpoint(CheckpointError::StateDict { .. }) = &error else { panic!("{key}: {error:?}") };
        assert!(error.to_string().contains(differing), "{key}: `{error}` does not say `{differing}`");
    }
}

#[test]
fn a_layer_count_past_the_tensors_is_refused_before_allocating() {
    let error = load("layers", &with_metadata("llama.block_count", Meta::U64(1 << 40))).expect_err("refused");
    assert!(
        matches!(model_error(&error), ModelError::LayersPastTensors { layers, tensors: 11 } if *layers == 1 << 40),
        "{error}"
    );
    assert!(error.to_string().contains("1099511627776 layers cannot be in a checkpoint of 11 tensors"), "{error}");
}

#[test]
fn head_counts_whose_product_overflows_are_refused() {
    let mut metadata = tiny_metadata();
    metadata.retain(|(key, _)| !key.starts_with("llama.attention.head_count"));
    metadata.push(("llama.attention.head_count", Meta::U64(1 << 32)));
    metadata.push(("llama.attention.head_count_kv", Meta::U64(1 << 32)));
    metadata.push(("llama.attention.key_length", Meta::U64(1 << 32)));
    let error = load("overflow", &gguf(&metadata, &tiny_tensors())).expect_err("refused");
    assert!(
        matches!(model_error(&error), ModelError::SizeOverflow { what: "num_attention_heads · head_dim" }),
        "{error}"
    );
}

#[test]
fn an_unsupported_type_is_refused_before_its_shape_is_allocated() {
    // Every tensor Q4_K (whose size the reader does not know, so the file does not bound it) and
    // 2^20 wide, as the metadata says: 4 TB per projection in f32.
    let wide = 1u64 << 20;
    let mut metadata = tiny_metadata();
    metadata.retain(|(key, _)| !key.starts_with("llama.embedding_length") && !key.starts_with("llama.feed_forward"));
    metadata.push(("llama.embedding_length", Meta::U64(wide)));
    metadata.push(("llama.feed_forward_length", Meta::U64(wide)));
    let tensors: Vec<Info> = tiny_tensors()
        .into_iter()
        .map(|t| {
            let dims = match t.dims.as_slice() {
                [_] => vec![wide],
                [_, 2] => vec![wide, wide / 2],
                [_, 8] if t.name == "token_embd.weight" => vec![wide, 8],
                _ => vec![wide, wide],
            };
            Info { dims, ggml_type: 12, ..t }
        })
        .collect();
    let error = load("q4_k", &gguf(&metadata, &tensors)).expect_err("refused");
    let DistillError::Text(inner) = &error else { panic!("{error:?}") };
    assert!(matches!(inner.downcast_ref::<GgufError>(), Some(GgufError::UnsupportedType { .. })), "{error}");
    assert!(error.to_string().contains("Q4_K"), "{error}");
}
