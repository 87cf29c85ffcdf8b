//! What a [`DistillModel`](super::DistillModel) forward returns: the models' outputs and each
//! pair's captures with its payload.

use std::iter::{FusedIterator, Map, Zip};

use tch::Tensor;

use super::MappedPair;
use crate::engine::Captured;

/// What a [`DistillModel`](super::DistillModel) forward returns: the models' outputs and, for each
/// pair of the mapping, the two captured tensors with the pair's payload.
pub struct DistillOutput<'d, P> {
    /// The student's own output; undefined for a TorchScript student with several named outputs
    /// and none chosen as its own ([`jit::Module::with_output`](crate::jit::Module::with_output)).
    pub student_output: Tensor,
    /// The teacher's own output (on the student's device), undefined as the student's is. With
    /// several teachers this tensor is undefined: each teacher's is
    /// [`teacher_output_of`](Self::teacher_output_of).
    pub teacher_output: Tensor,
    /// Each teacher's output, `None` for a teacher that did not run.
    teacher_outputs: Vec<Option<Tensor>>,
    pairs: Vec<(Captured, Captured)>,
    mapping: &'d [MappedPair<P>],
    teacher_names: &'d [String],
}

impl<'d, P> DistillOutput<'d, P> {
    pub(super) fn new(
        student_output: Tensor,
        mut teacher_outputs: Vec<Option<Tensor>>,
        pairs: Vec<(Captured, Captured)>,
        mapping: &'d [MappedPair<P>],
        teacher_names: &'d [String],
    ) -> Self {
        let teacher_output = match teacher_outputs.as_mut_slice() {
            [one] => one.take().unwrap_or_else(Tensor::new),
            _ => Tensor::new(),
        };
        DistillOutput { student_output, teacher_output, teacher_outputs, pairs, mapping, teacher_names }
    }

    /// The output of the teacher named `teacher` (`"teacher"` for the one teacher of `distill`), on
    /// the student's device; `None` for a name the distillation does not have, or a teacher without
    /// pairs (which does not run when there are several).
    pub fn teacher_output_of(&self, teacher: &str) -> Option<&Tensor> {
        let index = self.teacher_names.iter().position(|name| name == teacher)?;
        if self.teacher_names.len() == 1 {
            return Some(&self.teacher_output);
        }
        self.teacher_outputs.get(index)?.as_ref()
    }

    /// The name of the teacher that pair `index` takes its teacher tensor from.
    pub fn teacher_of(&self, index: usize) -> Option<&'d str> {
        let pair = self.mapping.get(index)?;
        self.teacher_names.get(pair.teacher_index).map(String::as_str)
    }

    /// Each pair's tensors through `select(teacher endpoint of the pair, tensor)`, both sides.
    pub(super) fn f_select(
        mut self,
        teacher_endpoints: &[crate::endpoint::ResolvedEndpoint],
        select: impl Fn(&crate::endpoint::ResolvedEndpoint, &Tensor) -> crate::error::Result<Tensor>,
    ) -> crate::error::Result<Self> {
        for ((student, teacher), endpoint) in self.pairs.iter_mut().zip(teacher_endpoints) {
            *student = student.f_map(|tensor| select(endpoint, tensor))?;
            *teacher = teacher.f_map(|tensor| select(endpoint, tensor))?;
        }
        Ok(self)
    }

    /// `(student tensor, teacher tensor, payload)` for each pair, in insertion order, by reference
    /// (`for (s, t, payload) in out` takes them by value).
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&Captured, &Captured, &'d P)> + FusedIterator + '_ {
        self.pairs.iter().zip(self.mapping).map(|((s, t), pair)| (s, t, &pair.payload))
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

/// A pair of a [`DistillOutput`] by value, with its payload.
type OwnedPair<'d, P> = (Captured, Captured, &'d P);

/// How [`DistillOutput::into_iter`] makes a pair's captures and its mapped pair one item.
type WithPayload<'d, P> = fn(((Captured, Captured), &'d MappedPair<P>)) -> OwnedPair<'d, P>;

/// What [`DistillOutput::into_iter`] walks: the captures by value, zipped with the mapping's pairs.
type IntoPairs<'d, P> =
    Map<Zip<std::vec::IntoIter<(Captured, Captured)>, std::slice::Iter<'d, MappedPair<P>>>, WithPayload<'d, P>>;

/// `(student tensor, teacher tensor, payload)` for each pair, by value, in insertion order.
impl<'d, P> IntoIterator for DistillOutput<'d, P> {
    type Item = OwnedPair<'d, P>;
    type IntoIter = IntoPairs<'d, P>;
    fn into_iter(self) -> Self::IntoIter {
        let with_payload: WithPayload<'d, P> = |((s, t), pair)| (s, t, &pair.payload);
        self.pairs.into_iter().zip(self.mapping).map(with_payload)
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
