//! Token-level divergences between a student's and a teacher's next-token distributions over a
//! vocabulary, for language-model distillation: [`SequenceKd`] with a [`Divergence`].

use tch::{Kind, Tensor};

use super::check::{check_catalogue_call, parameter};
use super::mask::{by_sequence, check_mask, reduce, valid_labels, TokenReduction};
use super::token::TokenCriterion;
use super::Criterion;
use crate::error::Result;

/// A divergence between the teacher's distribution `p = softmax(t / T)` and the student's
/// `q = softmax(s / T)` over the vocabulary (the last dimension), per token.
///
/// All are computed in log space from `log_softmax`; a term whose weight is a zero probability
/// contributes 0 (`0 · log 0 = 0`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Divergence {
    /// `KL(p ‖ q) = Σ p (log p − log q)`: mass-covering (TRL's β = 0).
    ForwardKl,
    /// `KL(q ‖ p) = Σ q (log q − log p)`: mode-seeking (TRL's β = 1).
    ReverseKl,
    /// The generalised Jensen–Shannon divergence of GKD (Agarwal et al. 2024), exactly as TRL's
    /// `GKDTrainer.generalized_jsd_loss` computes it: with the mixture
    /// `log m = logsumexp(log q + log(1 − β), log p + log β)`,
    /// `JSD(β) = β · KL(p ‖ m) + (1 − β) · KL(q ‖ m)`; `β = 0` is **exactly** [`ForwardKl`](Self::ForwardKl)
    /// and `β = 1` exactly [`ReverseKl`](Self::ReverseKl), as in TRL (not the limits of the mixture
    /// form, which vanish). `β ∈ [0, 1]`.
    Jsd {
        /// The interpolation `β ∈ [0, 1]`.
        beta: f64,
    },
    /// DistiLLM's skew KL (Ko et al. 2024), `KL(p ‖ α p + (1 − α) q)`, `α ∈ [0, 1]` (DistiLLM's
    /// default 0.1). DistiLLM's `skewed_forward_kl` returns the cross-entropy `−Σ p log m`; this is
    /// the divergence, which differs from it by the teacher's entropy (a constant for the student):
    /// the student gradients are the same, and the value is 0 when the distributions agree.
    SkewKl {
        /// The skew `α ∈ [0, 1]`: the teacher's share of the mixture.
        alpha: f64,
    },
    /// DistiLLM's skew reverse KL, `KL(q ‖ (1 − α) p + α q)`, `α ∈ [0, 1]`: as DistiLLM's
    /// `skewed_reverse_kl`.
    SkewReverseKl {
        /// The skew `α ∈ [0, 1]`: the student's share of the mixture.
        alpha: f64,
    },
    /// The total variation distance `½ Σ |p − q|`.
    TotalVariation,
}

impl Divergence {
    /// Why the divergence's parameter is outside its domain, or `Ok`.
    pub(crate) fn validate(&self) -> std::result::Result<(), String> {
        let unit = |name: &str, value: f64| {
            if value.is_finite() && (0.0..=1.0).contains(&value) {
                Ok(())
            } else {
                Err(format!("{name} must be in [0, 1], got {value}"))
            }
        };
        match *self {
            Divergence::Jsd { beta } => unit("the JSD's beta", beta),
            Divergence::SkewKl { alpha } | Divergence::SkewReverseKl { alpha } => unit("the skew alpha", alpha),
            _ => Ok(()),
        }
    }

    /// The divergence per token: logits `student` and `teacher` `[…, V]` (one shape, one kind) at
    /// temperature `temperature` give `[…]`. Differentiable in both inputs.
    ///
    /// # Errors
    /// A tch error from a failed operation.
    pub fn per_token(&self, student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
        // At T = 1 the division is skipped: it would copy a vocabulary-sized tensor for nothing.
        let scaled = |x: &Tensor| if temperature == 1.0 { Ok(x.shallow_clone()) } else { x.f_div_scalar(temperature) };
        let log_q = scaled(student)?.f_log_softmax(-1, None)?;
        let log_p = scaled(teacher)?.f_log_softmax(-1, None)?;
        self.per_token_log(&log_q, &log_p)
    }

