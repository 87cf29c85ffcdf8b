//! The models a configuration names modules of ([`ConfigSide`]), and the modules it hands the
//! adapter constructors.

use tch::nn::ModuleT;

use super::adapters::EndpointModules;
use super::{EndpointEntry, PairEntry};
use crate::jit;
use crate::module::{resolve, Distillable};
use crate::point::Side;
use crate::side::SideModel;

/// A model a configuration can name modules of: a side of a distillation whose module tree, if it
/// has one, gives the adapter constructors their layers.
pub trait ConfigSide: SideModel {
    /// The model's module tree; `None` for a TorchScript model, whose endpoints are outputs, and for
    /// a teacher cache, whose endpoints are stored tensors.
    fn module_tree(&self) -> Option<&dyn Distillable>;
}

impl<M: ModuleT + Distillable> ConfigSide for M {
    fn module_tree(&self) -> Option<&dyn Distillable> {
        Some(self)
    }
}

impl ConfigSide for jit::Module {
    fn module_tree(&self) -> Option<&dyn Distillable> {
        None
    }
}

impl ConfigSide for crate::cache::TeacherCache {
    fn module_tree(&self) -> Option<&dyn Distillable> {
        None
    }
}

impl ConfigSide for crate::cache::TokenCache {
    fn module_tree(&self) -> Option<&dyn Distillable> {
        None
    }
}

/// The endpoint modules of `pair` in `student` and `teacher` (their paths already checked to exist).
pub(super) fn endpoint_modules<'a>(
    pair: &'a PairEntry,
    student: &'a dyn ConfigSide,
    teacher: &'a dyn ConfigSide,
) -> EndpointModules<'a> {
    EndpointModules {
        teacher: module_at(teacher.module_tree(), Side::Teacher, &pair.teacher),
        student: module_at(student.module_tree(), Side::Student, &pair.student),
    }
}

/// The module at `entry`'s path in `tree` (already checked to exist), with the path.
fn module_at<'a>(
    tree: Option<&'a dyn Distillable>,
    side: Side,
    entry: &'a EndpointEntry,
) -> Option<(&'a dyn Distillable, &'a str)> {
    let module = resolve(tree?, side, &entry.path).ok()?.module;
    Some((module, entry.path.as_str()))
}
