//! Items used by the code that `distill!` and `#[derive(Distillable)]` generate. Not public API:
//! hidden from the documentation, and may change in any release.
//!
//! Generated code names everything through this one path (`::distill::__private::…`, or the path
//! given with `crate = "…"`), never by matching type names.

mod assemble;
mod bounds;
mod message;
mod path_check;
mod teachers;

pub use tch;

/// The capture glue of the layers (arming taps, recording their calls), for the facade's text and
/// vision layers and the tests of the capture machinery.
pub mod capture {
    pub use crate::nn::capture::*;
}

pub use self::assemble::{build_pairs, into_array, into_outputs, weighted_array};
pub use self::bounds::{
    adapter, child, closure_criterion, criterion, module, slot, ChildAt, IntoAdapter, Model, RecordedElement, SlotIndex,
};
pub use self::path_check::{check_path, schema_of, PathCheck, PathSchema};
pub use self::teachers::{mode_of, resolve_in, set_mode_of};
pub use crate::adapter::StringPath;
pub use crate::cache::{CachedBatch, TeacherBatch};
pub use crate::distillation::private::losses::{f_loss_terms, total, write_terms};
pub use crate::distillation::{Distillation, PairSpec};
pub use crate::dry_run::DryRun;
pub use crate::dsl::Pair;
pub use crate::endpoint::Endpoint;
pub use crate::engine::TeacherMode;
pub use crate::error::DistillError;
pub use crate::module::{resolve, Child, Distillable, Resolved};
pub use crate::point::{Side, Slot, TapId};
pub use crate::rng::SplitMix64;
pub use crate::schedule::LossTerm;
pub use crate::schema::{Children, FieldSchema, Schema, StaticSchema};
pub use crate::side::{LiveTeacher, SideResolver};
