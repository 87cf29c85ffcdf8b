//! [`TopKKl`]: the forward KL of a language model's logits against the teacher's top-k with its
//! exact tail ([`TopKTail`]), token by token, and the fused KL + cross-entropy pass it shares with
//! `TokenKd`.

use tch::{Kind, Tensor};

use super::check::check_parameter;
use super::fused::{carry_gradient, row_loss, RowLoss, RowTeacher};
use super::mask::{by_sequence, check_mask, TokenReduction};
use super::packed::packed_token_criterion;
use super::tail::{check_temperature, TopKTail};
use super::token::TokenCriterion;
use super::wide::in_kind;
use crate::error::{CriterionError, Packed, Result};

/// Top-k distillation of a language model with an exact tail: the forward KL over `k + 1` buckets,
/// the teacher's `k` most probable tokens and one bucket with the rest of the vocabulary,
///
/// `ℓ = Σ_{i ≤ k} p_i (log p_i − log q_i) + p_tail (log p_tail − log q_tail)`
///
/// per token, with the teacher's [`TopKTail`] (encoded at the same temperature `T`), the student's
/// `log q_i = z_i − logsumexp(z)` at the teacher's ids and, from the excluded logits,
/// `log q_tail = logsumexp(z with the kept ids set to −inf) − logsumexp(z)`, `z = s / T`. A bucket
/// with `p = 0` contributes 0; `k = V` is the full forward KL. Reduced over the valid tokens as
/// [`SequenceKd`](super::SequenceKd) is ([`TokenReduction`]); no `T²` factor. Gradients flow to the
/// student only: the teacher's encoding is data.
///
/// A teacher whose [`temperature`](TopKTail::temperature) is known (from [`TopKTail::f_encode`] or a
/// token cache's batch) and is not `T` is refused
/// ([`TemperatureMismatch`](super::CriterionError::TemperatureMismatch)); one built from its parts
/// with `None` is read at `T` unchecked.
///
/// As a [`Criterion`](super::Criterion), the teacher tensor is the packed encoding ([`TopKTail::f_pack`],
/// `[B, T, 2k + 1]`) and the targets, when given, are token labels (−100 left out). A packed tensor
/// does not hold its temperature, so this path cannot check it; a teacher cache checks it against
/// [`teacher_encoding`](super::Criterion::teacher_encoding) before any pair reads it.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{Divergence, SequenceKd, TokenCriterion, TopKKl, TopKTail};
/// use tch::{Device, Kind, Tensor};
///
/// let s = Tensor::randn([2, 3, 50], (Kind::Double, Device::Cpu));
/// let t = Tensor::randn([2, 3, 50], (Kind::Double, Device::Cpu));
/// let valid = Tensor::ones([2, 3], (Kind::Bool, Device::Cpu));
/// let top = TopKTail::f_encode(&t, 8, 2.0)?;
/// let loss = TopKKl::new(2.0).f_loss_masked(&s, &top, Some(&valid))?.double_value(&[]);
/// // Keeping every token is the full forward KL.
/// let all = TopKTail::f_encode(&t, 50, 2.0)?;
/// let full = SequenceKd::new(Divergence::ForwardKl, 2.0).f_loss_masked(&s, &t, Some(&valid))?.double_value(&[]);
/// assert!((TopKKl::new(2.0).f_loss_masked(&s, &all, None)?.double_value(&[]) - full).abs() < 1e-12);
/// assert!(loss > 0.0 && loss < full);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopKKl {
    /// Softmax temperature `T` (finite, > 0); the teacher must be encoded at the same one.
    pub temperature: f64,
    /// How the per-token losses are reduced over the valid tokens.
    pub reduction: TokenReduction,
}

impl TopKKl {
    /// Top-k KL with an exact tail at temperature `temperature`, mean over valid tokens.
    pub const fn new(temperature: f64) -> Self {
        TopKKl { temperature, reduction: TokenReduction::Token }
    }

    /// This criterion with another reduction.
    pub const fn with_reduction(self, reduction: TokenReduction) -> Self {
        TopKKl { reduction, ..self }
    }

