//! [`Distillation`]: the one type that runs a distillation, whichever way it was declared.
//!
//! A distillation is a student, its teachers (one teacher is a list of one) and pairs of endpoints,
//! each with a criterion (weighted, or following a schedule) and optional adapters. Three front
//! ends build it:
//!
//! - `distill! { … }` checks the pairs at compile time and wraps the distillation in a typed model
//!   whose output has one named field per pair;
//! - [`Distillation::from_mapping`] takes a dynamic [`Mapping`](crate::Mapping) whose payloads are
//!   criteria, or criteria with their adapters ([`Adapted`](crate::mapping::Adapted)) (ENOT's API,
//!   with endpoints given by reference, slot or name);
//! - [`Config::distill`](crate::config::Config::distill) reads the pairs, criteria,
//!   weights and adapters from a TOML file.
//!
//! Whichever built it, the distillation owns the step, the rescaling, each teacher's mode, the dry
//! run and the forward, from teachers that run ([`forward_t`](Distillation::forward_t)) or from a
//! batch of a teacher cache ([`forward_cached`](Distillation::forward_cached), and
//! [`forward_cached_by`](Distillation::forward_cached_by) for a student the caller runs with more than
//! a tensor, such as a decoder given a packed batch's document ids). Its forward gives a
//! [`DistillationOutput`]: every pair's tensors after their adapters, and the weighted losses.

mod output;
pub(crate) mod private;
mod run;

pub use crate::engine::{Captured, TeacherMode};
pub use output::{DistillationOutput, Losses};
#[doc(hidden)]
pub use private::PairSpec;

use std::fmt;

use crate::criterion::Criterion;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::Engine;
use crate::error::{DistillError, Result, SetupError};
use crate::side::SideModel;

/// A distillation: a student, its teachers and the pairs between them, with everything a training
/// step needs — each pair's criterion, weight or schedule and adapters, the step, the rescaling of
/// the terms and how each teacher runs. See the [module documentation](self) for the three ways to
/// build one.
pub struct Distillation<'m> {
    student: &'m dyn SideModel,
    /// The teachers in declaration order (one teacher is a list of one); a teacher cache stands for
    /// the teacher of a distillation read from its batches.
    teachers: Vec<&'m dyn SideModel>,
    pairs: Vec<PairSpec<'m>>,
    engine: Engine,
    /// The training step, for pairs whose weight follows a schedule.
    step: Option<u64>,
    /// The index of the pair every other pair's loss is rescaled to.
    rescale_to: Option<usize>,
}

impl<'m> Distillation<'m> {
    /// A distillation over `pairs` captured by `engine` (built from the same pairs), unchecked:
    /// for pairs without criteria, whose payloads are the user's.
    pub(crate) fn with_engine(
        student: &'m dyn SideModel,
        teachers: Vec<&'m dyn SideModel>,
        engine: Engine,
        pairs: Vec<PairSpec<'m>>,
    ) -> Self {
        Distillation { student, teachers, pairs, engine, step: None, rescale_to: None }
    }

    /// The labels of the pairs, in declaration order: a `distill!` pair's label, a configuration
    /// file's pair `name`, or for a distillation from a mapping `student path => teacher path`
    /// ([`from_mapping`](Self::from_mapping); `(output) => (output)` for the models' own outputs).
    pub fn labels(&self) -> impl ExactSizeIterator<Item = &str> {
        self.pairs.iter().map(|pair| &*pair.label)
    }

    /// The criterion of the pair labelled `label`, with its weight or schedule.
    pub fn criterion(&self, label: &str) -> Option<&(dyn Criterion + 'm)> {
        self.pairs.iter().find(|pair| pair.label == label)?.criterion.as_deref()
    }

    /// The training step the scheduled weights are read at, if one was set.
    pub fn step(&self) -> Option<u64> {
        self.step
    }

    /// Sets the training step (the optimizer step count, from 0) at which the pairs' scheduled
    /// weights are read. Set it before every step's forward: a forward with a scheduled pair and no
    /// step is an error ([`DistillError::MissingStep`]), never step 0.
    pub fn set_step(&mut self, step: u64) {
        self.step = Some(step);
    }

    /// The label of the pair every other pair's loss is rescaled to, if any.
    pub fn rescale_to(&self) -> Option<&str> {
        self.rescale_to.map(|index| &*self.pairs[index].label)
    }

