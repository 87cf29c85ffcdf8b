//! Loading a Hugging Face checkpoint (config.json + safetensors, single or sharded), strictly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use super::{IndexProblem, ModelError};
use super::{LlamaConfig, LlamaForCausalLM};
use crate::checkpoint::{CheckpointError, StateDictProblems};
use crate::error::{DistillError, Result};

/// A model with the variables it was built on: `vs` is what an optimizer trains and what
/// `VarStore::save` writes.
#[derive(Debug)]
pub struct Pretrained {
    /// The variables, under the Hugging Face names (`model.layers.0.mlp.up_proj.weight`…).
    pub vs: VarStore,
    /// The model, reading `vs`.
    pub model: LlamaForCausalLM,
}

/// The single-file checkpoint's name in a Hugging Face model folder.
const SINGLE_FILE: &str = "model.safetensors";
/// The index of a sharded checkpoint.
const INDEX_FILE: &str = "model.safetensors.index.json";

/// Loads a Hugging Face model folder — `config.json` and `model.safetensors`, or the shards listed
/// by `model.safetensors.index.json` — into a new model on `device`, as transformers'
/// `LlamaForCausalLM.from_pretrained(dir)` would (weights converted to f32).
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// let teacher = distill::text::load_pretrained("SmolLM2-135M", tch::Device::Cpu)?;
/// let logits = teacher.model.forward(&tch::Tensor::from_slice2(&[[1_i64, 2, 3]]))?;
/// # Ok(()) }
/// ```
///
/// The checkpoint is read and compared with the config before the model is built, so a config it
/// contradicts (another model's, or sizes no checkpoint of this folder holds) is an error, not an
/// allocation of the size the config claims.
///
/// # Errors
/// [`ModelError`](super::ModelError) when the config cannot be read or is not a LLaMA-family one,
/// when it has more layers than the checkpoint has tensors for, or when no checkpoint is found;
/// [`CheckpointError::StateDict`](crate::checkpoint::CheckpointError::StateDict) when its tensors do
/// not match the model (see [`load_safetensors`]); [`DistillError::Torch`] when a file cannot be read.
pub fn load_pretrained<P: AsRef<Path>>(dir: P, device: Device) -> Result<Pretrained> {
    let dir = dir.as_ref();
    let config_path = dir.join("config.json");
    let config = LlamaConfig::from_json_file(&config_path)?;
    let (source, tensors) = read_checkpoint(dir)?;
    let shapes: HashMap<String, (Vec<i64>, bool)> =
        tensors.iter().map(|(key, t)| (key.clone(), (t.size(), t.is_floating_point()))).collect();
    let invalid =
        |problem| DistillError::from(ModelError::Config { path: config_path.clone(), source: Box::new(problem) });
    check_before_building(&config, &source, &shapes, &|key, is_variable| ignorable_beside(key, is_variable), &invalid)?;
    let mut vs = VarStore::new(device);
    let model = LlamaForCausalLM::new(vs.root(), &config)?;
    crate::vision::load_strict(&mut vs, "", &source, &tensors, &ignorable)?;
    Ok(Pretrained { vs, model })
}

/// Whether a checkpoint key beyond the variables is allowed, given which names are variables.
pub(crate) type Ignorable = dyn Fn(&str, &dyn Fn(&str) -> bool) -> bool;

/// Checks the variables a model of `config` would have against a checkpoint's tensors (shape and
/// floating-pointness by name) before the model is built, with the problems the strict loader would
/// list, so that what the model allocates is what the checkpoint holds. `ignorable(key,
/// is_variable)` allows a key beyond the variables; `invalid` wraps a config the checkpoint cannot
/// hold.
///
/// # Errors
/// `invalid(ModelError::LayersPastTensors)` when the layers outnumber the checkpoint's tensors
/// (checked first, so that the names compared are bounded by the checkpoint);
/// [`CheckpointError::StateDict`] for any missing variable, unexpected key or differing shape or kind.
pub(crate) fn check_before_building(
    config: &LlamaConfig,
    source: &Path,
    tensors: &HashMap<String, (Vec<i64>, bool)>,
    ignorable: &Ignorable,
    invalid: &dyn Fn(ModelError) -> DistillError,
) -> Result<()> {
    // Each layer has tensors of its own: more layers than tensors cannot be in the checkpoint, and
    // below that the names compared (16 per layer at most, with biases) are bounded by it.
    if config.num_hidden_layers > tensors.len() as i64 {
        return Err(invalid(ModelError::LayersPastTensors {
            layers: config.num_hidden_layers,
            tensors: tensors.len(),
        }));
    }
    let variables = variable_shapes(config);
    let mut problems = StateDictProblems::default();
    for (key, shape) in &variables {
        match tensors.get(key) {
            None => problems.missing.push(key.clone()),
            Some((size, _)) if size != shape => {
                problems.shapes.push(format!("`{key}`: {size:?} in the file, {shape:?} in the model"))
            }
            Some((_, false)) => {
                problems.kinds.push(format!("`{key}`: integer in the file, {:?} in the model", Kind::Float))
            }
            Some(_) => {}
        }
    }
    let is_variable = |key: &str| variables.contains_key(key);
    let mut unexpected: Vec<String> =
        tensors.keys().filter(|key| !is_variable(key) && !ignorable(key, &is_variable)).cloned().collect();
    unexpected.sort();
    problems.unexpected = unexpected;
    if !problems.is_empty() {
        let file = source.display().to_string();
        return Err(CheckpointError::StateDict { file, prefix: String::new(), problems: Box::new(problems) }.into());
    }
    Ok(())
}

