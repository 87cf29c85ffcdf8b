//! Embedding table, as `tch::nn::embedding`.

use std::borrow::Borrow;

use tch::nn::{EmbeddingConfig, Module, Path};
use tch::Tensor;

use super::leaf::tch_wrapper;
use crate::nn::capture::{record, TapId};

/// An embedding layer; derefs to `tch::nn::Embedding` (`ws`).
#[derive(Debug)]
pub struct Embedding {
    inner: tch::nn::Embedding,
    tap: TapId,
}

tch_wrapper!(Embedding, tch::nn::Embedding);

impl Module for Embedding {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| self.inner.forward(xs))
    }
}

/// An embedding table of `num_embeddings` rows of size `embedding_dim`, as `tch::nn::embedding`.
pub fn embedding<'a, T: Borrow<Path<'a>>>(
    vs: T,
    num_embeddings: i64,
    embedding_dim: i64,
    config: EmbeddingConfig,
) -> Embedding {
    Embedding::from_tch(tch::nn::embedding(vs, num_embeddings, embedding_dim, config))
}
