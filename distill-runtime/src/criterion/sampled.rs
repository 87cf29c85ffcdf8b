//! An unbiased sampled encoding of a teacher's next-token distribution ([`SampledLogits`]) and the
//! KL estimate that reads it ([`SampledKl`]), after Sparse Logit Sampling (Anshumann et al.,
//! ACL 2025): a top-k cache biases the student towards the head of the distribution, while `n`
//! tokens drawn from a proposal with importance weights give an estimate whose expectation is the
//! full KL divergence.

use tch::{Kind, Tensor};

use super::check::check_parameter;
use super::mask::{reduce_masked, TokenReduction};
use super::packed::{packed_token_criterion, PackedTokens};
use super::tail::check_temperature;
use super::token::TokenCriterion;
use crate::error::{CriterionError, DistillError, Packed, PackedProblem, Result};
use crate::rng::SplitMix64;

/// Rows of the vocabulary-sized f64 blocks of the encoder, as a count of elements (32 MiB).
const ENCODE_BLOCK: i64 = 1 << 22;

/// `n` teacher tokens per position drawn with replacement from a proposal `r`, with their teacher
/// log-probabilities and importance weights.
///
/// With `p = softmax(z / T)` the teacher's distribution and the proposal
/// `r = softmax(z / (T·τ))` (τ the proposal temperature; τ = 1 samples `p` itself), each position
/// stores `ids` `[…, n]`, `log_probs = log p(ids)` and `weights = p(ids) / (n · r(ids))`, so that for
/// any `f`, `E[Σ_i weights_i · f(ids_i)] = Σ_x p(x) f(x)`: an unbiased estimate of an expectation
/// under `p` from `n` tokens.
///
/// The draws come from a seeded generator of this crate (SplitMix64, inverse-CDF sampling in f64),
/// so an encoding depends only on the logits and its seed value, not on libtorch's global generator.
///
/// The encoding remembers the temperature it was made at ([`temperature`](Self::temperature)):
/// [`SampledKl`] refuses to read it at another one
/// ([`CriterionError::TemperatureMismatch`]).
#[derive(Debug)]
pub struct SampledLogits {
    /// The drawn token ids, `[…, n]`, `i64`.
    pub ids: Tensor,
    /// The teacher's log-probabilities of the drawn ids at temperature `T`, `[…, n]`.
    pub log_probs: Tensor,
    /// The importance weights `p / (n · r)`, `[…, n]`.
    pub weights: Tensor,
    /// The temperature `T` the encoding was made at, when known: [`f_encode`](Self::f_encode) and
    /// a token cache's batches set it, and [`SampledKl`] refuses another one. `None` — an encoding
    /// built from its parts, or read back from a packed tensor, which does not hold it — is read at
    /// the criterion's temperature unchecked.
    pub temperature: Option<f64>,
}

