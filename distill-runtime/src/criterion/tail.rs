//! The teacher's next-token distribution reduced to its `k` most probable tokens plus one exact
//! tail bucket ([`TopKTail`]), and the KL divergence that reads it ([`TopKKl`]).
//!
//! The tail's log-mass is computed from the excluded logits themselves,
//! `log p_tail = logsumexp(z outside the top k) − logsumexp(z)`, never as `1 − Σ p_top` nor as
//! `log1mexp(logsumexp(log p_top))`: both subtract a kept mass near 1 from 1, so at a vocabulary of
//! 49 152 tokens with k = 1024 and a true tail of 1e-7 the f32 result is mostly rounding (0, or off
//! by 50 % or more), while the excluded-logits form keeps the tail to its last few ulps.

use tch::{Kind, Tensor};

use super::check::check_parameter;
use super::check::parameter;
use super::fused::{carry_gradient, row_loss, RowLoss, RowTeacher};
use super::mask::{check_mask, TokenReduction, IGNORE_INDEX};
use super::packed::{check_packed_shapes, f_packed_loss, PackedTokens};
use super::sequence::token_labels;
use super::token::TokenCriterion;
use super::Criterion;
use crate::error::{CriterionError, DistillError, Packed, PackedProblem, Result};

/// The largest vocabulary whose token ids an `f32` holds exactly (2²⁴), for the packed form.
const F32_EXACT_IDS: i64 = 1 << 24;
/// Elements of one f64 block of the encoder (rows × vocabulary): 32 MiB, so that encoding never
/// holds an f64 copy of all the logits.
const ENCODE_BLOCK: i64 = 1 << 22;

/// A teacher's next-token distribution at temperature `T`, per token: its `k` most probable tokens
/// (`ids`, `log_probs`, in descending order) and the log of the mass of every other token (`tail`).
///
/// Shapes: `ids` `[…, k]` (`i64`), `log_probs` `[…, k]`, `tail` `[…]` (`−inf` when `k` is the whole
/// vocabulary). The probabilities `exp(log_probs)` and `exp(tail)` sum to 1 up to rounding.
///
/// [`f_pack`](Self::f_pack) moves it into one tensor
/// `[…, 2k + 1]` (`[log_probs | ids | tail]`, ids as floating-point numbers) so that it travels as a
/// pair's teacher tensor.
///
/// ```
/// use distill_runtime::criterion::TopKTail;
/// use tch::{Kind, Tensor};
///
/// let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 0.0]).reshape([1, 1, 4]);
/// let top = TopKTail::f_encode(&logits, 2, 1.0)?;
/// assert_eq!(Vec::<i64>::try_from(top.ids.reshape([-1]))?, [1, 2]);
/// // The tail holds tokens 0 and 3: (e¹ + e⁰) / (e⁰ + e¹ + e² + e³).
/// let want = (1f64.exp() + 1.0) / (1.0 + 1f64.exp() + 2f64.exp() + 3f64.exp());
/// assert!((top.tail.exp().double_value(&[0, 0]) - want).abs() < 1e-7);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct TopKTail {
    /// The `k` most probable token ids per token, `[…, k]`, `i64`.
    pub ids: Tensor,
    /// Their log-probabilities at the temperature, `[…, k]`.
    pub log_probs: Tensor,
    /// The log of the probability mass of every token not in `ids`, `[…]`.
    pub tail: Tensor,
}

impl TopKTail {
    /// Encodes teacher logits `[…, V]` at temperature `temperature`, keeping the `k` most probable
    /// tokens: `log_probs = z_top − logsumexp(z)` and `tail = logsumexp(z with the top k set to −inf)
    /// − logsumexp(z)` with `z = logits / T`, accumulated in f64 (block by block of tokens) and
    /// stored in the logits' kind (`f32` for `f16`/`bf16`). Detached: it is data, not part of a loss.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) for `k` outside `1..=V`, a temperature that is not finite
    /// and > 0, or logits that are not floating-point with at least one dimension.
    pub fn f_encode(logits: &Tensor, k: i64, temperature: f64) -> Result<TopKTail> {
        check_parameter("the top-k temperature", temperature, 0.0, true)?;
        if !logits.defined() {
            return Err(CriterionError::Undefined { tensor: "the tensor of logits to encode".into() }.into());
        }
        let shape = logits.size();
        let Some(&vocab) = shape.last() else {
            return Err(CriterionError::NoVocabularyDimension { tensor: "the logits to encode" }.into());
        };
        if k < 1 || k > vocab {
            return Err(CriterionError::TopKOutOfRange { k, vocab }.into());
        }
        let kind = match logits.f_kind()? {
            Kind::Double => Kind::Double,
            Kind::Float | Kind::Half | Kind::BFloat16 => Kind::Float,
            other => {
                return Err(CriterionError::NotFloatingPoint { tensor: "the logits to encode", kind: other }.into())
            }
        };
        let lead = &shape[..shape.len() - 1];
        let rows = logits.f_reshape([-1, vocab])?;
        let n = rows.size()[0];
        let block = (ENCODE_BLOCK / vocab.max(1)).max(1);
        let (mut ids, mut log_probs, mut tails) = (Vec::new(), Vec::new(), Vec::new());
        tch::no_grad(|| -> Result<()> {
            let mut start = 0;
            while start < n {
                let len = block.min(n - start);
                let z = rows.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?.f_div_scalar(temperature)?;
                let log_normaliser = z.f_logsumexp([1], true)?;
                let (top, top_ids) = z.f_topk(k, 1, true, true)?;
                let tail = z
                    .f_scatter_value(1, &top_ids, f64::NEG_INFINITY)?
                    .f_logsumexp([1], false)?
                    .f_sub(&log_normaliser.f_squeeze_dim(1)?)?;
                log_probs.push(top.f_sub(&log_normaliser)?.f_to_kind(kind)?);
                tails.push(tail.f_to_kind(kind)?);
                ids.push(top_ids);
                start += len;
            }
            Ok(())
        })?;
        let mut top_shape = lead.to_vec();
        top_shape.push(k);
        Ok(TopKTail {
            ids: Tensor::f_cat(&ids, 0)?.f_reshape(&top_shape)?,
            log_probs: Tensor::f_cat(&log_probs, 0)?.f_reshape(&top_shape)?,
            tail: Tensor::f_cat(&tails, 0)?.f_reshape(lead)?,
        })
    }

