//! The state and the forward of a `distill!` model: [`Core`] holds the pairs as `new()` built them
//! and the [`Engine`] shared with the dynamic API.

use std::fmt;

use tch::nn::ModuleT;
use tch::Tensor;

use crate::criterion::Criterion;
use crate::dsl::Pair;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::{Captured, Engine, TeacherMode};
use crate::error::{DistillError, Result};
use crate::side::SideModel;

/// One pair of a generated distillation, as `new()` built it.
pub struct PairSpec<'m> {
    /// The pair's label (its field name in the output).
    pub label: &'static str,
    /// The student endpoint, resolved.
    pub student: ResolvedEndpoint,
    /// The teacher endpoint, resolved.
    pub teacher: ResolvedEndpoint,
    /// The loss.
    pub criterion: Box<dyn Criterion + 'm>,
    /// Applied to the student tensor (`inverted_conv2d_adapter(student.x)`).
    pub student_adapter: Option<Box<dyn ModuleT + 'm>>,
    /// Applied to the teacher tensor (`conv2d_adapter(teacher.x)`).
    pub teacher_adapter: Option<Box<dyn ModuleT + 'm>>,
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

/// The state of a generated distillation: its pairs and the capture engine (which holds the
/// teacher's mode).
#[derive(Debug)]
pub struct Core<'m> {
    pairs: Vec<PairSpec<'m>>,
    engine: Engine,
}

/// What one forward of a [`Core`] gives: both outputs and the pairs in declaration order.
#[derive(Debug)]
pub struct Forward<'d> {
    /// The student's output.
    pub student_output: Tensor,
    /// The teacher's output, on the student's device.
    pub teacher_output: Tensor,
    /// One per pair, in declaration order.
    pub pairs: Vec<Pair<'d>>,
}

impl<'m> Core<'m> {
    /// A core over `pairs` (already resolved), the teacher running as `TeacherMode::default()`.
    pub fn new(pairs: Vec<PairSpec<'m>>) -> Self {
        let (student, teacher) = pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
        Core { engine: Engine::new(student, teacher), pairs }
    }

    /// The capture engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How the teacher runs.
    pub fn mode(&self) -> TeacherMode {
        self.engine.mode()
    }

    /// Sets how the teacher runs.
    pub fn set_mode(&mut self, mode: TeacherMode) {
        self.engine.set_mode(mode);
    }

    /// Runs the engine, applies the adapters (with the student's `train` flag) and checks each pair's
    /// shapes against its criterion.
    pub fn forward(
        &self,
        student: &dyn SideModel,
        teacher: &dyn SideModel,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Forward<'_>> {
        let captures = self.engine.run(student, teacher, student_xs, teacher_xs, train)?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .map(|(spec, (s, t))| {
                let student = adapt(join_calls(s)?, spec.student_adapter.as_deref(), train);
                let teacher = adapt(join_calls(t)?, spec.teacher_adapter.as_deref(), train);
                if !spec.criterion.accepts_shapes(&student.size(), &teacher.size()) {
                    return Err(DistillError::ShapeMismatch {
                        pair: spec.label.to_owned(),
                        student: student.size(),
                        teacher: teacher.size(),
                    });
                }
                Ok(Pair::new(student, teacher, spec.label, &*spec.criterion))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Forward { student_output: captures.student_output, teacher_output: captures.teacher_output, pairs })
    }
}

/// One call as is; several (an `all_calls` endpoint) concatenated along the batch dimension, so
/// that a mean-reduced criterion averages over the calls.
fn join_calls(captured: Captured) -> Result<Tensor> {
    let mut calls = captured.into_calls();
    if calls.len() == 1 {
        if let Some(tensor) = calls.pop() {
            return Ok(tensor);
        }
    }
    Ok(Tensor::f_cat(&calls, 0)?)
}

fn adapt(tensor: Tensor, adapter: Option<&(dyn ModuleT + '_)>, train: bool) -> Tensor {
    match adapter {
        Some(adapter) => adapter.forward_t(&tensor, train),
        None => tensor,
    }
}

/// Turns the pairs of a [`Forward`] into an array of the generated output's arity.
pub fn into_array<'d, const N: usize>(pairs: Vec<Pair<'d>>) -> Result<[Pair<'d>; N]> {
    let len = pairs.len();
    pairs.try_into().map_err(|_| DistillError::InvalidArgument(format!("expected {N} pairs, the engine gave {len}")))
}
