//! The capture engine of a [`Distillation`](crate::Distillation): run each teacher, then the
//! student, each with its endpoints armed, and hand back what they recorded.
//!
//! A distillation has one teacher or several. Each pair takes its teacher tensor from one teacher;
//! each teacher runs at most once per forward, on its own endpoints and in its own mode.

use tch::Tensor;

use crate::captured::move_to;
pub use crate::captured::Captured;
use crate::endpoint::ResolvedEndpoint;
use crate::error::{CaptureError, DistillError, Result, SetupError};
use crate::point::Side;
use crate::side::SideModel;

/// How a teacher runs. The default is ENOT's (`nograd_teacher=True`): no gradient, evaluation
/// mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeacherMode {
    /// Record the teacher's forward for autograd (default `false`, like `nograd_teacher=True`).
    pub grad: bool,
    /// Run the teacher in training mode (default `false`: evaluation, whatever the student's flag).
    pub train: bool,
}

/// The result of [`Engine::run`]: the models' outputs and each endpoint's capture, in the order the
/// pairs were given.
#[derive(Debug)]
pub(crate) struct Captures {
    /// What the student's forward returned.
    pub student_output: Tensor,
    /// What each teacher's forward returned, on the student's device; `None` for a teacher that did
    /// not run (one of several teachers without pairs).
    pub teacher_outputs: Vec<Option<Tensor>>,
    /// One capture per student endpoint.
    pub student: Vec<Captured>,
    /// One capture per teacher endpoint (from the pair's teacher), on the student's device.
    pub teacher: Vec<Captured>,
}

/// One teacher of an [`Engine`]: its name, its mode and the endpoints of its pairs.
#[derive(Clone, Debug)]
struct TeacherPlan {
    name: String,
    mode: TeacherMode,
    /// The teacher endpoints of the pairs from this teacher, in pair order.
    endpoints: Vec<ResolvedEndpoint>,
}

/// What a [`Distillation`](crate::Distillation) runs, whichever front end built it: the endpoints
/// of every side, resolved, and how each teacher runs.
#[derive(Clone, Debug)]
pub(crate) struct Engine {
    student: Vec<ResolvedEndpoint>,
    /// The teacher endpoint of every pair, in pair order.
    teacher: Vec<ResolvedEndpoint>,
    teachers: Vec<TeacherPlan>,
    /// The teacher of each pair (an index into `teachers`); empty when there is one teacher.
    pair_teacher: Vec<usize>,
}

impl Default for Engine {
    /// An engine with one teacher and no pairs.
    fn default() -> Self {
        Engine::new(Vec::new(), Vec::new())
    }
}

impl Engine {
    /// An engine capturing `student` and `teacher` endpoints from one teacher, which runs as
    /// `TeacherMode::default()`.
    pub(crate) fn new(student: Vec<ResolvedEndpoint>, teacher: Vec<ResolvedEndpoint>) -> Self {
        let plan = TeacherPlan { name: "teacher".to_owned(), mode: TeacherMode::default(), endpoints: teacher.clone() };
        Engine { student, teacher, teachers: vec![plan], pair_teacher: Vec::new() }
    }

    /// An engine over several teachers, named `names`: pair `i` captures `student[i]` and, from
    /// teacher `pair_teacher[i]`, `teacher[i]`. Every teacher runs as `TeacherMode::default()`.
    pub(crate) fn with_teachers(
        student: Vec<ResolvedEndpoint>,
        teacher: Vec<ResolvedEndpoint>,
        pair_teacher: Vec<usize>,
        names: Vec<String>,
    ) -> Result<Self> {
        if student.len() != teacher.len() || teacher.len() != pair_teacher.len() {
            return Err(DistillError::InvalidArgument(format!(
                "{} student endpoints, {} teacher endpoints and {} teacher indices: one of each per pair",
                student.len(),
                teacher.len(),
                pair_teacher.len()
            )));
        }
        let mut teachers: Vec<TeacherPlan> = names
            .into_iter()
            .map(|name| TeacherPlan { name, mode: TeacherMode::default(), endpoints: Vec::new() })
            .collect();
        for (endpoint, &index) in teacher.iter().zip(&pair_teacher) {
            let count = teachers.len();
            let plan = teachers.get_mut(index).ok_or_else(|| {
                DistillError::InvalidArgument(format!("teacher index {index} is out of range for {count} teacher(s)"))
            })?;
            plan.endpoints.push(endpoint.clone());
        }
        if teachers.is_empty() {
            return Err(DistillError::InvalidArgument("a distillation needs at least one teacher".to_owned()));
        }
        let pair_teacher = if teachers.len() == 1 { Vec::new() } else { pair_teacher };
        Ok(Engine { student, teacher, teachers, pair_teacher })
    }