    /// [`per_token`](Self::per_token) from the log-probabilities `log_q` (student) and `log_p`
    /// (teacher).
    ///
    /// # Errors
    /// A tch error from a failed operation.
    pub(crate) fn per_token_log(&self, log_q: &Tensor, log_p: &Tensor) -> Result<Tensor> {
        Ok(match *self {
            Divergence::ForwardKl => kl(log_p, log_q)?,
            Divergence::ReverseKl => kl(log_q, log_p)?,
            Divergence::Jsd { beta: 0.0 } => kl(log_p, log_q)?,
            Divergence::Jsd { beta: 1.0 } => kl(log_q, log_p)?,
            Divergence::Jsd { beta } => {
                let log_m = mixture(log_q, 1.0 - beta, log_p, beta)?;
                kl(log_p, &log_m)?.f_mul_scalar(beta)?.f_add(&kl(log_q, &log_m)?.f_mul_scalar(1.0 - beta)?)?
            }
            Divergence::SkewKl { alpha } => {
                if alpha == 1.0 {
                    kl(log_p, log_p)?
                } else if alpha == 0.0 {
                    kl(log_p, log_q)?
                } else {
                    kl(log_p, &mixture(log_p, alpha, log_q, 1.0 - alpha)?)?
                }
            }
            Divergence::SkewReverseKl { alpha } => {
                if alpha == 1.0 {
                    kl(log_q, log_q)?
                } else if alpha == 0.0 {
                    kl(log_q, log_p)?
                } else {
                    kl(log_q, &mixture(log_p, 1.0 - alpha, log_q, alpha)?)?
                }
            }
            Divergence::TotalVariation => {
                log_p.f_exp()?.f_sub(&log_q.f_exp()?)?.f_abs()?.f_sum_dim_intlist(-1, false, None)?.f_mul_scalar(0.5)?
            }
        })
    }
}

/// `Σ a (log a − log b)` over the last dimension, from `log a` and `log b`, with `0 · log 0 = 0`.
fn kl(log_a: &Tensor, log_b: &Tensor) -> Result<Tensor> {
    let a = log_a.f_exp()?;
    // The difference is masked before the product, not the product after: where `a = 0` the
    // difference may be `−∞ − (−∞) = NaN` (a class both sides rule out), and a product masked
    // afterwards still sends `0 · NaN = NaN` back into every logit's gradient.
    let positive = a.f_gt(0.0)?;
    let zero = Tensor::f_zeros([], (a.kind(), a.device()))?;
    let difference = log_a.f_sub(log_b)?.f_where_self(&positive, &zero)?;
    Ok(a.f_mul(&difference)?.f_sum_dim_intlist(-1, false, None)?)
}

/// `log(wa · a + wb · b)` from `log a`, `log b`, as TRL writes it: a log-sum-exp of the stacked
/// `log a + log wa` and `log b + log wb` (both weights in (0, 1)).
///
/// Each input is clamped to its kind's lowest finite value: the log-sum-exp of two `−∞` is `−∞`,
/// but its gradient is `exp(−∞ − (−∞)) = NaN`, which would reach every logit through a class both
/// sides rule out. Clamped, such a class's mixture is finite (and never read: the mixture is only
/// ever the second distribution of a [`kl`], whose terms at a class the first rules out are 0);
/// a class only one side rules out has the same mixture, bit for bit (`exp` of the clamped term is
/// 0 as `exp(−∞)` is), and the clamp passes no gradient to a `−∞` it raised.
fn mixture(log_a: &Tensor, wa: f64, log_b: &Tensor, wb: f64) -> Result<Tensor> {
    let lowest = lowest_finite(log_a.f_kind()?);
    let (log_a, log_b) = (log_a.f_clamp_min(lowest)?, log_b.f_clamp_min(lowest)?);
    let stacked = Tensor::f_stack(&[log_a.f_add_scalar(ln(wa))?, log_b.f_add_scalar(ln(wb))?], 0)?;
    Ok(stacked.f_logsumexp([0], false)?)
}

