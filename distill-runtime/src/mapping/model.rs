//! [`distill`] and the [`DistillModel`] it returns.

use tch::Tensor;

use super::{DistillOutput, MappedPair, Mapping};
use crate::cache::CachedBatch;
use crate::criterion::{check_pair, Criterion};
use crate::dry_run::{DryRun, PairShapes};
use crate::engine::Engine;
use crate::error::{DistillError, Result};
use crate::side::SideModel;

/// Glues `student` and `teacher` into a distillation model that captures the pairs of `mapping`.
///
/// The teacher runs without gradient and in evaluation mode unless [`DistillModel::teacher_grad`] /
/// [`DistillModel::teacher_train`] say otherwise.
pub fn distill<'m, S, T, P>(student: &'m S, teacher: &'m T, mut mapping: Mapping<'m, P>) -> DistillModel<'m, S, T, P>
where
    S: SideModel,
    T: SideModel,
{
    let matches = mapping.built_for(student, teacher);
    // The mapping is complete: the index that made adding pairs fast is no longer needed.
    mapping.student.forget_index();
    mapping.teacher.forget_index();
    let (student_endpoints, teacher_endpoints) =
        mapping.pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
    DistillModel { student, teacher, engine: Engine::new(student_endpoints, teacher_endpoints), mapping, matches }
}

/// A student and a teacher glued by a [`Mapping`]; see [`distill`].
pub struct DistillModel<'m, S, T, P> {
    student: &'m S,
    teacher: &'m T,
    mapping: Mapping<'m, P>,
    engine: Engine,
    matches: bool,
}

impl<'m, S, T, P> DistillModel<'m, S, T, P>
where
    S: SideModel,
    T: SideModel,
{
    /// Whether gradients flow into the teacher (default `false`).
    pub fn teacher_grad(mut self, grad: bool) -> Self {
        let mut mode = self.engine.mode();
        mode.grad = grad;
        self.engine.set_mode(mode);
        self
    }

    /// Whether the teacher runs in training mode (default `false`).
    pub fn teacher_train(mut self, train: bool) -> Self {
        let mut mode = self.engine.mode();
        mode.train = train;
        self.engine.set_mode(mode);
        self
    }

    /// The mapping this model captures.
    pub fn mapping(&self) -> &Mapping<'m, P> {
        &self.mapping
    }

    /// The capture engine: the resolved endpoints of both sides, in pair order, and the teacher's
    /// mode.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Runs both models once on a sample batch `xs` — in evaluation mode, without gradient, so that
    /// no running statistic moves — and reports every pair's shapes, before any training step: the
    /// widths for width-given adapters (`linear_adapter(path, in, out)`) come from here. With
    /// criteria as payloads, [`check_criteria`](Self::check_criteria) also checks each pair.
    pub fn dry_run(&self, xs: &Tensor) -> Result<DryRun> {
        let _no_grad = tch::no_grad_guard();
        let out = self.forward_t(xs, false)?;
        let pairs = out
            .pairs()
            .zip(&self.mapping.pairs)
            .map(|((s, t, _), pair)| PairShapes { label: pair_label(pair), student: s.size(), teacher: t.size() })
            .collect();
        Ok(DryRun { pairs })
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
        let captures = self.engine.run(self.student, self.teacher, student_xs, teacher_xs, train)?;
        Ok(DistillOutput::new(
            captures.student_output,
            captures.teacher_output,
            captures.student.into_iter().zip(captures.teacher).collect(),
            &self.mapping.pairs,
        ))
    }

    /// Runs the student (with `train`) on `xs` — the batch's raw inputs, to which each sample's
    /// stored augmentation view is applied first ([`CachedBatch::replay`]) — and takes the
    /// teacher's side of every pair from `batch` instead of running the teacher.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] for a teacher endpoint the cache does not store or inputs of
    /// another shape than the cache's; what a forward can fail with.
    pub fn forward_cached(&self, xs: &Tensor, batch: &CachedBatch, train: bool) -> Result<DistillOutput<'_, P>> {
        if !self.matches {
            return Err(DistillError::ModelMismatch);
        }
        let xs = batch.replay(xs)?;
        let captures = self.engine.run(self.student, batch, &xs, &xs, train)?;
        Ok(DistillOutput::new(
            captures.student_output,
            captures.teacher_output,
            captures.student.into_iter().zip(captures.teacher).collect(),
            &self.mapping.pairs,
        ))
    }
}

impl<'m, S, T, C> DistillModel<'m, S, T, C>
where
    S: SideModel,
    T: SideModel,
    C: Criterion,
{
    /// A [`dry_run`](Self::dry_run) that also checks each pair against its criterion payload, and
    /// reports every pair that does not fit at once — naming, for a width mismatch, the adapters that
    /// would.
    pub fn check_criteria(&self, xs: &Tensor) -> Result<DryRun> {
        let report = self.dry_run(xs)?;
        let problems: Vec<DistillError> = report
            .pairs
            .iter()
            .zip(&self.mapping.pairs)
            .filter_map(|(shapes, pair)| {
                check_pair(&pair.payload, &shapes.label, &shapes.student, &shapes.teacher).err()
            })
            .collect();
        if problems.is_empty() {
            Ok(report)
        } else {
            Err(DistillError::DryRun { problems })
        }
    }
}

/// `student path => teacher path`, `""` shown as `(output)`.
fn pair_label<P>(pair: &MappedPair<P>) -> String {
    let show = |path: &str| if path.is_empty() { "(output)".to_owned() } else { path.to_owned() };
    format!("{} => {}", show(pair.student.path()), show(pair.teacher.path()))
}

impl<S: std::fmt::Debug, T: std::fmt::Debug, P> std::fmt::Debug for DistillModel<'_, S, T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistillModel")
            .field("student", &self.student)
            .field("teacher", &self.teacher)
            .field("mapping", &self.mapping)
            .field("mode", &self.engine.mode())
            .finish()
    }
}
