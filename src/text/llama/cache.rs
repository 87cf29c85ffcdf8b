//! The key/value cache of incremental decoding.

use tch::Tensor;

/// The keys and values every layer has computed so far, so that decoding one more token attends to
/// them without recomputing them. Start with [`KvCache::new`] and pass the same cache to each step
/// of [`LlamaForCausalLM::forward_cached`](super::LlamaForCausalLM::forward_cached).
#[derive(Debug, Default)]
pub struct KvCache {
    /// Per layer: keys and values `[B, KV heads, S, head_dim]` after rotation.
    layers: Vec<Option<(Tensor, Tensor)>>,
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

    /// Forgets every token.
    pub fn clear(&mut self) {
        self.layers.clear();
    }

    /// Appends `keys`/`values` `[B, KV heads, T, d]` to layer `layer` and returns everything it holds.
    pub(crate) fn append(&mut self, layer: usize, keys: Tensor, values: Tensor) -> (Tensor, Tensor) {
        if self.layers.len() <= layer {
            self.layers.resize_with(layer + 1, || None);
        }
        let entry = match self.layers[layer].take() {
            Some((k, v)) => (Tensor::cat(&[k, keys], 2), Tensor::cat(&[v, values], 2)),
            None => (keys, values),
        };
        let out = (entry.0.shallow_clone(), entry.1.shallow_clone());
        self.layers[layer] = Some(entry);
        out
    }
}
