//! A language model's token loss computed from its final hidden states and `lm_head` weight chunk by
//! chunk of tokens ([`ChunkedLoss`]), so that the logits `[B·T, V]` are never held for the backward.
//!
//! tch has no custom autograd function, so the loss is a surrogate: the value and the gradients
//! with respect to the hidden states `h` and the weight `W` are computed chunk by chunk (the chunk's
//! logits `z = h_c Wᵀ`, their gradient `g_c = ∂L/∂z_c` computed analytically in place of them for
//! the forward KL, the top-k KL and cross-entropy, or by a local autograd pass of the criterion for
//! the other divergences; then `∂L/∂h_c = g_c W` and `∂L/∂W += g_cᵀ h_c`), and the returned tensor is
//!
//! `S − detach(S) + L`,  `S = ⟨h, ∂L/∂h⟩ + ⟨W, ∂L/∂W⟩` (the gradients detached),
//!
//! whose value is `L` exactly (`S − S = 0`) and whose gradients with respect to `h` and `W` are the
//! computed ones. Only one chunk's `[n, V]` logits (and, with the analytic gradient, a few rows of
//! temporaries) live at a time; the graph holds `∂L/∂h` (`[B·T, H]`) and `∂L/∂W` (`[V, H]`). The
//! surrogate has no second derivative.

use tch::{Kind, Tensor};

use super::fused::{row_loss, RowLoss, RowTeacher};
use super::mask::{check_mask, TokenReduction, IGNORE_INDEX};
use super::sequence::{Divergence, SequenceKd};
use super::tail::{check_temperature, TopKTail};
use super::tail_kl::TopKKl;
use super::token::TokenCriterion;
use super::Criterion;
use crate::error::{CriterionError, DistillError, Packed, Result};

/// What the chunked logits are compared with.
#[derive(Debug)]
pub enum ChunkedTarget<'a> {
    /// The teacher's full logits `[B, T, V]`, chunked alongside the student's, through a
    /// [`SequenceKd`] divergence (its temperature and reduction).
    Logits {
        /// The teacher's logits `[B, T, V]`.
        teacher: &'a Tensor,
        /// The divergence, temperature and reduction.
        criterion: SequenceKd,
    },
    /// The teacher's top-k with an exact tail ([`TopKTail`], `[B, T, k]`), through [`TopKKl`]; an
    /// encoding made at another temperature than the criterion's is refused, as by [`TopKKl`].
    TopK {
        /// The teacher's encoding.
        teacher: &'a TopKTail,
        /// The temperature (the encoding's) and reduction.
        criterion: TopKKl,
    },
    /// Cross-entropy with next-token labels `[B, T]` (class indices; −100 ignored), per token
    /// `logsumexp(z) − z[label]`, as PyTorch's `F.cross_entropy(ignore_index=-100)` with
    /// [`TokenReduction::Token`].
    CrossEntropy {
        /// The labels `[B, T]`.
        labels: &'a Tensor,
        /// How the per-token losses are reduced.
        reduction: TokenReduction,
    },
}