/// The variables [`LlamaForCausalLM::new`] creates for `config` (f32, under the root), with their
/// shapes, computed without allocating them. `config` has passed [`LlamaConfig::check`], so the
/// products fit in `i64`.
fn variable_shapes(config: &LlamaConfig) -> BTreeMap<String, Vec<i64>> {
    let hidden = config.hidden_size;
    let width = config.num_attention_heads * config.head_dim;
    let kv_width = config.num_key_value_heads * config.head_dim;
    let inner = config.intermediate_size;
    let mut shapes = BTreeMap::new();
    shapes.insert("model.embed_tokens.weight".to_owned(), vec![config.vocab_size, hidden]);
    shapes.insert("model.norm.weight".to_owned(), vec![hidden]);
    if !config.tie_word_embeddings {
        shapes.insert("lm_head.weight".to_owned(), vec![config.vocab_size, hidden]);
    }
    for layer in 0..config.num_hidden_layers {
        let p = format!("model.layers.{layer}");
        let mut linear = |name: &str, out: i64, input: i64, bias: bool| {
            shapes.insert(format!("{p}.{name}.weight"), vec![out, input]);
            if bias {
                shapes.insert(format!("{p}.{name}.bias"), vec![out]);
            }
        };
        linear("self_attn.q_proj", width, hidden, config.attention_bias);
        linear("self_attn.k_proj", kv_width, hidden, config.attention_bias);
        linear("self_attn.v_proj", kv_width, hidden, config.attention_bias);
        linear("self_attn.o_proj", hidden, width, config.attention_bias);
        linear("mlp.gate_proj", inner, hidden, config.mlp_bias);
        linear("mlp.up_proj", inner, hidden, config.mlp_bias);
        linear("mlp.down_proj", hidden, inner, config.mlp_bias);
        shapes.insert(format!("{p}.input_layernorm.weight"), vec![hidden]);
        shapes.insert(format!("{p}.post_attention_layernorm.weight"), vec![hidden]);
    }
    shapes
}

/// Loads a Hugging Face safetensors checkpoint into the variables of `vs` under `prefix` (`""` for
/// the root, `"teacher"` for a model built under `vs.root() / "teacher"`), strictly: every variable
/// must be in the checkpoint with its shape, and every tensor of the checkpoint must be a variable.
///
/// `path` is a `.safetensors` file, a `model.safetensors.index.json` (its shards are read from the
/// same folder), or a folder holding either. Besides the variables, the checkpoint may hold
/// `lm_head.weight` when the model ties it to the embedding (PyTorch's `state_dict()` lists the
/// shared tensor twice), and rotary `inv_freq` buffers that older transformers saved.
///
/// # Errors
/// [`CheckpointError::StateDict`](crate::checkpoint::CheckpointError::StateDict) listing the missing variables, unexpected tensors and shape
/// mismatches in one message (nothing is copied then); [`ModelError::Index`](super::ModelError::Index)
/// naming an index that cannot be read, a tensor two shards both hold, or a tensor in a shard the
/// index does not list it in; [`DistillError::Torch`] when a file cannot be read.
pub fn load_safetensors<P: AsRef<Path>>(vs: &mut VarStore, prefix: &str, path: P) -> Result<()> {
    let path = path.as_ref();
    let (source, tensors) = read_checkpoint(path)?;
    crate::vision::load_strict(vs, prefix, &source, &tensors, &ignorable)
}

