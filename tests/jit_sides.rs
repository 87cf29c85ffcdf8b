//! TorchScript modules as distillation sides, in both front ends: endpoints are named outputs, checked
//! when added, the teacher runs without gradient in evaluation mode unless asked otherwise, and a
//! trainable TorchScript module can be the student.

use std::path::PathBuf;

use distill::jit::{self, JitError};
use distill::nn::{self, ModuleT, OptimizerConfig, VarStore};
use distill::prelude::*;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit").join(name)
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

fn tensor(value: &Value) -> Tensor {
    let shape: Vec<i64> = value["shape"].as_array().unwrap().iter().map(|d| d.as_i64().unwrap()).collect();
    let data: Vec<f32> = value["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    Tensor::from_slice(&data).reshape(shape)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size());
    f64::try_from((a - b).abs().max()).unwrap()
}

/// The Rust student: the same layout as the exported teacher, narrower.
#[derive(Debug, Distillable)]
struct Student {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl Student {
    fn new(p: nn::Path) -> Student {
        let no_bias = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        Student {
            conv1: nn::conv2d(&p / "conv1", 1, 4, 3, no_bias),
            bn1: nn::batch_norm2d(&p / "bn1", 4, Default::default()),
            conv2: nn::conv2d(&p / "conv2", 4, 6, 3, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() }),
            fc: nn::linear(&p / "fc", 6, 3, Default::default()),
        }
    }
}

impl ModuleT for Student {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let h = h.apply(&self.conv2).relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        h.apply(&self.fc)
    }
}

distill! {
    /// Features and logits from a TorchScript teacher, by output name.
    struct FromTorch for Student => jit::Module {
        block1: student.bn1 => teacher["block1"] with Mse;
        conv2: student.conv2 => "conv2" with Mse;
        kd: student => teacher["logits"] with KlDiv::new(4.0);
    }
}

#[test]
fn mapping_pairs_carry_the_teacher_outputs_without_gradient() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let vs = VarStore::new(Device::Cpu);
    let student = Student::new(vs.root());
    let teacher = jit::Module::load(fixture("features.pt"), Device::Cpu).unwrap();

    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("bn1", "block1", ()).unwrap();
    mapping.add(&student.fc, "logits", ()).unwrap();
    let error = mapping.add("conv2", "conv_2", ()).unwrap_err();
    assert!(
        matches!(&error, DistillError::Jit(JitError::UnknownOutput { suggestion: Some(s), .. }) if s == "conv2"),
        "{error}"
    );
    let error = mapping.add("", "", ()).unwrap_err();
    assert!(error.to_string().contains("with_output"), "{error}");
    assert_eq!(mapping.len(), 2);

    let model = distill(&student, &teacher, mapping);
    let out = model.forward_t(&xs, true).unwrap();
    let (s, t, ()) = out.get(0).unwrap();
    assert_eq!(s.size(), [4, 4, 8, 8]);
    assert!(max_diff(t, &tensor(&expected["features/eval"]["block1"])) < 1e-5);
    assert!(!t.requires_grad() && s.requires_grad());
    let (_, logits, ()) = out.get(1).unwrap();
    assert!(max_diff(logits, &tensor(&expected["features/eval"]["logits"])) < 1e-5);
    assert!(!out.teacher_output.defined(), "a dict teacher without a chosen output has none");
}

#[test]
fn tuple_and_tensor_teachers_name_positions_and_the_bare_model() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let vs = VarStore::new(Device::Cpu);
    let student = Student::new(vs.root());
    let tuple = jit::Module::load(fixture("tuple.pt"), Device::Cpu).unwrap();
    let mut mapping = Mapping::new(&student, &tuple);
    mapping.add("bn1", "0", ()).unwrap();
    mapping.add("", "1", ()).unwrap();
    assert!(matches!(mapping.add("", "2", ()), Err(DistillError::Jit(JitError::UnknownOutput { .. }))));
    let model = distill(&student, &tuple, mapping);
    let out = model.forward_t(&xs, false).unwrap();
    assert!(max_diff(out.get(1).unwrap().1, &tensor(&expected["tuple/eval"]["1"])) < 1e-5);

    let single = jit::Module::load(fixture("tensor.pt"), Device::Cpu).unwrap();
    let mut mapping = Mapping::new(&student, &single);
    mapping.add("", "", ()).unwrap();
    let error = mapping.add("fc", "logits", ()).unwrap_err();
    assert!(error.to_string().contains("its outputs: none"), "{error}");
    let model = distill(&student, &single, mapping);
    let out = model.forward_t(&xs, false).unwrap();
    assert!(max_diff(&out.teacher_output, &tensor(&expected["tensor/eval"][""])) < 1e-5);
}

