//! The state and the forward of a `distill!` model: [`Core`] holds the pairs as `new()` built them
//! and the [`Engine`] shared with the dynamic API.

use std::fmt;

use tch::nn::ModuleT;
use tch::Tensor;

use crate::adapter::checked::checked_forward;
use crate::adapter::{FittedAdapter, FittedKind};
use crate::cache::TeacherBatch;
use crate::criterion::{check_pair, Criterion, TeacherEncoding};
use crate::dry_run::{DryRun, PairShapes};
use crate::dsl::Pair;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::{Engine, TeacherMode};
use crate::error::{DistillError, Result};
use crate::point::Side;
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
    pub student_adapter: Option<PairAdapter<'m>>,
    /// Applied to the teacher tensor (`conv2d_adapter(teacher.x)`).
    pub teacher_adapter: Option<PairAdapter<'m>>,
}

/// An adapter of a pair: a module built by its constructor, or a fitted adapter that the dry run
/// sizes.
pub enum PairAdapter<'m> {
    /// Any tch module.
    Module(Box<dyn ModuleT + 'm>),
    /// Sized from the pair's tensors by `dry_run`.
    Fitted(FittedAdapter),
}

impl fmt::Debug for PairAdapter<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PairAdapter::Module(module) => module.fmt(f),
            PairAdapter::Fitted(fitted) => fitted.fmt(f),
        }
    }
}

impl PairAdapter<'_> {
    /// `tensor` through the adapter, for pair `label`'s `side`.
    fn apply(&self, tensor: &Tensor, train: bool, label: &str, side: Side) -> Result<Tensor> {
        match self {
            // The adapters of `distill::adapter` report an input they cannot take through
            // `checked_forward` instead of panicking.
            PairAdapter::Module(module) => checked_forward(|| module.forward_t(tensor, train)),
            PairAdapter::Fitted(fitted) => fitted.f_forward(tensor),
        }
        .map_err(|error| DistillError::AdapterInput { pair: label.to_owned(), side, source: Box::new(error) })
    }
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
    /// The training step, for pairs whose weight follows a schedule.
    step: Option<u64>,
    /// The index of the pair every other pair's loss is rescaled to.
    rescale_to: Option<usize>,
    /// Per pair, the index of the teacher it reads.
    pair_teacher: Vec<usize>,
}

/// What one forward of a [`Core`] gives: every model's output and the pairs in declaration order.
#[derive(Debug)]
pub struct Forward<'d> {
    /// The student's output.
    pub student_output: Tensor,
    /// Each teacher's output, in declaration order, on the student's device (one for one teacher).
    pub teacher_outputs: Vec<Tensor>,
    /// One per pair, in declaration order.
    pub pairs: Vec<Pair<'d>>,
}

impl<'m> Core<'m> {
    /// A core over `pairs` (already resolved) from the teachers named `names` in declaration order
    /// (one teacher is a list of one): pair `i` takes its teacher tensor from teacher
    /// `pair_teacher[i]`. Every teacher runs as `TeacherMode::default()`.
    pub fn new(pairs: Vec<PairSpec<'m>>, pair_teacher: &[usize], names: &[&str]) -> Result<Self> {
        let (student, teacher) = pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
        let names = names.iter().map(|name| (*name).to_owned()).collect();
        Ok(Core {
            engine: Engine::with_teachers(student, teacher, pair_teacher.to_vec(), names)?,
            pairs,
            step: None,
            rescale_to: None,
            pair_teacher: pair_teacher.to_vec(),
        })
    }

    /// The training step the scheduled weights are read at, if one was set.
    pub fn step(&self) -> Option<u64> {
        self.step
    }

    /// Sets the training step the scheduled weights are read at.
    pub fn set_step(&mut self, step: u64) {
        self.step = Some(step);
    }

