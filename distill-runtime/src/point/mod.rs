//! What names a capture point: its identity ([`TapId`]), the model it belongs to ([`Side`]), the
//! tensor of a call it records ([`Port`]), and the element of a container it stands for ([`Slot`]).
//!
//! These small values are shared by the capture machinery, the module tree, endpoints and errors, so
//! they live here, below all of them.

mod private;

use std::fmt;

pub use private::TapId;

/// Which model of a distillation pair a path, an endpoint or a tensor belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// The model being trained.
    Student,
    /// The model being learned from.
    Teacher,
}

impl fmt::Display for Side {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Side::Student => "student",
            Side::Teacher => "teacher",
        })
    }
}

/// Which tensor of a module call an endpoint captures (`"input"` or `"output"` in a teacher cache's
/// manifest).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Port {
    /// The tensor the module was called with.
    Input,
    /// The tensor the module returned (the default).
    #[default]
    Output,
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Port::Input => "input",
            Port::Output => "output",
        })
    }
}

/// The distillation point of one element of a `Seq` or a `Sequential`, from their `slot(index)`;
/// usable as a `Mapping` endpoint. An index past the end is reported by `Mapping::add` as
/// `PathError::IndexOutOfRange`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The tap of the container itself (to name it in errors). Capture glue.
    #[doc(hidden)]
    pub container: TapId,
    /// The index asked for.
    pub index: usize,
    /// The container's length.
    pub len: usize,
    /// The element's tap; `None` when `index` is out of range. Capture glue.
    #[doc(hidden)]
    pub tap: Option<TapId>,
}
