//! PyTorch's default initialisation, for layers that should start as a PyTorch model does.
//!
//! `distill::nn` constructors initialise as tch's do: weights Kaiming-uniform with the ReLU gain
//! (bound `√6 / √fan_in`), linear biases uniform in `±1 / √fan_in`, conv biases 0. PyTorch's
//! `nn.Linear` and `nn.Conv2d` draw weights *and* biases uniformly in `±1 / √fan_in`
//! (`kaiming_uniform_(a = √5)`), so tch's weights are √6 ≈ 2.45 times wider. A model ported from
//! PyTorch and trained from scratch then starts from another distribution, which can move its results;
//! these configs give PyTorch's distributions (drawn with tch's random generator, so not the same
//! numbers).

use tch::nn::init::{FanInOut, NonLinearity, NormalOrUniform};
use tch::nn::{ConvConfig, Init, LinearConfig};

/// PyTorch's weight initialisation, `kaiming_uniform_(a = √5)`: the gain `√(2 / (1 + 5)) = 1/√3`
/// makes the bound `gain · √(3 / fan_in) = 1 / √fan_in`.
pub const PYTORCH_WEIGHT_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Uniform,
    fan: FanInOut::FanIn,
    non_linearity: NonLinearity::ExplicitGain(0.577_350_269_189_625_8),
};

/// The bias initialisation PyTorch pairs with [`PYTORCH_WEIGHT_INIT`]: uniform in `±1 / √fan_in`.
fn bias_init(fan_in: i64) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform { lo: -bound, up: bound }
}

/// A [`LinearConfig`] that initialises as PyTorch's `nn.Linear(in_dim, …)`: weight and bias uniform
/// in `±1 / √in_dim`.
///
/// ```no_run
/// # extern crate distill_runtime as distill;
/// use distill::nn::{self, VarStore};
/// let vs = VarStore::new(tch::Device::Cpu);
/// let fc = nn::linear(vs.root() / "fc", 128, 10, nn::pytorch_linear_config(128));
/// ```
pub fn pytorch_linear_config(in_dim: i64) -> LinearConfig {
    LinearConfig { ws_init: PYTORCH_WEIGHT_INIT, bs_init: Some(bias_init(in_dim)), bias: true }
}

/// `config` with PyTorch's initialisation of `nn.Conv2d(in_dim, …, ksize, groups = config.groups)`:
/// weight and bias uniform in `±1 / √fan_in`, `fan_in = in_dim / groups · ksize²`. Stride, padding and
/// the other settings are kept.
///
/// ```no_run
/// # extern crate distill_runtime as distill;
/// use distill::nn::{self, VarStore};
/// let vs = VarStore::new(tch::Device::Cpu);
/// let config = nn::ConvConfig { padding: 1, ..Default::default() };
/// let conv = nn::conv2d(vs.root() / "conv", 16, 32, 3, nn::pytorch_conv2d_config(16, 3, config));
/// ```
pub fn pytorch_conv2d_config(in_dim: i64, ksize: i64, config: ConvConfig) -> ConvConfig {
    let fan_in = in_dim / config.groups.max(1) * ksize * ksize;
    ConvConfig { ws_init: PYTORCH_WEIGHT_INIT, bs_init: bias_init(fan_in), ..config }
}
