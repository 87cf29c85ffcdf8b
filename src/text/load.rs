//! Loading a Hugging Face checkpoint (config.json + safetensors, single or sharded), strictly.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::{IndexProblem, ModelError};
use super::{LlamaConfig, LlamaForCausalLM};
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
/// # Errors
/// [`ModelError`](super::ModelError) when the config cannot be read or is not a LLaMA-family one,
/// or when no checkpoint is found; [`CheckpointError::StateDict`](crate::checkpoint::CheckpointError::StateDict) when its tensors do not match the
/// model (see [`load_safetensors`]); [`DistillError::Torch`] when a file cannot be read.
pub fn load_pretrained<P: AsRef<Path>>(dir: P, device: Device) -> Result<Pretrained> {
    let dir = dir.as_ref();
    let config = LlamaConfig::from_json_file(dir.join("config.json"))?;
    let mut vs = VarStore::new(device);
    let model = LlamaForCausalLM::new(vs.root(), &config)?;
    load_safetensors(&mut vs, "", dir)?;
    Ok(Pretrained { vs, model })
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
/// naming an index that cannot be read or a tensor two shards both hold; [`DistillError::Torch`] when a file cannot be read.
pub fn load_safetensors<P: AsRef<Path>>(vs: &mut VarStore, prefix: &str, path: P) -> Result<()> {
    let path = path.as_ref();
    let (source, tensors) = read_checkpoint(path)?;
    crate::vision::load_strict(vs, prefix, &source, &tensors, &ignorable)
}

/// Keys a checkpoint may hold beyond the variables.
fn ignorable(key: &str, variables: &BTreeMap<String, Tensor>) -> bool {
    let tied_head = key == "lm_head.weight" && variables.contains_key("model.embed_tokens.weight");
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
    for shard in shards {
        for (key, tensor) in Tensor::read_safetensors(folder.join(shard))? {
            if map.get(&key).and_then(serde_json::Value::as_str) != Some(shard) {
                return Err(invalid(IndexProblem::NotListed { key, shard: shard.to_owned() }));
            }
            if tensors.insert(key.clone(), tensor).is_some() {
                return Err(invalid(IndexProblem::InTwoShards { key }));
            }
        }
    }
    Ok(tensors)
}