    /// How many tokens are kept per position.
    pub(crate) fn k(&self) -> i64 {
        self.ids.size().last().copied().unwrap_or(0)
    }

    /// Checks that the parts agree: `log_probs` of the shape of `ids` (`[…, k]`), `tail` of that
    /// shape without `k`. The loss reads the three row by row, so equal element counts are not enough.
    ///
    /// # Errors
    /// [`CriterionError::TopKTailParts`] when they do not.
    pub(crate) fn check_parts(&self) -> Result<()> {
        let (ids, log_probs, tail) = (self.ids.size(), self.log_probs.size(), self.tail.size());
        if ids.is_empty() || log_probs != ids || tail[..] != ids[..ids.len() - 1] {
            return Err(CriterionError::TopKTailParts { ids, log_probs, tail }.into());
        }
        Ok(())
    }

    /// One tensor `[…, 2k + 1]`: `log_probs`, then the ids as floating-point numbers, then `tail`, in
    /// the kind of `log_probs`.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) when the kind of `log_probs` cannot hold the ids exactly
    /// (only `f32` up to 2²⁴ and `f64` are accepted).
    pub fn f_pack(&self) -> Result<Tensor> {
        let kind = self.log_probs.f_kind()?;
        let exact = match kind {
            Kind::Float => F32_EXACT_IDS,
            Kind::Double => i64::MAX,
            other => return Err(CriterionError::PackKind { encoding: Packed::TopKTail, kind: other }.into()),
        };
        let largest = if self.ids.numel() > 0 { self.ids.f_max()?.f_int64_value(&[])? } else { 0 };
        if largest >= exact {
            return Err(CriterionError::IndicesNotExact { kind, limit: exact, classes: largest + 1 }.into());
        }
        Ok(Tensor::f_cat(&[&self.log_probs, &self.ids.f_to_kind(kind)?, &self.tail.f_unsqueeze(-1)?], -1)?)
    }

    /// The encoding packed by [`f_pack`](Self::f_pack), for a vocabulary of `vocab` tokens.
    ///
    /// # Errors
    /// [`CriterionError::InvalidPacked`](super::CriterionError::InvalidPacked) unless `packed` is an f32/f64 tensor `[…, 2k + 1]` with
    /// `1 ≤ k ≤ vocab` whose ids are whole numbers in `0..vocab` and whose log-probabilities and tail
    /// hold no NaN or +∞.
    pub(crate) fn f_unpack(packed: &Tensor, vocab: i64) -> Result<TopKTail> {
        let invalid =
            |problem| DistillError::from(CriterionError::InvalidPacked { encoding: Packed::TopKTail, problem });
        if !packed.defined() {
            return Err(invalid(PackedProblem::Undefined));
        }
        let shape = packed.size();
        let k = packed_k(&shape, vocab).map_err(invalid)?;
        let kind = packed.f_kind()?;
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(invalid(PackedProblem::Kind { expected: "f32 or f64", kind }));
        }
        let log_probs = packed.f_narrow(-1, 0, k)?;
        let float_ids = packed.f_narrow(-1, k, k)?;
        let tail = packed.f_select(-1, 2 * k)?;
        if packed.numel() > 0 {
            let any = |t: Tensor| -> Result<bool> { Ok(t.f_any()?.f_int64_value(&[])? != 0) };
            if any(log_probs.f_isnan()?)?
                || any(log_probs.f_isposinf()?)?
                || any(tail.f_isnan()?)?
                || any(tail.f_isposinf()?)?
            {
                return Err(invalid(PackedProblem::NotFinite));
            }
            if any(float_ids.f_frac()?.f_ne(0.0)?)? || any(float_ids.f_isfinite()?.f_logical_not()?)? {
                return Err(invalid(PackedProblem::FractionalIds { ids: "token ids" }));
            }
            let (lowest, highest) = (float_ids.f_min()?.f_double_value(&[])?, float_ids.f_max()?.f_double_value(&[])?);
            if lowest < 0.0 || highest >= vocab as f64 {
                return Err(invalid(PackedProblem::IdsOutOfRange { ids: "token ids", lowest, highest, limit: vocab }));
            }
        }
        Ok(TopKTail { ids: float_ids.f_to_kind(Kind::Int64)?, log_probs, tail })
    }
}

