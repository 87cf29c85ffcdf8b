//! Half-precision inputs computed on in f32: the kind a loss is computed in, and the loss returned
//! in its inputs' kind.
//!
//! In f16 or bf16 each `log p − log q` is rounded relative to `|log p|`, and a temperature's `T²`
//! factor multiplies that rounding by `T²`; the softmax-based losses therefore compute half
//! precision in f32, as `torch.autocast` runs `log_softmax` and `kl_div`.

use tch::{Kind, Tensor};

use crate::error::{CriterionError, Result};

/// The kind a loss of inputs of `kind` is computed in: f32 for f16 and bf16, `kind` otherwise.
pub(super) fn computed_in(kind: Kind) -> Kind {
    match kind {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        kind => kind,
    }
}

/// The loss `value`, computed in [`computed_in`] its inputs' kind `kind` (a scalar), in `kind`: as
/// it is when the kinds agree (no conversion, no read of the value).
///
/// # Errors
/// [`CriterionError::LossOutOfRange`] when `value` is finite but past the largest finite number of
/// `kind` (65 504 for f16): cast, it would read as an infinite loss that the inputs did not give.
pub(super) fn in_kind(value: &Tensor, kind: Kind) -> Result<Tensor> {
    let cast = value.f_to_kind(kind)?;
    if value.f_kind()? != kind {
        let (wide, narrow) = (value.f_double_value(&[])?, cast.f_double_value(&[])?);
        if wide.is_finite() && !narrow.is_finite() {
            return Err(CriterionError::LossOutOfRange { value: wide, kind }.into());
        }
    }
    Ok(cast)
}
