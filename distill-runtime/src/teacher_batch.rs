//! [`TeacherBatch`]: one batch of a teacher cache, standing for the teacher in a forward of any
//! front end (`distill!`, `Mapping`, a config).

use tch::{Kind, Tensor};

use crate::criterion::IGNORE_INDEX;
use crate::endpoint::ResolvedEndpoint;
use crate::error::Result;
use crate::side::SideModel;

/// A batch read from a teacher cache that takes the teacher's place in a forward: the stored
/// tensors of its endpoints ([`SideModel`]), what the student runs on, and which tokens count.
///
/// Implemented by [`CachedBatch`](crate::cache::CachedBatch) (an image cache's batch at one augmentation
/// view) and [`CachedTokens`](crate::cache::CachedTokens) (a token cache's batch of sequences); the
/// `forward_cached` and `dry_run_cached` of every front end take either.
pub trait TeacherBatch: SideModel {
    /// What the student runs on, from the batch's inputs `xs`: an image batch applies each sample's
    /// stored augmentation view (what the teacher saw); a token batch checks that `xs` has its
    /// shape and gives it as it is.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`](crate::DistillError::CacheMismatch) when `xs` does not fit the
    /// batch.
    fn student_input(&self, xs: &Tensor) -> Result<Tensor>;

    /// Which tokens the stored teacher tensors are valid for, `[B, T]` (non-zero: valid), for a
    /// batch of sequences; `None` for a batch of samples. Every pair of a forward from this batch
    /// reads it as its token labels (see [`token_labels`](Self::token_labels)).
    fn token_mask(&self) -> Option<&Tensor> {
        None
    }

    /// The tensor of a pair on the teacher endpoint `endpoint` (student's or teacher's, after the
    /// adapters) as the pair compares it: a token batch narrows a stored hidden state's pair to the
    /// valid tokens (`[B, T, …]` → `[N, …]`), so that padding never enters its loss; everything else
    /// is left as it is (the default).
    ///
    /// # Errors
    /// [`CacheError::HiddenPairShape`](crate::cache::CacheError::HiddenPairShape) when a tensor to
    /// narrow is not `[B, T, …]` over the batch's tokens.
    fn select_tokens(&self, endpoint: &ResolvedEndpoint, tensor: &Tensor) -> Result<Tensor> {
        let _ = endpoint;
        Ok(tensor.shallow_clone())
    }

    /// The token mask as the labels the sequence criteria read: `0` where a token is valid,
    /// [`IGNORE_INDEX`] (−100) where it is not; `None` without a token mask.
    ///
    /// # Errors
    /// [`DistillError::Torch`](crate::DistillError::Torch) when the mask cannot be converted.
    fn token_labels(&self) -> Result<Option<Tensor>> {
        let Some(mask) = self.token_mask() else { return Ok(None) };
        let valid = mask.f_ne(0)?;
        let ignored = Tensor::f_full_like(&valid.f_to_kind(Kind::Int64)?, IGNORE_INDEX)?;
        Ok(Some(ignored.f_masked_fill(&valid, 0)?))
    }
}