impl ChunkedTarget<'_> {
    fn reduction(&self) -> TokenReduction {
        match self {
            ChunkedTarget::Logits { criterion, .. } => criterion.reduction,
            ChunkedTarget::TopK { criterion, .. } => criterion.reduction,
            ChunkedTarget::CrossEntropy { reduction, .. } => *reduction,
        }
    }

    /// The per-token losses `[n]` of the logits `z` `[n, V]` of flattened tokens `start..start + n`.
    fn per_token(&self, z: &Tensor, start: i64, n: i64) -> Result<Tensor> {
        let vocab = z.size()[1];
        match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                let t = teacher.f_reshape([-1, vocab])?.f_narrow(0, start, n)?;
                criterion.divergence.per_token(z, &t, criterion.temperature)
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                let k = teacher.k();
                let part = TopKTail {
                    ids: teacher.ids.f_reshape([-1, k])?.f_narrow(0, start, n)?,
                    log_probs: teacher.log_probs.f_reshape([-1, k])?.f_narrow(0, start, n)?,
                    tail: teacher.tail.f_reshape([-1])?.f_narrow(0, start, n)?,
                    temperature: teacher.temperature,
                };
                criterion.f_per_token(z, &part)
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                // Any integer kind the label check accepts, as `gather` needs it: `i64`.
                let y = labels.f_reshape([-1])?.f_narrow(0, start, n)?.f_to_kind(Kind::Int64)?;
                // Ignored labels gather class 0 (their weight is 0).
                let y = y.f_clamp_min(0)?.f_unsqueeze(1)?;
                Ok(z.f_logsumexp([1], false)?.f_sub(&z.f_gather(1, &y, false)?.f_squeeze_dim(1)?)?)
            }
        }
    }

    /// The weighted loss of the chunk's logits `z` `[n, V]` (tokens `start..start + n`, reduction
    /// weights `weights` `[n]`) with its gradient with respect to `z` written over `z`, for the
    /// targets with an analytic gradient (forward KL, top-k KL, cross-entropy); `None`, with `z`
    /// untouched, for the others (they take a local autograd pass).
    fn analytic(&self, z: &Tensor, start: i64, n: i64, weights: &Tensor) -> Result<Option<Tensor>> {
        let vocab = z.size()[1];
        let value = match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                let forward = match criterion.divergence {
                    Divergence::ForwardKl => true,
                    Divergence::Jsd { beta } => beta == 0.0,
                    Divergence::SkewKl { alpha } => alpha == 0.0,
                    _ => false,
                };
                if !forward {
                    return Ok(None);
                }
                let t = teacher.f_reshape([-1, vocab])?.f_narrow(0, start, n)?;
                let loss = RowLoss {
                    teacher: RowTeacher::Logits(&t),
                    temperature: criterion.temperature,
                    kd_weights: weights.shallow_clone(),
                    ce: None,
                };
                row_loss(z, &loss, Some(z))?
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                let k = teacher.k();
                let ids = teacher.ids.f_reshape([-1, k])?.f_narrow(0, start, n)?;
                let log_probs = teacher.log_probs.f_reshape([-1, k])?.f_narrow(0, start, n)?;
                let tail = teacher.tail.f_reshape([-1])?.f_narrow(0, start, n)?;
                let loss = RowLoss {
                    teacher: RowTeacher::TopK { ids: &ids, log_probs: &log_probs, tail: &tail },
                    temperature: criterion.temperature,
                    kd_weights: weights.shallow_clone(),
                    ce: None,
                };
                row_loss(z, &loss, Some(z))?
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                let y = labels.f_reshape([-1])?.f_narrow(0, start, n)?.f_to_kind(Kind::Int64)?;
                let loss = RowLoss {
                    teacher: RowTeacher::None,
                    temperature: 1.0,
                    kd_weights: weights.f_zeros_like()?,
                    ce: Some((&y, weights.shallow_clone())),
                };
                row_loss(z, &loss, Some(z))?
            }
        };
        Ok(Some(value))
    }

    /// Checks the target against `B, T, V` and returns the valid tokens `[B, T]` it implies.
    fn check(&self, b: i64, t: i64, vocab: i64, kind: Kind) -> Result<Option<Tensor>> {
        let invalid_criterion = |reason| DistillError::InvalidCriterion { pair: String::new(), reason };
        match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                criterion.validate().map_err(invalid_criterion)?;
                if teacher.size() != [b, t, vocab] {
                    return Err(
                        CriterionError::TeacherShape { expected: vec![b, t, vocab], got: teacher.size() }.into()
                    );
                }
                let teacher_kind = teacher.f_kind()?;
                if teacher_kind != kind {
                    let what = "the hidden states and the teacher logits";
                    return Err(CriterionError::KindMismatch { what, first: kind, second: teacher_kind }.into());
                }
                Ok(None)
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                criterion.validate().map_err(invalid_criterion)?;
                check_temperature(Packed::TopKTail, teacher.temperature, criterion.temperature)?;
                // The parts are read row by row: the same shapes, not only the same element counts
                // (a transposed `log_probs` would be read misaligned).
                teacher.check_parts()?;
                teacher.check_ids(vocab)?;
                let k = teacher.k();
                if teacher.ids.size() != [b, t, k] {
                    let (encoding, student) = (Packed::TopKTail, vec![b, t, vocab]);
                    return Err(
                        CriterionError::TeacherDoesNotFit { encoding, teacher: teacher.ids.size(), student }.into()
                    );
                }
                if k < 1 || k > vocab {
                    return Err(CriterionError::TopKOutOfRange { k, vocab }.into());
                }
                Ok(None)
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                if labels.size() != [b, t] {
                    return Err(CriterionError::LabelShape { expected: vec![b, t], got: labels.size() }.into());
                }
                let valid = super::mask::valid_labels(labels)?;
                if labels.numel() > 0 {
                    let out = labels.f_ge(vocab)?.f_logical_or(&labels.f_lt(0)?.f_logical_and(&valid)?)?;
                    if out.f_any()?.f_int64_value(&[])? != 0 {
                        return Err(CriterionError::LabelOutOfRange { vocab, ignore_index: IGNORE_INDEX }.into());
                    }
                }
                Ok(Some(valid))
            }
        }
    }
}

