//! Which tokens of a sequence batch count in a loss, and how a per-token loss is reduced over them.
//!
//! A token is valid where the attention mask is non-zero, or where the label is not
//! [`IGNORE_INDEX`] (−100, the convention of PyTorch's `cross_entropy`, Hugging Face and TRL). Every
//! reduction is a weighted sum `Σ_i w_i · ℓ_i` over tokens with weights from the mask
//! ([`TokenReduction::weights`]), so that a chunked loss reduces exactly as the unchunked one.

use tch::{Kind, Tensor};

use crate::error::{CriterionError, Result};

/// The label of a token that no loss counts (PyTorch's `ignore_index` default, used by Hugging Face
/// and TRL for padding and prompt tokens).
pub const IGNORE_INDEX: i64 = -100;

/// How a per-token loss `ℓ[b, t]` over the valid tokens (mask `m[b, t] ∈ {0, 1}`) becomes a scalar.
///
/// With `n_b = Σ_t m[b, t]` valid tokens in sequence `b`, `N = Σ_b n_b`, and `B'` the number of
/// sequences with `n_b > 0`:
///
/// - [`Token`](Self::Token): `Σ m·ℓ / N`, the mean over valid tokens (TRL's `batchmean` with labels);
/// - [`Sequence`](Self::Sequence): `1/B' · Σ_b (Σ_t m·ℓ / n_b)`, each sequence's mean, then the mean
///   over sequences, so that long and short sequences weigh the same;
/// - [`Batch`](Self::Batch): `Σ m·ℓ / B`, the sum over each sequence's valid tokens averaged over
///   the `B` sequences (TRL's `batchmean` without labels);
/// - [`Sum`](Self::Sum): `Σ m·ℓ`.
///
/// With no valid token at all — every token masked, or no token (`B = 0` or `T = 0`) — every
/// reduction is 0 (with a zero gradient), so that a batch of prompt or padding tokens only adds
/// nothing to a step. TRL 1.16's `generalized_jsd_loss` does the same (it divides by the number of
/// valid tokens clamped to at least 1); PyTorch's mean reductions (`F.cross_entropy` with every
/// label −100, `F.kl_div(reduction="batchmean")` of no row) give NaN, 0/0.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TokenReduction {
    /// The mean over valid tokens (the default).
    #[default]
    Token,
    /// The mean over sequences of each sequence's mean over its valid tokens.
    Sequence,
    /// The sum over valid tokens divided by the number of sequences.
    Batch,
    /// The sum over valid tokens.
    Sum,
}

impl TokenReduction {
    /// The reduction named `name` (`"token"`, `"sequence"`, `"batch"`, `"sum"`), as a configuration writes it.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "token" => Some(TokenReduction::Token),
            "sequence" => Some(TokenReduction::Sequence),
            "batch" => Some(TokenReduction::Batch),
            "sum" => Some(TokenReduction::Sum),
            _ => None,
        }
    }

    /// The per-token weights `w[b, t]` (shape of `valid`, kind `kind`) with which `Σ w·ℓ` is this
    /// reduction of `ℓ`; `valid` is a `[B, T]` tensor of 0/1 (any kind; non-zero is valid). The
    /// weights carry no gradient.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) when `valid` is not 2-D.
    pub fn weights(&self, valid: &Tensor, kind: Kind) -> Result<Tensor> {
        let shape = valid.size();
        if shape.len() != 2 {
            return Err(CriterionError::MaskNot2d { shape }.into());
        }
        let m = valid.f_ne(0)?.f_to_kind(kind)?.f_detach()?;
        Ok(match self {
            TokenReduction::Sum => m,
            TokenReduction::Batch => m.f_div_scalar(shape[0].max(1) as f64)?,
            TokenReduction::Token => {
                let count = m.f_sum(kind)?.f_clamp_min(1.0)?;
                m.f_div(&count)?
            }
            TokenReduction::Sequence => {
                let per_sequence = m.f_sum_dim_intlist(1, true, kind)?;
                let sequences = per_sequence.f_gt(0.0)?.f_sum(kind)?.f_clamp_min(1.0)?;
                m.f_div(&per_sequence.f_clamp_min(1.0)?)?.f_div(&sequences)?
            }
        })
    }
}

/// The valid tokens of `labels` (`[B, T]` class indices): `labels != −100`, as a bool tensor.
///
/// # Errors
/// [`CriterionError`](super::CriterionError) when `labels` is not an integer tensor.
pub(crate) fn valid_labels(labels: &Tensor) -> Result<Tensor> {
    let kind = labels.f_kind()?;
    if !matches!(kind, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
        return Err(CriterionError::LabelKind { kind }.into());
    }
    // Compared as `i64`: in `u8`, −100 wraps to 156, so `ne(−100)` would drop every label 156.
    Ok(labels.f_to_kind(Kind::Int64)?.f_ne(IGNORE_INDEX)?)
}

/// `Σ w·ℓ` for per-token losses `per_token` of any shape whose leading dimension is the sequence
/// (reshaped to `[B, T]`), with `valid` (`[B, T]`, or `None` for every token valid) reduced by
/// `reduction`.
pub(super) fn reduce(per_token: &Tensor, valid: Option<&Tensor>, reduction: TokenReduction) -> Result<Tensor> {
    let tokens = by_sequence(per_token)?;
    let kind = tokens.f_kind()?;
    let all;
    let valid = match valid {
        Some(valid) => valid,
        None => {
            all = Tensor::f_ones(tokens.size(), (Kind::Bool, tokens.device()))?;
            &all
        }
    };
    let weights = reduction.weights(valid, kind)?;
    if weights.size() != tokens.size() {
        return Err(CriterionError::MaskShape { mask: weights.size(), tokens: tokens.size() }.into());
    }
    // Masked tokens may hold NaN or ±inf (a padded position's logits): select, do not multiply.
    let zero = Tensor::f_zeros([], (kind, tokens.device()))?;
    Ok(tokens.f_mul(&weights)?.f_where_self(&weights.f_ne(0.0)?, &zero)?.f_sum(kind)?)
}

/// [`reduce`] with a caller's mask: `valid` (`[B, T]`, the shape of `per_token`; `None` for every
/// token valid) checked against `per_token` first.
pub(super) fn reduce_masked(per_token: &Tensor, valid: Option<&Tensor>, reduction: TokenReduction) -> Result<Tensor> {
    let valid = match valid {
        Some(valid) => {
            check_mask(valid, &per_token.size())?;
            Some(by_sequence(valid)?)
        }
        None => None,
    };
    reduce(per_token, valid.as_ref(), reduction)
}

/// `tokens` (any shape whose leading dimension is the sequence, `[B, …]`) as `[B, T]`, `T` the
/// product of the other dimensions: also for `B = 0`, where `reshape([0, −1])` is ambiguous.
pub(super) fn by_sequence(tokens: &Tensor) -> Result<Tensor> {
    let shape = tokens.size();
    let (b, rest) = match shape.split_first() {
        Some((&b, rest)) => (b, rest.iter().product::<i64>()),
        None => (1, 1),
    };
    Ok(tokens.f_reshape([b, rest])?)
}

/// `mask` checked against the token shape `tokens` (`[B, T]`).
pub(super) fn check_mask(mask: &Tensor, tokens: &[i64]) -> Result<()> {
    if !mask.defined() {
        return Err(CriterionError::Undefined { tensor: "the token mask".into() }.into());
    }
    let shape = mask.size();
    if shape != tokens {
        return Err(CriterionError::MaskShape { mask: shape, tokens: tokens.to_vec() }.into());
    }
    Ok(())
}