/// Keys a checkpoint may hold beyond the variables.
fn ignorable(key: &str, variables: &BTreeMap<String, Tensor>) -> bool {
    ignorable_beside(key, &|name| variables.contains_key(name))
}

/// [`ignorable`] beside the variables `is_variable` names.
fn ignorable_beside(key: &str, is_variable: &dyn Fn(&str) -> bool) -> bool {
    let tied_head = key == "lm_head.weight" && is_variable("model.embed_tokens.weight");
    tied_head || key.ends_with("rotary_emb.inv_freq")
}

/// The checkpoint's tensors by name, and the file that names it in errors.
fn read_checkpoint(path: &Path) -> Result<(PathBuf, HashMap<String, Tensor>)> {
    let path = if path.is_dir() {
        let single = path.join(SINGLE_FILE);
        let index = path.join(INDEX_FILE);
        match (single.is_file(), index.is_file()) {
            (true, _) => single,
            (false, true) => index,
            (false, false) => {
                let dir = path.to_path_buf();
                return Err(ModelError::NoCheckpoint { dir, single: SINGLE_FILE, index: INDEX_FILE }.into());
            }
        }
    } else {
        path.to_path_buf()
    };
    if path.extension().is_some_and(|ext| ext == "json") {
        let tensors = read_sharded(&path)?;
        return Ok((path, tensors));
    }
    let tensors = Tensor::read_safetensors(&path)?.into_iter().collect();
    Ok((path, tensors))
}

/// The shards an index names, read and merged.
fn read_sharded(index: &Path) -> Result<HashMap<String, Tensor>> {
    let invalid = |problem| DistillError::from(ModelError::Index { index: index.to_path_buf(), problem });
    let text = std::fs::read_to_string(index).map_err(|e| invalid(IndexProblem::Unreadable(e)))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| invalid(IndexProblem::NotJson(e)))?;
    let Some(map) = json.get("weight_map").and_then(serde_json::Value::as_object) else {
        return Err(invalid(IndexProblem::NoWeightMap));
    };
    let mut shards: Vec<&str> = Vec::new();
    for (key, shard) in map {
        let Some(shard) = shard.as_str() else {
            return Err(invalid(IndexProblem::ShardNotString { key: key.clone() }));
        };
        if Path::new(shard).components().count() != 1 {
            return Err(invalid(IndexProblem::ShardOutsideFolder { shard: shard.to_owned(), key: key.clone() }));
        }
        if !shards.contains(&shard) {
            shards.push(shard);
        }
    }
    let folder = index.parent().unwrap_or(Path::new("."));
    let mut tensors = HashMap::new();
    // Every shard is read before a tensor's listing is checked: a tensor two shards hold is listed
    // in at most one of them, and is reported as held twice rather than as not listed.
    let mut holders: Vec<(String, &str)> = Vec::new();
    for shard in shards {
        for (key, tensor) in Tensor::read_safetensors(folder.join(shard))? {
            if tensors.insert(key.clone(), tensor).is_some() {
                return Err(invalid(IndexProblem::InTwoShards { key }));
            }
            holders.push((key, shard));
        }
    }
    for (key, shard) in holders {
        if map.get(&key).and_then(serde_json::Value::as_str) != Some(shard) {
            return Err(invalid(IndexProblem::NotListed { key, shard: shard.to_owned() }));
        }
    }
    Ok(tensors)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `variable_shapes` lists exactly the variables `LlamaForCausalLM::new` creates, with their
    /// shapes, with and without biases and tied embeddings.
    #[test]
    fn variable_shapes_are_those_the_model_creates() {
        let base = LlamaConfig {
            vocab_size: 10,
            hidden_size: 8,
            intermediate_size: 12,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            num_key_value_heads: 2,
            head_dim: 6,
            ..LlamaConfig::default()
        };
        for (tie_word_embeddings, attention_bias, mlp_bias) in
            [(false, false, false), (true, false, false), (false, true, false), (true, true, true)]
        {
            let config = LlamaConfig { tie_word_embeddings, attention_bias, mlp_bias, ..base.clone() };
            let vs = VarStore::new(Device::Cpu);
            let _model = LlamaForCausalLM::new(vs.root(), &config).unwrap();
            let created: BTreeMap<String, Vec<i64>> =
                vs.variables().into_iter().map(|(name, var)| (name, var.size())).collect();
            assert_eq!(variable_shapes(&config), created, "{config:?}");
        }
    }
}