    /// Checks the temperature (valid, and the teacher's when known), the student's kind and the
    /// teacher's shapes against student logits `[…, V]`; returns the token shape `[…]`, `V` and `k`.
    pub(super) fn check_top_k(&self, student: &Tensor, teacher: &TopKTail) -> Result<(Vec<i64>, i64, i64)> {
        check_parameter("TopKKl's temperature", self.temperature, 0.0, true)?;
        check_temperature(Packed::TopKTail, teacher.temperature, self.temperature)?;
        if !student.defined() {
            return Err(CriterionError::Undefined { tensor: "the student logits tensor".into() }.into());
        }
        let shape = student.size();
        let kind = student.f_kind()?;
        if !matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
            return Err(CriterionError::NotFloatingPoint { tensor: "the student logits", kind }.into());
        }
        let Some((&vocab, lead)) = shape.split_last() else {
            return Err(CriterionError::NoVocabularyDimension { tensor: "the student logits" }.into());
        };
        teacher.check_parts()?;
        let k = teacher.k();
        let mut top_shape = lead.to_vec();
        top_shape.push(k);
        if teacher.ids.size() != top_shape {
            let encoding = Packed::TopKTail;
            return Err(
                CriterionError::TeacherDoesNotFit { encoding, teacher: teacher.ids.size(), student: shape }.into()
            );
        }
        if k < 1 || k > vocab {
            return Err(CriterionError::TopKOutOfRange { k, vocab }.into());
        }
        teacher.check_ids(vocab)?;
        Ok((lead.to_vec(), vocab, k))
    }
}

impl TokenCriterion for TopKKl {
    type Teacher = TopKTail;

    /// The per-token losses `[…]` of student logits `[…, V]` against `teacher`.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) when the shapes disagree, the student logits are not
    /// floating-point, the temperature is invalid, or the teacher was encoded at another one.
    fn f_per_token(&self, student: &Tensor, teacher: &TopKTail) -> Result<Tensor> {
        let (_, vocab, k) = self.check_top_k(student, teacher)?;
        let kind = student.f_kind()?;
        let z = student.f_div_scalar(self.temperature)?;
        let log_normaliser = z.f_logsumexp([-1], true)?;
        let log_q = z.f_gather(-1, &teacher.ids, false)?.f_sub(&log_normaliser)?;
        let log_p = teacher.log_probs.f_to_kind(kind)?.f_detach()?;
        let mut per_token = bucket(&log_p, &log_q)?.f_sum_dim_intlist(-1, false, None)?;
        if k < vocab {
            let log_q_tail = z
                .f_scatter_value(-1, &teacher.ids, f64::NEG_INFINITY)?
                .f_logsumexp([-1], false)?
                .f_sub(&log_normaliser.f_squeeze_dim(-1)?)?;
            let log_p_tail = teacher.tail.f_to_kind(kind)?.f_detach()?;
            per_token = per_token.f_add(&bucket(&log_p_tail, &log_q_tail)?)?;
        }
        Ok(per_token)
    }

    /// The loss of student logits `[B, T, V]` against `teacher`, over the tokens where `valid`
    /// (`[B, T]`, non-zero valid) holds, or every token without it.
    ///
    /// The gradient with respect to the logits is computed analytically in the same pass as the
    /// value (`w/T · (S·q_j − p_j)` on the kept ids, `w/T · q_j · (S − p_tail/q_tail)` on the others,
    /// `S` the teacher's total mass) and carried by a surrogate whose value is the loss exactly, so
    /// that no autograd graph over `[B, T, V]` is kept: one gradient buffer instead of several
    /// vocabulary-sized tensors. The result has no second derivative;
    /// [`f_per_token`](TokenCriterion::f_per_token) is the autograd form. [`TokenKd`](super::TokenKd)
    /// adds cross-entropy in the same pass.
    ///
    /// A masked token counts for nothing, whatever its logits hold (NaN or ±∞ included): its value is
    /// not added and its gradient is exactly 0. With no valid token — every token masked, or none at
    /// all (`B = 0` or `T = 0`) — the loss is 0 with a zero gradient ([`TokenReduction`]).
    ///
    /// # Errors
    /// As [`f_per_token`](Self::f_per_token), and for a mask of another shape;
    /// [`LossNotFinite`](super::CriterionError::LossNotFinite) when the loss is not finite while the
    /// logits require a gradient (no gradient to carry);
    /// [`LossOutOfRange`](super::CriterionError::LossOutOfRange) when it is finite but past the
    /// largest number of the logits' kind (65 504 for f16, with a sum reduction over many tokens);
    /// [`GradientOverflow`](super::CriterionError::GradientOverflow) when the loss is finite but its
    /// gradient cannot be carried exactly.
    fn f_loss_masked(&self, student: &Tensor, teacher: &TopKTail, valid: Option<&Tensor>) -> Result<Tensor> {
        let shapes = self.check_top_k(student, teacher)?;
        fused_loss(self, 1.0, student, teacher, shapes, None, valid)
    }
}

