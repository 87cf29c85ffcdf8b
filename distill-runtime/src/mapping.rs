//! The seed's dynamic API: a [`Mapping`] of (student endpoint, teacher endpoint, payload) triples
//! and [`distill`], which glues both models into one whose forward returns the paired tensors.
//!
//! Endpoints are checked when they are added (paths exist, indices are in range, modules can record),
//! so a mistake in a config file surfaces before the first training step.

use tch::nn::ModuleT;
use tch::Tensor;

use crate::endpoint::{IntoEndpoint, ResolvedEndpoint};
use crate::engine::{Captured, Engine, TeacherMode};
use crate::error::{DistillError, Result, Side};
use crate::module::Distillable;

/// Pairs of student and teacher modules to distill through, each with a payload of the user's
/// choosing (a criterion, an adapter, a weight, a tuple of those, or `()`).
pub struct Mapping<'m, P> {
    student: &'m dyn Distillable,
    teacher: &'m dyn Distillable,
    pairs: Vec<MappedPair<P>>,
}

/// One entry of a [`Mapping`].
#[derive(Debug)]
pub struct MappedPair<P> {
    /// The student endpoint, checked.
    pub student: ResolvedEndpoint,
    /// The teacher endpoint, checked.
    pub teacher: ResolvedEndpoint,
    /// The user's payload.
    pub payload: P,
}

impl<'m, P> Mapping<'m, P> {
    /// An empty mapping between `student` and `teacher`.
    pub fn new<S: Distillable, T: Distillable>(student: &'m S, teacher: &'m T) -> Self {
        Mapping { student, teacher, pairs: Vec::new() }
    }

    /// Adds a pair. Endpoints may be given by reference (`&student.block.conv`), by slot
    /// (`student.features.slot(7)`), by name (`"features.5.conv"`) or mixed; both are checked now
    /// against their model, and the first problem is returned.
    pub fn add<'e>(
        &mut self,
        student: impl IntoEndpoint<'e>,
        teacher: impl IntoEndpoint<'e>,
        payload: P,
    ) -> Result<&mut Self> {
        let student = student.into_endpoint().resolve(self.student, Side::Student)?;
        let teacher = teacher.into_endpoint().resolve(self.teacher, Side::Teacher)?;
        self.pairs.push(MappedPair { student, teacher, payload });
        Ok(self)
    }

    /// The pairs, in insertion order.
    pub fn pairs(&self) -> &[MappedPair<P>] {
        &self.pairs
    }

    /// The payload of pair `index`, if any.
    pub fn payload(&self, index: usize) -> Option<&P> {
        self.pairs.get(index).map(|pair| &pair.payload)
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair was added.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    fn built_for(&self, student: &dyn Distillable, teacher: &dyn Distillable) -> bool {
        same_module(self.student, student) && same_module(self.teacher, teacher)
    }
}

impl<P> std::fmt::Debug for Mapping<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for pair in &self.pairs {
            list.entry(&format_args!("{:?} => {:?}", pair.student.path, pair.teacher.path));
        }
        list.finish()
    }
}

fn same_module(a: &dyn Distillable, b: &dyn Distillable) -> bool {
    std::ptr::addr_eq(a as *const dyn Distillable, b as *const dyn Distillable) && a.module_type() == b.module_type()
}

/// Glues `student` and `teacher` into a distillation model that captures the pairs of `mapping`.
///
/// The teacher runs without gradient and in evaluation mode unless [`DistillModel::teacher_grad`] /
/// [`DistillModel::teacher_train`] say otherwise.
pub fn distill<'m, S, T, P>(student: &'m S, teacher: &'m T, mapping: Mapping<'m, P>) -> DistillModel<'m, S, T, P>
where
    S: ModuleT + Distillable,
    T: ModuleT + Distillable,
{
    let matches = mapping.built_for(student, teacher);
    let (student_endpoints, teacher_endpoints) =
        mapping.pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
    DistillModel {
        student,
        teacher,
        engine: Engine::new(student_endpoints, teacher_endpoints),
        mapping,
        mode: TeacherMode::default(),
        matches,
    }
}

/// A student and a teacher glued by a [`Mapping`]; see [`distill`].
pub struct DistillModel<'m, S, T, P> {
    student: &'m S,
    teacher: &'m T,
    mapping: Mapping<'m, P>,
    engine: Engine,
    mode: TeacherMode,
    matches: bool,
}

impl<'m, S, T, P> DistillModel<'m, S, T, P>
where
    S: ModuleT + Distillable,
    T: ModuleT + Distillable,
{
    /// Whether gradients flow into the teacher (default `false`).
    pub fn teacher_grad(mut self, grad: bool) -> Self {
        self.mode.grad = grad;
        self
    }

    /// Whether the teacher runs in training mode (default `false`).
    pub fn teacher_train(mut self, train: bool) -> Self {
        self.mode.train = train;
        self
    }

    /// The mapping this model captures.
    pub fn mapping(&self) -> &Mapping<'m, P> {
        &self.mapping
    }

    /// Runs teacher and student on `xs` (the student with `train`) and returns the paired tensors.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<DistillOutput<'_, P>> {
        self.forward_t_with(xs, xs, train)
    }

    /// As [`forward_t`](Self::forward_t), with a separate input for the teacher (e.g. another
    /// resolution or augmentation).
    pub fn forward_t_with(
        &self,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<DistillOutput<'_, P>> {
        if !self.matches {
            return Err(DistillError::ModelMismatch);
        }
        let captures = self.engine.run(self.student, self.teacher, student_xs, teacher_xs, train, self.mode)?;
        Ok(DistillOutput {
            student_output: captures.student_output,
            teacher_output: captures.teacher_output,
            pairs: captures.student.into_iter().zip(captures.teacher).collect(),
            mapping: &self.mapping.pairs,
        })
    }
}

/// What a [`DistillModel`] forward returns.
pub struct DistillOutput<'d, P> {
    /// The student's own output.
    pub student_output: Tensor,
    /// The teacher's own output (on the student's device).
    pub teacher_output: Tensor,
    pairs: Vec<(Captured, Captured)>,
    mapping: &'d [MappedPair<P>],
}

impl<'d, P> DistillOutput<'d, P> {
    /// `(student tensor, teacher tensor, payload)` for each pair, in insertion order.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&Captured, &Captured, &'d P)> + '_ {
        self.pairs.iter().zip(self.mapping).map(|((s, t), pair)| (s, t, &pair.payload))
    }

    /// Pair `index`, if any.
    pub fn get(&self, index: usize) -> Option<(&Captured, &Captured, &'d P)> {
        let (s, t) = self.pairs.get(index)?;
        Some((s, t, &self.mapping[index].payload))
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

impl<'d, P> IntoIterator for DistillOutput<'d, P> {
    type Item = (Captured, Captured, &'d P);
    type IntoIter = Box<dyn Iterator<Item = Self::Item> + 'd>;
    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.pairs.into_iter().zip(self.mapping).map(|((s, t), pair)| (s, t, &pair.payload)))
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
