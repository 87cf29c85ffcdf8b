//! Items used by the code that `distill!` and `#[derive(Distillable)]` generate. Not public API:
//! hidden from the documentation, and may change in any release.
//!
//! Generated code names everything through this one path (`::distill::__private::…`, or the path
//! given with `crate = "…"`), never by matching type names.

mod bounds;
mod distillation;
mod losses;
mod message;
mod path_check;
mod teachers;

pub use tch;

pub use self::bounds::{
    adapter, child, closure_criterion, criterion, module, slot, ChildAt, IntoAdapter, Model, RecordedElement, SlotIndex,
};
pub use self::distillation::{into_array, into_outputs, Core, Forward, PairAdapter, PairSpec, TeachersForward};
pub use self::losses::{loss_terms, total, write_losses, write_terms};
pub use self::path_check::{check_path, schema_of, PathCheck, PathSchema};
pub use self::teachers::resolve_in;
pub use crate::cache::CachedBatch;
pub use crate::dry_run::DryRun;
pub use crate::dsl::Pair;
pub use crate::endpoint::Endpoint;
pub use crate::engine::{Engine, TeacherMode};
pub use crate::error::DistillError;
pub use crate::module::{Child, Distillable};
pub use crate::point::Side;
pub use crate::schedule::LossTerm;
pub use crate::schema::{Children, FieldSchema, Schema, StaticSchema};
