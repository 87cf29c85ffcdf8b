//! Loading a llama.cpp GGUF file: its metadata as a [`LlamaConfig`], its tensors under Hugging
//! Face's names with llama.cpp's rotary row order undone.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::gguf::{GgufError, GgufFile};
use super::load::check_before_building;
use super::ModelError;
use super::{LlamaConfig, LlamaForCausalLM, Pretrained};
use crate::error::{DistillError, Result};

/// A GGUF reader's error as a `DistillError`.
fn gguf(error: GgufError) -> DistillError {
    DistillError::Text(Box::new(error))
}

/// Loads a llama.cpp GGUF file of a LLaMA-family model (`general.architecture` `llama`) into a new
/// f32 model on `device`: the config from the `llama.*` metadata, every tensor dequantised, renamed
/// to Hugging Face's name and, for `q_proj`/`k_proj`, put back in Hugging Face's row order — what
/// transformers' `from_pretrained(dir, gguf_file=…)` loads.
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// use distill::text::{self, GenerateConfig};
/// let teacher = text::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", tch::Device::Cpu)?;
/// let prompt = [1_i64, 504, 3458, 314, 5365, 314]; // token ids
/// let out = teacher.model.generate(&prompt, &GenerateConfig::greedy(20))?;
/// println!("{:?} ({:.1} tokens/s)", out.tokens, out.tokens_per_second);
/// # Ok(()) }
/// ```
///
/// The metadata is compared with the file's tensor infos (whose sizes the reader checked against
/// the file's length) before any variable is allocated, so metadata claiming sizes the file does
/// not hold is an error, never an allocation of that size.
///
/// # Errors
/// [`DistillError::Text`] when the file cannot be read or is malformed (naming the file and the
/// offset) or holds a tensor type that is not dequantised; [`ModelError::GgufConfig`](super::ModelError::GgufConfig)
/// when the metadata does not describe a LLaMA-family model or has more layers than the file has
/// tensors for, [`CheckpointError::StateDict`] when the tensors do not fit it (one error listing the
/// missing, unexpected and misshapen tensors).
///
/// [`CheckpointError::StateDict`]: crate::checkpoint::CheckpointError::StateDict
pub fn load_gguf<P: AsRef<Path>>(path: P, device: Device) -> Result<Pretrained> {
    let file = GgufFile::open(path).map_err(gguf)?;
    let config = LlamaConfig::from_gguf(&file)?;
    let renamed = Renamed::of(&file);
    let invalid = |problem| {
        DistillError::from(ModelError::GgufConfig { file: file.path().to_path_buf(), problem: Box::new(problem) })
    };
    check_before_building(&config, file.path(), &renamed.shapes, &|_, _| false, &invalid)?;
    // An unsupported type's size is unknown to the reader, so nothing bounds its dimensions by the
    // file: refuse it before a variable of its shape is allocated.
    for source in renamed.sources.values() {
        file.tensor_bytes(source).map_err(gguf)?;
    }
    let mut vs = VarStore::new(device);
    let model = LlamaForCausalLM::new(vs.root(), &config)?;
    renamed.load(&mut vs, "", &file, &config)?;
    Ok(Pretrained { vs, model })
}

/// Loads the tensors of `file` into the variables of `vs` under `prefix` (a model of `config` built
/// there), strictly as [`load_safetensors`](super::load_safetensors) does, after renaming them
/// ([`hf_name`]) and undoing llama.cpp's row permutation of the query and key projections. Each
/// tensor is dequantised only when it is copied, so the file is never held whole in f32.
///
/// # Errors
/// As [`load_gguf`], and [`ModelError`](super::ModelError) when `config` is inconsistent
/// ([`LlamaConfig::validate`]).
pub fn load_gguf_weights(vs: &mut VarStore, prefix: &str, file: &GgufFile, config: &LlamaConfig) -> Result<()> {
    Renamed::of(file).load(vs, prefix, file, config)
}

/// A GGUF file's tensors under Hugging Face names.
struct Renamed {
    /// Shape (PyTorch order) and floating-pointness (always) by Hugging Face name.
    shapes: HashMap<String, (Vec<i64>, bool)>,
    /// The llama.cpp name of each.
    sources: HashMap<String, String>,
}