    /// The label of the pair every other pair is rescaled to, if any.
    pub fn rescale_to(&self) -> Option<&'static str> {
        self.rescale_to.map(|index| self.pairs[index].label)
    }

    /// Rescales every pair's loss but `label`'s to the magnitude of `label`'s (`None`: no
    /// rescaling).
    ///
    /// # Errors
    /// [`DistillError::InvalidArgument`] when no pair has that label, listing the labels.
    pub fn set_rescale_to(&mut self, label: Option<&str>) -> Result<()> {
        self.rescale_to = match label {
            None => None,
            Some(label) => Some(self.pairs.iter().position(|pair| pair.label == label).ok_or_else(|| {
                let labels: Vec<&str> = self.pairs.iter().map(|pair| pair.label).collect();
                DistillError::InvalidArgument(format!(
                    "cannot rescale the terms to `{label}`: no pair has that label; the labels are {}",
                    labels.join(", ")
                ))
            })?),
        };
        Ok(())
    }

    /// Checks every pair's criterion parameters, naming the pair of the first that is invalid, and
    /// that each pair's teacher (`teachers`, in declaration order) gives its endpoint in the form the
    /// pair's criterion reads ([`SideModel::check_encoding`]: a cache declared as the teacher stores
    /// a distribution in one encoding).
    pub fn validate(&self, teachers: &[&dyn SideModel]) -> Result<()> {
        for spec in &self.pairs {
            spec.criterion
                .validate()
                .map_err(|reason| DistillError::InvalidCriterion { pair: spec.label.to_owned(), reason })?;
        }
        self.check_encodings(|index| teachers.get(self.pair_teacher.get(index).copied().unwrap_or(0)).copied())
    }

    /// Each pair's teacher, `teacher_of(pair index)`, gives the pair's endpoint as its criterion reads it.
    fn check_encodings<'s>(&self, teacher_of: impl Fn(usize) -> Option<&'s dyn SideModel>) -> Result<()> {
        for (index, (spec, endpoint)) in self.pairs.iter().zip(self.engine.teacher_endpoints()).enumerate() {
            if let Some(teacher) = teacher_of(index) {
                teacher.check_encoding(spec.label, endpoint, spec.criterion.teacher_encoding())?;
            }
        }
        Ok(())
    }

    /// The capture engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How the teacher runs (the first teacher, when there are several).
    pub fn mode(&self) -> TeacherMode {
        self.engine.mode()
    }

    /// Sets how every teacher runs.
    pub fn set_mode(&mut self, mode: TeacherMode) {
        self.engine.set_mode(mode);
    }

    /// How teacher `teacher` (its index in declaration order) runs.
    pub fn mode_of(&self, teacher: usize) -> TeacherMode {
        self.engine.mode_of(teacher).unwrap_or_default()
    }

    /// Sets how teacher `teacher` (its index in declaration order) runs.
    pub fn set_mode_of(&mut self, teacher: usize, mode: TeacherMode) {
        self.engine.set_mode_of(teacher, mode);
    }

    /// Runs the engine over the teachers (in declaration order), applies the adapters (with the
    /// student's `train` flag) and checks each pair's shapes against its criterion; each pair gets the
    /// step and the rescaling. A pair whose weight follows a schedule is an error before anything
    /// runs when no step was set.
    pub fn forward(
        &self,
        student: &dyn SideModel,
        teachers: &[&dyn SideModel],
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Forward<'_>> {
        self.check_live_encodings()?;
        self.forward_from(student, teachers, student_xs, teacher_xs, train)
    }

    /// Teachers that run give their tensors as they are: a pair whose criterion reads an encoded
    /// form (top-k, sampled) and whose teacher tensor no adapter encodes would read raw logits as
    /// if they were packed, which some shapes do not reveal. Such a pair reads its teacher from a
    /// cache.
    fn check_live_encodings(&self) -> Result<()> {
        for spec in &self.pairs {
            let reads = spec.criterion.teacher_encoding();
            if reads != TeacherEncoding::Plain && spec.teacher_adapter.is_none() {
                return Err(DistillError::InvalidCriterion {
                    pair: spec.label.to_owned(),
                    reason: format!(
                        "it reads {reads}, and a teacher that runs gives its tensors as they are: read the teacher \
                         from a cache that stores that encoding (`forward_cached`), or encode the teacher's tensor in \
                         a teacher adapter"
                    ),
                });
            }
        }
        Ok(())
    }

    /// [`forward`](Self::forward) with `teachers` as they are (runs or cached batches).
    fn forward_from(
        &self,
        student: &dyn SideModel,
        teachers: &[&dyn SideModel],
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Forward<'_>> {
        if self.step.is_none() {
            if let Some(spec) = self.pairs.iter().find(|spec| spec.criterion.is_scheduled()) {
                return Err(DistillError::MissingStep { pair: spec.label.to_owned() });
            }
        }
        let captures = self.engine.run(student, teachers, student_xs, teacher_xs, train)?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .enumerate()
            .map(|(index, (spec, (s, t)))| {
                let student = adapt(s.joined()?, spec.student_adapter.as_ref(), train, spec.label, Side::Student)?;
                let teacher = adapt(t.joined()?, spec.teacher_adapter.as_ref(), train, spec.label, Side::Teacher)?;
                check_pair(&*spec.criterion, spec.label, &student.size(), &teacher.size())?;
                let rescaled_to = self.rescale_to.filter(|&reference| reference != index);
                Ok(Pair::new(student, teacher, spec.label, &*spec.criterion).with_balance(self.step, rescaled_to))
            })
            .collect::<Result<Vec<_>>>()?;
        // `distill!` rejects a teacher without pairs, so every teacher ran.
        let teacher_outputs =
            captures.teacher_outputs.into_iter().map(|output| output.unwrap_or_else(Tensor::new)).collect();
        Ok(Forward { student_output: captures.student_output, teacher_outputs, pairs })
    }
}

