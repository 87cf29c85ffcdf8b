//! What a `distill!` model's `new()` and forward call to assemble their typed values from the
//! runtime's: the pairs built one closure each, and the output's arrays of pairs and teacher
//! outputs.

use tch::Tensor;

use crate::distillation::PairSpec;
use crate::dsl::Pair;
use crate::error::{DistillError, Result};
use crate::schedule::LossTerm;

/// Builds every pair of a `distill!`'s `new()` in declaration order, each with its own function:
/// the generated code hands one closure per pair, so that no function of it grows with the number
/// of pairs. The first error stops the build.
pub fn build_pairs<'m>(makers: &[&dyn Fn() -> Result<PairSpec<'m>>]) -> Result<Vec<PairSpec<'m>>> {
    makers.iter().map(|make| make()).collect()
}

/// Turns the pairs of a forward into an array of the generated output's arity.
pub fn into_array<'d, const N: usize>(pairs: Vec<Pair<'d>>) -> Result<[Pair<'d>; N]> {
    let len = pairs.len();
    pairs.try_into().map_err(|_| DistillError::InvalidArgument(format!("expected {N} pairs, the engine gave {len}")))
}

/// Turns the teacher outputs of a forward into an array of the number of teachers.
pub fn into_outputs<const N: usize>(outputs: Vec<Tensor>) -> Result<[Tensor; N]> {
    let len = outputs.len();
    outputs
        .try_into()
        .map_err(|_| DistillError::InvalidArgument(format!("expected {N} teacher outputs, the engine gave {len}")))
}

/// The weighted values of `terms`, as an array of the generated losses' arity.
///
/// # Errors
/// [`DistillError::InvalidArgument`] when there are not `N` terms (the generated code asks for as
/// many as it has pairs).
pub fn weighted_array<const N: usize>(terms: &[LossTerm]) -> Result<[Tensor; N]> {
    let weighted: Vec<Tensor> = terms.iter().map(|term| term.weighted.shallow_clone()).collect();
    let len = weighted.len();
    weighted.try_into().map_err(|_| DistillError::InvalidArgument(format!("expected {N} loss terms, got {len}")))
}