/// `k` of a packed shape `[…, 2k + 1]` against a vocabulary of `vocab` tokens.
fn packed_k(shape: &[i64], vocab: i64) -> std::result::Result<i64, PackedProblem> {
    let last = shape.last().copied().unwrap_or(0);
    if last < 3 || last % 2 == 0 {
        return Err(PackedProblem::Shape { expected: "[..., 2k + 1] with k ≥ 1", got: shape.to_vec() });
    }
    let k = (last - 1) / 2;
    if k > vocab {
        return Err(PackedProblem::TooManyClasses { k, classes: vocab });
    }
    Ok(k)
}

impl PackedTokens for TopKTail {
    const FORM: &'static str = "a packed top-k tail [B, T, 2k + 1]";

    fn f_unpack(packed: &Tensor, vocab: i64) -> Result<Self> {
        TopKTail::f_unpack(packed, vocab)
    }

    /// `2k + 1` with `1 ≤ k ≤ vocab`.
    fn check_width(width: i64, vocab: i64) -> std::result::Result<(), String> {
        packed_k(&[width], vocab).map(|_| ()).map_err(|problem| problem.to_string())
    }
}

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
/// As a [`Criterion`], the teacher tensor is the packed encoding ([`TopKTail::f_pack`],
/// `[B, T, 2k + 1]`) and the targets, when given, are token labels (−100 left out).
///
/// ```
/// use distill_runtime::criterion::{Divergence, SequenceKd, TokenCriterion, TopKKl, TopKTail};
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

    /// Checks the temperature, the student's kind and the teacher's shapes against student logits
    /// `[…, V]`; returns the token shape `[…]`, `V` and `k`.
    pub(super) fn check_top_k(&self, student: &Tensor, teacher: &TopKTail) -> Result<(Vec<i64>, i64, i64)> {
        check_parameter("TopKKl's temperature", self.temperature, 0.0, true)?;
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
        Ok((lead.to_vec(), vocab, k))
    }
}

impl TokenCriterion for TopKKl {
    type Teacher = TopKTail;

    /// The per-token losses `[…]` of student logits `[…, V]` against `teacher`.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) when the shapes disagree, the student logits are not
    /// floating-point, or the temperature is invalid.
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
    /// # Errors
    /// As [`f_per_token`](Self::f_per_token), and for a mask of another shape.
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

impl Criterion for TopKKl {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        self.loss_with_targets(student, teacher, None)
    }

    fn loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Tensor {
        self.f_loss_with_targets(student, teacher, targets).unwrap_or_else(|err| panic!("{err}"))
    }

    /// `teacher` is a packed [`TopKTail`]; `targets`, when given, token labels (−100 left out).
    fn f_loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        f_packed_loss(self, student, teacher, targets)
    }

    /// The temperature finite and > 0.
    fn validate(&self) -> std::result::Result<(), String> {
        parameter("TopKKl's temperature", self.temperature, 0.0, true)
    }

    /// Student logits `[B, …, V]`, a packed teacher `[B, …, 2k + 1]` with `1 ≤ k ≤ V`.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
        check_packed_shapes::<TopKTail>(student, teacher)
    }

    /// The packed top-k with its tail encoding at this criterion's temperature.
    fn teacher_encoding(&self) -> super::TeacherEncoding {
        super::TeacherEncoding::TopKTail { temperature: self.temperature }
    }

    /// Integer labels with the logits' shape without the vocabulary.
    fn check_targets(&self, student: &[i64], targets: &Tensor) -> std::result::Result<(), String> {
        token_labels(student, targets)
    }
}

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
    let b = lead.first().copied().unwrap_or(1);
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
        mask = mask.f_logical_and(&labels.f_ne(IGNORE_INDEX)?)?;
    }
    let ck = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
    let weights = kd.reduction.weights(&mask.f_reshape([b, -1])?, ck)?.f_reshape([n])?;
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
    let value = row_loss(&z, &loss, grad.as_ref())?.f_to_kind(kind)?;
    match grad {
        Some(grad) => carry_gradient(&z, &grad, &value),
        None => Ok(value),
    }
}
