//! Support for a `distill!` model's teachers: resolving an endpoint against its pair's teacher in
//! `new()`, and each teacher's mode by the index the generated accessors know.

use crate::distillation::Distillation;
use crate::endpoint::{Endpoint, ResolvedEndpoint};
use crate::engine::{in_teacher, TeacherMode};
use crate::error::Result;
use crate::side::SideResolver;

/// `endpoint` resolved against a teacher: with several teachers, `teacher` is the pair's teacher's
/// name and an error names it; the one teacher of a distillation needs no name (`None`).
pub fn resolve_in(
    teacher: Option<&str>,
    resolver: &SideResolver<'_>,
    endpoint: &Endpoint<'_>,
) -> Result<ResolvedEndpoint> {
    resolver.resolve(endpoint).map_err(|error| match teacher {
        Some(name) => in_teacher(name, error),
        None => error,
    })
}

/// How teacher `index` (declaration order) of `distillation` runs.
pub fn mode_of(distillation: &Distillation<'_>, index: usize) -> TeacherMode {
    distillation.mode_of(index)
}

/// Sets how teacher `index` (declaration order) of `distillation` runs.
pub fn set_mode_of(distillation: &mut Distillation<'_>, index: usize, mode: TeacherMode) {
    distillation.set_mode_of(index, mode);
}
