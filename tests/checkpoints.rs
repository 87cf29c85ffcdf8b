//! Checkpoints of a distillation: the student alone holds exactly the student's variables, and a run
//! stopped and resumed from a training checkpoint gives the uninterrupted run's losses.

#[path = "../examples/fashion_mnist/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../examples/fashion_mnist/prune.rs"]
mod prune;

use std::path::{Path, PathBuf};

use distill::checkpoint::{Owners, STEP_KEY};
use distill::config::Config;
use distill::nn::{ModuleT, VarStore};
use distill::prelude::*;
use tch::nn::OptimizerConfig;
use tch::{Device, Kind, Tensor};

use model::{Net, WIDTHS};

distill! {
    /// A selection adapter, a learned adapter (random init) and KD on the logits.
    pub struct ResumeKd for Net => Net {
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        f2: student.features[2].conv => learned_conv2d_adapter(teacher.features[2].conv) with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

distill! {
    /// A fitted adapter: sized by the dry run.
    pub struct FittedKd for Net => Net {
        f1: student.features[1].conv => fitted_conv1x1_adapter(teacher.features[1].conv) with Mse;
    }
}

/// libtorch's random generator is global and the tests of this file run in parallel: each test that
/// seeds it holds this lock, so that its draws are its own.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-checkpoints-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sorted_names(vs: &VarStore, prefix: &str) -> Vec<String> {
    let mut names: Vec<String> = vs.variables().into_keys().filter(|name| name.starts_with(prefix)).collect();
    names.sort();
    names
}

#[test]
fn a_student_checkpoint_holds_exactly_the_students_variables() {
    let _rng = rng();
    let dir = temp_dir("student");
    tch::manual_seed(1);
    // Teacher, student, and two distillations' adapters, all in one store.
    let vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&(vs.root() / "t"), &WIDTHS);
    let second_teacher = Net::new(&(vs.root() / "t2"), &WIDTHS);
    let student = prune::prune_net(&teacher, &(vs.root() / "s"), 0.25).unwrap();
    let _dsl = ResumeKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let config = Config::from_file("examples/fashion_mnist/kd.toml").unwrap();
    let _from_file = config.distill(&(vs.root() / "cfg"), &student, &teacher).unwrap();
    // Move the running statistics away from their initial values.
    let _ = student.forward_t(&Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu)), true);

    let owners = Owners::new(&vs, &student)
        .teacher(&teacher)
        .teacher(&second_teacher)
        .adapters(&(vs.root() / "kd"))
        .adapters(&(vs.root() / "cfg"));
    let file = dir.join("student.safetensors");
    let saved = owners.save_student(&file).unwrap();
    let expected = sorted_names(&vs, "s.");
    assert_eq!(saved, expected);
    assert_eq!(expected.len(), 4 * 5 + 2, "conv weight + 4 batch-norm tensors per block, the classifier's 2");
    assert!(expected.contains(&"s.features.3.bn.running_var".to_owned()));
    let variables = vs.variables();
    let read = Tensor::read_safetensors(&file).unwrap();
    assert_eq!(read.len(), expected.len());
    for (name, tensor) in &read {
        assert!(tensor.equal(&variables[name]), "{name}");
    }
    // The sorting behind it.
    let sorted = owners.variables().unwrap();
    let names = |list: &[(String, Tensor)]| list.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    let mut teachers = sorted_names(&vs, "t.");
    teachers.extend(sorted_names(&vs, "t2."));
    assert_eq!(names(&sorted.teacher), teachers);
    let mut adapters = sorted_names(&vs, "cfg.");
    adapters.extend(sorted_names(&vs, "kd."));
    assert_eq!(names(&sorted.adapters), adapters);
    assert_eq!(adapters.len(), 3 + 2);

    // The student's checkpoint loads into a store holding a student alone, built under the same path.
    let mut fresh_vs = VarStore::new(Device::Cpu);
    tch::manual_seed(2);
    let fresh_teacher_vs = VarStore::new(Device::Cpu);
    let fresh_teacher = Net::new(&(fresh_teacher_vs.root() / "t"), &WIDTHS);
    let fresh = prune::prune_net(&fresh_teacher, &(fresh_vs.root() / "s"), 0.25).unwrap();
    fresh_vs.load(&file).unwrap();
    let xs = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    assert!(fresh.forward_t(&xs, false).equal(&student.forward_t(&xs, false)));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_variable_of_unknown_owner_is_an_error_never_a_guess() {
    let _rng = rng();
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&(vs.root() / "t"), &WIDTHS);
    let student = prune::prune_net(&teacher, &(vs.root() / "s"), 0.25).unwrap();
    let _kd = ResumeKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let file = temp_dir("unknown").join("never-written.safetensors");

    // The teacher shares the store and was not named.
    let err = Owners::new(&vs, &student).adapters(&(vs.root() / "kd")).save_student(&file).unwrap_err();
    assert!(
        err.to_string().contains(
            "the variable `t.classifier.bias` belongs to no layer of the student and to no adapter path given"
        ),
        "{err}"
    );
    // The adapters were not named.
    let err = Owners::new(&vs, &student).teacher(&teacher).save_student(&file).unwrap_err();
    assert!(err.to_string().contains("the variable `kd.f1.weight` belongs to no layer"), "{err}");
    // A variable of something else.
    let _stray = vs.root().var("stray", &[2], tch::nn::Init::Const(0.0));
    let err =
        Owners::new(&vs, &student).teacher(&teacher).adapters(&(vs.root() / "kd")).save_student(&file).unwrap_err();
    assert!(err.to_string().contains("the variable `stray` belongs to no layer"), "{err}");
    // Adapters at the root cannot be told apart.
    let err = Owners::new(&vs, &student).adapters(&vs.root()).variables().unwrap_err();
    assert!(err.to_string().contains("adapters built under the store's root"), "{err}");
    // A path that holds the student too makes its variables belong to two owners.
    let err = Owners::new(&vs, &student)
        .teacher(&teacher)
        .adapters(&(vs.root() / "kd"))
        .adapters(&(vs.root() / "s"))
        .variables()
        .unwrap_err();
    assert!(err.to_string().contains("belongs to the student's `classifier.bias` and the adapters under `s`"), "{err}");
    // A student whose layers live in another store.
    let other = VarStore::new(Device::Cpu);
    let err = Owners::new(&other, &student).variables().unwrap_err();
    assert!(
        err.to_string().contains("the student's `features.0.conv.weight` is not a variable of this store"),
        "{err}"
    );
    assert!(!file.exists());
}