#[test]
fn distill_macro_checks_names_in_new_and_runs_the_teacher_in_eval_mode() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let vs = VarStore::new(Device::Cpu);
    let student = Student::new(vs.root());
    let teacher = jit::Module::load(fixture("features.pt"), Device::Cpu).unwrap().with_output("logits").unwrap();
    let kd = FromTorch::new(vs.root() / "kd", &student, &teacher).unwrap();
    let out = kd.forward_t(&xs, true).unwrap();
    assert!(max_diff(&out.block1.teacher, &tensor(&expected["features/eval"]["block1"])) < 1e-5);
    assert!(max_diff(&out.kd.teacher, &tensor(&expected["features/eval"]["logits"])) < 1e-5);
    assert!(max_diff(&out.teacher_output, &out.kd.teacher) == 0.0);
    assert!(!out.conv2.teacher.requires_grad());
    let loss = out.loss();
    assert!(f64::try_from(&loss).unwrap().is_finite());

    // A teacher without the named outputs: `new()` says which and suggests.
    let tuple = jit::Module::load(fixture("tuple.pt"), Device::Cpu).unwrap();
    let error = FromTorch::new(vs.root() / "kd2", &student, &tuple).err().unwrap();
    assert!(
        matches!(error, DistillError::Jit(JitError::UnknownOutput { ref name, .. }) if name == "block1"),
        "{error}"
    );
}

distill! {
    /// A scripted TorchScript teacher, whose batch norm follows the train flag.
    struct Scripted for Student => jit::Module {
        student => teacher with Mse;
    }
}

#[test]
fn teacher_train_runs_a_scripted_teacher_in_training_mode() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let vs = VarStore::new(Device::Cpu);
    let student = Student::new(vs.root());
    let teacher = jit::Module::load(fixture("scripted.pt"), Device::Cpu).unwrap();
    let eval = Scripted::new(vs.root(), &student, &teacher).unwrap();
    let out = eval.forward_t(&xs, true).unwrap();
    assert!(max_diff(&out.output.teacher, &tensor(&expected["scripted/eval"][""])) < 1e-5);
    let train = Scripted::new(vs.root(), &student, &teacher).unwrap().teacher_train(true);
    let out = train.forward_t(&xs, false).unwrap();
    assert!(max_diff(&out.output.teacher, &tensor(&expected["scripted/train"][""])) < 1e-5);
}

#[test]
fn a_trainable_torchscript_student_learns_from_a_teacher() {
    let expected = expected();
    let xs = tensor(&expected["input"]);
    let vs = VarStore::new(Device::Cpu);
    let student = jit::Module::load_trainable(fixture("tuple.pt"), vs.root() / "student").unwrap();
    assert!(!vs.trainable_variables().is_empty());
    let teacher = jit::Module::load(fixture("features.pt"), Device::Cpu).unwrap();
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("0", "block1", Mse).unwrap();
    mapping.add("1", "logits", Mse).unwrap();
    // The student was exported from the teacher's weights: move it away, then let it learn back.
    tch::manual_seed(5);
    tch::no_grad(|| {
        for mut var in vs.trainable_variables() {
            let noise = var.randn_like() * 0.3;
            let _ = var.g_add_(&noise);
        }
    });
    let model = distill(&student, &teacher, mapping);
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.05).unwrap();
    let loss_of = || {
        let out = model.forward_t(&xs, true).unwrap();
        out.pairs().map(|(s, t, c)| c.loss(s, t)).fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b)
    };
    let first = loss_of();
    assert!(first.requires_grad());
    let first = f64::try_from(&first).unwrap();
    for _ in 0..20 {
        let loss = loss_of();
        opt.backward_step(&loss);
    }
    let last = f64::try_from(loss_of()).unwrap();
    assert!(first > 1e-3 && last < 0.5 * first, "the loss went from {first} to {last}");
}
