//! The capture engine shared by both front ends (`distill!` and the dynamic `Mapping`): run the
//! teacher, then the student, each with its endpoints armed, and hand back what they recorded.

use tch::Tensor;

use crate::captured::move_to;
pub use crate::captured::Captured;
use crate::endpoint::ResolvedEndpoint;
use crate::error::Result;
use crate::side::SideModel;

/// How the teacher runs. The default is ENOT's (`nograd_teacher=True`): no gradient, evaluation
/// mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeacherMode {
    /// Record the teacher's forward for autograd (default `false`, like `nograd_teacher=True`).
    pub grad: bool,
    /// Run the teacher in training mode (default `false`: evaluation, whatever the student's flag).
    pub train: bool,
}

/// The result of [`Engine::run`]: both models' outputs and each endpoint's capture, in the order the
/// endpoints were given.
#[derive(Debug)]
pub(crate) struct Captures {
    /// What the student's forward returned.
    pub student_output: Tensor,
    /// What the teacher's forward returned, on the student's device.
    pub teacher_output: Tensor,
    /// One capture per student endpoint.
    pub student: Vec<Captured>,
    /// One capture per teacher endpoint, on the student's device.
    pub teacher: Vec<Captured>,
}

/// What both front ends (`distill!` models and `DistillModel`) run: the endpoints of both sides,
/// resolved, and how the teacher runs.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    student: Vec<ResolvedEndpoint>,
    teacher: Vec<ResolvedEndpoint>,
    mode: TeacherMode,
}

impl Engine {
    /// An engine capturing `student` and `teacher` endpoints, the teacher running as
    /// `TeacherMode::default()`.
    pub(crate) fn new(student: Vec<ResolvedEndpoint>, teacher: Vec<ResolvedEndpoint>) -> Self {
        Engine { student, teacher, mode: TeacherMode::default() }
    }

    /// How the teacher runs.
    pub fn mode(&self) -> TeacherMode {
        self.mode
    }

    /// Sets how the teacher runs.
    pub(crate) fn set_mode(&mut self, mode: TeacherMode) {
        self.mode = mode;
    }

    /// The student endpoints.
    pub fn student_endpoints(&self) -> &[ResolvedEndpoint] {
        &self.student
    }

    /// The teacher endpoints.
    pub fn teacher_endpoints(&self) -> &[ResolvedEndpoint] {
        &self.teacher
    }

    /// Runs the teacher on `teacher_xs` (as [`mode`](Self::mode) says), then the student on
    /// `student_xs` with `train`, and returns both outputs and every capture. Teacher tensors are
    /// moved to the device of the student's output.
    pub(crate) fn run<S, T>(
        &self,
        student: &S,
        teacher: &T,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Captures>
    where
        S: SideModel + ?Sized,
        T: SideModel + ?Sized,
    {
        let (teacher_output, teacher_captures) = {
            // A guard, not `tch::no_grad(|| …)`: it restores grad mode also when the teacher's forward
            // panics, which would otherwise leave autograd off for the rest of the thread.
            let _no_grad = (!self.mode.grad).then(tch::no_grad_guard);
            teacher.run(teacher_xs, self.mode.train, &self.teacher)?
        };
        let (student_output, student_captures) = student.run(student_xs, train, &self.student)?;
        // The student's device: where its output is, or (for a TorchScript student without a single
        // output) where its input is.
        let device = if student_output.defined() { student_output.device() } else { student_xs.device() };
        Ok(Captures {
            teacher_output: move_to(teacher_output, device),
            teacher: teacher_captures.into_iter().map(|c| c.moved_to(device)).collect(),
            student_output,
            student: student_captures,
        })
    }
}
