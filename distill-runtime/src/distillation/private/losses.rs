//! The loss terms of a forward's pairs — each pair's unweighted loss, weight at its step and
//! rescaling — their sum and their `Display`: what [`DistillationOutput`](super::DistillationOutput)
//! and a `distill!` output's `…Losses` compute with.

use std::fmt;

use tch::Tensor;

use crate::dsl::Pair;
use crate::error::Result;
use crate::schedule::{rescale_factor, LossTerm};

/// The sum of `losses` (the first one alone if there is one; a scalar zero if there are none).
pub fn total(losses: &[&Tensor]) -> Tensor {
    let mut iter = losses.iter();
    match iter.next() {
        Some(first) => iter.fold(first.shallow_clone(), |sum, loss| sum + *loss),
        None => Tensor::from(0.0f32),
    }
}

/// The terms of `pairs` (a `distill!` output's, in declaration order): each pair's unweighted loss
/// and weight at its step, rescaled to its reference pair's unweighted loss where it has one.
///
/// # Errors
/// The first pair whose criterion cannot compute its loss (as [`Pair::f_loss`]), or whose weight
/// cannot be read at the step.
pub fn f_loss_terms(pairs: &[&Pair<'_>]) -> Result<Vec<LossTerm>> {
    let unweighted = pairs.iter().map(|pair| pair.f_unweighted_loss()).collect::<Result<Vec<Tensor>>>()?;
    pairs
        .iter()
        .zip(&unweighted)
        .map(|(pair, loss)| {
            let weight = pair.weight()?;
            let rescale =
                pair.rescaled_to().and_then(|reference| unweighted.get(reference)).map(|r| rescale_factor(loss, r));
            let weighted = match &rescale {
                Some(factor) => loss * factor * weight,
                // No operation for an unweighted term: the step stays as cheap as the loss itself.
                None if weight == 1.0 => loss.shallow_clone(),
                None => loss * weight,
            };
            Ok(LossTerm { weighted, unweighted: loss.shallow_clone(), weight, rescale })
        })
        .collect()
}

/// Decimal places of a loss in `Display`: enough to see a term move between steps in a log.
const DISPLAY_DECIMALS: usize = 4;

/// Writes the terms as `f0=0.1234 f1=0.4000`, each the value that enters the total; a term whose
/// weight is not 1 or that is rescaled adds its unweighted value and factors:
/// `f1=0.0400 (raw 0.4000, weight 0.1000)`, `f2=1.2000 (raw 0.0300, weight 1.0000, rescaled ×40.0000)`.
pub fn write_terms(f: &mut fmt::Formatter<'_>, terms: &[(&str, &LossTerm)]) -> fmt::Result {
    for (i, (name, term)) in terms.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        write!(f, "{name}=")?;
        write_value(f, &term.weighted)?;
        if term.weight != 1.0 || term.rescale.is_some() {
            f.write_str(" (raw ")?;
            write_value(f, &term.unweighted)?;
            write!(f, ", weight {:.DISPLAY_DECIMALS$}", term.weight)?;
            if let Some(factor) = &term.rescale {
                f.write_str(", rescaled ×")?;
                write_value(f, factor)?;
            }
            f.write_str(")")?;
        }
    }
    Ok(())
}

/// A scalar with [`DISPLAY_DECIMALS`] decimals, anything else as its shape.
fn write_value(f: &mut fmt::Formatter<'_>, value: &Tensor) -> fmt::Result {
    match value.f_double_value(&[]) {
        Ok(value) => write!(f, "{value:.DISPLAY_DECIMALS$}"),
        Err(_) => write!(f, "{:?}", value.size()),
    }
}
