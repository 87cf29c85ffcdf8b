//! TorchScript modules exported from PyTorch (`scripts/gen_jit_fixtures.py`): their outputs are named
//! from the archive, and running them gives PyTorch's values.

use std::path::PathBuf;

use distill::jit::{JitError, Module, OutputLayout};
use distill::DistillError;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

mod common;

use common::bounds::{self, compare_tensors, U_F32};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit").join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn tensor(value: &Value) -> Tensor {
    let shape: Vec<i64> = value["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
    let data: Vec<f32> = value["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    Tensor::from_slice(&data).reshape(shape)
}

/// The fixtures' network (`TinyNet` of scripts/gen_jit_fixtures.py: conv1 3×3 → bn1 → ReLU →
/// conv2 3×3 stride 2 → ReLU → pool → fc), re-run in f64 on magnitudes: every weight, bias and input
/// by its absolute value, the batch norm's mean subtraction as an addition. Each output is then the
/// magnitude of what its value sums (Σ|terms| through every layer before it), per element.
struct Magnitudes {
    block1: Tensor,
    conv2: Tensor,
    logits: Tensor,
}

fn magnitudes(train: bool) -> Magnitudes {
    let module = tch::CModule::load(fixture("tensor.pt")).unwrap();
    let p: std::collections::HashMap<String, Tensor> =
        module.named_parameters().unwrap().into_iter().map(|(k, v)| (k, v.to_kind(Kind::Double).abs())).collect();
    let xs = tensor(&expected()["input"]).to_kind(Kind::Double);
    let conv1 = xs.abs().conv2d(&p["conv1.weight"], None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
    // The running statistics are buffers, not parameters: the generator draws the mean in
    // [−0.5, 0.5] and the variance in [0.5, 2], so |μ| ≤ 0.5 and σ ≥ √0.5 bound them; in train mode
    // the batch's own, from the exact conv1 output.
    let (mean, std) = if train {
        let exact = xs.conv2d(&signed(&module, "conv1.weight"), None::<Tensor>, [1, 1], [1, 1], [1, 1], 1);
        let dims = [0i64, 2, 3];
        let mean = exact.mean_dim(dims.as_slice(), true, Kind::Double).abs();
        let var = exact.var_dim(dims.as_slice(), false, true);
        (mean, (var + 1e-5).sqrt())
    } else {
        (Tensor::from(0.5f64), Tensor::from(0.5f64 + 1e-5).sqrt())
    };
    let view = |t: &Tensor| t.view([1, -1, 1, 1]);
    let block1 = (conv1 + mean) / std * view(&p["bn1.weight"]) + view(&p["bn1.bias"]);
    let conv2 = block1.conv2d(&p["conv2.weight"], Some(&p["conv2.bias"]), [2, 2], [1, 1], [1, 1], 1);
    let pooled = conv2.mean_dim([2i64, 3].as_slice(), false, Kind::Double);
    let logits = pooled.matmul(&p["fc.weight"].tr()) + &p["fc.bias"];
    Magnitudes { block1, conv2, logits }
}

/// A parameter of the fixture as it is (with its sign), in f64.
fn signed(module: &tch::CModule, name: &str) -> Tensor {
    let params = module.named_parameters().unwrap();
    params.into_iter().find(|(k, _)| k == name).unwrap().1.to_kind(Kind::Double)
}

/// Roundings on the way to each output, relative to the magnitude of what it sums: a blocked sum of
/// `k` terms per inner product (`⌈log₂ k⌉ + 1`, [`bounds::sum_depth`]) for conv1 (k = 9), conv2
/// (36), the pool (16) and fc (6), with a chain of ≤ 6 elementwise roundings after each (batch
/// norm's subtract, divide, square root, scale, shift); in train mode the batch statistics' two
/// reductions over the 4 · 8 · 8 positions.
fn depth(output: &str, train: bool) -> f64 {
    let bn = 6.0 + if train { 2.0 * bounds::sum_depth(4 * 8 * 8) + 2.0 } else { 0.0 };
    let block1 = bounds::sum_depth(9) + bn;
    let conv2 = block1 + bounds::sum_depth(36) + 2.0;
    match output {
        "block1" | "0" => block1,
        "conv2" => conv2,
        _ => conv2 + bounds::sum_depth(16) + 1.0 + bounds::sum_depth(6) + 1.0,
    }
}

/// The bound between our output and PyTorch's: each is within `u · depth · max(magnitude)` of the
/// exact value, the same TorchScript graph on another CPU's kernels.
fn bound(output: &str, train: bool) -> f64 {
    let m = magnitudes(train);
    let magnitude = match output {
        "block1" | "0" => &m.block1,
        "conv2" => &m.conv2,
        _ => &m.logits,
    };
    2.0 * U_F32 * depth(output, train) * bounds::abs_max(magnitude)
}

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str, output: &str, train: bool) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let c = compare_tensors(actual, expected, bound(output, train));
    assert!(c.passes(), "{what}: {c}");
    // A mistake of 10⁻³ relative in the largest output is outside the bound.
    let wrong = compare_tensors(&(actual * (1.0 + 1e-3)), expected, bound(output, train));
    assert!(!wrong.passes(), "{what}: an output scaled by 1 + 1e-3 passes: {wrong}");
}