impl Renamed {
    /// The tensors of `file`, each under [`hf_name`]'s name, or under its own llama.cpp name marked
    /// as such when it has none (so that the strict check lists it as unexpected).
    fn of(file: &GgufFile) -> Renamed {
        let mut renamed = Renamed { shapes: HashMap::new(), sources: HashMap::new() };
        let unknown = |gguf_name: &str| format!("{gguf_name} (llama.cpp name)");
        for info in file.tensor_infos() {
            let mut name = hf_name(&info.name).unwrap_or_else(|| unknown(&info.name));
            // `hf_name` is one-to-one (it reads layer numbers only in plain decimal); should it
            // ever repeat a name, the second tensor keeps its own name and is reported as
            // unexpected rather than silently replacing the first.
            if renamed.sources.contains_key(&name) {
                name = unknown(&info.name);
            }
            renamed.shapes.insert(name.clone(), (info.shape(), true));
            renamed.sources.insert(name, info.name.clone());
        }
        renamed
    }

    /// [`load_gguf_weights`] with the renaming done.
    fn load(&self, vs: &mut VarStore, prefix: &str, file: &GgufFile, config: &LlamaConfig) -> Result<()> {
        // The head counts regroup the rows of q_proj and k_proj (a count below 1 would be a
        // wildcard of `reshape`).
        config.validate()?;
        let device = vs.device();
        let mut read = |key: &str| -> Result<Tensor> {
            let source = &self.sources[key];
            let tensor = file.tensor(source, device).map_err(gguf)?;
            Ok(match rotary_heads(key, config) {
                Some(heads) => unpermute_rows(&tensor, heads)?,
                None => tensor,
            })
        };
        crate::vision::load_strict_with(vs, prefix, file.path(), &self.shapes, &ignorable, &mut read)
    }
}

/// Nothing beyond the variables is allowed in a GGUF file.
fn ignorable(_key: &str, _variables: &BTreeMap<String, Tensor>) -> bool {
    false
}

/// The Hugging Face name of a llama.cpp tensor name (`blk.3.attn_q.weight` →
/// `model.layers.3.self_attn.q_proj.weight`), or `None` for a name a LLaMA model does not have.
pub fn hf_name(gguf_name: &str) -> Option<String> {
    let (stem, suffix) = gguf_name.rsplit_once('.')?;
    if suffix != "weight" && suffix != "bias" {
        return None;
    }
    let module = match stem {
        "token_embd" => "model.embed_tokens".to_string(),
        "output_norm" => "model.norm".to_string(),
        "output" => "lm_head".to_string(),
        _ => {
            let rest = stem.strip_prefix("blk.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer = plain_decimal(layer)?;
            let part = match part {
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                "ffn_down" => "mlp.down_proj",
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                _ => return None,
            };
            format!("model.layers.{layer}.{part}")
        }
    };
    Some(format!("{module}.{suffix}"))
}

/// A layer number written as llama.cpp writes it: decimal digits without a sign or a leading zero.
/// `parse` alone would also read `01` and `+1` as 1, naming a tensor of layer 1 twice.
fn plain_decimal(text: &str) -> Option<u64> {
    let digits = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit());
    if !digits || (text.len() > 1 && text.starts_with('0')) {
        return None;
    }
    text.parse().ok()
}

/// The number of heads whose rows llama.cpp's converter permuted in the tensor named `key` (Hugging
/// Face name): the query heads for `q_proj`, the key/value heads for `k_proj`.
fn rotary_heads(key: &str, config: &LlamaConfig) -> Option<i64> {
    if key.contains(".self_attn.q_proj.") {
        Some(config.num_attention_heads)
    } else if key.contains(".self_attn.k_proj.") {
        Some(config.num_key_value_heads)
    } else {
        None
    }
}

/// Undoes llama.cpp's converter's `permute`: it stores each head's rows interleaved (pair `i` of
/// the rotation as rows `2i`, `2i + 1`), Hugging Face as halves (rows `i`, `i + d/2`). Viewing the
/// rows as `[heads, d/2, 2]` and swapping the last two axes gives Hugging Face's `[heads, 2, d/2]`.
///
/// `heads` is at least 1 (a validated config's).
///
/// # Errors
/// [`DistillError::Torch`] when the rows are not `heads` whole heads of pairs (a `config` that
/// does not describe the tensor).
pub(crate) fn unpermute_rows(tensor: &Tensor, heads: i64) -> Result<Tensor> {
    let size = tensor.size();
    let rows = size.first().copied().unwrap_or(0);
    let mut split = vec![heads, rows / heads / 2, 2];
    split.extend_from_slice(size.get(1..).unwrap_or_default());
    Ok(tensor.f_reshape(split.as_slice())?.f_transpose(1, 2)?.f_reshape(size.as_slice())?)
}

