//! The forward and the dry run of a [`Distillation`], from teachers that run or from a batch of a
//! teacher cache.

use tch::Tensor;

use super::{Distillation, DistillationOutput};
use crate::captured::Captured;
use crate::criterion::{check_pair, TeacherEncoding};
use crate::dry_run::DryRun;
use crate::dsl::Pair;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::Captures;
use crate::error::{DistillError, Result};
use crate::point::Side;
use crate::side::{run_forward, SideModel};
use crate::teacher_batch::TeacherBatch;

impl Distillation<'_> {
    /// Runs each teacher on `xs` (as its mode says), then the student with `train`, and returns
    /// every pair after its adapters, checked against its criterion, with the models' outputs.
    ///
    /// # Errors
    /// A module that did not run or ran more than once, a captured tensor modified in place, a pair
    /// whose shapes its criterion does not accept, a scheduled pair without a step
    /// ([`DistillError::MissingStep`]); with several teachers, a teacher's problem names the teacher.
    /// A distillation whose teacher is a cache does not run it: read its batches with
    /// [`forward_cached`](Self::forward_cached).
    pub fn forward_t(&self, xs: &Tensor, train: bool) -> Result<DistillationOutput<'_>> {
        self.forward_t_with(xs, xs, train)
    }

    /// As [`forward_t`](Self::forward_t), with a separate input for the teachers (another
    /// resolution or augmentation; every teacher gets `teacher_xs`).
    pub fn forward_t_with(
        &self,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<DistillationOutput<'_>> {
        self.check_live_encodings()?;
        self.forward_from(|| self.engine.run(self.student, &self.teachers, student_xs, teacher_xs, train), train)
    }

    /// Runs the student (with `train`) on what `batch` makes of `xs`
    /// ([`TeacherBatch::student_input`]: an image cache's batch applies each sample's stored
    /// augmentation view; a token cache's batch takes the token ids as they are) and reads the
    /// teacher's side of every pair from `batch` instead of running the teacher. Each pair's
    /// criterion must read its teacher endpoint as stored. A batch of sequences gives the pairs that
    /// read its distribution the token mask as labels ([`TeacherBatch::token_labels`]), and narrows
    /// the pairs on its stored hidden states to the valid tokens
    /// ([`TeacherBatch::select_tokens`]).
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] for a teacher endpoint the cache does not store, in another
    /// encoding than the pair's criterion reads, or inputs of another shape than the cache's; what
    /// [`forward_t`](Self::forward_t) fails with. A cache holds one teacher's side: a distillation
    /// from several teachers has no cached forward.
    pub fn forward_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch, train: bool) -> Result<DistillationOutput<'_>> {
        self.cached_forward(xs, batch, train, |xs, endpoints| self.student.run(xs, train, endpoints))
    }

    /// As [`forward_cached`](Self::forward_cached), with the student run by `forward` instead of its
    /// `forward_t(xs, train)`: for a student whose forward takes more than a tensor. A decoder over
    /// packed sequences, for one, must see the batch's document ids (and positions) to attend within
    /// each document as the teacher did when the cache was written; `forward_t(input_ids)` would let
    /// every token attend across the documents before it in its row.
    ///
    /// `forward` runs the student (the model this distillation was built with) once, in the mode
    /// the caller chose, and returns its output; the student's modules are captured as in any
    /// forward. `xs` are the batch's inputs as [`forward_cached`](Self::forward_cached) takes them
    /// (checked against the batch, and what a pair on the student's input reads); `train` is the
    /// adapters' mode.
    ///
    /// With the facade's decoder and a packed batch `b` of its token dataset, `forward` is
    /// `|| student.forward_inputs(&LlamaInputs::new(&b.input_ids).document_ids(&b.document_ids)…)`
    /// and `xs` is `&b.input_ids`.
    ///
    /// # Errors
    /// What [`forward_cached`](Self::forward_cached) fails with, and what `forward` fails with. A
    /// student endpoint that only the student's own forward gives (a TorchScript student's named
    /// output) is [`CaptureError::NotTapped`](crate::error::CaptureError::NotTapped).
    pub fn forward_cached_by<E>(
        &self,
        xs: &Tensor,
        batch: &dyn TeacherBatch,
        train: bool,
        forward: impl FnOnce() -> std::result::Result<Tensor, E>,
    ) -> Result<DistillationOutput<'_>>
    where
        E: Into<DistillError>,
    {
        self.cached_forward(xs, batch, train, |xs, endpoints| {
            run_forward(xs, endpoints, || forward().map_err(Into::into))
        })
    }

    /// The cached forward with the student's side given by `student` (its inputs, its endpoints).
    fn cached_forward(
        &self,
        xs: &Tensor,
        batch: &dyn TeacherBatch,
        train: bool,
        student: impl FnOnce(&Tensor, &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>,
    ) -> Result<DistillationOutput<'_>> {
        self.check_encodings(|_| Some(batch as &dyn SideModel))?;
        let mut output = self.forward_from(|| self.cached_captures(batch, xs, student), train)?;
        let labels = batch.token_labels()?;
        let pairs = output.pairs.iter_mut().zip(&self.pairs).zip(self.engine.teacher_endpoints());
        for ((pair, spec), endpoint) in pairs {
            pair.student = batch.select_tokens(endpoint, &pair.student)?;
            pair.teacher = batch.select_tokens(endpoint, &pair.teacher)?;
            // The token mask reaches the criteria that read an encoded distribution as their labels;
            // a hidden state's pair was narrowed to the valid tokens instead.
            let encoded = spec.criterion.as_ref().is_some_and(|c| c.teacher_encoding() != TeacherEncoding::Plain);
            // The mask is the batch's, where the batch was read (the CPU): the criterion reads it
            // beside the student's logits, on their device.
            if let (Some(labels), true) = (&labels, encoded) {
                pair.set_targets(&labels.f_to_device(pair.student.device())?);
            }
        }
        Ok(output)
    }

    /// Runs every model once on a sample batch `xs` — in evaluation mode (a teacher whose mode says
    /// train too) and without gradient, so that no running statistic moves — fits the fitted
    /// adapters to the pairs' tensors, and checks every pair against its criterion. Every pair's
    /// shape, adapter and criterion problem is reported at once, each naming its pair and, for a
    /// width mismatch, the adapters that would fit; a pair that cannot be captured at all (a module
    /// the forward did not call) stops the dry run with that error, as it would stop a forward. Call it before building the optimizer (and
    /// before loading a checkpoint) when the distillation has fitted adapters, so that their
    /// variables exist.
    ///
    /// # Errors
    /// [`DistillError::DryRun`] listing each pair that does not fit; what a forward fails with; a
    /// model whose forward panics (tch's `forward_t` cannot return an error, so inputs of the wrong
    /// shape or kind panic inside it) is [`CaptureError::ForwardPanicked`](crate::error::CaptureError::ForwardPanicked)
    /// naming the model, where a training forward would end the program (the panic's message is
    /// still printed by the panic hook).
    pub fn dry_run(&self, xs: &Tensor) -> Result<DryRun> {
        self.check_live_encodings()?;
        let _no_grad = tch::no_grad_guard();
        self.dry_run_from(&self.teachers, xs)
    }

    /// As [`dry_run`](Self::dry_run), with the teacher's side read from `batch` (a batch of a
    /// teacher cache; the student runs on [`TeacherBatch::student_input`]): a distillation over a
    /// cache fits its adapters and checks its criteria with the teacher never loaded.
    ///
    /// # Errors
    /// What [`dry_run`](Self::dry_run) and [`forward_cached`](Self::forward_cached) fail with.
    pub fn dry_run_cached(&self, xs: &Tensor, batch: &dyn TeacherBatch) -> Result<DryRun> {
        self.check_encodings(|_| Some(batch as &dyn SideModel))?;
        let _no_grad = tch::no_grad_guard();
        let xs = batch.student_input(xs)?;
        self.dry_run_from(&[batch as &dyn SideModel], &xs)
    }

    /// Runs the engine with `teachers` as the teacher sides (the distillation's own, or one cached
    /// batch) and returns what every endpoint captured, before any adapter: what a `Mapping`'s
    /// forward hands to its payloads.
    pub(crate) fn capture(
        &self,
        teachers: Option<&dyn TeacherBatch>,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Captures> {
        match teachers {
            None => self.engine.run(self.student, &self.teachers, student_xs, teacher_xs, train),
            Some(batch) => {
                self.cached_captures(batch, student_xs, |xs, endpoints| self.student.run(xs, train, endpoints))
            }
        }
    }

    /// As [`capture`](Self::capture) from a cached batch, with the student run by `forward`.
    pub(crate) fn capture_by(
        &self,
        batch: &dyn TeacherBatch,
        xs: &Tensor,
        forward: impl FnOnce() -> Result<Tensor>,
    ) -> Result<Captures> {
        self.cached_captures(batch, xs, |xs, endpoints| run_forward(xs, endpoints, forward))
    }

    /// The engine's captures with `batch` as the teacher's side and the student's side given by
    /// `student` (on what `batch` makes of `xs`, for the student's endpoints).
    fn cached_captures(
        &self,
        batch: &dyn TeacherBatch,
        xs: &Tensor,
        student: impl FnOnce(&Tensor, &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>,
    ) -> Result<Captures> {
        let xs = batch.student_input(xs)?;
        self.engine.run_with(&[batch as &dyn SideModel], &xs, &xs, |endpoints| student(&xs, endpoints))
    }

    /// Each pair's teacher, `teacher_of(pair index)`, gives the pair's endpoint as its criterion
    /// reads it.
    pub(super) fn check_encodings<'s>(&self, teacher_of: impl Fn(usize) -> Option<&'s dyn SideModel>) -> Result<()> {
        for (index, (spec, endpoint)) in self.pairs.iter().zip(self.engine.teacher_endpoints()).enumerate() {
            if let (Some(teacher), Some(criterion)) = (teacher_of(index), &spec.criterion) {
                teacher.check_encoding(&spec.label, endpoint, criterion.teacher_encoding())?;
            }
        }
        Ok(())
    }

    /// Teachers that run give their tensors as they are: a pair whose criterion reads an encoded
    /// form (top-k, sampled) and whose teacher tensor no adapter encodes would read raw logits as
    /// if they were packed, which some shapes do not reveal. Such a pair reads its teacher from a
    /// cache.
    fn check_live_encodings(&self) -> Result<()> {
        for spec in &self.pairs {
            let reads = spec.criterion.as_ref().map_or(TeacherEncoding::Plain, |c| c.teacher_encoding());
            if reads != TeacherEncoding::Plain && spec.teacher_adapter.is_none() {
                return Err(DistillError::InvalidCriterion {
                    pair: spec.label.to_string(),
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

    /// The forward from the engine's `captures` (of teachers that run or of a cached batch): the captures
    /// through the adapters, each pair checked against its criterion, with the step and the
    /// rescaling. A pair whose weight follows a schedule is an error before anything runs when no
    /// step was set.
    fn forward_from(&self, captures: impl FnOnce() -> Result<Captures>, train: bool) -> Result<DistillationOutput<'_>> {
        if self.step.is_none() {
            let scheduled = self.pairs.iter().find(|spec| spec.criterion.as_ref().is_some_and(|c| c.is_scheduled()));
            if let Some(spec) = scheduled {
                return Err(DistillError::MissingStep { pair: spec.label.to_string() });
            }
        }
        let captures = captures()?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .enumerate()
            .map(|(index, (spec, (s, t)))| {
                let criterion = spec.criterion.as_deref().ok_or_else(|| DistillError::InvalidCriterion {
                    pair: spec.label.to_string(),
                    reason: "the pair has no criterion: its payload is the user's (read it with `DistillModel`)"
                        .to_owned(),
                })?;
                let student = spec.adapt(s.joined()?, Side::Student, train)?;
                let teacher = spec.adapt(t.joined()?, Side::Teacher, train)?;
                check_pair(criterion, &spec.label, &student.size(), &teacher.size())?;
                let rescaled_to = self.rescale_to.filter(|&reference| reference != index);
                Ok(Pair::new(student, teacher, &spec.label, criterion).with_balance(self.step, rescaled_to))
            })
            .collect::<Result<Vec<_>>>()?;
        // A teacher without pairs does not run when there are several; its output is undefined.
        let teacher_outputs =
            captures.teacher_outputs.into_iter().map(|output| output.unwrap_or_else(Tensor::new)).collect();
        Ok(DistillationOutput { student_output: captures.student_output, teacher_outputs, pairs })
    }

    fn dry_run_from(&self, teachers: &[&dyn SideModel], xs: &Tensor) -> Result<DryRun> {
        let captures = self.engine.run_evaluation(self.student, teachers, xs)?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .map(|(spec, (s, t))| Ok(spec.dry_run(s.joined()?, t.joined()?)))
            .collect::<Result<Vec<_>>>()?;
        DryRun::from_pairs(pairs)
    }
}