/// The lowest finite value of the floating-point `kind` (as `f64`, which holds each exactly).
fn lowest_finite(kind: tch::Kind) -> f64 {
    match kind {
        tch::Kind::Double => f64::MIN,
        tch::Kind::Half => -65504.0,
        tch::Kind::BFloat16 => -3.389_531_389_251_535_5e38,
        _ => f64::from(f32::MIN),
    }
}

/// `ln w`, as `log1p(w − 1)` for `w ≥ ½` (TRL's `log1p(−β)` for the student's share).
fn ln(w: f64) -> f64 {
    if w >= 0.5 {
        (w - 1.0).ln_1p()
    } else {
        w.ln()
    }
}

/// Token-level distillation of a language model: a [`Divergence`] between the teacher's and the
/// student's next-token distributions at temperature `T`, per token, reduced over the valid tokens
/// ([`TokenReduction`]).
///
/// Logits `[B, T, V]` (or any `[B, …, V]`: the vocabulary is the last dimension, the sequence the
/// first). The per-token divergence is that of [`Divergence::per_token`]; no `T²` factor is applied
/// (as TRL's `generalized_jsd_loss` and DistiLLM do; scale the criterion to add one).
///
/// Which tokens count:
/// - [`f_loss_masked`](Self::f_loss_masked) takes the mask explicitly (an attention mask, non-zero
///   for a valid token; `labels.ne(`[`IGNORE_INDEX`](super::IGNORE_INDEX)`)` makes one from labels);
/// - as a [`Criterion`], the batch's targets, when given, are the token labels `[B, T]` and the
///   tokens labelled −100 are left out (what a `distill!` model passes with its batch's targets);
///   without targets every token counts.
///
/// A masked token counts for nothing, whatever its logits hold: its value is not added and its
/// gradient is exactly 0, also where a padding row holds NaN or ±∞ (as a fully masked attention row
/// can produce). With no valid token — every token masked, or none at all (`B = 0` or `T = 0`;
/// the vocabulary `V` must not be empty) — the loss is 0 with a zero gradient ([`TokenReduction`]).
///
/// With `Jsd { beta }` this is TRL's `generalized_jsd_loss(s, t, labels, beta, temperature)` (its
/// `batchmean`): with labels, reduced by [`TokenReduction::Token`]; without, TRL divides the sum by
/// the batch size, [`TokenReduction::Batch`]. TRL 1.16 also gives 0 without a valid token; its
/// gradient at a masked row holding NaN is NaN.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{Criterion, Divergence, SequenceKd, TokenReduction};
/// use tch::{Device, Kind, Tensor};
///
/// let s = Tensor::randn([2, 5, 11], (Kind::Double, Device::Cpu));
/// let t = Tensor::randn([2, 5, 11], (Kind::Double, Device::Cpu));
/// let jsd = SequenceKd::new(Divergence::Jsd { beta: 0.5 }, 1.0);
/// let labels = Tensor::from_slice(&[3i64, 4, -100, -100, -100, 1, 2, 3, 4, 5]).reshape([2, 5]);
/// let loss = jsd.f_loss_with_targets(&s, &t, Some(&labels))?;
/// assert!(loss.double_value(&[]) > 0.0);
/// // β = 0 is the forward KL exactly.
/// let forward = SequenceKd::new(Divergence::ForwardKl, 2.0).with_reduction(TokenReduction::Sum);
/// let beta0 = SequenceKd::new(Divergence::Jsd { beta: 0.0 }, 2.0).with_reduction(TokenReduction::Sum);
/// assert_eq!(forward.f_loss(&s, &t)?.double_value(&[]), beta0.f_loss(&s, &t)?.double_value(&[]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SequenceKd {
    /// The per-token divergence.
    pub divergence: Divergence,
    /// Softmax temperature `T` (finite, > 0) applied to both sides' logits.
    pub temperature: f64,
    /// How the per-token divergences are reduced over the valid tokens.
    pub reduction: TokenReduction,
}