    /// How the teacher runs; with several teachers, the first one's (see [`mode_of`](Self::mode_of)).
    pub(crate) fn mode(&self) -> TeacherMode {
        self.teachers.first().map(|plan| plan.mode).unwrap_or_default()
    }

    /// How teacher `teacher` (an index, in declaration order) runs; `None` when there is no such
    /// teacher.
    pub(crate) fn mode_of(&self, teacher: usize) -> Option<TeacherMode> {
        self.teachers.get(teacher).map(|plan| plan.mode)
    }

    /// Sets how every teacher runs.
    pub(crate) fn set_mode(&mut self, mode: TeacherMode) {
        for plan in &mut self.teachers {
            plan.mode = mode;
        }
    }

    /// Sets how teacher `teacher` runs; `false` when there is no such teacher.
    pub(crate) fn set_mode_of(&mut self, teacher: usize, mode: TeacherMode) -> bool {
        match self.teachers.get_mut(teacher) {
            Some(plan) => {
                plan.mode = mode;
                true
            }
            None => false,
        }
    }

    /// The student endpoints.
    pub(crate) fn student_endpoints(&self) -> &[ResolvedEndpoint] {
        &self.student
    }

    /// The teacher endpoints, in pair order (each from its pair's teacher).
    pub(crate) fn teacher_endpoints(&self) -> &[ResolvedEndpoint] {
        &self.teacher
    }

    /// How many teachers the engine runs (at most).
    pub(crate) fn teacher_count(&self) -> usize {
        self.teachers.len()
    }

    /// The name of teacher `teacher` (`"teacher"` for the one teacher of a one-teacher engine).
    pub(crate) fn teacher_name(&self, teacher: usize) -> Option<&str> {
        self.teachers.get(teacher).map(|plan| plan.name.as_str())
    }

    /// The teachers' names, in declaration order.
    pub(crate) fn teacher_names(&self) -> impl ExactSizeIterator<Item = &str> {
        self.teachers.iter().map(|plan| plan.name.as_str())
    }

