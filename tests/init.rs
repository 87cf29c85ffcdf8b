//! PyTorch-style initialisation: weights and biases uniform in ±1/√fan_in, against tch's wider
//! Kaiming-uniform default; and the learned adapters, which all start as tch's layers do.

use distill::adapter::{conv1x1_adapter, linear_adapter, Adapter, FittedAdapter, FittedKind};
use distill::nn::{self, VarStore};
use tch::Device;

/// The largest |value| and whether all values lie within `bound`.
fn max_abs(t: &tch::Tensor) -> f64 {
    t.abs().max().double_value(&[])
}

/// Of n independent draws uniform in ±b, the largest |x| is below b·(1 − q) with probability (1 − q)ⁿ:
/// for n ≥ 4096 and q = 1e-2, below 1e-17. So a bound check from both sides is deterministic in
/// practice and catches a distribution of another width.
fn assert_uniform_within(t: &tch::Tensor, bound: f64, what: &str) {
    let max = max_abs(t);
    assert!(max <= bound, "{what}: max |x| = {max} > {bound}");
    assert!(max >= bound * 0.99, "{what}: max |x| = {max}, far below {bound}: not uniform in ±{bound}");
}

#[test]
fn linear_initialises_as_pytorch() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let fc = nn::linear(vs.root() / "fc", 256, 4096, nn::pytorch_linear_config(256));
    let bound = 1.0 / 16.0;
    assert_uniform_within(&fc.ws, bound, "weight");
    assert_uniform_within(fc.bs.as_ref().unwrap(), bound, "bias");
    // tch's default draws weights √6 times wider.
    let default = nn::linear(vs.root() / "default", 256, 4096, Default::default());
    assert_uniform_within(&default.ws, 6f64.sqrt() * bound, "tch's default weight");
}

#[test]
fn conv2d_initialises_as_pytorch_and_keeps_the_config() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let config = nn::ConvConfig { padding: 1, stride: 2, groups: 2, ..Default::default() };
    let conv = nn::conv2d(vs.root() / "conv", 32, 4096, 3, nn::pytorch_conv2d_config(32, 3, config));
    // fan_in = 32 / 2 groups · 3 · 3 = 144.
    let bound = 1.0 / 12.0;
    assert_uniform_within(&conv.ws, bound, "weight");
    assert_uniform_within(conv.bs.as_ref().unwrap(), bound, "bias");
    // Groups, stride and padding are kept: 16 input channels per group, 8×8 → 4×4.
    assert_eq!(conv.ws.size(), [4096, 16, 3, 3]);
    let ys = tch::nn::Module::forward(&conv, &tch::Tensor::zeros([1, 32, 8, 8], (tch::Kind::Float, Device::Cpu)));
    assert_eq!(ys.size(), [1, 4096, 4, 4]);
}

/// Every learned adapter starts as tch's `linear` and `conv2d` do — the weight Kaiming-uniform with
/// fan-in `in` and ReLU gain, uniform in ±√(6 / in), a bias uniform in ±1/√in — whether its widths
/// are given when it is built or fitted by a dry run. (The fitted ones once drew their weights in
/// ±1/√in, √6 times narrower than their documentation and the width-given ones said.)
#[test]
fn learned_adapters_initialise_as_tch_whether_given_or_fitted_their_widths() {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let (inputs, outputs) = (256i64, 4096i64);
    let weight_bound = (6.0 / inputs as f64).sqrt();

    let linear = linear_adapter(vs.root() / "linear", inputs, outputs).unwrap();
    assert_uniform_within(linear.weight(), weight_bound, "linear_adapter's weight");
    let conv = conv1x1_adapter(vs.root() / "conv", inputs, outputs).unwrap();
    assert_uniform_within(conv.weight(), weight_bound, "conv1x1_adapter's weight");

    let fitted_linear = FittedAdapter::new(&(vs.root() / "fitted_linear"), FittedKind::Linear);
    fitted_linear.fit_shapes(&[2, inputs], &[2, outputs]).unwrap();
    let fitted_conv = FittedAdapter::new(&(vs.root() / "fitted_conv"), FittedKind::Conv1x1);
    fitted_conv.fit_shapes(&[2, inputs, 3, 3], &[2, outputs, 3, 3]).unwrap();
    let variables = vs.variables();
    assert_uniform_within(&variables["fitted_linear.weight"], weight_bound, "the fitted linear weight");
    assert_uniform_within(&variables["fitted_linear.bias"], 1.0 / 16.0, "the fitted linear bias");
    assert_uniform_within(&variables["fitted_conv.weight"], weight_bound, "the fitted 1×1 conv weight");
    assert_eq!(variables["fitted_conv.weight"].size(), [outputs, inputs, 1, 1]);
    assert!(!variables.contains_key("fitted_conv.bias"), "a fitted 1×1 conv has no bias");
}
