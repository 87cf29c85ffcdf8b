//! What the generated `…Losses` struct calls: the sum of the terms and their `Display`.

use std::fmt;

use tch::Tensor;

/// Decimal places of a loss in `Display`: enough to see a term move between steps in a log.
const DISPLAY_DECIMALS: usize = 4;

/// Writes named scalar losses as `f0=0.1234 f1=0.4000` (a non-scalar as its shape).
pub fn write_losses(f: &mut fmt::Formatter<'_>, losses: &[(&str, &Tensor)]) -> fmt::Result {
    for (i, (name, loss)) in losses.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        match loss.f_double_value(&[]) {
            Ok(value) => write!(f, "{name}={value:.DISPLAY_DECIMALS$}")?,
            Err(_) => write!(f, "{name}={:?}", loss.size())?,
        }
    }
    Ok(())
}

/// The sum of `losses` (the first one alone if there is one; a scalar zero if there are none).
pub fn total(losses: &[&Tensor]) -> Tensor {
    let mut iter = losses.iter();
    match iter.next() {
        Some(first) => iter.fold(first.shallow_clone(), |sum, loss| sum + *loss),
        None => Tensor::from(0.0f32),
    }
}
