//! The token embedding and the output head that may share its weight.

use tch::nn::{EmbeddingConfig, Init, LinearConfig, Path};

use crate::nn;

/// transformers' `initializer_range` default: weights start as `N(0, 0.02²)`.
pub(crate) const INIT: Init = Init::Randn { mean: 0.0, stdev: 0.02 };

/// `embed_tokens`: `vocab` rows of `hidden` features (variable `weight`).
pub(crate) fn token_embedding(p: &Path, vocab: i64, hidden: i64) -> nn::Embedding {
    nn::embedding(p, vocab, hidden, EmbeddingConfig { ws_init: INIT, ..Default::default() })
}

/// `lm_head`: a new `hidden → vocab` projection under `p`, or one that reads the embedding's weight
/// (tied: no variable of its own, so a checkpoint has no `lm_head.weight` and training updates both).
pub(crate) fn output_head(p: &Path, embedding: &nn::Embedding, vocab: i64, hidden: i64, tied: bool) -> nn::Linear {
    if tied {
        return nn::Linear::from_tch(tch::nn::Linear { ws: embedding.ws.shallow_clone(), bs: None });
    }
    nn::linear(p, hidden, vocab, LinearConfig { ws_init: INIT, bs_init: None, bias: false })
}