/// One training run of `steps` (batch `i` drawn from seed `i`), plain SGD on the student and the
/// adapters. The adapters' random init comes from `init_seed`; `resume` restores a training checkpoint
/// first, `save` writes one at the end. Returns each step's loss and the student's final eval output.
fn run(steps: std::ops::Range<u64>, init_seed: i64, resume: Option<&Path>, save: Option<&Path>) -> (Vec<f64>, Tensor) {
    tch::manual_seed(10);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&teacher_vs.root(), &WIDTHS);
    let vs = VarStore::new(Device::Cpu);
    let student = prune::prune_net(&teacher, &vs.root(), 0.25).unwrap();
    tch::manual_seed(init_seed);
    let kd = ResumeKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let mut opt = tch::nn::Sgd::default().build(&vs, 0.05).unwrap();
    let owners = Owners::new(&vs, &student).adapters(&(vs.root() / "kd"));
    if let Some(file) = resume {
        assert_eq!(owners.load_training(file).unwrap().step, steps.start);
    }
    let mut losses = Vec::new();
    for step in steps.clone() {
        tch::manual_seed(1000 + step as i64);
        let xs = Tensor::randn([8, 1, 28, 28], (Kind::Float, Device::Cpu));
        let ys = Tensor::randint(10, [8], (Kind::Int64, Device::Cpu));
        let out = kd.forward_t(&xs, true).unwrap();
        let loss = out.student_output.cross_entropy_for_logits(&ys) + out.losses().total();
        opt.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    if let Some(file) = save {
        owners.save_training(file, steps.end).unwrap();
    }
    tch::manual_seed(5);
    let probe = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let eval = tch::no_grad(|| student.forward_t(&probe, false));
    (losses, eval)
}