impl SequenceKd {
    /// `divergence` at temperature `temperature`, reduced per token ([`TokenReduction::Token`]).
    pub const fn new(divergence: Divergence, temperature: f64) -> Self {
        SequenceKd { divergence, temperature, reduction: TokenReduction::Token }
    }

    /// This criterion with another reduction.
    pub const fn with_reduction(self, reduction: TokenReduction) -> Self {
        SequenceKd { reduction, ..self }
    }

    /// The loss of checked logits over the tokens where `valid` (bool, the logits' shape without
    /// the vocabulary) holds, or every token without it.
    ///
    /// [`reduce`] selects a masked token's value away, but not its gradient: the reduction sends
    /// the token a zero, which the divergence's backward multiplies by the row's intermediates, so
    /// a row of NaN or ±∞ logits would get `0 · NaN = NaN` in every entry. A masked row must not
    /// enter the computation at all, then, and it need not: every operation of a divergence is
    /// row-wise (the softmaxes and sums over the vocabulary) or elementwise, so computing the valid
    /// rows alone ([`over_rows`](Self::over_rows)) gives each of them the value and gradient it
    /// gets among all rows, bit for bit, and the masked rows a gradient of exactly 0.
    ///
    /// Gathering the valid rows costs two copies of them and, in the backward, a zeroed `[B, T, V]`
    /// gradient, which the rows left out pay for from about one masked token in eight (at
    /// `[4, 128, 8192]`, `benches/sequence_kd.rs`: with a quarter masked, 0.85–0.89× the time of
    /// the plain formula over every row for the forward KL and 0.63–0.68× for the JSD; 0.59× and
    /// 0.42× with a half; but 1.16× with 1 in 128). Below that share every row is computed, and
    /// the masked rows are checked through their per-token values (`[B, T]`, no pass over the
    /// vocabulary, one device synchronisation): a NaN or +∞ logit, or a row of −∞, makes a row's
    /// `log_softmax` NaN throughout, and every divergence carries a NaN log-probability into its
    /// value (in `kl`, `exp(NaN) · 0` is NaN; a mixture's clamp and log-sum-exp keep NaN), while a
    /// row of finite logits (some `−∞` allowed) has finite intermediates, whose zero stays a
    /// zero. A side the divergence does not read (`KL(p ‖ p)` reads no student) gets no gradient
    /// at all. Only a batch whose masked rows fail the check is computed again, over its valid
    /// rows (1.5–1.9× the plain formula's time with 1 in 128 masked).
    fn reduced(&self, student: &Tensor, teacher: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
        let Some(valid) = valid else {
            return reduce(&self.divergence.per_token(student, teacher, self.temperature)?, None, self.reduction);
        };
        let valid_tokens = by_sequence(valid)?;
        let tokens = valid_tokens.numel() as i64;
        let rows = valid_tokens.f_reshape([-1])?.f_nonzero()?.f_squeeze_dim(1)?.f_to_device(student.device())?;
        let masked = tokens - rows.size()[0];
        if masked * 8 >= tokens && masked > 0 {
            return self.over_rows(student, teacher, &rows, &valid_tokens);
        }
        let per_token = self.divergence.per_token(student, teacher, self.temperature)?;
        if masked > 0 {
            let clean = by_sequence(&per_token)?.f_isfinite()?.f_logical_or(&valid_tokens)?.f_all()?;
            if clean.f_int64_value(&[])? == 0 {
                return self.over_rows(student, teacher, &rows, &valid_tokens);
            }
        }
        reduce(&per_token, Some(&valid_tokens), self.reduction)
    }