/// A token loss of a language model computed from its final hidden states `h` `[B, T, H]` and
/// `lm_head` weight `W` `[V, H]` (logits `z = h Wᵀ`, no bias, as LLaMA-family heads) in chunks of
/// `chunk_tokens` tokens: per chunk the logits, their log-softmax and their gradient, so the peak
/// memory of loss and backward is that of one chunk's `[chunk_tokens, V]` tensors plus `∂L/∂W`,
/// instead of several `[B·T, V]` tensors held for the backward. TRL and torchtune chunk their KL for
/// the same reason.
///
/// The value and the gradients with respect to `h` and `W` equal those of the unchunked
/// [`f_loss_unchunked`](Self::f_loss_unchunked) up to float rounding (the same operations summed
/// in another order); see the module documentation for the surrogate that carries the gradient.
/// [`f_loss`](Self::f_loss) gives the teacher side no gradient (the surrogate carries gradients
/// with respect to `h` and `W` only); [`f_loss_unchunked`](Self::f_loss_unchunked), plain autograd,
/// gives teacher logits ([`ChunkedTarget::Logits`]) that require a gradient one, as
/// [`SequenceKd`] does, and none to a top-k teacher, whose parts [`TopKKl`] detaches.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{ChunkedLoss, ChunkedTarget, Divergence, SequenceKd};
/// use tch::{Device, Kind, Tensor};
///
/// let opts = (Kind::Double, Device::Cpu);
/// let h = Tensor::randn([2, 6, 8], opts).set_requires_grad(true);
/// let w = Tensor::randn([30, 8], opts).set_requires_grad(true);
/// let teacher = Tensor::randn([2, 6, 30], opts);
/// let target = ChunkedTarget::Logits { teacher: &teacher, criterion: SequenceKd::new(Divergence::ForwardKl, 2.0) };
/// let chunked = ChunkedLoss::new(4).f_loss(&h, &w, &target, None)?;
/// chunked.backward();
/// // The same loss at once, from a fresh leaf with the same values.
/// let h2 = h.detach().set_requires_grad(true);
/// let full = ChunkedLoss::new(4).f_loss_unchunked(&h2, &w, &target, None)?;
/// assert!((chunked.double_value(&[]) - full.double_value(&[])).abs() < 1e-12);
/// full.backward();
/// assert!((h.grad() - h2.grad()).abs().max().double_value(&[]) < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkedLoss {
    /// Tokens per chunk (≥ 1).
    pub chunk_tokens: i64,
}

