//! [`distill`] and the [`DistillModel`] it returns.

use std::marker::PhantomData;

use tch::Tensor;

use super::{DistillOutput, MappedPair, Mapping};
use crate::cache::TeacherBatch;
use crate::criterion::{check_pair, Criterion};
use crate::dry_run::{DryRun, PairShapes};
use crate::engine::{Engine, TeacherMode};
use crate::error::{DistillError, Result};
use crate::side::{LiveTeacher, SideModel};

/// Glues `student` and `teacher` into a distillation model that captures the pairs of `mapping`.
///
/// The teacher runs without gradient and in evaluation mode unless [`DistillModel::teacher_grad`] /
/// [`DistillModel::teacher_train`] say otherwise. A mapping with several teachers goes to
/// [`distill_teachers`] instead (here, its forward is an error).
pub fn distill<'m, S, T, P>(student: &'m S, teacher: &'m T, mapping: Mapping<'m, P>) -> DistillModel<'m, S, T, P>
where
    S: SideModel,
    T: SideModel,
{
    let problem = if mapping.teachers.len() > 1 {
        Some(Problem::SeveralTeachers)
    } else if !mapping.built_for(student, teacher) {
        Some(Problem::OtherModels)
    } else {
        None
    };
    let engine = Engine::new(
        mapping.pairs.iter().map(|pair| pair.student.clone()).collect(),
        mapping.pairs.iter().map(|pair| pair.teacher.clone()).collect(),
    );
    DistillModel::build(student, vec![teacher], engine, mapping, problem)
}

/// Glues `student` and the teachers of `mapping` (from [`Mapping::with_teachers`]) into a
/// distillation model. One forward runs each teacher that has pairs once, in declaration order,
/// each as its own mode says (no gradient and evaluation mode unless
/// [`DistillModel::with_teacher_mode`] says otherwise); a teacher without pairs does not run.
pub fn distill_teachers<'m, S, P>(student: &'m S, mapping: Mapping<'m, P>) -> DistillModel<'m, S, SeveralTeachers, P>
where
    S: SideModel,
{
    let problem = (!mapping.student.is_for(student)).then_some(Problem::OtherModels);
    let teachers = mapping.teacher_models();
    let engine = Engine::with_teachers(
        mapping.pairs.iter().map(|pair| pair.student.clone()).collect(),
        mapping.pairs.iter().map(|pair| pair.teacher.clone()).collect(),
        mapping.pairs.iter().map(|pair| pair.teacher_index).collect(),
        mapping.teacher_names.clone(),
    );
    match engine {
        Ok(engine) => DistillModel::build(student, teachers, engine, mapping, problem),
        // A mapping always has a teacher and in-range teacher indices; kept as an error all the same.
        Err(_) => DistillModel::build(student, teachers, Engine::default(), mapping, Some(Problem::Inconsistent)),
    }
}

/// The teacher type of a [`DistillModel`] over several teachers (from [`distill_teachers`]), whose
/// teachers are the models given to [`Mapping::with_teachers`].
#[derive(Debug)]
pub enum SeveralTeachers {}

/// Several teachers run; a teacher cache among them is an error of the forward (a cache holds one
/// teacher's side, read with `forward_cached` from a one-teacher distillation).
#[diagnostic::do_not_recommend]
impl LiveTeacher for SeveralTeachers {}

/// Why a [`DistillModel`] cannot run; reported by its forward.
#[derive(Clone, Copy, Debug)]
enum Problem {
    OtherModels,
    SeveralTeachers,
    Inconsistent,
}

impl Problem {
    fn error(self) -> DistillError {
        match self {
            Problem::OtherModels => DistillError::ModelMismatch,
            Problem::SeveralTeachers => DistillError::InvalidArgument(
                "this mapping has several teachers: glue it with `distill_teachers(&student, mapping)`".to_owned(),
            ),
            Problem::Inconsistent => {
                DistillError::InvalidArgument("the mapping's pairs and teachers do not agree".to_owned())
            }
        }
    }
}

/// A student and its teacher or teachers glued by a [`Mapping`]; see [`distill`] and
/// [`distill_teachers`]. `T` is the teacher's type, or [`SeveralTeachers`].
pub struct DistillModel<'m, S, T, P> {
    student: &'m S,
    teachers: Vec<&'m dyn SideModel>,
    mapping: Mapping<'m, P>,
    engine: Engine,
    problem: Option<Problem>,
    teacher_type: PhantomData<&'m T>,
}

