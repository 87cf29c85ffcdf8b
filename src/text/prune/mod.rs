//! Structured pruning of a LLaMA-family decoder in width and depth, Minitron-style: importance
//! from activations on calibration data, the most important channels, heads and layers kept, and
//! a record of what was kept for the distillation that follows.
//!
//! ```no_run
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::text::prune::{hidden_adapter, prune_llama, KeepCounts, LlamaImportance, ParameterCounts};
//! use distill::text::{self, LlamaInputs};
//! let teacher = text::load_gguf("SmolLM2-135M-Instruct.Q4_1.gguf", tch::Device::Cpu)?.model;
//! let calibration = tch::Tensor::randint(49152, [8, 128], (tch::Kind::Int64, tch::Device::Cpu));
//! let importance = LlamaImportance::from_activations(&teacher, [LlamaInputs::new(&calibration)])?;
//! let counts = KeepCounts { hidden: 448, intermediate: 1024, kv_heads: 2, layers: 24 };
//! let kept = importance.keep(teacher.config(), &counts)?;
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let student = prune_llama(vs.root(), &teacher, &kept)?;
//! println!("{:?}", ParameterCounts::of(student.model.config()));
//! student.record.save("student.prune.safetensors")?;       // beside vs.save("student.safetensors")
//! let adapter = hidden_adapter(vs.root() / "adapter", &student.record)?; // teacher hidden → student's
//! # Ok(()) }
//! ```
//!
//! Steps: [`LlamaImportance`] scores every part ([`from_activations`](LlamaImportance::from_activations)
//! or [`from_weights`](LlamaImportance::from_weights)); [`LlamaImportance::keep`] picks the most
//! important indices for a target shape ([`KeepCounts`]) as a [`LlamaKept`]; [`prune_llama`] builds
//! the student and its record. [`ParameterCounts`] reports the shape's sizes.
//!
//! The student is a plain [`LlamaConfig`]-shaped `LlamaForCausalLM`: every
//! layer keeps as many MLP channels and key-value heads (each layer its own ones), so that it
//! saves, loads and runs like any other model. To resume one, build
//! [`student_config`] of the teacher's config and the saved record, load the checkpoint into it
//! (`vs.load`), and use the record for the adapters.
//!
//! The record ([`PruneRecord`]) holds, with teacher indices (each entry a `KeptChannels`: the
//! teacher's shape there, and kept output and input indices):
//!
//! | key | source shape | output | input |
//! |---|---|---|---|
//! | `hidden` | `[hidden, hidden]` | kept hidden channels | the same |
//! | `layers` | `[layers, layers]` | teacher layer of each student layer | the same |
//! | `model.layers.{i}.mlp` | `[intermediate, hidden]` (`gate_proj`'s) | kept MLP channels | kept hidden channels |
//! | `model.layers.{i}.self_attn` | `[kv_heads, hidden]` (`k_proj`'s, in heads) | kept key-value heads | kept hidden channels |
//!
//! with `i` the student's layer index.

mod adapt;
mod build;
mod error;
mod importance;
mod keep;
mod kept;
mod params;
mod weights;

pub use adapt::{hidden_adapter, layer_map};
pub use build::{prune_llama, PrunedLlama};
pub use error::DecoderPruneError;
pub use importance::LlamaImportance;
pub use keep::KeepCounts;
pub use kept::{attention_key, mlp_key, LlamaKept, HIDDEN, LAYERS};
pub use params::ParameterCounts;

use crate::error::Result;
use crate::prune::PruneRecord;
use crate::text::LlamaConfig;

/// The configuration of the student that `record` describes, pruned from a teacher of `teacher`'s
/// configuration: what a student is built from before its checkpoint is loaded.
///
/// # Errors
/// As [`LlamaKept::from_record`].
pub fn student_config(teacher: &LlamaConfig, record: &PruneRecord) -> Result<LlamaConfig> {
    LlamaKept::from_record(record, teacher)?.student_config(teacher)
}
