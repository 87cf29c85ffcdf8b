//! Flattening as a layer.

use tch::nn::Module;
use tch::Tensor;

use super::leaf::tappable_leaf;
use crate::nn::capture::{record, TapId};

/// Flattens dimensions `start_dim..=end_dim` into one, as `torch.nn.Flatten` (default `1..=-1`).
#[derive(Debug)]
pub struct Flatten {
    /// First dimension to flatten.
    pub start_dim: i64,
    /// Last dimension to flatten (negative counts from the end).
    pub end_dim: i64,
    tap: TapId,
}

tappable_leaf!(Flatten);

impl Module for Flatten {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| xs.flatten(self.start_dim, self.end_dim))
    }
}

/// Flattens all dimensions but the batch one, as `torch.nn.Flatten()`.
pub fn flatten() -> Flatten {
    Flatten { start_dim: 1, end_dim: -1, tap: TapId::fresh() }
}

impl Flatten {
    /// Flattens dimensions `start_dim..=end_dim`.
    pub fn dims(start_dim: i64, end_dim: i64) -> Flatten {
        Flatten { start_dim, end_dim, tap: TapId::fresh() }
    }
}
