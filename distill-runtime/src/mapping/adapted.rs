//! A `Mapping` payload with adapters: what lets a [`Distillation`](crate::Distillation) built from a
//! `Mapping` run adapters in its forward, as one built by `distill!` or from a file does.

use std::fmt;

use crate::adapter::Adapter;
use crate::criterion::Criterion;

/// A pair's criterion with the adapters applied to its tensors before it: the payload of a
/// [`Mapping`](super::Mapping) that [`Distillation::from_mapping`](crate::Distillation::from_mapping)
/// runs whole, adapters included (their forward, their dry-run fitting, their errors naming the
/// pair and side), as `distill!` runs an adapter declared inline.
///
/// ```
/// # extern crate distill_runtime as distill;
/// # use distill::module::{Child, Distillable};
/// # use distill::{nn, DistillError, Distillation, Mapping};
/// use distill::adapter::fitted_linear_adapter;
/// use distill::criterion::{KlDiv, Mse};
/// use distill::mapping::Adapted;
/// # #[derive(Debug)]
/// # struct Net { hidden: nn::Linear, head: nn::Linear }
/// # impl Distillable for Net {
/// #     fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
/// #         visit(Child::field("hidden", &self.hidden));
/// #         visit(Child::field("head", &self.head));
/// #     }
/// # }
/// # impl tch::nn::ModuleT for Net {
/// #     fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor {
/// #         self.head.forward_t(&self.hidden.forward_t(xs, train).relu(), train)
/// #     }
/// # }
/// # let vs = nn::VarStore::new(tch::Device::Cpu);
/// # let net = |p: nn::Path, width: i64| Net {
/// #     hidden: nn::linear(&p / "hidden", 4, width, Default::default()),
/// #     head: nn::linear(&p / "head", width, 2, Default::default()),
/// # };
/// # let (student, teacher) = (net(vs.root() / "s", 6), net(vs.root() / "t", 16));
/// // The teacher's hidden layer is wider than the student's: an adapter narrows it.
/// let adapter = fitted_linear_adapter(vs.root() / "kd" / "hidden", &teacher.hidden, &student.hidden)?;
/// let mut mapping = Mapping::new(&student, &teacher);
/// mapping.add("hidden", "hidden", Adapted::new(Mse).teacher_adapter(adapter))?;
/// mapping.add("", "", Adapted::new(KlDiv::new(4.0)))?;
/// let kd = Distillation::from_mapping(&student, mapping)?;
/// let xs = tch::Tensor::randn([3, 4], (tch::Kind::Float, tch::Device::Cpu));
/// kd.dry_run(&xs)?; // fits the adapter: 16 → 6 features
/// let loss = kd.forward_t(&xs, true)?.f_loss()?;
/// # Ok::<(), DistillError>(())
/// ```
pub struct Adapted<'m> {
    pub(crate) criterion: Box<dyn Criterion + 'm>,
    pub(crate) student_adapter: Option<Box<dyn Adapter + 'm>>,
    pub(crate) teacher_adapter: Option<Box<dyn Adapter + 'm>>,
}

impl<'m> Adapted<'m> {
    /// `criterion` on the pair's tensors as captured, until an adapter is given.
    pub fn new(criterion: impl Criterion + 'm) -> Self {
        Adapted { criterion: Box::new(criterion), student_adapter: None, teacher_adapter: None }
    }

    /// Applies `adapter` to the student's tensor before the criterion (replacing any given before).
    pub fn student_adapter(self, adapter: impl Adapter + 'm) -> Self {
        Adapted { student_adapter: Some(Box::new(adapter)), ..self }
    }

    /// Applies `adapter` to the teacher's tensor before the criterion (replacing any given before).
    pub fn teacher_adapter(self, adapter: impl Adapter + 'm) -> Self {
        Adapted { teacher_adapter: Some(Box::new(adapter)), ..self }
    }
}

impl fmt::Debug for Adapted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Adapted")
            .field("student_adapter", &self.student_adapter)
            .field("teacher_adapter", &self.teacher_adapter)
            .finish_non_exhaustive()
    }
}

/// What [`Distillation::from_mapping`](crate::Distillation::from_mapping) takes as a payload: a
/// criterion (`Mse`, `KlDiv::new(4.0) * 0.5`, a `Box<dyn Criterion>`, a closure), or an [`Adapted`]
/// one.
pub trait IntoAdapted<'m> {
    /// The payload as a criterion with its adapters.
    fn into_adapted(self) -> Adapted<'m>;
}

impl<'m, C: Criterion + 'm> IntoAdapted<'m> for C {
    fn into_adapted(self) -> Adapted<'m> {
        Adapted::new(self)
    }
}

impl<'m> IntoAdapted<'m> for Adapted<'m> {
    fn into_adapted(self) -> Adapted<'m> {
        self
    }
}