impl SampledLogits {
    /// Draws `n` tokens per position from teacher logits `[…, V]` at temperature `temperature`,
    /// with proposal temperature `proposal` (τ > 0; 1 for `p` itself), seeded by `seed`. Detached;
    /// log-probabilities and weights in the logits' kind (`f32` for `f16`/`bf16`).
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) for `n < 1`, a temperature that is not finite and > 0, or
    /// logits that are not floating-point with a vocabulary dimension.
    pub fn f_encode(logits: &Tensor, n: i64, temperature: f64, proposal: f64, seed: u64) -> Result<SampledLogits> {
        check_parameter("the sampling temperature", temperature, 0.0, true)?;
        check_parameter("the proposal temperature", proposal, 0.0, true)?;
        if n < 1 {
            return Err(CriterionError::CountBelowOne { what: "the sample count", got: n }.into());
        }
        if !logits.defined() {
            return Err(CriterionError::Undefined { tensor: "the tensor of logits to encode".into() }.into());
        }
        let shape = logits.size();
        let Some((&vocab, lead)) = shape.split_last() else {
            return Err(CriterionError::NoVocabularyDimension { tensor: "the logits to encode" }.into());
        };
        let kind = match logits.f_kind()? {
            Kind::Double => Kind::Double,
            Kind::Float | Kind::Half | Kind::BFloat16 => Kind::Float,
            other => {
                return Err(CriterionError::NotFloatingPoint { tensor: "the logits to encode", kind: other }.into())
            }
        };
        let mut out = lead.to_vec();
        out.push(n);
        if lead.contains(&0) {
            // No token: the empty encoding (`torch.cat` of no block would fail).
            let empty = |kind| Tensor::f_zeros(&out, (kind, logits.device()));
            let (ids, log_probs, weights) = (empty(Kind::Int64)?, empty(kind)?, empty(kind)?);
            return Ok(SampledLogits { ids, log_probs, weights, temperature: Some(temperature) });
        }
        let rows = logits.f_reshape([-1, vocab])?;
        let total = rows.size()[0];
        let block = (ENCODE_BLOCK / vocab.max(1)).max(1);
        let mut rng = SplitMix64::new(seed);
        let (mut ids, mut log_probs, mut weights) = (Vec::new(), Vec::new(), Vec::new());
        tch::no_grad(|| -> Result<()> {
            let mut start = 0;
            while start < total {
                let len = block.min(total - start);
                let z = rows.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?.f_div_scalar(temperature)?;
                super::tail::check_distributions(&z.f_logsumexp([1], false)?)?;
                let log_p = z.f_log_softmax(1, None)?;
                let log_r = z.f_div_scalar(proposal)?.f_log_softmax(1, None)?;
                let cdf = log_r.f_exp()?.f_cumsum(1, None)?;
                let uniforms: Vec<f64> = (0..len * n).map(|_| rng.next_f64()).collect();
                // u·(total mass) against the running sum: `right` puts u in the first bucket whose
                // cumulative mass exceeds it, so a token of probability 0 is never drawn.
                let u = Tensor::f_from_slice(&uniforms)?
                    .f_reshape([len, n])?
                    .f_to_device(z.device())?
                    .f_mul(&cdf.f_narrow(1, vocab - 1, 1)?)?;
                let drawn = u.f_searchsorted(&cdf, false, true, "right", None::<Tensor>)?.f_clamp_max(vocab - 1)?;
                let lp = log_p.f_gather(1, &drawn, false)?;
                let lr = log_r.f_gather(1, &drawn, false)?;
                weights.push(lp.f_sub(&lr)?.f_exp()?.f_div_scalar(n as f64)?.f_to_kind(kind)?);
                log_probs.push(lp.f_to_kind(kind)?);
                ids.push(drawn);
                start += len;
            }
            Ok(())
        })?;
        Ok(SampledLogits {
            ids: Tensor::f_cat(&ids, 0)?.f_reshape(&out)?,
            log_probs: Tensor::f_cat(&log_probs, 0)?.f_reshape(&out)?,
            weights: Tensor::f_cat(&weights, 0)?.f_reshape(&out)?,
            temperature: Some(temperature),
        })
    }

    /// How many tokens are drawn per position.
    pub(crate) fn n(&self) -> i64 {
        self.ids.size().last().copied().unwrap_or(0)
    }

    /// One tensor `[…, 3n]`: `log_probs`, then the ids as floating-point numbers, then `weights`, in
    /// the kind of `log_probs` (f32 holds ids exactly below 2²⁴). The temperature is not in it: a
    /// criterion reading the packed tensor ([`Criterion`](super::Criterion)) cannot check it, a
    /// teacher cache does ([`Criterion::teacher_encoding`](super::Criterion::teacher_encoding)).
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) unless `log_probs` is f32 (ids below 2²⁴) or f64.
    pub fn f_pack(&self) -> Result<Tensor> {
        let kind = self.log_probs.f_kind()?;
        let exact = match kind {
            Kind::Float => 1i64 << 24,
            Kind::Double => i64::MAX,
            other => return Err(CriterionError::PackKind { encoding: Packed::Sampled, kind: other }.into()),
        };
        let largest = if self.ids.numel() > 0 { self.ids.f_max()?.f_int64_value(&[])? } else { 0 };
        if largest >= exact {
            return Err(CriterionError::IndicesNotExact { kind, limit: exact, classes: largest + 1 }.into());
        }
        Ok(Tensor::f_cat(&[&self.log_probs, &self.ids.f_to_kind(kind)?, &self.weights.f_to_kind(kind)?], -1)?)
    }

    /// The encoding packed by [`f_pack`](Self::f_pack), for a vocabulary of `vocab` tokens. The
    /// packed tensor does not hold the temperature: the result's is `None`.
    ///
    /// # Errors
    /// [`CriterionError::InvalidPacked`](super::CriterionError::InvalidPacked) unless `packed` is f32/f64 `[…, 3n]`, `n ≥ 1`, with whole
    /// ids in `0..vocab`, finite non-negative weights and log-probabilities ≤ 0 (NaN is
    /// [`PackedProblem::NotFinite`], a positive one
    /// [`PositiveLogProbability`](PackedProblem::PositiveLogProbability)).
    pub(crate) fn f_unpack(packed: &Tensor, vocab: i64) -> Result<SampledLogits> {
        let invalid =
            |problem| DistillError::from(CriterionError::InvalidPacked { encoding: Packed::Sampled, problem });
        if !packed.defined() {
            return Err(invalid(PackedProblem::Undefined));
        }
        let shape = packed.size();
        let last = shape.last().copied().unwrap_or(0);
        if SampledLogits::check_width(last, vocab).is_err() {
            return Err(invalid(PackedProblem::Shape { expected: "[..., 3n] with n ≥ 1", got: shape }));
        }
        let n = last / 3;
        let kind = packed.f_kind()?;
        if !matches!(kind, Kind::Float | Kind::Double) {
            return Err(invalid(PackedProblem::Kind { expected: "f32 or f64", kind }));
        }
        let log_probs = packed.f_narrow(-1, 0, n)?;
        let float_ids = packed.f_narrow(-1, n, n)?;
        let weights = packed.f_narrow(-1, 2 * n, n)?;
        if packed.numel() > 0 {
            let any = |t: Tensor| -> Result<bool> { Ok(t.f_any()?.f_int64_value(&[])? != 0) };
            // NaN compares false with 0: it is its own problem, not a positive log-probability.
            if any(log_probs.f_isnan()?)? {
                return Err(invalid(PackedProblem::NotFinite));
            }
            if any(log_probs.f_gt(0.0)?)? {
                return Err(invalid(PackedProblem::PositiveLogProbability));
            }
            if any(weights.f_isfinite()?.f_logical_not()?)? || any(weights.f_lt(0.0)?)? {
                return Err(invalid(PackedProblem::InvalidWeights));
            }
            if any(float_ids.f_frac()?.f_ne(0.0)?)? || any(float_ids.f_isfinite()?.f_logical_not()?)? {
                return Err(invalid(PackedProblem::FractionalIds { ids: "token ids" }));
            }
            let (lowest, highest) = (float_ids.f_min()?.f_double_value(&[])?, float_ids.f_max()?.f_double_value(&[])?);
            if lowest < 0.0 || highest >= vocab as f64 {
                return Err(invalid(PackedProblem::IdsOutOfRange { ids: "token ids", lowest, highest, limit: vocab }));
            }
        }
        Ok(SampledLogits { ids: float_ids.f_to_kind(Kind::Int64)?, log_probs, weights, temperature: None })
    }
}

