//! [`distill`] and the [`DistillModel`] it returns.

use std::borrow::Cow;
use std::marker::PhantomData;

use tch::Tensor;

use super::{Adapted, DistillOutput, IntoAdapted, MappedPair, Mapping};
use crate::distillation::{Distillation, PairSpec};
use crate::dry_run::DryRun;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::{Captures, Engine, TeacherMode};
use crate::error::{DistillError, Result, SetupError};
use crate::point::Port;
use crate::side::{LiveTeacher, SideModel};
use crate::teacher_batch::TeacherBatch;

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
    DistillModel::build(student, mapping, problem)
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
    DistillModel::build(student, mapping, problem)
}

impl<'m> Distillation<'m> {
    /// The distillation of the pairs of `mapping`, whose payloads are criteria (`Mse`, `KlDiv`,
    /// `criterion * 0.5`…) or criteria with adapters ([`Adapted`]): the runtime that `distill!`
    /// builds, from endpoints known only at run time. The adapters run in the forward and are
    /// fitted by the dry run, as `distill!`'s inline ones; their variables are where they were
    /// created. Each pair is labelled `student path => teacher path` (`(output)` for a model's own
    /// output, `(input)` after an endpoint that captures its module's input; with several teachers,
    /// the teacher's name follows; a pair added again is `… #2`, `… #3`, so that each label names
    /// one term); every teacher runs without gradient and in evaluation mode until
    /// [`set_teacher_mode`](Self::set_teacher_mode) says otherwise.
    ///
    /// # Errors
    /// [`DistillError::ModelMismatch`] when `student` is not the model the mapping was built for;
    /// [`DistillError::InvalidCriterion`] naming the first pair whose criterion's parameters are
    /// invalid; [`DistillError::CacheMismatch`] for a pair whose criterion reads an encoding its
    /// teacher (a cache) does not store.
    pub fn from_mapping<S: SideModel, P: IntoAdapted<'m>>(student: &'m S, mapping: Mapping<'m, P>) -> Result<Self> {
        mapping.into_distillation(student, |payload, spec| {
            let Adapted { criterion, student_adapter, teacher_adapter } = payload.into_adapted();
            spec.criterion = Some(criterion);
            spec.student_adapter = student_adapter;
            spec.teacher_adapter = teacher_adapter;
        })
    }
}

impl<'m, P> Mapping<'m, P> {
    /// The distillation of this mapping's pairs, each payload made into its pair's criterion and
    /// adapters by `build(payload, pair)` (the pair comes labelled `student path => teacher path`,
    /// without criterion or adapter): how the dynamic and the file front ends build the runtime.
    ///
    /// # Errors
    /// [`DistillError::ModelMismatch`] when `student` is not the model the mapping was built for;
    /// what [`Distillation`]'s checks of the criteria find.
    pub(crate) fn into_distillation<S: SideModel>(
        self,
        student: &'m S,
        mut build: impl FnMut(P, &mut PairSpec<'m>),
    ) -> Result<Distillation<'m>> {
        if !self.student.is_for(student) {
            return Err(DistillError::ModelMismatch);
        }
        let mut specs = pair_specs(&self);
        let pair_teacher: Vec<usize> = self.pairs.iter().map(|pair| pair.teacher_index).collect();
        let names: Vec<&str> = self.teacher_names.iter().map(String::as_str).collect();
        let teachers = self.teacher_models();
        for (spec, pair) in specs.iter_mut().zip(self.pairs) {
            build(pair.payload, spec);
        }
        Distillation::from_pairs(student, teachers, &names, specs, &pair_teacher)
    }
}

/// The pairs of `mapping` as the runtime holds them, each labelled `student path => teacher path`
/// and without a criterion (the payloads stay the mapping's).
fn pair_specs<'m, P>(mapping: &Mapping<'m, P>) -> Vec<PairSpec<'m>> {
    mapping
        .pairs
        .iter()
        .zip(pair_labels(mapping))
        .map(|(pair, label)| PairSpec {
            label: Cow::Owned(label),
            student: pair.student.clone(),
            teacher: pair.teacher.clone(),
            criterion: None,
            student_adapter: None,
            teacher_adapter: None,
        })
        .collect()
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
            Problem::SeveralTeachers => SetupError::SeveralTeachersGluedAsOne.into(),
            Problem::Inconsistent => {
                DistillError::InvalidArgument("the mapping's pairs and teachers do not agree".to_owned())
            }
        }
    }
}