    /// The index of the teacher named `name`.
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`], with the closest name.
    pub(crate) fn teacher_index(&self, name: &str) -> Result<usize> {
        self.teachers.iter().position(|plan| plan.name == name).ok_or_else(|| {
            let names: Vec<String> = self.teacher_names().map(str::to_owned).collect();
            unknown_teacher(name, &names)
        })
    }

    /// The index of the teacher that pair `pair` takes its teacher tensor from.
    pub(crate) fn teacher_of(&self, pair: usize) -> Option<usize> {
        if pair >= self.teacher.len() {
            None
        } else if self.pair_teacher.is_empty() {
            Some(0)
        } else {
            self.pair_teacher.get(pair).copied()
        }
    }

    /// Runs each teacher on `teacher_xs` (as its mode says), then the student on `student_xs` with
    /// `train`, and returns every output and every capture. `teachers` are the models in the order of
    /// the engine's teachers. With several teachers, a teacher without pairs does not run, and an
    /// error of a teacher names it; the one teacher of a one-teacher engine always runs (its output is
    /// the distillation's). Teacher tensors are moved to the device of the student's output.
    pub(crate) fn run<S>(
        &self,
        student: &S,
        teachers: &[&dyn SideModel],
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Captures>
    where
        S: SideModel + ?Sized,
    {
        let student = |endpoints: &[ResolvedEndpoint]| student.run(student_xs, train, endpoints);
        self.run_in(Run::AsSet, teachers, teacher_xs, student_xs, student)
    }

    /// As [`run`](Self::run) on one input `xs`, with every model in evaluation mode whatever its
    /// mode says, so that no running statistic moves: a dry run's forward. Gradient is the caller's
    /// to turn off.
    pub(crate) fn run_evaluation<S>(&self, student: &S, teachers: &[&dyn SideModel], xs: &Tensor) -> Result<Captures>
    where
        S: SideModel + ?Sized,
    {
        self.run_in(Run::Evaluation, teachers, xs, xs, |endpoints| student.run(xs, false, endpoints))
    }

    /// As [`run`](Self::run), with the student's side given by `student`: the student's output and
    /// one capture per endpoint of its (the student's run, or a forward of the caller's).
    pub(crate) fn run_with(
        &self,
        teachers: &[&dyn SideModel],
        teacher_xs: &Tensor,
        student_xs: &Tensor,
        student: impl FnOnce(&[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>,
    ) -> Result<Captures> {
        self.run_in(Run::AsSet, teachers, teacher_xs, student_xs, student)
    }

    /// The forward of [`run`](Self::run) and [`run_evaluation`](Self::run_evaluation): the teachers
    /// in the mode `run` says, then `student`.
    fn run_in(
        &self,
        run: Run,
        teachers: &[&dyn SideModel],
        teacher_xs: &Tensor,
        student_xs: &Tensor,
        student: impl FnOnce(&[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)>,
    ) -> Result<Captures> {
        if teachers.len() != self.teachers.len() {
            return Err(SetupError::TeacherCount { expected: self.teachers.len(), given: teachers.len() }.into());
        }
        // One teacher is a list of one: it always runs (its output is the distillation's), its
        // errors need no name and its captures are in pair order already. Of several, each with
        // pairs runs once, in declaration order; one without does not.
        let several = self.teachers.len() > 1;
        let mut outputs = Vec::with_capacity(teachers.len());
        let mut captures = Vec::with_capacity(teachers.len());
        for (plan, teacher) in self.teachers.iter().zip(teachers) {
            if several && plan.endpoints.is_empty() {
                outputs.push(None);
                captures.push(Vec::new());
                continue;
            }
            let (output, captured) = {
                // A guard, not `tch::no_grad(|| …)`: it restores grad mode also when the teacher's
                // forward panics, which would otherwise leave autograd off for the rest of the thread.
                let _no_grad = (!plan.mode.grad).then(tch::no_grad_guard);
                let train = match run {
                    Run::AsSet => plan.mode.train,
                    Run::Evaluation => false,
                };
                run.guarded(Side::Teacher, || teacher.run(teacher_xs, train, &plan.endpoints))
            }
            .map_err(|error| if several { in_teacher(&plan.name, error) } else { error })?;
            outputs.push(Some(output));
            captures.push(captured);
        }
        let (student_output, student_captures) = run.guarded(Side::Student, || student(&self.student))?;
        let device = student_device(&student_output, student_xs);
        let teacher = if several { self.in_pair_order(captures) } else { captures.into_iter().flatten().collect() };
        Ok(Captures {
            teacher_outputs: outputs.into_iter().map(|output| output.map(|t| move_to(t, device))).collect(),
            teacher: teacher.into_iter().map(|c| c.moved_to(device)).collect(),
            student_output,
            student: student_captures,
        })
    }

    /// The captures of every teacher (each in its pairs' order) merged into the order of the pairs.
    fn in_pair_order(&self, per_teacher: Vec<Vec<Captured>>) -> Vec<Captured> {
        let mut per_teacher: Vec<_> = per_teacher.into_iter().map(Vec::into_iter).collect();
        self.pair_teacher.iter().filter_map(|&teacher| per_teacher.get_mut(teacher)?.next()).collect()
    }
}

/// How the teachers of one forward run.
#[derive(Clone, Copy)]
enum Run {
    /// Each as its [`TeacherMode`] says.
    AsSet,
    /// In evaluation mode, whatever their modes say (a dry run's forward).
    Evaluation,
}

impl Run {
    /// `forward` (one model's run); in a dry run, a panic inside it is
    /// [`CaptureError::ForwardPanicked`]: a dry run reports what would stop training, and tch's
    /// `forward_t` can only panic. A training forward lets the panic through, as the model's own
    /// code would. The capture arming and the no-grad guard are released by the unwinding, so the
    /// thread is as before.
    fn guarded<T>(self, side: Side, forward: impl FnOnce() -> Result<T>) -> Result<T> {
        match self {
            Run::AsSet => forward(),
            Run::Evaluation => {
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(forward)).unwrap_or_else(|payload| {
                    let text = payload
                        .downcast_ref::<String>()
                        .map(String::as_str)
                        .or_else(|| payload.downcast_ref::<&str>().copied())
                        .unwrap_or("a panic without a message");
                    let message = text.lines().next().unwrap_or_default().to_owned();
                    Err(CaptureError::ForwardPanicked { side, message }.into())
                })
            }
        }
    }
}

/// The student's device: where its output is, or (for a TorchScript student without a single output)
/// where its input is.
fn student_device(student_output: &Tensor, student_xs: &Tensor) -> tch::Device {
    if student_output.defined() {
        student_output.device()
    } else {
        student_xs.device()
    }
}

/// [`DistillError::UnknownTeacher`] for `name` among `names`.
pub(crate) fn unknown_teacher(name: &str, names: &[String]) -> DistillError {
    DistillError::UnknownTeacher {
        name: name.to_owned(),
        suggestion: crate::suggest::closest(name, names.iter().map(String::as_str)).map(str::to_owned),
        teachers: names.to_vec(),
    }
}

/// `error`, said to come from teacher `name`.
pub(crate) fn in_teacher(name: &str, error: DistillError) -> DistillError {
    DistillError::InTeacher { teacher: name.to_owned(), source: Box::new(error) }
}