    /// The loss computed from the rows `rows` (flat token indices, `i64`) of the logits alone, the
    /// others' per-token values 0, reduced over the tokens where `valid_tokens` (`[B, T]`) holds.
    fn over_rows(&self, student: &Tensor, teacher: &Tensor, rows: &Tensor, valid_tokens: &Tensor) -> Result<Tensor> {
        let vocab = student.size().last().copied().unwrap_or(1);
        let gather = |x: &Tensor| x.f_reshape([-1, vocab])?.f_index_select(0, rows);
        let per_row = self.divergence.per_token(&gather(student)?, &gather(teacher)?, self.temperature)?;
        let options = (per_row.f_kind()?, per_row.device());
        let per_token = Tensor::f_zeros([valid_tokens.numel() as i64], options)?
            .f_index_put(&[Some(rows)], &per_row, false)?
            .f_reshape(valid_tokens.size())?;
        reduce(&per_token, Some(valid_tokens), self.reduction)
    }
}

impl TokenCriterion for SequenceKd {
    type Teacher = Tensor;

    /// The per-token divergences `[B, …]` of logits `[B, …, V]` (unreduced, every token).
    ///
    /// # Errors
    /// As [`Criterion::f_loss`].
    fn f_per_token(&self, student: &Tensor, teacher: &Tensor) -> Result<Tensor> {
        check_catalogue_call(self, student, teacher, None)?;
        self.divergence.per_token(student, teacher, self.temperature)
    }

    /// The loss over the tokens where `valid` (`[B, T]`, the logits' shape without the vocabulary;
    /// non-zero is valid, as an attention mask) holds, or every token without it.
    ///
    /// # Errors
    /// As [`Criterion::f_loss`], and [`CriterionError::MaskShape`](super::CriterionError::MaskShape)
    /// for a mask of another shape.
    fn f_loss_masked(&self, student: &Tensor, teacher: &Tensor, valid: Option<&Tensor>) -> Result<Tensor> {
        check_catalogue_call(self, student, teacher, None)?;
        let valid = match valid {
            Some(valid) => {
                let shape = student.size();
                check_mask(valid, &shape[..shape.len() - 1])?;
                Some(valid.f_ne(0)?)
            }
            None => None,
        };
        self.reduced(student, teacher, valid.as_ref())
    }
}

/// Forward KL at `T = 1`, per token.
impl Default for SequenceKd {
    fn default() -> Self {
        SequenceKd::new(Divergence::ForwardKl, 1.0)
    }
}

impl Criterion for SequenceKd {
    super::panicking_loss!();

    /// Every token when `targets` is `None`; else the tokens whose label (`targets`, `[B, T]`) is
    /// not −100.
    fn f_loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        check_catalogue_call(self, student, teacher, targets)?;
        let valid = targets.map(valid_labels).transpose()?;
        self.reduced(student, teacher, valid.as_ref())
    }

    /// The temperature finite and > 0, the divergence's parameter in its domain.
    fn validate(&self) -> std::result::Result<(), String> {
        parameter("the sequence criterion's temperature", self.temperature, 0.0, true)?;
        self.divergence.validate()
    }

    /// Equal shapes `[B, …, V]` with at least 2 dimensions and `V ≥ 1` (no token is a loss of 0).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
        token_logits(student, teacher)
    }

    /// Integer labels with the logits' shape without the vocabulary.
    fn check_targets(&self, student: &[i64], targets: &Tensor) -> std::result::Result<(), String> {
        token_labels(student, targets)
    }
}

/// Equal logits `[B, …, V]`, at least 2-D, over a vocabulary of at least one token. The token
/// dimensions may be 0: no token is no valid token, a loss of 0 ([`TokenReduction`]).
pub(super) fn token_logits(student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
    super::check::equal(student, teacher)?;
    super::check::at_least(student, 2, "[B, T, V]")?;
    if student.last() == Some(&0) {
        return Err("the vocabulary (the last dimension) is empty: there is no distribution to compare".into());
    }
    Ok(())
}

/// Integer labels shaped as logits `student` `[B, …, V]` without the vocabulary.
pub(super) fn token_labels(student: &[i64], targets: &Tensor) -> std::result::Result<(), String> {
    let tokens = &student[..student.len().saturating_sub(1)];
    if targets.size() != tokens {
        return Err(format!("the token labels need the shape {tokens:?}, got {:?}", targets.size()));
    }
    match targets.kind() {
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8 => Ok(()),
        other => Err(format!("the token labels need an integer kind, got {other:?}")),
    }
}