/// 256 tokens: at a vocabulary of 49 152, 48 MiB per f32 `[chunk, V]` tensor. Measured at T = 2048,
/// V = 49 152, H = 576 (forward KL, analytic chunk gradients) on 2 otherwise idle cores: 1/9.2 of
/// the unchunked path's peak memory growth, at 0.88–0.92× its time (BENCHMARKS.md; on cores shared
/// with other processes its many small passes fall behind, 1.76× at a load average of 9).
impl Default for ChunkedLoss {
    fn default() -> Self {
        ChunkedLoss::new(256)
    }
}

impl ChunkedLoss {
    /// Chunks of `chunk_tokens` tokens.
    pub const fn new(chunk_tokens: i64) -> Self {
        ChunkedLoss { chunk_tokens }
    }

    /// The loss of `target` from hidden states `hidden` `[B, T, H]` and `lm_head` weight `weight`
    /// `[V, H]`, over the tokens where `valid` (`[B, T]`, non-zero valid) holds (every token without
    /// it; with [`ChunkedTarget::CrossEntropy`] also only those whose label is not −100), reduced as
    /// the target says. Differentiable in `hidden` and `weight` (those that require a gradient).
    ///
    /// # Errors
    /// [`DistillError::InvalidCriterion`](crate::DistillError::InvalidCriterion) for a target's
    /// criterion whose parameters are invalid (the reason its `validate` gives);
    /// [`CriterionError`](super::CriterionError) for a chunk size < 1, an undefined tensor, hidden
    /// states and weight of mismatched shapes, kinds or devices, teacher logits of another shape or
    /// kind, a top-k teacher whose parts or shape do not fit (or whose `k` is outside `1..=V`, or that
    /// was encoded at another temperature than its criterion's), labels
    /// of another shape, of a non-integer kind or outside the vocabulary (other than −100), or a mask
    /// of another shape; [`DistillError::Torch`](crate::DistillError::Torch) for an operation libtorch
    /// refuses, such as one on tensors on different devices (the teacher's, the labels' and the mask's
    /// devices are not checked beforehand).
    pub fn f_loss(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        target: &ChunkedTarget<'_>,
        valid: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, vocab, weights) = self.prepare(hidden, weight, target, valid)?;
        let h_dim = weight.size()[1];
        let n = b * t;
        let opts = (hidden.kind(), hidden.device());
        let flat_h = hidden.f_detach()?.f_reshape([n, h_dim])?;
        let w = weight.f_detach()?;
        let grad_h = Tensor::f_zeros([n, h_dim], opts)?;
        let mut grad_w = Tensor::f_zeros([vocab, h_dim], opts)?;
        let mut value = Tensor::f_zeros([], opts)?;
        let weights = weights.f_reshape([n])?;
        let mut start = 0;
        while start < n {
            let len = self.chunk_tokens.min(n - start);
            let wc = weights.f_narrow(0, start, len)?;
            // A chunk with no valid token contributes nothing, to the value or the gradients.
            if wc.f_ne(0.0)?.f_any()?.f_int64_value(&[])? != 0 {
                let hc = flat_h.f_narrow(0, start, len)?;
                let z = tch::no_grad(|| hc.f_matmul(&w.f_tr()?))?;
                // The analytic gradient is written over the chunk's logits: no autograd pass, and
                // no `[chunk, V]` tensor beside them but a few rows of temporaries.
                let (loss, g) = match target.analytic(&z, start, len, &wc)? {
                    Some(loss) => (loss.f_to_kind(opts.0)?, z),
                    None => tch::with_grad(|| -> Result<(Tensor, Tensor)> {
                        let z = z.f_set_requires_grad(true)?;
                        let loss = weighted_sum(&target.per_token(&z, start, len)?, &wc)?;
                        let mut grads = Tensor::f_run_backward(&[&loss], &[&z], false, false)?;
                        Ok((loss.f_detach()?, grads.remove(0)))
                    })?,
                };
                tch::no_grad(|| -> Result<()> {
                    grad_h.f_narrow(0, start, len)?.f_copy_(&g.f_matmul(&w)?)?;
                    let _ = grad_w.f_addmm_(&g.f_tr()?, &hc)?;
                    value = value.f_add(&loss)?;
                    Ok(())
                })?;
            }
            start += len;
        }
        let mut surrogate = Tensor::f_zeros([], opts)?;
        if hidden.requires_grad() {
            surrogate = surrogate.f_add(&hidden.f_reshape([-1])?.f_dot(&grad_h.f_reshape([-1])?)?)?;
        }
        if weight.requires_grad() {
            surrogate = surrogate.f_add(&weight.f_reshape([-1])?.f_dot(&grad_w.f_reshape([-1])?)?)?;
        }
        Ok(surrogate.f_sub(&surrogate.f_detach()?)?.f_add(&value)?)
    }

    /// The same loss computed the direct way: the logits `h Wᵀ` `[B, T, V]` at once, through
    /// autograd. The reference that [`f_loss`](Self::f_loss) equals, and what it saves memory
    /// against.
    ///
    /// # Errors
    /// As [`f_loss`](Self::f_loss).
    pub fn f_loss_unchunked(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        target: &ChunkedTarget<'_>,
        valid: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, t, vocab, weights) = self.prepare(hidden, weight, target, valid)?;
        let z = hidden.f_matmul(&weight.f_tr()?)?.f_reshape([b * t, vocab])?;
        weighted_sum(&target.per_token(&z, 0, b * t)?, &weights.f_reshape([b * t])?)
    }

    /// Checks the inputs; returns `B`, `T`, `V` and the per-token reduction weights `[B, T]`.
    fn prepare(
        &self,
        hidden: &Tensor,
        weight: &Tensor,
        target: &ChunkedTarget<'_>,
        valid: Option<&Tensor>,
    ) -> Result<(i64, i64, i64, Tensor)> {
        if self.chunk_tokens < 1 {
            return Err(
                CriterionError::CountBelowOne { what: "the chunk size in tokens", got: self.chunk_tokens }.into()
            );
        }
        for (tensor, given) in
            [("the chunked loss's hidden states tensor", hidden), ("the chunked loss's weight", weight)]
        {
            if !given.defined() {
                return Err(CriterionError::Undefined { tensor: tensor.into() }.into());
            }
        }
        let (hs, ws) = (hidden.size(), weight.size());
        if hs.len() != 3 || ws.len() != 2 || hs[2] != ws[1] {
            return Err(CriterionError::ChunkedShapes { hidden: hs, weight: ws }.into());
        }
        let kind = hidden.f_kind()?;
        let weight_kind = weight.f_kind()?;
        if !matches!(kind, Kind::Float | Kind::Double | Kind::Half | Kind::BFloat16) || weight_kind != kind {
            let what = "the chunked loss's hidden states and weight";
            return Err(CriterionError::KindMismatch { what, first: kind, second: weight_kind }.into());
        }
        if hidden.device() != weight.device() {
            let what = "the chunked loss's hidden states and weight";
            return Err(CriterionError::DeviceMismatch { what, first: hidden.device(), second: weight.device() }.into());
        }
        let (b, t, vocab) = (hs[0], hs[1], ws[0]);
        let implied = target.check(b, t, vocab, kind)?;
        let mut mask = match valid {
            Some(valid) => {
                check_mask(valid, &[b, t])?;
                valid.f_ne(0)?
            }
            None => Tensor::f_ones([b, t], (Kind::Bool, hidden.device()))?,
        };
        if let Some(implied) = implied {
            mask = mask.f_logical_and(&implied)?;
        }
        let weights = target.reduction().weights(&mask, kind)?;
        Ok((b, t, vocab, weights))
    }
}

/// `Σ w·ℓ`, selecting rather than multiplying where `w = 0` (a masked token may be NaN).
fn weighted_sum(per_token: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let zero = Tensor::f_zeros([], (per_token.kind(), per_token.device()))?;
    Ok(per_token.f_mul(weights)?.f_where_self(&weights.f_ne(0.0)?, &zero)?.f_sum(per_token.kind())?)
}