impl Core<'_> {
    /// As [`forward`](Self::forward), with the teacher's side read from `batch` (a batch of a teacher
    /// cache) and the student run on [`TeacherBatch::student_input`]. Each pair's criterion must read
    /// its teacher endpoint as stored ([`SideModel::check_encoding`]). A batch of sequences gives the
    /// pairs that read its distribution the token mask as labels ([`TeacherBatch::token_labels`]),
    /// and narrows the pairs on its stored hidden states to the valid tokens
    /// ([`TeacherBatch::select_tokens`]).
    pub fn forward_cached(
        &self,
        student: &dyn SideModel,
        batch: &dyn TeacherBatch,
        xs: &Tensor,
        train: bool,
    ) -> Result<Forward<'_>> {
        self.check_encodings(|_| Some(batch as &dyn SideModel))?;
        let xs = batch.student_input(xs)?;
        let mut forward = self.forward_from(student, &[batch as &dyn SideModel], &xs, &xs, train)?;
        let labels = batch.token_labels()?;
        let pairs = forward.pairs.iter_mut().zip(&self.pairs).zip(self.engine.teacher_endpoints());
        for ((pair, spec), endpoint) in pairs {
            pair.student = batch.select_tokens(endpoint, &pair.student)?;
            pair.teacher = batch.select_tokens(endpoint, &pair.teacher)?;
            // The token mask reaches the criteria that read an encoded distribution as their labels;
            // a hidden state's pair was narrowed to the valid tokens instead.
            if let (Some(labels), false) = (&labels, spec.criterion.teacher_encoding() == TeacherEncoding::Plain) {
                pair.set_targets(labels);
            }
        }
        Ok(forward)
    }

    /// Runs every model once on `xs` — in evaluation mode, without gradient, so that no running
    /// statistic moves — fits the fitted adapters to the pairs' tensors, and checks every pair
    /// against its criterion. Every problem is reported at once, each naming its pair and, for a
    /// width mismatch, the adapters that would fit.
    pub fn dry_run(&self, student: &dyn SideModel, teachers: &[&dyn SideModel], xs: &Tensor) -> Result<DryRun> {
        self.check_live_encodings()?;
        let _no_grad = tch::no_grad_guard();
        self.dry_run_inner(student, teachers, xs)
    }

    /// As [`dry_run`](Self::dry_run), with the teacher's side read from `batch` (a batch of a teacher
    /// cache; the student runs on [`TeacherBatch::student_input`]): a distillation over a cache fits
    /// its adapters and checks its criteria with the teacher never loaded. Each pair's criterion
    /// must read its endpoint as stored, as in [`forward_cached`](Self::forward_cached).
    pub fn dry_run_cached(&self, student: &dyn SideModel, batch: &dyn TeacherBatch, xs: &Tensor) -> Result<DryRun> {
        self.check_encodings(|_| Some(batch as &dyn SideModel))?;
        let _no_grad = tch::no_grad_guard();
        let xs = batch.student_input(xs)?;
        self.dry_run_inner(student, &[batch as &dyn SideModel], &xs)
    }

    fn dry_run_inner(&self, student: &dyn SideModel, teachers: &[&dyn SideModel], xs: &Tensor) -> Result<DryRun> {
        let captures = self.engine.run(student, teachers, xs, xs, false)?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .map(|(spec, (s, t))| Ok(dry_run_pair(spec, s.joined()?, t.joined()?)))
            .collect::<Result<Vec<_>>>()?;
        DryRun::from_pairs(pairs)
    }
}

