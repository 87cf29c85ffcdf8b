//! TorchScript modules exported from PyTorch (`scripts/gen_jit_fixtures.py`): their outputs are named
//! from the archive, and running them gives PyTorch's values.

use std::path::PathBuf;

use distill::jit::{Module, OutputLayout};
use distill::DistillError;
use serde_json::Value;
use tch::{Device, Tensor};

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

fn assert_close(actual: &Tensor, expected: &Tensor, what: &str) {
    assert_eq!(actual.size(), expected.size(), "{what}: shape");
    let diff = f64::try_from((actual - expected).abs().max()).unwrap();
    assert!(diff < 1e-5, "{what}: max abs difference {diff}");
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
            assert_close(output, &tensor(&reference[key]), &format!("{name}/{key}"));
        }
    }
}

#[test]
fn a_scripted_module_follows_the_train_flag() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let module = Module::load(fixture("scripted.pt"), Device::Cpu).unwrap();
    let eval = module.forward_outputs(&xs, false).unwrap();
    assert_close(&eval[0], &tensor(&expected["scripted/eval"][""]), "eval mode");
    // Training mode uses the batch's statistics (and updates the running ones, as in PyTorch).
    let train = module.forward_outputs(&xs, true).unwrap();
    assert_close(&train[0], &tensor(&expected["scripted/train"][""]), "train mode");
}

#[test]
fn with_output_chooses_the_main_output_and_checks_the_name() {
    let module = Module::load(fixture("features.pt"), Device::Cpu).unwrap();
    let error = Module::load(fixture("features.pt"), Device::Cpu).unwrap().with_output("logit").unwrap_err();
    assert!(matches!(&error, DistillError::UnknownOutput { suggestion: Some(s), .. } if s == "logits"), "{error}");
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
    assert_close(&outputs[0], &tensor(&expected["features/eval"]["logits"]), "logits by declared order");
}

#[test]
fn files_that_are_not_torchscript_are_errors() {
    let error = Module::load(fixture("expected.json"), Device::Cpu).unwrap_err();
    assert!(matches!(error, DistillError::Jit { .. }), "{error}");
    let error = Module::load(fixture("missing.pt"), Device::Cpu).unwrap_err();
    assert!(error.to_string().contains("cannot open"), "{error}");
}
