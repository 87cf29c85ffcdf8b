//! One pair of a [`Distillation`](super::Distillation) as its front end built it: both endpoints
//! resolved, the criterion (with its weight or schedule) and the adapters.

use std::borrow::Cow;
use std::fmt;

use tch::Tensor;

use crate::adapter::Adapter;
use crate::criterion::{check_pair, Criterion};
use crate::dry_run::PairShapes;
use crate::endpoint::ResolvedEndpoint;
use crate::error::{DistillError, Result};
use crate::point::Side;

/// One pair of a distillation, as its front end built it.
pub struct PairSpec<'m> {
    /// The pair's label: its field in a `distill!` output, its `name` in a configuration, or
    /// `student path => teacher path` for a `Mapping`.
    pub label: Cow<'static, str>,
    /// The student endpoint, resolved.
    pub student: ResolvedEndpoint,
    /// The teacher endpoint, resolved.
    pub teacher: ResolvedEndpoint,
    /// The loss, with its weight or schedule; `None` for a pair of a `Mapping` whose payload is the
    /// user's (its loss is the user's to compute).
    pub criterion: Option<Box<dyn Criterion + 'm>>,
    /// Applied to the student tensor (`inverted_conv2d_adapter(student.x)`).
    pub student_adapter: Option<Box<dyn Adapter + 'm>>,
    /// Applied to the teacher tensor (`conv2d_adapter(teacher.x)`).
    pub teacher_adapter: Option<Box<dyn Adapter + 'm>>,
}

impl fmt::Debug for PairSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairSpec")
            .field("label", &self.label)
            .field("student", &self.student.path())
            .field("teacher", &self.teacher.path())
            .field("student_adapter", &self.student_adapter)
            .field("teacher_adapter", &self.teacher_adapter)
            .finish_non_exhaustive()
    }
}

impl PairSpec<'_> {
    /// The adapter of `side`, if the pair has one.
    fn adapter(&self, side: Side) -> Option<&(dyn Adapter + '_)> {
        match side {
            Side::Student => self.student_adapter.as_deref(),
            Side::Teacher => self.teacher_adapter.as_deref(),
        }
    }

    /// `tensor` (captured on `side`) through that side's adapter, if any; an adapter that cannot
    /// take it is an error naming the pair and the side.
    pub(in crate::distillation) fn adapt(&self, tensor: Tensor, side: Side, train: bool) -> Result<Tensor> {
        match self.adapter(side) {
            Some(adapter) => adapter.f_adapt(&tensor, train).map_err(|error| self.adapter_error(side, error)),
            None => Ok(tensor),
        }
    }

    fn adapter_error(&self, side: Side, error: DistillError) -> DistillError {
        DistillError::AdapterInput { pair: self.label.to_string(), side, source: Box::new(error) }
    }

    /// One pair of a dry run: sizes each side's adapter from its input and the other side's tensor
    /// (after that side's adapter), applies the adapters, and checks the criterion (a pair without
    /// one reports its shapes).
    pub(in crate::distillation) fn dry_run(&self, student: Tensor, teacher: Tensor) -> Result<PairShapes> {
        for (side, own, other) in [(Side::Student, &student, &teacher), (Side::Teacher, &teacher, &student)] {
            if let Some(adapter) = self.adapter(side) {
                let other = self.adapt(other.shallow_clone(), other_side(side), false)?;
                adapter.fit_shapes(&own.size(), &other.size()).map_err(|error| self.adapter_error(side, error))?;
            }
        }
        let (student_raw, teacher_raw) = (student.size(), teacher.size());
        let student = self.adapt(student, Side::Student, false)?.size();
        let teacher = self.adapt(teacher, Side::Teacher, false)?.size();
        if let Some(criterion) = &self.criterion {
            check_pair(&**criterion, &self.label, &student, &teacher)?;
        }
        Ok(PairShapes { label: self.label.to_string(), student, teacher, student_raw, teacher_raw })
    }
}

/// The side across the pair from `side`.
fn other_side(side: Side) -> Side {
    match side {
        Side::Student => Side::Teacher,
        Side::Teacher => Side::Student,
    }
}
