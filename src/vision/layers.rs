//! The building blocks torchvision's models share: `ReLU6`, and convs, batch norms and linears with
//! torchvision's initialisation.

use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{BatchNormConfig, ConvConfig, Init, LinearConfig, Module, Path};
use tch::Tensor;

use crate::__private::Schema;
use crate::capture::{record, TapId};
use crate::module::{Child, Distillable, Recordable};
use crate::nn;
use crate::StaticSchema;

/// `min(max(x, 0), 6)`, as `torch.nn.ReLU6` (out of place, so the previous layer's capture stays
/// valid); a distillation point like every `distill::nn` layer.
#[derive(Debug)]
pub struct ReLU6 {
    tap: TapId,
}

/// A new [`ReLU6`] layer.
pub fn relu6() -> ReLU6 {
    ReLU6 { tap: TapId::fresh() }
}

impl Default for ReLU6 {
    fn default() -> Self {
        relu6()
    }
}

impl Module for ReLU6 {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, Tensor::relu6)
    }
}

impl Distillable for ReLU6 {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
    fn own_tap(&self) -> Option<TapId> {
        Some(self.tap)
    }
}

impl Recordable for ReLU6 {
    fn tap_id(&self) -> TapId {
        self.tap
    }
}

impl StaticSchema for ReLU6 {
    const SCHEMA: Schema = Schema::leaf(true);
}

/// torchvision's conv initialisation: `kaiming_normal_(mode="fan_out", nonlinearity="relu")`.
const CONV_INIT: Init =
    Init::Kaiming { dist: NormalOrUniform::Normal, fan: FanInOut::FanOut, non_linearity: NonLinearity::ReLU };

/// A bias-free `k`×`k` conv with padding `(k - 1) / 2` (torchvision's `conv3x3`, `conv1x1` and
/// `Conv2dNormActivation` convs), variable `weight`.
pub(crate) fn conv(p: Path, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> nn::Conv2D {
    nn::conv2d(p, c_in, c_out, k, conv_config(stride, (k - 1) / 2, groups))
}

/// A bias-free conv config with torchvision's initialisation.
pub(crate) fn conv_config(stride: i64, padding: i64, groups: i64) -> ConvConfig {
    ConvConfig { stride, padding, groups, bias: false, ws_init: CONV_INIT, ..Default::default() }
}

/// A 2-d batch norm as torchvision builds it: eps 1e-5, momentum 0.1, weight 1, bias 0.
pub(crate) fn batch_norm(p: Path, channels: i64) -> nn::BatchNorm {
    let config = BatchNormConfig { ws_init: Init::Const(1.0), bs_init: Init::Const(0.0), ..Default::default() };
    nn::batch_norm2d(p, channels, config)
}

/// A linear layer with `torch.nn.Linear`'s default initialisation: weight and bias uniform in
/// `±1/sqrt(in_dim)` (tch's default weight bound is `sqrt(6/in_dim)`).
pub(crate) fn torch_linear(p: Path, in_dim: i64, out_dim: i64) -> nn::Linear {
    let bound = 1.0 / (in_dim as f64).sqrt();
    let init = Init::Uniform { lo: -bound, up: bound };
    nn::linear(p, in_dim, out_dim, LinearConfig { ws_init: init, bs_init: Some(init), bias: true })
}