impl<'m, S, T, P> DistillModel<'m, S, T, P>
where
    S: SideModel,
{
    fn build(
        student: &'m S,
        teachers: Vec<&'m dyn SideModel>,
        engine: Engine,
        mut mapping: Mapping<'m, P>,
        problem: Option<Problem>,
    ) -> Self {
        // The mapping is complete: the index that made adding pairs fast is no longer needed.
        mapping.student.forget_index();
        for teacher in &mut mapping.teachers {
            teacher.resolver.forget_index();
        }
        DistillModel { student, teachers, mapping, engine, problem, teacher_type: PhantomData }
    }

    /// Whether gradients flow into the teacher (default `false`); with several teachers, into every
    /// teacher.
    pub fn teacher_grad(mut self, grad: bool) -> Self {
        self.change_modes(|mode| mode.grad = grad);
        self
    }

    /// Whether the teacher runs in training mode (default `false`); with several teachers, every
    /// teacher.
    pub fn teacher_train(mut self, train: bool) -> Self {
        self.change_modes(|mode| mode.train = train);
        self
    }

    /// Applies `change` to every teacher's mode.
    fn change_modes(&mut self, change: impl Fn(&mut TeacherMode)) {
        for index in 0..self.engine.teacher_count() {
            let mut mode = self.engine.mode_of(index).unwrap_or_default();
            change(&mut mode);
            self.engine.set_mode_of(index, mode);
        }
    }

    /// Sets how the teacher named `teacher` runs (`"teacher"` for the one teacher of [`distill`]).
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`], with the closest name.
    pub fn with_teacher_mode(mut self, teacher: &str, mode: TeacherMode) -> Result<Self> {
        let index = self.mapping.teacher_index(teacher)?;
        self.engine.set_mode_of(index, mode);
        Ok(self)
    }

    /// How the teacher named `teacher` runs; `None` for a name the distillation does not have.
    pub fn teacher_mode(&self, teacher: &str) -> Option<TeacherMode> {
        self.engine.mode_of(self.mapping.teacher_index(teacher).ok()?)
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
    pub fn dry_run(&self, xs: &Tensor) -> Result<DryRun>
    where
        T: LiveTeacher,
    {
        let _no_grad = tch::no_grad_guard();
        let out = self.forward_t(xs, false)?;
        Ok(self.report(&out))
    }

    /// As [`dry_run`](Self::dry_run), with the teacher's side read from a teacher cache `batch` and
    /// the student run on `xs` with each sample's stored view applied: the widths of a distillation
    /// over a cache, with the teacher never loaded.
    ///
    /// # Errors
    /// What [`forward_cached`](Self::forward_cached) fails with.
    pub fn dry_run_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch) -> Result<DryRun> {
        let _no_grad = tch::no_grad_guard();
        let out = self.forward_cached(xs, batch, false)?;
        Ok(self.report(&out))
    }

    /// The shapes of every pair of `out`.
    fn report(&self, out: &DistillOutput<'_, P>) -> DryRun {
        let pairs = out
            .pairs()
            .zip(&self.mapping.pairs)
            .map(|((s, t, _), pair)| {
                PairShapes::unadapted(pair_label(pair, &self.mapping.teacher_names), s.size(), t.size())
            })
            .collect();
        DryRun { pairs }
    }

    /// Runs teacher and student on `xs` (the student with `train`) and returns the paired tensors.
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<DistillOutput<'_, P>>
    where
        T: LiveTeacher,
    {
        self.forward_t_with(xs, xs, train)
    }

    /// As [`forward_t`](Self::forward_t), with a separate input for the teacher (e.g. another
    /// resolution or augmentation).
    pub fn forward_t_with(&self, student_xs: &Tensor, teacher_xs: &Tensor, train: bool) -> Result<DistillOutput<'_, P>>
    where
        T: LiveTeacher,
    {
        self.run(&self.teachers, student_xs, teacher_xs, train)
    }

    /// Runs the student (with `train`) on what `batch` makes of `xs`
    /// ([`TeacherBatch::student_input`]: an image cache's batch applies each sample's stored
    /// augmentation view to the raw inputs; a token cache's batch takes the token ids as they are)
    /// and takes the teacher's side of every pair from `batch` instead of running the teacher.
    ///
    /// The payload `P` is the user's and cannot be checked against the cache: a pair whose teacher
    /// endpoint is stored in an encoded form (top-k logits, a token cache's distributions) gets the
    /// packed tensor whatever its payload does with it, and the token mask
    /// ([`TeacherBatch::token_mask`]) is the user's to apply to it. A pair on a token cache's
    /// stored hidden state gets the valid tokens only ([`TeacherBatch::select_tokens`]). With [`Criterion`] payloads,
    /// [`forward_cached_checked`](DistillModel::forward_cached_checked) checks each pair's criterion
    /// against the stored encoding first.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] for a teacher endpoint the cache does not store or inputs of
    /// another shape than the cache's; what a forward can fail with.
    pub fn forward_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch, train: bool) -> Result<DistillOutput<'_, P>> {
        if let Some(problem) = self.problem {
            return Err(problem.error());
        }
        let xs = batch.student_input(xs)?;
        // A cache holds one teacher's side: a distillation from several teachers has no cached form,
        // and the engine says so (one teacher given for several).
        let out = self.run(&[batch as &dyn SideModel], &xs, &xs, train)?;
        out.f_select(self.engine.teacher_endpoints(), |endpoint, tensor| batch.select_tokens(endpoint, tensor))
    }

    /// Runs the engine with `teachers` as the teacher sides and pairs the captures with the
    /// mapping's payloads.
    fn run(
        &self,
        teachers: &[&dyn SideModel],
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<DistillOutput<'_, P>> {
        if let Some(problem) = self.problem {
            return Err(problem.error());
        }
        let captures = self.engine.run(self.student, teachers, student_xs, teacher_xs, train)?;
        Ok(DistillOutput::new(
            captures.student_output,
            captures.teacher_outputs,
            captures.student.into_iter().zip(captures.teacher).collect(),
            &self.mapping.pairs,
            &self.mapping.teacher_names,
        ))
    }
}

impl<'m, S, T, C> DistillModel<'m, S, T, C>
where
    S: SideModel,
    C: Criterion,
{
    /// As [`forward_cached`](Self::forward_cached), after checking that each pair's criterion reads
    /// its teacher endpoint as the cache stores it: top-k logits at the criterion's top-k
    /// temperature ([`Criterion::teacher_encoding`]), anything else by a criterion that reads the
    /// teacher's tensor as it is.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] naming the pair, the endpoint and both temperatures; what
    /// [`forward_cached`](Self::forward_cached) fails with.
    pub fn forward_cached_checked(
        &self,
        xs: &Tensor,
        batch: &dyn TeacherBatch,
        train: bool,
    ) -> Result<DistillOutput<'_, C>> {
        for (pair, endpoint) in self.mapping.pairs.iter().zip(self.engine.teacher_endpoints()) {
            let label = pair_label(pair, &self.mapping.teacher_names);
            batch.check_encoding(&label, endpoint, pair.payload.teacher_encoding())?;
        }
        self.forward_cached(xs, batch, train)
    }

    /// A [`dry_run`](Self::dry_run) that also checks each pair against its criterion payload, and
    /// reports every pair that does not fit at once — naming, for a width mismatch, the adapters that
    /// would.
    pub fn check_criteria(&self, xs: &Tensor) -> Result<DryRun>
    where
        T: LiveTeacher,
    {
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

/// `student path => teacher path`, `""` shown as `(output)`; with several teachers, the teacher's
/// name follows.
fn pair_label<P>(pair: &MappedPair<P>, teacher_names: &[String]) -> String {
    let show = |path: &str| if path.is_empty() { "(output)".to_owned() } else { path.to_owned() };
    let label = format!("{} => {}", show(pair.student.path()), show(pair.teacher.path()));
    match teacher_names {
        [_, _, ..] => {
            format!("{label} (teacher `{}`)", teacher_names.get(pair.teacher_index).map_or("?", String::as_str))
        }
        _ => label,
    }
}

impl<S: std::fmt::Debug, T, P> std::fmt::Debug for DistillModel<'_, S, T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let modes: Vec<_> = (0..self.engine.teacher_count())
            .filter_map(|index| Some((self.engine.teacher_name(index)?, self.engine.mode_of(index)?)))
            .collect();
        f.debug_struct("DistillModel")
            .field("student", &self.student)
            .field("mapping", &self.mapping)
            .field("teachers", &modes)
            .finish()
    }
}