/// A student and its teacher or teachers glued by a [`Mapping`]; see [`distill`] and
/// [`distill_teachers`]. `T` is the teacher's type, or [`SeveralTeachers`].
///
/// It runs on the [`Distillation`] every front end builds, whose pairs here carry no criterion:
/// the payloads are the user's, and its forward hands each pair's captures to them.
pub struct DistillModel<'m, S, T, P> {
    student: &'m S,
    distillation: Distillation<'m>,
    mapping: Mapping<'m, P>,
    problem: Option<Problem>,
    teacher_type: PhantomData<&'m T>,
}

impl<'m, S, T, P> DistillModel<'m, S, T, P>
where
    S: SideModel,
{
    fn build(student: &'m S, mut mapping: Mapping<'m, P>, mut problem: Option<Problem>) -> Self {
        // The mapping is complete: the index that made adding pairs fast is no longer needed.
        mapping.student.forget_index();
        for teacher in &mut mapping.teachers {
            teacher.resolver.forget_index();
        }
        let engine = Engine::with_teachers(
            mapping.pairs.iter().map(|pair| pair.student.clone()).collect(),
            mapping.pairs.iter().map(|pair| pair.teacher.clone()).collect(),
            mapping.pairs.iter().map(|pair| pair.teacher_index).collect(),
            mapping.teacher_names.clone(),
        );
        let (engine, specs) = match engine {
            Ok(engine) => (engine, pair_specs(&mapping)),
            // A mapping always has a teacher and in-range teacher indices; kept as an error all the same.
            Err(_) => {
                problem = Some(Problem::Inconsistent);
                (Engine::default(), Vec::new())
            }
        };
        let distillation = Distillation::with_engine(student, mapping.teacher_models(), engine, specs);
        DistillModel { student, distillation, mapping, problem, teacher_type: PhantomData }
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
        for index in 0..self.distillation.teacher_count() {
            let mut mode = self.distillation.mode_of(index);
            change(&mut mode);
            self.distillation.set_mode_of(index, mode);
        }
    }

    /// Sets how the teacher named `teacher` runs (`"teacher"` for the one teacher of [`distill`]).
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`], with the closest name.
    pub fn with_teacher_mode(mut self, teacher: &str, mode: TeacherMode) -> Result<Self> {
        self.distillation.set_teacher_mode(teacher, mode)?;
        Ok(self)
    }

    /// How the teacher named `teacher` runs; `None` for a name the distillation does not have.
    pub fn teacher_mode(&self, teacher: &str) -> Option<TeacherMode> {
        self.distillation.teacher_mode(teacher)
    }

    /// The mapping this model captures.
    pub fn mapping(&self) -> &Mapping<'m, P> {
        &self.mapping
    }

    /// The distillation this model runs: its pairs (labelled `student path => teacher path`,
    /// without criteria: the payloads are the mapping's), their resolved endpoints and the teachers'
    /// modes.
    pub fn distillation(&self) -> &Distillation<'m> {
        &self.distillation
    }

    /// Runs both models once on a sample batch `xs` — in evaluation mode, without gradient, so that
    /// no running statistic moves — and reports every pair's shapes, before any training step: the
    /// widths for width-given adapters (`linear_adapter(path, in, out)`) come from here. It is the
    /// dry run of every front end; the payloads are the user's, so it checks no criterion: with
    /// criteria as payloads, [`Distillation::from_mapping`] builds a distillation whose dry run
    /// checks each pair against its criterion.
    ///
    /// # Errors
    /// What a forward fails with.
    pub fn dry_run(&self, xs: &Tensor) -> Result<DryRun>
    where
        T: LiveTeacher,
    {
        self.check()?;
        self.distillation.dry_run(xs)
    }

    /// As [`dry_run`](Self::dry_run), with the teacher's side read from a teacher cache `batch` and
    /// the student run on `xs` with each sample's stored view applied: the widths of a distillation
    /// over a cache, with the teacher never loaded.
    ///
    /// # Errors
    /// What [`forward_cached`](Self::forward_cached) fails with.
    pub fn dry_run_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch) -> Result<DryRun> {
        self.check()?;
        self.distillation.dry_run_cached(xs, batch)
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
        self.run(None, student_xs, teacher_xs, train)
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
    /// stored hidden state gets the valid tokens only ([`TeacherBatch::select_tokens`]). With
    /// [`Criterion`](crate::criterion::Criterion) payloads, [`Distillation::from_mapping`] checks
    /// each pair's criterion against the stored encoding when it is built, and gives the token mask
    /// to the pairs as labels.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] for a teacher endpoint the cache does not store or inputs of
    /// another shape than the cache's; what a forward can fail with.
    pub fn forward_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch, train: bool) -> Result<DistillOutput<'_, P>> {
        // A cache holds one teacher's side: a distillation from several teachers has no cached form,
        // and the engine says so (one teacher given for several).
        let out = self.run(Some(batch), xs, xs, train)?;
        out.f_select(self.distillation.teacher_endpoints(), |endpoint, tensor| batch.select_tokens(endpoint, tensor))
    }

    /// As [`forward_cached`](Self::forward_cached), with the student run by `forward` instead of
    /// its `forward_t(xs, train)`: for a student whose forward takes more than a tensor, such as a
    /// decoder over packed sequences that must see the batch's document ids to attend within each
    /// document as the teacher did (`|| student.forward_inputs(&inputs)`). `forward` runs the
    /// student this model was built with, once, in the mode the caller chose; its modules are
    /// captured as in any forward. `xs` are the batch's inputs as `forward_cached` takes them.
    ///
    /// # Errors
    /// What [`forward_cached`](Self::forward_cached) and `forward` fail with.
    pub fn forward_cached_by<E>(
        &self,
        xs: &Tensor,
        batch: &dyn TeacherBatch,
        forward: impl FnOnce() -> std::result::Result<Tensor, E>,
    ) -> Result<DistillOutput<'_, P>>
    where
        E: Into<DistillError>,
    {
        self.check()?;
        let captures = self.distillation.capture_by(batch, xs, || forward().map_err(Into::into))?;
        let out = self.output(captures);
        out.f_select(self.distillation.teacher_endpoints(), |endpoint, tensor| batch.select_tokens(endpoint, tensor))
    }

    /// Why this model cannot run, if it cannot.
    fn check(&self) -> Result<()> {
        match self.problem {
            Some(problem) => Err(problem.error()),
            None => Ok(()),
        }
    }

    /// Runs the distillation's engine, with its teachers or with `batch` as the teacher's side, and
    /// pairs the captures with the mapping's payloads.
    fn run(
        &self,
        batch: Option<&dyn TeacherBatch>,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<DistillOutput<'_, P>> {
        self.check()?;
        let captures = self.distillation.capture(batch, student_xs, teacher_xs, train)?;
        Ok(self.output(captures))
    }

    /// The engine's captures paired with the mapping's payloads.
    fn output(&self, captures: Captures) -> DistillOutput<'_, P> {
        DistillOutput::new(
            captures.student_output,
            captures.teacher_outputs,
            captures.student.into_iter().zip(captures.teacher).collect(),
            &self.mapping.pairs,
            &self.mapping.teacher_names,
        )
    }
}

/// `student path => teacher path`, `""` shown as `(output)` and an endpoint that captures its
/// module's input followed by `(input)`; with several teachers, the teacher's name follows.
fn pair_label<P>(pair: &MappedPair<P>, teacher_names: &[String]) -> String {
    let show = |endpoint: &ResolvedEndpoint| {
        let path = if endpoint.path().is_empty() { "(output)" } else { endpoint.path() };
        match endpoint.port() {
            Port::Input => format!("{path} (input)"),
            Port::Output => path.to_owned(),
        }
    };
    let label = format!("{} => {}", show(&pair.student), show(&pair.teacher));
    match teacher_names {
        [_, _, ..] => {
            format!("{label} (teacher `{}`)", teacher_names.get(pair.teacher_index).map_or("?", String::as_str))
        }
        _ => label,
    }
}

/// The labels of `mapping`'s pairs, each unique: a pair added again (another criterion on the same
/// endpoints) is `label #2`, `label #3`…, so that a term's label names one term.
fn pair_labels<P>(mapping: &Mapping<'_, P>) -> Vec<String> {
    let bases: Vec<String> = mapping.pairs.iter().map(|pair| pair_label(pair, &mapping.teacher_names)).collect();
    bases
        .iter()
        .enumerate()
        .map(|(index, base)| match bases[..index].iter().filter(|earlier| *earlier == base).count() {
            0 => base.clone(),
            seen => format!("{base} #{}", seen + 1),
        })
        .collect()
}

impl<S: std::fmt::Debug, T, P> std::fmt::Debug for DistillModel<'_, S, T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = self.distillation.engine();
        let modes: Vec<_> = (0..engine.teacher_count())
            .filter_map(|index| Some((engine.teacher_name(index)?, engine.mode_of(index)?)))
            .collect();
        f.debug_struct("DistillModel")
            .field("student", &self.student)
            .field("mapping", &self.mapping)
            .field("teachers", &modes)
            .finish()
    }
}
