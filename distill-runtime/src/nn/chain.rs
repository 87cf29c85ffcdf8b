//! Running the elements of a container in order, each recorded by its slot: what `Seq` and
//! `Sequential` do when called.

use tch::nn::ModuleT;
use tch::Tensor;

use crate::nn::capture::{record, TapId};

/// Runs `elements` one after the other on `xs`, the call of each recorded by its slot tap, and the
/// whole chain by the container's tap. No element gives `xs` back.
pub(crate) fn forward_chain<'a, M>(
    container: TapId,
    elements: impl IntoIterator<Item = (&'a M, TapId)>,
    xs: &Tensor,
    train: bool,
) -> Tensor
where
    M: ModuleT + ?Sized + 'a,
{
    record(container, xs, |xs| {
        let mut elements = elements.into_iter();
        let Some((first, tap)) = elements.next() else {
            return xs.shallow_clone();
        };
        let first = record(tap, xs, |xs| first.forward_t(xs, train));
        elements.fold(first, |xs, (element, tap)| record(tap, &xs, |xs| element.forward_t(xs, train)))
    })
}