impl PackedTokens for SampledLogits {
    const FORM: &'static str = "a packed sampled encoding [B, T, 3n]";

    fn f_unpack(packed: &Tensor, vocab: i64) -> Result<Self> {
        SampledLogits::f_unpack(packed, vocab)
    }

    /// `3n`, `n ≥ 1`.
    fn check_width(width: i64, _vocab: i64) -> std::result::Result<(), String> {
        if width < 3 || width % 3 != 0 {
            return Err(format!("its last dimension must be 3n with n ≥ 1, got {width}"));
        }
        Ok(())
    }
}

/// The forward KL `KL(p ‖ q)` estimated from a [`SampledLogits`] encoding, per token
///
/// `ℓ = Σ_i w_i (log p(x_i) − log q(x_i))`, `q = softmax(s / T)`,
///
/// whose expectation over the draws is `KL(p ‖ q)` and whose student gradient's expectation is the
/// full KL's, `(q − p) / T` (Sparse Logit Sampling's unbiased estimator). A single encoding's value
/// may be negative. Reduced over the valid tokens ([`TokenReduction`]); no `T²` factor.
///
/// A teacher whose [`temperature`](SampledLogits::temperature) is known (from
/// [`SampledLogits::f_encode`] or a token cache's batch) and is not `T` is refused
/// ([`TemperatureMismatch`](super::CriterionError::TemperatureMismatch)); one built from its parts
/// with `None` is read at `T` unchecked.
///
/// As a [`Criterion`](super::Criterion), the teacher tensor is the packed encoding ([`SampledLogits::f_pack`],
/// `[B, T, 3n]`) and the targets, when given, are token labels (−100 left out). A packed tensor
/// does not hold its temperature, so this path cannot check it; a teacher cache checks it against
/// [`teacher_encoding`](super::Criterion::teacher_encoding) before any pair reads it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampledKl {
    /// Softmax temperature `T` (finite, > 0); the teacher must be encoded at the same one.
    pub temperature: f64,
    /// How the per-token estimates are reduced over the valid tokens.
    pub reduction: TokenReduction,
}