/// `p (log p − log q)` elementwise, 0 where `p = 0`.
fn bucket(log_p: &Tensor, log_q: &Tensor) -> Result<Tensor> {
    let p = log_p.f_exp()?;
    let terms = p.f_mul(&log_p.f_sub(log_q)?)?;
    let zero = Tensor::f_zeros([], (terms.kind(), terms.device()))?;
    Ok(terms.f_where_self(&p.f_gt(0.0)?, &zero)?)
}

/// `T = 1`, mean over valid tokens.
impl Default for TopKKl {
    fn default() -> Self {
        TopKKl::new(1.0)
    }
}

// The packed TopKTail, at this criterion's temperature, with token labels as targets.
packed_token_criterion!(TopKKl => TopKTail, TopKTail);

/// `kd_weight · KD (+ ce weight · CE)` of student logits `[…, V]`, reduced as `kd` says over the
/// tokens where `valid` holds (and whose label is not −100), with the analytic gradient. `shapes` is
/// what [`TopKKl::check_top_k`] returned for these tensors, and the labels of `ce` are checked already
/// (`i64`, the token shape, inside the vocabulary or −100): the callers check once, here nothing is
/// checked twice.
pub(super) fn fused_loss(
    kd: &TopKKl,
    kd_weight: f64,
    student: &Tensor,
    teacher: &TopKTail,
    shapes: (Vec<i64>, i64, i64),
    ce: Option<(&Tensor, f64)>,
    valid: Option<&Tensor>,
) -> Result<Tensor> {
    let (lead, vocab, k) = shapes;
    let kind = student.f_kind()?;
    let n: i64 = lead.iter().product();
    let device = student.device();
    let mut mask = match valid {
        Some(valid) => {
            check_mask(valid, &lead)?;
            valid.f_ne(0)?
        }
        None => Tensor::f_ones(lead.as_slice(), (Kind::Bool, device))?,
    };
    let labels = ce.map(|(labels, _)| labels.shallow_clone());
    if let Some(labels) = &labels {
        mask = mask.f_logical_and(&super::mask::valid_labels(labels)?)?;
    }
    let ck = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
    // `[B, T]` also for `B = 0` (no token, a loss of 0), where `reshape([0, −1])` is ambiguous.
    let weights = kd.reduction.weights(&by_sequence(&mask)?, ck)?.f_reshape([n])?;
    let flat_labels = labels.as_ref().map(|l| l.f_reshape([n])).transpose()?;
    let ids = teacher.ids.f_reshape([n, k])?;
    let log_probs = teacher.log_probs.f_reshape([n, k])?;
    let tail = teacher.tail.f_reshape([n])?;
    let ce = match (&flat_labels, ce) {
        (Some(labels), Some((_, weight))) => Some((labels, weights.f_mul_scalar(weight)?)),
        _ => None,
    };
    let loss = RowLoss {
        teacher: RowTeacher::TopK { ids: &ids, log_probs: &log_probs, tail: &tail },
        temperature: kd.temperature,
        kd_weights: weights.f_mul_scalar(kd_weight)?,
        ce,
    };
    let z = student.f_reshape([n, vocab])?;
    let grad = if student.requires_grad() { Some(Tensor::f_empty([n, vocab], (kind, device))?) } else { None };
    let value = in_kind(&row_loss(&z, &loss, grad.as_ref())?, kind)?;
    match grad {
        Some(grad) => carry_gradient(&z, &grad, &value),
        None => Ok(value),
    }
}
