//! Support for the `new()` of a `distill!` with several teachers.

use crate::endpoint::{Endpoint, ResolvedEndpoint};
use crate::engine::in_teacher;
use crate::error::Result;
use crate::side::SideResolver;

/// `endpoint` resolved against the teacher named `teacher`, an error naming that teacher.
pub fn resolve_in(teacher: &str, resolver: &SideResolver<'_>, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
    resolver.resolve(endpoint).map_err(|error| in_teacher(teacher, error))
}