impl SampledKl {
    /// The sampled KL estimate at temperature `temperature`, mean over valid tokens.
    pub const fn new(temperature: f64) -> Self {
        SampledKl { temperature, reduction: TokenReduction::Token }
    }

    /// This criterion with another reduction.
    pub const fn with_reduction(self, reduction: TokenReduction) -> Self {
        SampledKl { reduction, ..self }
    }
}

impl TokenCriterion for SampledKl {
    type Teacher = SampledLogits;

    /// The per-token estimates `[…]` of student logits `[…, V]` against `teacher`.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) when the shapes disagree, the logits are not
    /// floating-point, the temperature is invalid, or the teacher was encoded at another one.
    fn f_per_token(&self, student: &Tensor, teacher: &SampledLogits) -> Result<Tensor> {
        check_parameter("SampledKl's temperature", self.temperature, 0.0, true)?;
        check_temperature(Packed::Sampled, teacher.temperature, self.temperature)?;
        let shape = student.size();
        let kind = student.f_kind()?;
        if !matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
            return Err(CriterionError::NotFloatingPoint { tensor: "the student logits", kind }.into());
        }
        let Some((_, lead)) = shape.split_last() else {
            return Err(CriterionError::NoVocabularyDimension { tensor: "the student logits" }.into());
        };
        let mut want = lead.to_vec();
        want.push(teacher.n());
        if teacher.ids.size() != want || teacher.log_probs.size() != want || teacher.weights.size() != want {
            let encoding = Packed::Sampled;
            return Err(
                CriterionError::TeacherDoesNotFit { encoding, teacher: teacher.ids.size(), student: shape }.into()
            );
        }
        let z = student.f_div_scalar(self.temperature)?;
        let log_q = z.f_gather(-1, &teacher.ids, false)?.f_sub(&z.f_logsumexp([-1], true)?)?;
        let log_p = teacher.log_probs.f_to_kind(kind)?.f_detach()?;
        let w = teacher.weights.f_to_kind(kind)?.f_detach()?;
        Ok(w.f_mul(&log_p.f_sub(&log_q)?)?.f_sum_dim_intlist(-1, false, None)?)
    }

    /// The loss of student logits `[B, T, V]` against `teacher`, over the tokens where `valid`
    /// (`[B, T]`, non-zero valid) holds, or every token without it.
    ///
    /// # Errors
    /// As [`f_per_token`](Self::f_per_token), and for a mask of another shape.
    fn f_loss_masked(&self, student: &Tensor, teacher: &SampledLogits, valid: Option<&Tensor>) -> Result<Tensor> {
        reduce_masked(&self.f_per_token(student, teacher)?, valid, self.reduction)
    }
}

/// `T = 1`, mean over valid tokens.
impl Default for SampledKl {
    fn default() -> Self {
        SampledKl::new(1.0)
    }
}

// The packed SampledLogits, at this criterion's temperature, with token labels as targets.
packed_token_criterion!(SampledKl => SampledLogits, Sampled);
