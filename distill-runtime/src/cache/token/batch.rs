//! [`CachedTokens`]: the teacher side of one batch of sequences read from a token cache.

use std::path::PathBuf;

use tch::{Device, Tensor};

use super::manifest::TokenEncoding;
use crate::criterion::{SampledLogits, TopKTail};
use crate::error::{DistillError, Result};

/// A teacher's stored distributions for one batch of tokens, as the criteria take them.
#[derive(Debug)]
pub enum TokenTeacher {
    /// Top-k with the exact tail, for [`TopKKl`](crate::criterion::TopKKl).
    TopK(TopKTail),
    /// The sampled encoding, for [`SampledKl`](crate::criterion::SampledKl).
    Sampled(SampledLogits),
}

/// The teacher side of one batch of sequences, from [`TokenCache::batch`](super::TokenCache::batch): every token's stored
/// distribution (`[B, T, …]`, f32 values, `i64` ids) and the token mask.
///
/// ```no_run
/// # extern crate distill_runtime as distill;
/// # use distill::cache::TokenCache;
/// # use distill::criterion::{TokenCriterion, TopKKl};
/// # fn run(cache: &TokenCache, student_logits: &tch::Tensor) -> distill::Result<()> {
/// let batch = cache.batch(&[3, 17, 4])?;                 // the sequences of a training batch
/// let kd = TopKKl::new(1.0).f_loss_masked(student_logits, batch.top_k()?, Some(batch.valid()))?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct CachedTokens {
    pub(super) dir: PathBuf,
    pub(super) sequence_ids: Vec<usize>,
    pub(super) valid: Tensor,
    pub(super) teacher: TokenTeacher,
    pub(super) encoding: TokenEncoding,
    /// The stored hidden states by teacher path, `[B, T, width]` f32 (zeros at padding).
    pub(super) hidden: Vec<(String, Tensor)>,
}

impl CachedTokens {
    /// The sequence ids, in batch order.
    pub fn sequence_ids(&self) -> &[usize] {
        &self.sequence_ids
    }

    /// Which tokens the teacher's logits were given as valid when the cache was written: `[B, T]`
    /// bool. Positions not valid hold a point mass on token 0; leave them out of the loss.
    pub fn valid(&self) -> &Tensor {
        &self.valid
    }

    /// The stored distributions.
    pub fn teacher(&self) -> &TokenTeacher {
        &self.teacher
    }

    /// How the cache stores them.
    pub fn encoding(&self) -> TokenEncoding {
        self.encoding
    }

    /// The top-k encoding with its exact tail (ids `[B, T, k]`, log-probabilities `[B, T, k]`, tail
    /// `[B, T]`), which a `TopKKl`'s
    /// [`f_loss_masked`](crate::criterion::TokenCriterion::f_loss_masked) takes. Its
    /// [`temperature`](TopKTail::temperature) is the cache's, so a `TopKKl` at another one refuses it.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] when the cache stores the sampled encoding.
    pub fn top_k(&self) -> Result<&TopKTail> {
        match &self.teacher {
            TokenTeacher::TopK(top) => Ok(top),
            TokenTeacher::Sampled(_) => Err(self.mismatch("top-k with a tail")),
        }
    }

    /// The sampled encoding (ids, log-probabilities, weights, each `[B, T, n]`), which
    /// [`TokenCriterion::f_loss_masked`](crate::criterion::TokenCriterion::f_loss_masked) of a `SampledKl` takes.
    /// Its [`temperature`](SampledLogits::temperature) is the cache's, so a `SampledKl` at another
    /// one refuses it.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] when the cache stores top-k.
    pub fn sampled(&self) -> Result<&SampledLogits> {
        match &self.teacher {
            TokenTeacher::Sampled(sampled) => Ok(sampled),
            TokenTeacher::TopK(_) => Err(self.mismatch("the sampled encoding")),
        }
    }

    /// The stored teacher hidden state at the module `path`, `[B, T, width]` as f32 (zeros where the
    /// batch's [`valid`](Self::valid) mask is false), if the cache stores it.
    pub fn hidden(&self, path: &str) -> Option<&Tensor> {
        self.hidden.iter().find(|(stored, _)| stored == path).map(|(_, tensor)| tensor)
    }

    /// The encoding packed as one tensor, the teacher tensor of a pair whose criterion is
    /// [`TopKKl`](crate::criterion::TopKKl) (`[B, T, 2k + 1]`, [`TopKTail::f_pack`]) or
    /// [`SampledKl`](crate::criterion::SampledKl) (`[B, T, 3n]`, [`SampledLogits::f_pack`]).
    ///
    /// # Errors
    /// As the `f_pack` functions (ids of 2²⁴ and more do not pack into f32).
    pub fn packed(&self) -> Result<Tensor> {
        match &self.teacher {
            TokenTeacher::TopK(top) => top.f_pack(),
            TokenTeacher::Sampled(sampled) => sampled.f_pack(),
        }
    }

    /// This batch on `device`.
    ///
    /// # Errors
    /// [`DistillError::Torch`] when a tensor cannot be moved.
    pub fn to_device(&self, device: Device) -> Result<CachedTokens> {
        let teacher = match &self.teacher {
            TokenTeacher::TopK(top) => TokenTeacher::TopK(TopKTail {
                ids: top.ids.f_to_device(device)?,
                log_probs: top.log_probs.f_to_device(device)?,
                tail: top.tail.f_to_device(device)?,
                temperature: top.temperature,
            }),
            TokenTeacher::Sampled(s) => TokenTeacher::Sampled(SampledLogits {
                ids: s.ids.f_to_device(device)?,
                log_probs: s.log_probs.f_to_device(device)?,
                weights: s.weights.f_to_device(device)?,
                temperature: s.temperature,
            }),
        };
        Ok(CachedTokens {
            dir: self.dir.clone(),
            sequence_ids: self.sequence_ids.clone(),
            valid: self.valid.f_to_device(device)?,
            teacher,
            encoding: self.encoding,
            hidden: self
                .hidden
                .iter()
                .map(|(path, tensor)| Ok((path.clone(), tensor.f_to_device(device)?)))
                .collect::<Result<Vec<_>>>()?,
        })
    }

    fn mismatch(&self, asked: &str) -> DistillError {
        DistillError::CacheMismatch {
            dir: self.dir.display().to_string(),
            what: "the stored encoding".to_owned(),
            cached: format!("{:?}", self.encoding),
            expected: format!("{asked} (what the criterion reads)"),
        }
    }
}
