//! What goes wrong when a module path or a module given by reference is looked up in a model.

use super::text::did_you_mean;
use crate::point::Side;

/// A module path or a module given by reference that does not name a module of the model, or names
/// one that cannot record its output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// A module path names no module of the model.
    #[error("the {side} has no module `{path}`{}", did_you_mean(suggestion))]
    UnknownPath {
        /// The model the path was looked up in.
        side: Side,
        /// The path as given.
        path: String,
        /// The closest existing path, if one is close.
        suggestion: Option<String>,
    },
    /// An index past the end of a container.
    #[error("index {index} is out of range for `{container}` on the {side}: it has {len} children")]
    IndexOutOfRange {
        /// The model the path was looked up in.
        side: Side,
        /// Path of the indexed container (`""` for the model itself).
        container: String,
        /// The index asked for.
        index: usize,
        /// How many children the container has.
        len: usize,
    },
    /// The module exists but nothing records its output during forward.
    #[error(
        "the {side} module `{path}` ({type_name}) cannot record its output: make it a `distill::nn` \
         layer, wrap it in `distill::nn::Tap`, or hold it in a `distill::nn::Seq`/`Sequential`"
    )]
    NotRecordable {
        /// The model the module belongs to.
        side: Side,
        /// Path of the module.
        path: String,
        /// Rust type of the module.
        type_name: &'static str,
    },
    /// A module given by reference is not part of the model it was given for.
    #[error("the `{type_name}` given as the {side} endpoint is not a module of the {side} model")]
    NotInModel {
        /// The model that was searched.
        side: Side,
        /// Rust type of the module given.
        type_name: &'static str,
    },
}