#[test]
fn a_resumed_run_matches_the_uninterrupted_run() {
    let _rng = rng();
    let dir = temp_dir("resume");
    let file = dir.join("resume.safetensors");
    let (uninterrupted, final_eval) = run(0..6, 20, None, None);
    let (first, _) = run(0..3, 20, None, Some(&file));
    // Fresh models, fresh store, adapters initialised from another seed: all of it comes from the file.
    let (second, resumed_eval) = run(3..6, 21, Some(&file), None);
    let resumed: Vec<f64> = first.into_iter().chain(second).collect();
    for (step, (a, b)) in uninterrupted.iter().zip(&resumed).enumerate() {
        assert!((a - b).abs() <= 1e-6, "step {step}: uninterrupted {a}, resumed {b}");
    }
    // The running statistics came back too: evaluation mode reads them.
    assert!(final_eval.allclose(&resumed_eval, 1e-6, 1e-6, false));
    // Without the restore the second half differs: the test can tell.
    let (unrestored, _) = run(3..6, 21, None, None);
    assert!((unrestored[0] - uninterrupted[3]).abs() > 1e-3, "{unrestored:?} vs {uninterrupted:?}");

    // The file holds the student, the adapters and the step, and nothing of the teacher.
    let names: Vec<String> = Tensor::read_safetensors(&file).unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&STEP_KEY.to_owned()) && names.contains(&"kd.f2.weight".to_owned()));
    assert_eq!(names.len(), 22 + 2 + 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_that_does_not_fit_changes_nothing() {
    let _rng = rng();
    let dir = temp_dir("misfit");
    let file = dir.join("resume.safetensors");
    let _ = run(0..1, 20, None, Some(&file));
    tch::manual_seed(10);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&teacher_vs.root(), &WIDTHS);
    let vs = VarStore::new(Device::Cpu);
    let student = prune::prune_net(&teacher, &vs.root(), 0.5).unwrap(); // twice as wide
    let _kd = ResumeKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let before = student.features[0].conv.ws.copy();
    let err = Owners::new(&vs, &student).adapters(&(vs.root() / "kd")).load_training(&file).unwrap_err();
    assert!(
        err.to_string()
            .contains("the variable `classifier.weight` has shape [10, 64] in the file and [10, 128] in the model"),
        "{err}"
    );
    assert!(student.features[0].conv.ws.equal(&before));
    // A student checkpoint is no training checkpoint.
    let student_file = dir.join("student.safetensors");
    Owners::new(&vs, &student).adapters(&(vs.root() / "kd")).save_student(&student_file).unwrap();
    let err = Owners::new(&vs, &student).adapters(&(vs.root() / "kd")).load_training(&student_file).unwrap_err();
    assert!(err.to_string().contains("not a training checkpoint"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_checkpoint_of_another_kind_changes_nothing() {
    let _rng = rng();
    let dir = temp_dir("kind");
    let file = dir.join("resume.safetensors");
    let _ = run(0..1, 20, None, Some(&file));
    tch::manual_seed(10);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&teacher_vs.root(), &WIDTHS);
    let vs = VarStore::new(Device::Cpu);
    let student = prune::prune_net(&teacher, &vs.root(), 0.25).unwrap();
    let _kd = ResumeKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let owners = Owners::new(&vs, &student).adapters(&(vs.root() / "kd"));
    let before = student.features[0].conv.ws.copy();
    // The same names and shapes, in another kind: booleans, integers, half precision would all be
    // converted by a copy into values the run never had.
    for kind in [Kind::Bool, Kind::Int64, Kind::Half, Kind::Double] {
        let tensors: Vec<(String, Tensor)> = Tensor::read_safetensors(&file)
            .unwrap()
            .into_iter()
            .map(|(name, tensor)| {
                let tensor = if name == STEP_KEY { tensor } else { tensor.to_kind(kind) };
                (name, tensor)
            })
            .collect();
        let other = dir.join(format!("{kind:?}.safetensors"));
        Tensor::write_safetensors(&tensors, &other).unwrap();
        let err = owners.load_training(&other).unwrap_err();
        assert!(
            err.to_string()
                .contains(&format!("the variable `classifier.bias` is {kind:?} in the file and Float in the model")),
            "{err}"
        );
        assert!(student.features[0].conv.ws.equal(&before), "{kind:?}");
    }
    // The file as saved still loads.
    assert_eq!(owners.load_training(&file).unwrap().step, 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_training_checkpoint_of_an_unfitted_adapter_is_refused_and_nothing_is_written() {
    let _rng = rng();
    let dir = temp_dir("unfitted");
    let file = dir.join("resume.safetensors");
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let teacher = Net::new(&(vs.root() / "teacher"), &WIDTHS);
    let student = Net::new(&(vs.root() / "student"), &WIDTHS);
    let kd = FittedKd::new(vs.root() / "kd", &student, &teacher).unwrap();
    let owners = Owners::new(&vs, &student).teacher(&teacher).adapters(&(vs.root() / "kd"));
    let err = owners.save_training(&file, 3).unwrap_err();
    assert!(err.to_string().contains("the adapter variable `kd.f1.weight` is empty ([0, 0, 1, 1])"), "{err}");
    assert!(!file.exists());
    kd.dry_run(&Tensor::randn([2, 1, 12, 12], (Kind::Float, Device::Cpu))).unwrap();
    owners.save_training(&file, 3).unwrap();
    assert_eq!(owners.load_training(&file).unwrap().step, 3);
    std::fs::remove_dir_all(&dir).unwrap();
}
