//! Dropout as a layer.

use tch::nn::ModuleT;
use tch::Tensor;

use super::leaf::tappable_leaf;
use crate::nn::capture::{record, TapId};

/// Zeroes each element with probability `p` in training and rescales the rest by `1 / (1 - p)`;
/// the identity in evaluation, as `torch.nn.Dropout`.
#[derive(Debug)]
pub struct Dropout {
    /// Probability of zeroing an element.
    pub p: f64,
    tap: TapId,
}

tappable_leaf!(Dropout);

impl ModuleT for Dropout {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        record(self.tap, xs, |xs| xs.dropout(self.p, train))
    }
}

/// A dropout layer with drop probability `p`.
pub fn dropout(p: f64) -> Dropout {
    Dropout { p, tap: TapId::fresh() }
}
