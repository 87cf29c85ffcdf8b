//! Fully connected layer, as `tch::nn::linear`.

use std::borrow::Borrow;

use tch::nn::{LinearConfig, Module, Path};
use tch::Tensor;

use super::leaf::tch_wrapper;
use crate::nn::capture::{record, TapId};

/// A linear layer; derefs to `tch::nn::Linear` (`ws`, `bs`).
#[derive(Debug)]
pub struct Linear {
    inner: tch::nn::Linear,
    tap: TapId,
}

tch_wrapper!(Linear, tch::nn::Linear);

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| self.inner.forward(xs))
    }
}

/// A linear layer, as `tch::nn::linear` (same variables: `weight`, `bias`).
pub fn linear<'a, T: Borrow<Path<'a>>>(vs: T, in_dim: i64, out_dim: i64, config: LinearConfig) -> Linear {
    Linear::from_tch(tch::nn::linear(vs, in_dim, out_dim, config))
}
