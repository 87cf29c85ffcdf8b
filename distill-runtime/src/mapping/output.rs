//! What a [`DistillModel`](super::DistillModel) forward returns, and its iterators.

use std::iter::{FusedIterator, Zip};

use tch::Tensor;

use super::MappedPair;
use crate::engine::Captured;

/// What a [`DistillModel`](super::DistillModel) forward returns: both models' outputs and, for each
/// pair of the mapping, the two captured tensors with the pair's payload.
pub struct DistillOutput<'d, P> {
    /// The student's own output.
    pub student_output: Tensor,
    /// The teacher's own output (on the student's device).
    pub teacher_output: Tensor,
    pairs: Vec<(Captured, Captured)>,
    mapping: &'d [MappedPair<P>],
}

impl<'d, P> DistillOutput<'d, P> {
    pub(super) fn new(
        student_output: Tensor,
        teacher_output: Tensor,
        pairs: Vec<(Captured, Captured)>,
        mapping: &'d [MappedPair<P>],
    ) -> Self {
        DistillOutput { student_output, teacher_output, pairs, mapping }
    }

    /// `(student tensor, teacher tensor, payload)` for each pair, in insertion order.
    pub fn pairs(&self) -> Pairs<'_, 'd, P> {
        Pairs { inner: self.pairs.iter().zip(self.mapping) }
    }

    /// Pair `index`, if any.
    pub fn get(&self, index: usize) -> Option<(&Captured, &Captured, &'d P)> {
        let (s, t) = self.pairs.get(index)?;
        let pair = self.mapping.get(index)?;
        Some((s, t, &pair.payload))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether the mapping was empty.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }
}

/// The pairs of a [`DistillOutput`], by reference: `(&Captured, &Captured, &P)` — the student's
/// tensor, the teacher's tensor and the pair's payload — in insertion order. From
/// [`DistillOutput::pairs`].
#[derive(Debug)]
pub struct Pairs<'a, 'd, P> {
    inner: Zip<std::slice::Iter<'a, (Captured, Captured)>, std::slice::Iter<'d, MappedPair<P>>>,
}

impl<'a, 'd, P> Iterator for Pairs<'a, 'd, P> {
    type Item = (&'a Captured, &'a Captured, &'d P);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|((s, t), pair)| (s, t, &pair.payload))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<P> ExactSizeIterator for Pairs<'_, '_, P> {}

impl<P> FusedIterator for Pairs<'_, '_, P> {}

/// The pairs of a [`DistillOutput`], by value: `(Captured, Captured, &P)` — the student's tensor, the
/// teacher's tensor and the pair's payload — in insertion order. From `DistillOutput::into_iter`.
#[derive(Debug)]
pub struct IntoPairs<'d, P> {
    inner: Zip<std::vec::IntoIter<(Captured, Captured)>, std::slice::Iter<'d, MappedPair<P>>>,
}

impl<'d, P> Iterator for IntoPairs<'d, P> {
    type Item = (Captured, Captured, &'d P);

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next().map(|((s, t), pair)| (s, t, &pair.payload))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<P> ExactSizeIterator for IntoPairs<'_, P> {}

impl<P> FusedIterator for IntoPairs<'_, P> {}

impl<'d, P> IntoIterator for DistillOutput<'d, P> {
    type Item = (Captured, Captured, &'d P);
    type IntoIter = IntoPairs<'d, P>;
    fn into_iter(self) -> Self::IntoIter {
        IntoPairs { inner: self.pairs.into_iter().zip(self.mapping) }
    }
}

impl<P> std::fmt::Debug for DistillOutput<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistillOutput")
            .field("student_output", &self.student_output)
            .field("teacher_output", &self.teacher_output)
            .field("pairs", &self.pairs)
            .finish()
    }
}
