//! The engine of [`distill`](https://docs.rs/distill): knowledge distillation on tch (libtorch).
//!
//! - [`nn`]: tappable layers mirroring `tch::nn`, and the containers `Seq`, `Sequential`, `Tap`;
//! - [`adapter`]: channel mapping between a layer and its pruned copy, selection and learned adapters;
//! - [`prune`]: channel-sliced copies of `Conv2D`, `BatchNorm`, `Linear` (structured pruning);
//! - [`cache`]: the teacher cache — run the teacher once, train from its stored captures;
//! - [`criterion`]: the `Criterion` trait and the loss catalogue (`Mse`, `KlDiv`, `AttentionTransfer`, …);
//! - [`schedule`]: a term's weight by training step ([`Schedule`](schedule::Schedule)), and loss terms rescaled to a reference;
//! - [`module`]: the [`Distillable`] module tree — named children, path lookup, suggestions;
//! - [`mapping`]: the dynamic [`Mapping`] and [`distill()`], as ENOT's API, and
//!   [`distill_teachers`] for several named teachers;
//! - [`device`]: where tensors live, and a checked move of a model to a GPU;
//! - [`checkpoint`]: the student saved alone, and a run's student and adapters saved and restored;
//! - [`checksum`]: the checksum every checkpoint and cache shard carries, and [`checksum::verify`];
//! - [`config`]: a distillation declared in a TOML file, read into a [`Distillation`];
//! - [`distillation`]: [`Distillation`], the one type that runs a distillation, whichever front end
//!   (`distill!`, [`Mapping`], a [`config`] file) declared it;
//! - [`endpoint`]: how one side of a pair is named, and the checked [`ResolvedEndpoint`];
//! - [`StaticSchema`]: a module type whose tree `distill!` checks string paths against at compile
//!   time;
//! - [`dsl`]: what a `distill!` output holds for each pair ([`Pair`]);
//! - [`Side`], [`Port`] and [`Slot`](nn::Slot): the small values naming a capture point;
//! - the error type [`DistillError`], in [`mod@error`].
//!
//! Most users depend on the `distill` facade crate, whose `distill!` macro generates typed models
//! on top of this engine.
#![warn(missing_docs)]

pub mod adapter;
mod adapter_hint;
pub mod alloc;
mod atomic;
pub mod cache;
mod channels;
pub mod checkpoint;
pub mod checksum;
pub mod config;
pub mod criterion;
pub mod device;
pub mod distillation;
pub mod dry_run;
pub mod dsl;
pub mod endpoint;
mod engine;
pub mod error;
pub mod jit;
pub mod mapping;
pub mod module;
pub mod nn;
mod point;
pub mod prune;
pub mod schedule;
mod schema;
pub mod side;

mod captured;
mod resolver;
mod rng;
mod suggest;
mod teacher_batch;

#[doc(hidden)]
#[path = "private/mod.rs"]
pub mod __private;

pub use alloc::tune_allocator;
pub use criterion::{Criterion, Weighted};
pub use distillation::{Distillation, DistillationOutput, Losses};
pub use dry_run::{DryRun, PairShapes};
pub use dsl::Pair;
pub use endpoint::{Endpoint, IntoEndpoint, ResolvedEndpoint};
pub use engine::{Captured, TeacherMode};
pub use error::{DistillError, Result};
pub use mapping::{
    distill, distill_teachers, Adapted, DistillModel, DistillOutput, MappedPair, Mapping, SeveralTeachers,
};
pub use module::{Child, ChildName, Distillable, NamedModule, Recordable};
pub use point::{Port, Side};
pub use schema::StaticSchema;
pub use side::{LiveTeacher, SideModel};