/// One pair of a dry run: fits a fitted adapter to the other side's width, applies the adapters,
/// checks the criterion.
fn dry_run_pair(spec: &PairSpec<'_>, student: Tensor, teacher: Tensor) -> Result<PairShapes> {
    let label = spec.label;
    if let Some(PairAdapter::Fitted(fitted)) = &spec.student_adapter {
        let other = adapt(teacher.shallow_clone(), spec.teacher_adapter.as_ref(), false, label, Side::Teacher)?;
        fit(fitted, &student, &other, label, Side::Student)?;
    }
    if let Some(PairAdapter::Fitted(fitted)) = &spec.teacher_adapter {
        let other = adapt(student.shallow_clone(), spec.student_adapter.as_ref(), false, label, Side::Student)?;
        fit(fitted, &teacher, &other, label, Side::Teacher)?;
    }
    let (student_raw, teacher_raw) = (student.size(), teacher.size());
    let student = adapt(student, spec.student_adapter.as_ref(), false, label, Side::Student)?;
    let teacher = adapt(teacher, spec.teacher_adapter.as_ref(), false, label, Side::Teacher)?;
    let (student, teacher) = (student.size(), teacher.size());
    check_pair(&*spec.criterion, label, &student, &teacher)?;
    Ok(PairShapes { label: label.to_owned(), student, teacher, student_raw, teacher_raw })
}

/// Fits `fitted` (on `side`) from the width of `own` (its input) to the width of `other`.
fn fit(fitted: &FittedAdapter, own: &Tensor, other: &Tensor, label: &str, side: Side) -> Result<()> {
    let (own_size, other_size) = (own.size(), other.size());
    let kind = fitted.kind();
    let widths = kind.axis(own_size.len()).zip(kind.axis(other_size.len()));
    let result = match widths {
        Some((own_axis, other_axis)) => fitted.fit(own_size[own_axis], other_size[other_axis]),
        None => Err(DistillError::InvalidArgument(format!(
            "`{}` maps {}, and the pair's tensors are {own_size:?} and {other_size:?}",
            kind.constructor(),
            match kind {
                FittedKind::Linear => "the last dimension of tensors of any rank ≥ 1",
                FittedKind::Conv1x1 => "the channels of [N, C, H, W] tensors",
            }
        ))),
    };
    result.map_err(|error| DistillError::AdapterInput { pair: label.to_owned(), side, source: Box::new(error) })
}

fn adapt(tensor: Tensor, adapter: Option<&PairAdapter<'_>>, train: bool, label: &str, side: Side) -> Result<Tensor> {
    match adapter {
        Some(adapter) => adapter.apply(&tensor, train, label, side),
        None => Ok(tensor),
    }
}

/// Builds every pair of a `distill!`'s `new()` in declaration order, each with its own function:
/// the generated code hands one closure per pair, so that no function of it grows with the number
/// of pairs. The first error stops the build.
pub fn build_pairs<'m>(makers: &[&dyn Fn() -> Result<PairSpec<'m>>]) -> Result<Vec<PairSpec<'m>>> {
    makers.iter().map(|make| make()).collect()
}

/// Turns the pairs of a [`Forward`] into an array of the generated output's arity.
pub fn into_array<'d, const N: usize>(pairs: Vec<Pair<'d>>) -> Result<[Pair<'d>; N]> {
    let len = pairs.len();
    pairs.try_into().map_err(|_| DistillError::InvalidArgument(format!("expected {N} pairs, the engine gave {len}")))
}

/// Turns the teacher outputs of a [`Forward`] into an array of the number of teachers.
pub fn into_outputs<const N: usize>(outputs: Vec<Tensor>) -> Result<[Tensor; N]> {
    let len = outputs.len();
    outputs
        .try_into()
        .map_err(|_| DistillError::InvalidArgument(format!("expected {N} teacher outputs, the engine gave {len}")))
}
