//! The teacher's next-token distribution reduced to its `k` most probable tokens plus one exact
//! tail bucket ([`TopKTail`]); the KL divergence that reads it, [`TopKKl`](super::TopKKl), is in
//! `tail_kl`.
//!
//! The tail's log-mass is computed from the excluded logits themselves,
//! `log p_tail = logsumexp(z outside the top k) − logsumexp(z)`, never as `1 − Σ p_top` nor as
//! `log1mexp(logsumexp(log p_top))`: both subtract a kept mass near 1 from 1, so at a vocabulary of
//! 49 152 tokens with k = 1024 and a true tail of 1e-7 the f32 result is mostly rounding (0, or off
//! by 50 % or more), while the excluded-logits form keeps the tail to its last few ulps.

use tch::{Kind, Tensor};

use super::check::check_parameter;
use super::packed::PackedTokens;
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
/// The encoding remembers the temperature it was made at ([`temperature`](Self::temperature)):
/// [`TopKKl`](super::TopKKl), [`TokenKd`](super::TokenKd) and
/// [`ChunkedLoss`](super::ChunkedLoss) refuse to read it at another one
/// ([`CriterionError::TemperatureMismatch`]), whose loss would be that of another distribution.
///
/// [`f_pack`](Self::f_pack) moves it into one tensor
/// `[…, 2k + 1]` (`[log_probs | ids | tail]`, ids as floating-point numbers) so that it travels as a
/// pair's teacher tensor.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::TopKTail;
/// use tch::{Kind, Tensor};
///
/// let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 0.0]).reshape([1, 1, 4]);
/// let top = TopKTail::f_encode(&logits, 2, 1.0)?;
/// assert_eq!(Vec::<i64>::try_from(top.ids.reshape([-1]))?, [1, 2]);
/// // The tail holds tokens 0 and 3: (e¹ + e⁰) / (e⁰ + e¹ + e² + e³).
/// let want = (1f64.exp() + 1.0) / (1.0 + 1f64.exp() + 2f64.exp() + 3f64.exp());
/// assert!((top.tail.exp().double_value(&[0, 0]) - want).abs() < 1e-7);
/// assert_eq!(top.temperature, Some(1.0));
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
    /// The temperature the encoding was made at, when known: [`f_encode`](Self::f_encode) and a
    /// token cache's batches set it, and the losses that read the encoding refuse another one.
    /// `None` — an encoding built from its parts, or read back from a packed tensor, which does not
    /// hold it — is read at the criterion's temperature unchecked.
    pub temperature: Option<f64>,
}

/// Checks that a criterion at `criterion` reads an encoding made at `encoded` (when known) at
/// that temperature, compared exactly, as a token cache compares its stored temperature.
///
/// # Errors
/// [`CriterionError::TemperatureMismatch`] showing both.
pub(super) fn check_temperature(encoding: Packed, encoded: Option<f64>, criterion: f64) -> Result<()> {
    match encoded {
        Some(encoded) if encoded != criterion => {
            Err(CriterionError::TemperatureMismatch { encoding, encoded, criterion }.into())
        }
        _ => Ok(()),
    }
}

/// Checks that every row of logits to encode has a distribution, from its log-normaliser
/// (`logsumexp` of the row): a NaN or +∞ logit, or a row of −∞, has none, and encoded it would
/// read as a loss of 0.
///
/// # Errors
/// [`CriterionError::NoDistribution`] counting the rows without one.
pub(super) fn check_distributions(log_normaliser: &Tensor) -> Result<()> {
    let broken = log_normaliser.f_isfinite()?.f_logical_not()?.f_sum(Kind::Int64)?.f_int64_value(&[])?;
    if broken > 0 {
        return Err(CriterionError::NoDistribution { tokens: broken }.into());
    }
    Ok(())
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
        let mut top_shape = lead.to_vec();
        top_shape.push(k);
        if n == 0 {
            // No token: the encoding of none, not an error of the concatenation below.
            let empty = |shape: &[i64], kind| Tensor::f_zeros(shape, (kind, logits.device()));
            let (ids, log_probs, tail) =
                (empty(&top_shape, Kind::Int64)?, empty(&top_shape, kind)?, empty(lead, kind)?);
            return Ok(TopKTail { ids, log_probs, tail, temperature: Some(temperature) });
        }
        let block = (ENCODE_BLOCK / vocab.max(1)).max(1);
        let (mut ids, mut log_probs, mut tails) = (Vec::new(), Vec::new(), Vec::new());
        tch::no_grad(|| -> Result<()> {
            let mut start = 0;
            while start < n {
                let len = block.min(n - start);
                let z = rows.f_narrow(0, start, len)?.f_to_kind(Kind::Double)?.f_div_scalar(temperature)?;
                let log_normaliser = z.f_logsumexp([1], true)?;
                check_distributions(&log_normaliser)?;
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
        Ok(TopKTail {
            ids: Tensor::f_cat(&ids, 0)?.f_reshape(&top_shape)?,
            log_probs: Tensor::f_cat(&log_probs, 0)?.f_reshape(&top_shape)?,
            tail: Tensor::f_cat(&tails, 0)?.f_reshape(lead)?,
            temperature: Some(temperature),
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

    /// Checks that the ids are tokens of a student vocabulary of `vocab`: a teacher of another
    /// vocabulary would otherwise fail inside a gather with libtorch's bare index error.
    ///
    /// # Errors
    /// [`CriterionError::TeacherIdsOutOfRange`] naming the ids' range.
    pub(crate) fn check_ids(&self, vocab: i64) -> Result<()> {
        if self.ids.numel() == 0 {
            return Ok(());
        }
        let (min, max) = self.ids.f_aminmax(None, false)?;
        let (lowest, highest) = (min.f_int64_value(&[])?, max.f_int64_value(&[])?);
        if lowest < 0 || highest >= vocab {
            return Err(CriterionError::TeacherIdsOutOfRange { lowest, highest, vocab }.into());
        }
        Ok(())
    }

    /// One tensor `[…, 2k + 1]`: `log_probs`, then the ids as floating-point numbers, then `tail`, in
    /// the kind of `log_probs`. The temperature is not in it: a criterion reading the packed tensor
    /// ([`Criterion`](super::Criterion)) cannot check it, a teacher cache does
    /// ([`Criterion::teacher_encoding`](super::Criterion::teacher_encoding)).
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

    /// The encoding packed by [`f_pack`](Self::f_pack), for a vocabulary of `vocab` tokens. The
    /// packed tensor does not hold the temperature: the result's is `None`.
    ///
    /// # Errors
    /// [`CriterionError::InvalidPacked`](super::CriterionError::InvalidPacked) unless `packed` is an f32/f64 tensor `[…, 2k + 1]` with
    /// `1 ≤ k ≤ vocab` whose ids are whole numbers and whose log-probabilities and tail hold no NaN
    /// or +∞. The ids' range is checked where the loss reads them, against the student's vocabulary
    /// ([`check_ids`](Self::check_ids)).
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
            // Their range is the loss's to check ([`check_ids`](Self::check_ids)), against the
            // student's vocabulary, for packed and unpacked teachers alike.
        }
        Ok(TopKTail { ids: float_ids.f_to_kind(Kind::Int64)?, log_probs, tail, temperature: None })
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