    /// Rescales every other pair's loss to the magnitude of pair `label`'s (usually the logits term)
    /// in the output's losses: each such term's unweighted loss is multiplied by
    /// `|reference| / |own|`, both detached, then by its weight. `None`: no rescaling. `label` is
    /// one of [`labels`](Self::labels): `Some("logits")` for a `distill!` pair named `logits`,
    /// `Some("(output) => (output)")` for the outputs' pair of a mapping.
    ///
    /// # Errors
    /// [`SetupError::UnknownLabel`] when no pair has that label, listing the labels.
    pub fn set_rescale_to(&mut self, label: Option<&str>) -> Result<()> {
        self.rescale_to = match label {
            None => None,
            Some(label) => Some(self.pairs.iter().position(|pair| pair.label == label).ok_or_else(|| {
                SetupError::UnknownLabel { label: label.to_owned(), labels: self.labels().map(str::to_owned).collect() }
            })?),
        };
        Ok(())
    }

    /// The capture engine: the resolved endpoints of every side, in pair order, and each teacher's
    /// mode.
    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The student endpoints, resolved, in pair order.
    pub fn student_endpoints(&self) -> &[ResolvedEndpoint] {
        self.engine.student_endpoints()
    }

    /// The teacher endpoints, resolved, in pair order (each from its pair's teacher).
    pub fn teacher_endpoints(&self) -> &[ResolvedEndpoint] {
        self.engine.teacher_endpoints()
    }

    /// The teachers' names, in declaration order (one teacher is a list of one): `"teacher"` for
    /// the one teacher of most distillations, the names declared in `distill!`
    /// (`for Student => (big: BigNet, wide: WideNet)`) or given to `Mapping::with_teachers`.
    pub fn teachers(&self) -> impl ExactSizeIterator<Item = &str> {
        self.engine.teacher_names()
    }

    /// The name of the teacher that pair `pair` (in pair order) takes its teacher tensor from.
    pub fn teacher_of(&self, pair: usize) -> Option<&str> {
        self.engine.teacher_name(self.engine.teacher_of(pair)?)
    }

    /// How the teacher named `teacher` runs; `None` for a name the distillation does not have.
    pub fn teacher_mode(&self, teacher: &str) -> Option<TeacherMode> {
        self.engine.mode_of(self.engine.teacher_index(teacher).ok()?)
    }

    /// Sets how the teacher named `teacher` runs.
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`], with the closest name.
    pub fn set_teacher_mode(&mut self, teacher: &str, mode: TeacherMode) -> Result<()> {
        let index = self.engine.teacher_index(teacher)?;
        self.engine.set_mode_of(index, mode);
        Ok(())
    }

    /// Sets how every teacher runs.
    pub fn set_mode(&mut self, mode: TeacherMode) {
        self.engine.set_mode(mode);
    }

    /// How teacher `teacher` (its index in declaration order) runs; the default mode for an index
    /// past the last teacher.
    pub(crate) fn mode_of(&self, teacher: usize) -> TeacherMode {
        self.engine.mode_of(teacher).unwrap_or_default()
    }

    /// Sets how teacher `teacher` (its index in declaration order) runs; nothing for an index past
    /// the last teacher.
    pub(crate) fn set_mode_of(&mut self, teacher: usize, mode: TeacherMode) {
        self.engine.set_mode_of(teacher, mode);
    }

    /// How many teachers the distillation has.
    pub(crate) fn teacher_count(&self) -> usize {
        self.engine.teacher_count()
    }

    /// Checks every pair's criterion parameters, naming the pair of the first that is invalid, and
    /// that each pair's teacher gives its endpoint in the form the pair's criterion reads
    /// ([`SideModel::check_encoding`]: a cache declared as the teacher stores a distribution in one
    /// encoding).
    fn validate(&self) -> Result<()> {
        for spec in &self.pairs {
            if let Some(criterion) = &spec.criterion {
                criterion
                    .validate()
                    .map_err(|reason| DistillError::InvalidCriterion { pair: spec.label.to_string(), reason })?;
            }
        }
        self.check_encodings(|index| self.teachers.get(self.engine.teacher_of(index).unwrap_or(0)).copied())
    }
}

impl fmt::Debug for Distillation<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let modes: Vec<_> = (0..self.engine.teacher_count())
            .filter_map(|index| Some((self.engine.teacher_name(index)?, self.engine.mode_of(index)?)))
            .collect();
        f.debug_struct("Distillation")
            .field("pairs", &self.pairs)
            .field("teachers", &modes)
            .field("step", &self.step)
            .field("rescale_to", &self.rescale_to())
            .finish()
    }
}
