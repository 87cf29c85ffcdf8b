//! # distill — knowledge distillation for Rust, on tch (libtorch)
//!
//! A student network learns from a teacher by matching the outputs of chosen modules.
//!
//! - [`nn`]: tch's layers, made tappable, plus `Seq`, `Sequential` and `Tap` containers;
//! - [`adapter`]: adapters initialised from the pruning (`conv2d_adapter`…) and learned ones;
//! - [`prune`]: channel-sliced copies of layers, to derive a pruned student;
//! - [`Mapping`] and [`distill()`]: pairs of modules named by reference or by path, known at run time;
//! - [`tune_allocator`]: the one call that makes libtorch fast in a Rust process.
#![warn(missing_docs)]

pub use distill_runtime::{
    adapter, capture, criterion, distill, endpoint, engine, error, mapping, module, nn, prune, tune_allocator,
    Captured, Child, ChildName, Criterion, DistillError, DistillModel, DistillOutput, Distillable, Endpoint,
    IntoEndpoint, MappedPair, Mapping, NamedModule, Port, Recordable, Side, TeacherMode,
};

/// Everything a distillation script needs: `use distill::prelude::*;`.
pub mod prelude {
    pub use crate::adapter::{
        conv1x1_adapter, conv2d_adapter, inverted_conv2d_adapter, learned_conv2d_adapter,
        learned_inverted_conv2d_adapter, learned_inverted_linear_adapter, learned_linear_adapter, linear_adapter,
    };
    pub use crate::criterion::*;
    pub use crate::nn;
    pub use crate::{distill, tune_allocator, DistillError, Distillable, Endpoint, Mapping, Recordable};
}

/// Items used by generated code. Not public API: may change in any release.
#[doc(hidden)]
pub mod __private {
    pub use distill_runtime::*;
    pub use tch;
}
