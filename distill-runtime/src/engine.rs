//! The capture engine shared by both front ends (`distill!` and the dynamic `Mapping`): run the
//! teacher, then the student, each with its endpoints armed, and hand back what they recorded.

use std::ops::Deref;

use tch::nn::ModuleT;
use tch::{Device, Tensor};

use crate::capture::{arm, TapRequest};
use crate::endpoint::ResolvedEndpoint;
use crate::error::{DistillError, Result};
use crate::point::Port;

/// How the teacher runs. The default is ENOT's (`nograd_teacher=True`): no gradient, evaluation
/// mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeacherMode {
    /// Record the teacher's forward for autograd (default `false`, like `nograd_teacher=True`).
    pub grad: bool,
    /// Run the teacher in training mode (default `false`: evaluation, whatever the student's flag).
    pub train: bool,
}

/// What one endpoint captured in one forward pass: each call of the module, in call order.
///
/// What it adds to a tensor: [`calls`](Self::calls) keeps every call of a module that ran several
/// times (an endpoint with `all_calls`), and [`tensor`](Self::tensor) / [`into_tensor`](Self::into_tensor)
/// give the one call of an ordinary endpoint. It is never empty: a module that did not run is an
/// error of the forward.
///
/// It derefs to that first call, so `captured.size()` or `&*captured` reads like the tensor it
/// holds; every other method listed below is `Tensor`'s, through that deref.
#[derive(Debug)]
pub struct Captured {
    calls: Vec<Tensor>,
}

impl Captured {
    /// The captured tensor (the first call, for an all-calls endpoint).
    pub fn tensor(&self) -> &Tensor {
        &self.calls[0]
    }

    /// Every call, in call order.
    pub fn calls(&self) -> &[Tensor] {
        &self.calls
    }

    /// The captured tensor, by value.
    pub fn into_tensor(mut self) -> Tensor {
        self.calls.swap_remove(0)
    }

    /// Every call, by value.
    pub fn into_calls(self) -> Vec<Tensor> {
        self.calls
    }

    fn one(tensor: Tensor) -> Captured {
        Captured { calls: vec![tensor] }
    }

    fn moved_to(self, device: Device) -> Captured {
        Captured { calls: self.calls.into_iter().map(|t| move_to(t, device)).collect() }
    }
}

impl Deref for Captured {
    type Target = Tensor;
    fn deref(&self) -> &Tensor {
        self.tensor()
    }
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
        S: ModuleT + ?Sized,
        T: ModuleT + ?Sized,
    {
        let (teacher_output, teacher_captures) = {
            // A guard, not `tch::no_grad(|| …)`: it restores grad mode also when the teacher's forward
            // panics, which would otherwise leave autograd off for the rest of the thread.
            let _no_grad = (!self.mode.grad).then(tch::no_grad_guard);
            run_side(teacher, teacher_xs, self.mode.train, &self.teacher)?
        };
        let (student_output, student_captures) = run_side(student, student_xs, train, &self.student)?;
        let device = student_output.device();
        Ok(Captures {
            teacher_output: move_to(teacher_output, device),
            teacher: teacher_captures.into_iter().map(|c| c.moved_to(device)).collect(),
            student_output,
            student: student_captures,
        })
    }
}

fn move_to(tensor: Tensor, device: Device) -> Tensor {
    if tensor.device() == device {
        tensor
    } else {
        tensor.to_device(device)
    }
}

/// One model's forward with its endpoints armed; checks call counts and in-place edits.
fn run_side<M: ModuleT + ?Sized>(
    model: &M,
    xs: &Tensor,
    train: bool,
    endpoints: &[ResolvedEndpoint],
) -> Result<(Tensor, Vec<Captured>)> {
    let guard = arm(endpoints.iter().filter_map(|e| e.tap.map(|tap| TapRequest { tap, port: e.port })));
    let output = model.forward_t(xs, train);
    let recordings = guard.finish();
    let captures = endpoints
        .iter()
        .map(|endpoint| {
            let Some(tap) = endpoint.tap else {
                return Ok(Captured::one(match endpoint.port {
                    Port::Output => output.shallow_clone(),
                    Port::Input => xs.shallow_clone(),
                }));
            };
            let calls = recordings.get(TapRequest { tap, port: endpoint.port });
            let not_called = || match &endpoint.container {
                Some(container) => DistillError::ElementNotRecorded {
                    side: endpoint.side,
                    path: endpoint.path.clone(),
                    container: container.clone(),
                },
                None => {
                    DistillError::NotCalled { side: endpoint.side, path: endpoint.path.clone(), port: endpoint.port }
                }
            };
            match calls.len() {
                0 => return Err(not_called()),
                1 => {}
                n if !endpoint.all_calls => {
                    return Err(DistillError::CalledMoreThanOnce {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        calls: n,
                    })
                }
                _ => {}
            }
            let mut tensors = Vec::with_capacity(calls.len());
            for call in calls {
                if let Some(now) = call.modified_since_capture() {
                    return Err(DistillError::ModifiedInPlace {
                        side: endpoint.side,
                        path: endpoint.path.clone(),
                        port: endpoint.port,
                        captured: call.version,
                        now,
                    });
                }
                tensors.push(call.tensor.shallow_clone());
            }
            Ok(Captured { calls: tensors })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((output, captures))
}
