//! The dynamic API, as ENOT's: a [`Mapping`] of (student endpoint, teacher endpoint, payload)
//! triples, and [`distill`], which glues both models into a [`DistillModel`] whose forward returns
//! the paired tensors ([`DistillOutput`]).
//!
//! Endpoints are checked when they are added (paths exist, indices are in range, modules can record),
//! so a mistake in a config file surfaces before the first training step.
//!
//! A mapping has one teacher ([`Mapping::new`], [`distill`]) or several named ones
//! ([`Mapping::with_teachers`], [`Mapping::add_from`], [`distill_teachers`]).

mod adapted;
mod model;
mod output;
mod teachers;

pub use adapted::{Adapted, IntoAdapted};
pub use model::{distill, distill_teachers, DistillModel, SeveralTeachers};
pub use output::DistillOutput;

use crate::endpoint::{IntoEndpoint, ResolvedEndpoint};
use crate::error::{Result, SetupError};
use crate::point::Side;
use crate::side::{SideModel, SideResolver};

/// Pairs of student and teacher modules to distill through, each with a payload of the user's
/// choosing (a criterion, an adapter, a weight, a tuple of those, or `()`).
///
/// ```
/// # extern crate distill_runtime as distill;
/// # use distill::module::{Child, Distillable};
/// # use distill::{nn, DistillError, Mapping};
/// # #[derive(Debug)]
/// # struct Net { features: nn::Seq<nn::Linear>, head: nn::Linear }
/// # impl Distillable for Net {
/// #     fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
/// #         visit(Child::field("features", &self.features));
/// #         visit(Child::field("head", &self.head));
/// #     }
/// # }
/// # impl tch::nn::ModuleT for Net {
/// #     fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor {
/// #         self.head.forward_t(&self.features.forward_t(xs, train), train)
/// #     }
/// # }
/// # let vs = nn::VarStore::new(tch::Device::Cpu);
/// # let net = |p: nn::Path| Net {
/// #     features: (0..2).map(|i| nn::linear(&p / "features" / i, 4, 4, Default::default())).collect(),
/// #     head: nn::linear(&p / "head", 4, 2, Default::default()),
/// # };
/// # let (student, teacher) = (net(vs.root() / "s"), net(vs.root() / "t"));
/// let mut mapping = Mapping::new(&student, &teacher);
/// mapping.add(&student.head, &teacher.head, "by reference")?;
/// mapping.add("features.1", "features.1", "by path")?;
/// mapping.add(student.features.slot(0), "features.0", "by slot")?;
/// mapping.add("", "", "the models' own outputs")?; // `""` is the model itself
/// assert_eq!(mapping.pairs()[2].teacher.path(), "features.0");
/// # Ok::<(), DistillError>(())
/// ```
pub struct Mapping<'m, P> {
    student: SideResolver<'m>,
    /// One or several; the one teacher of [`Mapping::new`] is named `teacher`.
    teachers: Vec<MappedTeacher<'m>>,
    /// The teachers' names, in declaration order.
    teacher_names: Vec<String>,
    pairs: Vec<MappedPair<P>>,
}

/// A teacher of a [`Mapping`]: the model and the resolver of its endpoints.
struct MappedTeacher<'m> {
    model: &'m dyn SideModel,
    resolver: SideResolver<'m>,
}

/// One entry of a [`Mapping`].
#[derive(Debug)]
pub struct MappedPair<P> {
    /// The student endpoint, checked.
    pub student: ResolvedEndpoint,
    /// The teacher endpoint, checked.
    pub teacher: ResolvedEndpoint,
    /// The user's payload.
    pub payload: P,
    /// The index of the pair's teacher in [`Mapping::teacher_names`] (`0` with one teacher).
    pub teacher_index: usize,
}

impl<'m, P> Mapping<'m, P> {
    /// An empty mapping between `student` and `teacher`.
    ///
    /// Either side may be a model of `distill::nn` layers (`#[derive(Distillable)]`) or a TorchScript
    /// [`jit::Module`](crate::jit::Module), whose endpoints are its named outputs.
    pub fn new<S: SideModel, T: SideModel>(student: &'m S, teacher: &'m T) -> Self {
        Mapping {
            student: student.resolver(Side::Student),
            teachers: vec![MappedTeacher { model: teacher, resolver: teacher.resolver(Side::Teacher) }],
            teacher_names: vec!["teacher".to_owned()],
            pairs: Vec::new(),
        }
    }

    /// Adds a pair. Endpoints may be given by reference (`&student.block.conv`), by slot
    /// (`student.features.slot(7)`), by name (`"features.5.conv"`; `""` is the model itself, i.e. its
    /// own output) or mixed; both are checked now against their model, and the first problem is
    /// returned (the mapping is then unchanged).
    ///
    /// # Errors
    /// The endpoints' problems; with several teachers, `add` cannot tell which teacher is meant and
    /// says to use [`add_from`](Self::add_from).
    pub fn add<'e>(
        &mut self,
        student: impl IntoEndpoint<'e>,
        teacher: impl IntoEndpoint<'e>,
        payload: P,
    ) -> Result<&mut Self> {
        if self.teachers.len() > 1 {
            return Err(SetupError::TeacherNotNamed { teachers: self.teacher_names.clone() }.into());
        }
        self.push(0, student.into_endpoint(), teacher.into_endpoint(), payload)
    }

    /// The pairs, in insertion order.
    pub fn pairs(&self) -> &[MappedPair<P>] {
        &self.pairs
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no pair was added.
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Whether the mapping was built for these two models (and has one teacher).
    fn built_for<S: ?Sized, T: ?Sized>(&self, student: &S, teacher: &T) -> bool {
        self.student.is_for(student) && matches!(self.teachers.as_slice(), [one] if one.resolver.is_for(teacher))
    }
}

impl<P> std::fmt::Debug for Mapping<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for pair in &self.pairs {
            list.entry(&format_args!("{:?} => {:?}", pair.student.path(), pair.teacher.path()));
        }
        list.finish()
    }
}