#[test]
fn names_outputs_from_the_archive() {
    let features = Module::load(fixture("features.pt"), Device::Cpu).unwrap();
    assert_eq!(features.outputs(), ["block1", "conv2", "logits"]);
    assert_eq!(features.main_output(), None);
    let tuple = Module::load(fixture("tuple.pt"), Device::Cpu).unwrap();
    assert_eq!(*tuple.layout(), OutputLayout::Tuple(2));
    assert_eq!(tuple.outputs(), ["0", "1"]);
    let tensor = Module::load(fixture("tensor.pt"), Device::Cpu).unwrap();
    assert_eq!(*tensor.layout(), OutputLayout::Tensor);
    assert_eq!(tensor.main_output().as_deref(), Some(""));
    let scripted = Module::load(fixture("scripted.pt"), Device::Cpu).unwrap();
    assert_eq!(*scripted.layout(), OutputLayout::Tensor);
}

#[test]
fn outputs_equal_pytorch() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    for name in ["features", "tuple", "tensor", "scripted"] {
        let module = Module::load(fixture(&format!("{name}.pt")), Device::Cpu).unwrap();
        let outputs = module.forward_outputs(&xs, false).unwrap();
        let reference = expected[format!("{name}/eval")].as_object().unwrap();
        let names = if module.outputs().is_empty() { vec![String::new()] } else { module.outputs() };
        assert_eq!(outputs.len(), reference.len(), "{name}");
        for (output, key) in outputs.iter().zip(&names) {
            assert_close(output, &tensor(&reference[key]), &format!("{name}/{key}"), key, false);
        }
    }
}

#[test]
fn a_scripted_module_follows_the_train_flag() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let module = Module::load(fixture("scripted.pt"), Device::Cpu).unwrap();
    let eval = module.forward_outputs(&xs, false).unwrap();
    assert_close(&eval[0], &tensor(&expected["scripted/eval"][""]), "eval mode", "", false);
    // Training mode uses the batch's statistics (and updates the running ones, as in PyTorch).
    let train = module.forward_outputs(&xs, true).unwrap();
    assert_close(&train[0], &tensor(&expected["scripted/train"][""]), "train mode", "", true);
}

#[test]
fn with_output_chooses_the_main_output_and_checks_the_name() {
    let module = Module::load(fixture("features.pt"), Device::Cpu).unwrap();
    let error = Module::load(fixture("features.pt"), Device::Cpu).unwrap().with_output("logit").unwrap_err();
    assert!(
        matches!(&error, DistillError::Jit(JitError::UnknownOutput { suggestion: Some(s), .. }) if s == "logits"),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "the TorchScript module `{}` has no output `logit` (did you mean `logits`?); its outputs: `block1`, \
             `conv2`, `logits`",
            fixture("features.pt").display()
        )
    );
    let module = module.with_output("logits").unwrap();
    assert_eq!(module.main_output().as_deref(), Some("logits"));
}

#[test]
fn load_with_outputs_checks_the_names_at_run_time() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let module = Module::load_with_outputs(fixture("features.pt"), Device::Cpu, &["block1", "logits"]).unwrap();
    let error = module.forward_outputs(&xs, false).unwrap_err();
    assert!(error.to_string().contains("did not return its declared outputs"), "{error}");
    let module =
        Module::load_with_outputs(fixture("features.pt"), Device::Cpu, &["logits", "conv2", "block1"]).unwrap();
    let outputs = module.forward_outputs(&xs, false).unwrap();
    assert_close(
        &outputs[0],
        &tensor(&expected["features/eval"]["logits"]),
        "logits by declared order",
        "logits",
        false,
    );
}

#[test]
fn files_that_are_not_torchscript_are_errors() {
    let error = Module::load(fixture("expected.json"), Device::Cpu).unwrap_err();
    assert!(matches!(error, DistillError::Jit(JitError::Archive { .. } | JitError::Torch { .. })), "{error}");
    let error = Module::load(fixture("missing.pt"), Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
}

#[test]
fn load_with_outputs_refuses_a_name_given_twice() {
    let error = Module::load_with_outputs(fixture("features.pt"), Device::Cpu, &["logits", "conv2", "logits"])
        .map(drop)
        .unwrap_err();
    assert!(
        matches!(&error, DistillError::Jit(JitError::DuplicateOutput { name, first: 0, again: 2, .. }) if name == "logits"),
        "{error}"
    );
    assert!(error.to_string().contains("output `logits` is named twice"), "{error}");
}
