//! What the front ends build a [`Distillation`] from: its pairs ([`PairSpec`]) and
//! [`Distillation::from_pairs`], and the sums of the loss terms that a `distill!` output calls. Glue
//! reached through `__private`, not public API.

pub(crate) mod losses;
mod pair;

pub use pair::PairSpec;

use super::Distillation;
use crate::engine::Engine;
use crate::error::{DistillError, Result};
use crate::side::SideModel;

impl<'m> Distillation<'m> {
    /// A distillation of `student` from `teachers` (declaration order, named `names`) over `pairs`
    /// (already resolved): pair `i` takes its teacher tensor from teacher `pair_teacher[i]`. Every
    /// teacher runs as `TeacherMode::default()`. Checks every pair's criterion parameters, and that
    /// each pair's teacher gives its endpoint in the form the criterion reads.
    #[doc(hidden)]
    pub fn from_pairs(
        student: &'m dyn SideModel,
        teachers: Vec<&'m dyn SideModel>,
        names: &[&str],
        pairs: Vec<PairSpec<'m>>,
        pair_teacher: &[usize],
    ) -> Result<Self> {
        let (student_endpoints, teacher_endpoints) =
            pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
        let names = names.iter().map(|name| (*name).to_owned()).collect();
        let engine = Engine::with_teachers(student_endpoints, teacher_endpoints, pair_teacher.to_vec(), names)?;
        if engine.teacher_count() != teachers.len() {
            return Err(DistillError::InvalidArgument(format!(
                "{} teacher name(s) and {} teacher model(s): one name per teacher",
                engine.teacher_count(),
                teachers.len()
            )));
        }
        let distillation = Distillation::with_engine(student, teachers, engine, pairs);
        distillation.validate()?;
        Ok(distillation)
    }
}