impl LlamaConfig {
    /// The config a GGUF file's metadata describes: `llama.block_count`, `embedding_length`,
    /// `feed_forward_length`, `attention.head_count`, `attention.head_count_kv`,
    /// `attention.key_length` (else hidden / heads), `rope.freq_base` (else 10 000),
    /// `attention.layer_norm_rms_epsilon`, `context_length`; the vocabulary size from
    /// `llama.vocab_size`, else the tokenizer's token list, else the embedding's rows; tied
    /// embeddings when there is no `output.weight`; the tokenizer's BOS and EOS ids.
    ///
    /// # Errors
    /// [`ModelError::GgufConfig`](super::ModelError::GgufConfig) when the architecture is not `llama`, a required key is
    /// absent or not a number, or the result is inconsistent ([`validate`](Self::validate)).
    pub fn from_gguf(file: &GgufFile) -> Result<LlamaConfig> {
        let invalid = |problem| {
            DistillError::from(ModelError::GgufConfig { file: file.path().to_path_buf(), problem: Box::new(problem) })
        };
        let arch = file.metadata("general.architecture").and_then(|v| v.as_str()).unwrap_or("");
        if arch != "llama" {
            return Err(invalid(ModelError::Architecture { arch: arch.to_owned() }));
        }
        let int = |key: &str| file.metadata(&format!("llama.{key}")).and_then(|v| v.as_i64());
        let float = |key: &str| file.metadata(&format!("llama.{key}")).and_then(|v| v.as_f64());
        let required = |key: &str| {
            int(key)
                .ok_or_else(|| invalid(ModelError::MissingMetadata { what: "integer", key: format!("llama.{key}") }))
        };
        let hidden_size = required("embedding_length")?;
        let num_attention_heads = required("attention.head_count")?;
        let head_dim = match int("attention.key_length") {
            Some(d) => d,
            None if num_attention_heads > 0 => hidden_size / num_attention_heads,
            None => {
                let value = num_attention_heads;
                return Err(invalid(ModelError::BelowOne { what: "llama.attention.head_count", value }));
            }
        };
        let tokens = file.metadata("tokenizer.ggml.tokens").and_then(|v| v.as_array()).map(|a| a.len() as i64);
        let embedding_rows = file.tensor_info("token_embd.weight").and_then(|info| info.shape().first().copied());
        let vocab_size =
            int("vocab_size").or(tokens).or(embedding_rows).ok_or_else(|| invalid(ModelError::NoVocabularySize))?;
        let token = |key: &str| file.metadata(&format!("tokenizer.ggml.{key}")).and_then(|v| v.as_i64());
        let config = LlamaConfig {
            vocab_size,
            hidden_size,
            intermediate_size: required("feed_forward_length")?,
            num_hidden_layers: required("block_count")?,
            num_attention_heads,
            num_key_value_heads: int("attention.head_count_kv").unwrap_or(num_attention_heads),
            head_dim,
            max_position_embeddings: int("context_length").unwrap_or(2048),
            rms_norm_eps: float("attention.layer_norm_rms_epsilon").ok_or_else(|| {
                let key = "llama.attention.layer_norm_rms_epsilon".to_owned();
                invalid(ModelError::MissingMetadata { what: "float", key })
            })?,
            rope_theta: float("rope.freq_base").unwrap_or(10000.0),
            tie_word_embeddings: file.tensor_info("output.weight").is_none(),
            attention_bias: file.tensor_info("blk.0.attn_q.bias").is_some(),
            mlp_bias: file.tensor_info("blk.0.ffn_up.bias").is_some(),
            bos_token_id: token("bos_token_id"),
            eos_token_id: token("eos_token_id"),
        };
        config.check().map_err(invalid)?;
        Ok(config)
    }
}
