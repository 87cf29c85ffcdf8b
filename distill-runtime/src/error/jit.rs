//! What goes wrong when a TorchScript module is loaded, run, or asked for an output it does not
//! have.

use super::text::{did_you_mean, libtorch_message};
use crate::point::Side;

/// A TorchScript module that cannot be loaded or run, or an output it does not have.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JitError {
    /// libtorch could not load or run the module. The message is libtorch's without its C++
    /// backtrace; the full text is the source's.
    #[error("TorchScript module `{file}`: {}", libtorch_message(&source.to_string()))]
    Torch {
        /// The file the module was loaded from.
        file: String,
        /// libtorch's error.
        #[source]
        source: tch::TchError,
    },
    /// The archive is not a TorchScript archive, is damaged, or its code declares outputs this
    /// crate cannot read.
    #[error("TorchScript module `{file}`: {reason}")]
    Archive {
        /// The file.
        file: String,
        /// What is wrong with the archive.
        reason: String,
    },
    /// The module's forward did not return the outputs its code declares.
    #[error("TorchScript module `{file}`: its forward did not return its declared outputs: {reason}")]
    Outputs {
        /// The file the module was loaded from.
        file: String,
        /// How what it returned differs.
        reason: String,
    },
    /// A name given twice to `jit::Module::load_with_outputs`: a dict has each key once, so no
    /// return value could match the list.
    #[error(
        "TorchScript module `{file}`: output `{name}` is named twice, at positions {first} and {again} of the list"
    )]
    DuplicateOutput {
        /// The file the module is loaded from.
        file: String,
        /// The name given twice.
        name: String,
        /// Its first position in the list, from 0.
        first: usize,
        /// The position where it is given again.
        again: usize,
    },
    /// An output named for its input, which only the module's own input has.
    #[error(
        "TorchScript module `{file}`: output `{name}` has no input to capture: only the module's own input (`\"\"`) \
         can be"
    )]
    OutputInput {
        /// The file the module was loaded from.
        file: String,
        /// The output named.
        name: String,
    },
    /// The module as a whole named on a side, and it returns several outputs.
    #[error(
        "TorchScript module `{file}`: as the {side}, it has no single output to stand for the model itself: it \
         returns {layout}; name one of its outputs, or choose one with `jit::Module::with_output`"
    )]
    NoMainOutput {
        /// The file the module was loaded from.
        file: String,
        /// The side it was given as.
        side: Side,
        /// What it returns, described.
        layout: String,
    },
    /// A TorchScript module has no output of this name.
    #[error(
        "the TorchScript module `{file}` has no output `{name}`{}; its outputs: {}",
        did_you_mean(suggestion),
        list(outputs)
    )]
    UnknownOutput {
        /// The file the module was loaded from.
        file: String,
        /// The name asked for.
        name: String,
        /// The closest output name, if one is close.
        suggestion: Option<String>,
        /// Every output name.
        outputs: Vec<String>,
    },
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none (it returns one tensor: use the bare model)".to_owned();
    }
    names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}
