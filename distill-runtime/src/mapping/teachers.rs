//! A [`Mapping`] with several named teachers: building it, adding a pair from one teacher, and
//! finding a teacher by name.

use super::{MappedPair, MappedTeacher, Mapping};
use crate::endpoint::{Endpoint, IntoEndpoint};
use crate::engine::{in_teacher, unknown_teacher};
use crate::error::{Result, SetupError};
use crate::point::Side;
use crate::side::SideModel;

impl<'m, P> Mapping<'m, P> {
    /// An empty mapping between `student` and several teachers, each named (`"big"`, `"wide"`), in
    /// the order [`distill_teachers`](super::distill_teachers) runs them. Pairs are added with
    /// [`add_from`](Self::add_from), which names the pair's teacher.
    ///
    /// ```
    /// # extern crate distill_runtime as distill;
    /// # use distill::module::{Child, Distillable};
    /// # use distill::side::SideModel;
    /// # use distill::{nn, DistillError, Mapping};
    /// # #[derive(Debug)]
    /// # struct Net { head: nn::Linear }
    /// # impl Distillable for Net {
    /// #     fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
    /// #         visit(Child::field("head", &self.head));
    /// #     }
    /// # }
    /// # impl tch::nn::ModuleT for Net {
    /// #     fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor { self.head.forward_t(xs, train) }
    /// # }
    /// # let vs = nn::VarStore::new(tch::Device::Cpu);
    /// # let net = |p: nn::Path| Net { head: nn::linear(&p / "head", 4, 2, Default::default()) };
    /// # let (student, big, wide) = (net(vs.root() / "s"), net(vs.root() / "b"), net(vs.root() / "w"));
    /// let mut mapping = Mapping::with_teachers(&student, [("big", &big as &dyn SideModel), ("wide", &wide)])?;
    /// mapping.add_from("big", "head", "head", "features from the big teacher")?;
    /// mapping.add_from("wide", "", "", "logits from the wide teacher")?;
    /// let error = mapping.add_from("wdie", "", "", "a typo").unwrap_err();
    /// assert_eq!(error.to_string(), "no teacher `wdie` (did you mean `wide`?); the teachers are `big`, `wide`");
    /// # Ok::<(), DistillError>(())
    /// ```
    ///
    /// # Errors
    /// No teacher, an empty name, or a name given twice.
    pub fn with_teachers<'n, S: SideModel>(
        student: &'m S,
        teachers: impl IntoIterator<Item = (&'n str, &'m dyn SideModel)>,
    ) -> Result<Self> {
        let mut mapping = Mapping {
            student: student.resolver(Side::Student),
            teachers: Vec::new(),
            teacher_names: Vec::new(),
            pairs: Vec::new(),
        };
        for (name, model) in teachers {
            if name.is_empty() {
                return Err(SetupError::EmptyTeacherName.into());
            }
            if mapping.teacher_names.iter().any(|seen| seen == name) {
                return Err(SetupError::DuplicateTeacher { name: name.to_owned() }.into());
            }
            mapping.teachers.push(MappedTeacher { model, resolver: model.resolver(Side::Teacher) });
            mapping.teacher_names.push(name.to_owned());
        }
        if mapping.teachers.is_empty() {
            return Err(SetupError::NoTeacher.into());
        }
        Ok(mapping)
    }

    /// Adds a pair whose teacher endpoint belongs to the teacher named `teacher`; endpoints are given
    /// and checked as by [`add`](Self::add), the teacher endpoint against that teacher.
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`](crate::DistillError::UnknownTeacher) (with the closest name) for a name the mapping does not have;
    /// the endpoints' problems, a teacher endpoint's wrapped in [`DistillError::InTeacher`](crate::DistillError::InTeacher) when there
    /// are several teachers.
    pub fn add_from<'e>(
        &mut self,
        teacher: &str,
        student_endpoint: impl IntoEndpoint<'e>,
        teacher_endpoint: impl IntoEndpoint<'e>,
        payload: P,
    ) -> Result<&mut Self> {
        let index = self.teacher_index(teacher)?;
        self.push(index, student_endpoint.into_endpoint(), teacher_endpoint.into_endpoint(), payload)
    }

    /// The teachers' names, in declaration order (`["teacher"]` for a mapping from [`Mapping::new`]).
    pub fn teacher_names(&self) -> &[String] {
        &self.teacher_names
    }

    /// The index of the teacher named `name`.
    ///
    /// # Errors
    /// [`DistillError::UnknownTeacher`](crate::DistillError::UnknownTeacher), with the closest name.
    pub(crate) fn teacher_index(&self, name: &str) -> Result<usize> {
        self.teacher_names
            .iter()
            .position(|known| known == name)
            .ok_or_else(|| unknown_teacher(name, &self.teacher_names))
    }

    /// The teacher models, in declaration order.
    pub(super) fn teacher_models(&self) -> Vec<&'m dyn SideModel> {
        self.teachers.iter().map(|teacher| teacher.model).collect()
    }

    /// Resolves both endpoints (the teacher's against teacher `index`) and appends the pair.
    pub(super) fn push(
        &mut self,
        index: usize,
        student: Endpoint<'_>,
        teacher: Endpoint<'_>,
        payload: P,
    ) -> Result<&mut Self> {
        let several = self.teachers.len() > 1;
        let student = self.student.resolve(&student)?;
        let mapped =
            self.teachers.get(index).ok_or_else(|| unknown_teacher(&index.to_string(), &self.teacher_names))?;
        let teacher = mapped.resolver.resolve(&teacher).map_err(|error| {
            if several {
                in_teacher(&self.teacher_names[index], error)
            } else {
                error
            }
        })?;
        self.pairs.push(MappedPair { student, teacher, payload, teacher_index: index });
        Ok(self)
    }
}
