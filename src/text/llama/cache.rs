//! The key/value cache of incremental decoding.

use tch::{Device, Kind, Tensor};

use crate::text::ModelError;

/// The keys and values every layer has computed so far, so that decoding one more token attends to
/// them without recomputing them. Start with [`KvCache::new`] and pass the same cache to each step
/// of [`LlamaForCausalLM::forward_cached`](super::LlamaForCausalLM::forward_cached).
///
/// A cache belongs to the model that filled it, for the batch size it was filled with, until
/// [`clear`](Self::clear): giving it to another model or another batch size is an error.
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer: keys and values `[B, KV heads, S, head_dim]` after rotation.
    layers: Vec<Option<(Tensor, Tensor)>>,
    /// The identity of the model that filled it (`None` while empty).
    owner: Option<u64>,
}

/// What a forward needs of the cache it is given: the model's identity and the shape, device and
/// kind of the keys and values its layers append.
#[derive(Debug)]
pub(crate) struct CacheFit {
    pub owner: u64,
    pub batch: i64,
    pub layers: usize,
    pub kv_heads: i64,
    pub head_dim: i64,
    pub device: Device,
    pub kind: Kind,
}

impl KvCache {
    /// An empty cache.
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// Tokens held (0 when empty).
    pub fn len(&self) -> i64 {
        self.layers.first().and_then(Option::as_ref).map_or(0, |(k, _)| k.size()[2])
    }

    /// Whether no token is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every token (and the model that filled it).
    pub fn clear(&mut self) {
        self.layers.clear();
        self.owner = None;
    }

    /// Checks that a forward described by `fit` can append to the cache, then marks the cache as
    /// that model's. Checked before the forward runs, so that the concatenations of
    /// [`append`](Self::append) cannot fail.
    pub(crate) fn claim(&mut self, fit: &CacheFit) -> Result<(), ModelError> {
        if self.layers.iter().all(Option::is_none) {
            self.layers.clear();
            self.owner = Some(fit.owner);
            return Ok(());
        }
        let mismatch = |problem: String| Err(ModelError::CacheMismatch { problem });
        if self.owner != Some(fit.owner) {
            return mismatch("by another model".to_owned());
        }
        if self.layers.len() != fit.layers || self.layers.iter().any(Option::is_none) {
            let filled = self.layers.iter().filter(|layer| layer.is_some()).count();
            return mismatch(format!("for {filled} layers, not {}", fit.layers));
        }
        let expected = [fit.batch, fit.kv_heads, self.len(), fit.head_dim];
        for (keys, values) in self.layers.iter().flatten() {
            for tensor in [keys, values] {
                let size = tensor.size();
                if size.first() != Some(&fit.batch) {
                    let found = size.first().copied().unwrap_or_default();
                    return mismatch(format!("for batch size {found}, not {}", fit.batch));
                }
                if size != expected {
                    return mismatch(format!("with keys and values of shape {size:?}, not {expected:?}"));
                }
                if tensor.device() != fit.device {
                    return mismatch(format!("on {:?}, not {:?}", tensor.device(), fit.device));
                }
                if tensor.kind() != fit.kind {
                    return mismatch(format!("in {:?}, not {:?}", tensor.kind(), fit.kind));
                }
            }
        }
        Ok(())
    }

    /// Appends `keys`/`values` `[B, KV heads, T, d]` to layer `layer` and returns everything it holds.
    pub(crate) fn append(&mut self, layer: usize, keys: Tensor, values: Tensor) -> (Tensor, Tensor) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        // `claim` checked the held tensors against the model's batch, heads, head width, device
        // and kind: only the token dimension differs.
        let entry = match self.layers[layer].take() {
            Some((k, v)) => (Tensor::cat(&[k, keys], 2), Tensor::cat(&[v, values], 2)),
            None => (keys, values),
        };
        let out = (entry.0.shallow_clone(), entry.1.shallow_clone());
        self.layers[layer] = Some(entry);
        out
    }
}
