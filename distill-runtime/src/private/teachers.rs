//! Support for the `new()` of a `distill!`: resolving an endpoint against its pair's teacher.

use crate::endpoint::{Endpoint, ResolvedEndpoint};
use crate::engine::in_teacher;
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
