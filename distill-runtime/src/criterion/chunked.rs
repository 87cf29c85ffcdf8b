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
//!
//! A masked token enters neither the value nor a gradient: its zero gradient times a NaN or ±∞
//! hidden state (a padded position can hold one) would be NaN in `∂L/∂W` and in `S`. Its hidden
//! state is replaced by 0 in its chunk's copy and selected out of `S` (an `[n, H]` pass, only for
//! batches with masked tokens, against the `[n, V]` passes of the logits); a teacher row of such a
//! token that is not finite is seen in its per-token value and its gradient row set to 0.

use tch::{Kind, Tensor};

use super::mask::{check_mask, TokenReduction};
use super::sequence::SequenceKd;
use super::tail::TopKTail;
use super::tail_kl::TopKKl;
use crate::error::{CriterionError, Result};

mod target;
use target::Rows;

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
    /// A masked token counts for nothing, whatever its hidden state or teacher row holds: the value
    /// and every other gradient are those of finite padding, bit for bit, and its own gradient is
    /// exactly 0, also where it holds NaN or ±∞. With no valid token (every token masked, or
    /// `B·T = 0`) the loss is 0 with a zero gradient ([`TokenReduction`]).
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
        let w = weight.f_detach()?;
        let grad_h = Tensor::f_zeros([n, h_dim], opts)?;
        let mut grad_w = Tensor::f_zeros([vocab, h_dim], opts)?;
        let mut value = Tensor::f_zeros([], opts)?;
        let weights = weights.f_reshape([n])?;
        // The rows that count, once on the host for the chunk loop's decisions (one
        // synchronisation for the batch instead of one per chunk).
        let active = weights.f_ne(0.0)?;
        let on_host = Vec::<bool>::try_from(&active.f_to_device(tch::Device::Cpu)?)?;
        let all_active = on_host.iter().all(|&a| a);
        // A masked row must not enter the computation: its hidden state may be NaN or ±∞ (a padded
        // position), and its zero gradient times it, in `∂L/∂W += gᵀ h` or in the surrogate, would
        // be NaN. Zeroing it in the chunk's copy gives finite logits there, which the weights then
        // leave out, and changes no valid row's value or gradient.
        let flat_h = hidden.f_detach()?.f_reshape([n, h_dim])?;
        let row_mask = active.f_unsqueeze(1)?;
        let mut start = 0;
        while start < n {
            let len = self.chunk_tokens.min(n - start);
            let chunk_active = &on_host[start as usize..(start + len) as usize];
            // A chunk with no valid token contributes nothing, to the value or the gradients.
            if chunk_active.iter().any(|&a| a) {
                let partial = !chunk_active.iter().all(|&a| a);
                let wc = weights.f_narrow(0, start, len)?;
                let mc = row_mask.f_narrow(0, start, len)?;
                let mut hc = flat_h.f_narrow(0, start, len)?;
                if partial {
                    hc = hc.f_where_scalarother(&mc, 0.0)?;
                }
                let z = tch::no_grad(|| hc.f_matmul(&w.f_tr()?))?;
                // The analytic gradient is written over the chunk's logits: no autograd pass, and
                // no `[chunk, V]` tensor beside them but a few rows of temporaries.
                let (loss, g) = match target.analytic(&z, start, len, &wc)? {
                    Some(loss) => (loss.f_to_kind(opts.0)?, z),
                    None => tch::with_grad(|| -> Result<(Tensor, Tensor)> {
                        let z = z.f_set_requires_grad(true)?;
                        let per_token = target.per_token(&z, &Rows::Range(start, len))?;
                        let loss = weighted_sum(&per_token, &wc)?;
                        let mut grads = Tensor::f_run_backward(&[&loss], &[&z], false, false)?;
                        let mut g = grads.remove(0);
                        // A masked row's logits are finite now, but its teacher side may not be:
                        // then its zero gradient went through non-finite intermediates (0 · NaN),
                        // which its per-token value, NaN or ±∞ too, shows (as in `SequenceKd`).
                        if partial && !finite_or_kept(&per_token, &mc)? {
                            let _ = g.f_masked_fill_(&mc.f_logical_not()?, 0.0)?;
                        }
                        Ok((loss.f_detach()?, g))
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
            let mut h = hidden.f_reshape([n, h_dim])?;
            if !all_active {
                // Selected, not multiplied: the masked rows' gradient is exactly 0 whatever they hold.
                h = h.f_where_scalarother(&row_mask, 0.0)?;
            }
            surrogate = surrogate.f_add(&h.f_reshape([-1])?.f_dot(&grad_h.f_reshape([-1])?)?)?;
        }
        if weight.requires_grad() {
            surrogate = surrogate.f_add(&weight.f_reshape([-1])?.f_dot(&grad_w.f_reshape([-1])?)?)?;
        }
        Ok(surrogate.f_sub(&surrogate.f_detach()?)?.f_add(&value)?)
    }

    /// The same loss computed the direct way: the logits `h Wᵀ` `[B, T, V]` at once, through
    /// autograd. The reference that [`f_loss`](Self::f_loss) equals, and what it saves memory
    /// against. With masked tokens, the logits of the valid ones alone, so that a masked token's
    /// hidden state or teacher row enters nothing, as in [`f_loss`](Self::f_loss).
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
        let (n, h_dim) = (b * t, weight.size()[1]);
        let weights = weights.f_reshape([n])?;
        let active = weights.f_ne(0.0)?;
        if n == 0 || active.f_all()?.f_int64_value(&[])? != 0 {
            let z = hidden.f_matmul(&weight.f_tr()?)?.f_reshape([n, vocab])?;
            return weighted_sum(&target.per_token(&z, &Rows::Range(0, n))?, &weights);
        }
        let rows = active.f_nonzero()?.f_squeeze_dim(1)?;
        let h = hidden.f_reshape([n, h_dim])?.f_index_select(0, &rows)?;
        let z = h.f_matmul(&weight.f_tr()?)?;
        weighted_sum(&target.per_token(&z, &Rows::Index(&rows))?, &weights.f_index_select(0, &rows)?)
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

/// Whether `per_token` (`[n]`) is finite at every row where `kept` (`[n, 1]`, bool) does not hold.
fn finite_or_kept(per_token: &Tensor, kept: &Tensor) -> Result<bool> {
    let fine = per_token.f_detach()?.f_isfinite()?.f_logical_or(&kept.f_squeeze_dim(1)?)?;
    Ok(fine.f_all()?.f_int64_value(&[])? != 0)
}

/// `Σ w·ℓ`, selecting rather than multiplying where `w = 0` (a masked token may be NaN).
fn weighted_sum(per_token: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let zero = Tensor::f_zeros([], (per_token.kind(), per_token.device()))?;
    Ok(per_token.f_mul(weights)?.f_where_self(&weights.f_ne(0.0)?, &zero)?.f_sum(per_token.kind())?)
}
