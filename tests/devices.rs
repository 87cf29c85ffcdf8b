//! The same distillation code on `Device::Cpu` and on `Device::cuda_if_available()`: teacher
//! outputs land on the student's device, adapters (selection, learned, fitted) live where their
//! model lives, a teacher cache feeds a student on its device, training checkpoints restore onto
//! the model's device; and a GPU this process does not have is an error, not a crash.
//!
//! Without a GPU the CUDA half of each test prints that it did not run; `DISTILL_REQUIRE_CUDA=1`
//! (set by `scripts/gpu-check`) makes that a failure.

#[path = "../examples/fashion_mnist/model.rs"]
#[allow(dead_code)]
mod model;
#[path = "../examples/fashion_mnist/prune.rs"]
mod prune;

use std::path::PathBuf;

use distill::cache::{CacheWriter, TeacherCache, TeacherHash};
use distill::checkpoint::Owners;
use distill::device::{check_device, cuda_device_count, to_device};
use distill::nn::VarStore;
use distill::prelude::*;
use tch::{Device, Kind, Tensor};

use model::{Net, WIDTHS};

distill! {
    /// A selection adapter (from the pruning), a learned one, a fitted one, and KD on the logits.
    struct DeviceKd for Net => Net {
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        f2: student.features[2].conv => learned_conv2d_adapter(teacher.features[2].conv) with Mse;
        f3: student.features[3] => fitted_conv1x1_adapter(teacher.features[3]) with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

/// The CPU, and the first GPU when there is one (else a printed note, or a failure under
/// `DISTILL_REQUIRE_CUDA=1`).
fn devices(test: &str) -> Vec<Device> {
    match Device::cuda_if_available() {
        Device::Cuda(index) => vec![Device::Cpu, Device::Cuda(index)],
        _ => {
            let required = std::env::var("DISTILL_REQUIRE_CUDA").is_ok_and(|v| v == "1");
            assert!(!required, "{test}: DISTILL_REQUIRE_CUDA=1, but this process sees no CUDA device");
            println!("{test}: ran on the CPU only; the CUDA half did not run (no CUDA device)");
            vec![Device::Cpu]
        }
    }
}

/// libtorch's random generator is global and the tests of this file run in parallel.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-devices-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A teacher on `teacher_device`, its pruned student (and, later, the adapters) on `device`.
fn models(teacher_device: Device, device: Device, seed: i64) -> (VarStore, Net, VarStore, Net) {
    tch::manual_seed(seed);
    let mut tvs = VarStore::new(teacher_device);
    let teacher = Net::new(&tvs.root(), &WIDTHS);
    tvs.freeze();
    let svs = VarStore::new(device);
    let student = prune::prune_net(&teacher, &(svs.root() / "s"), 0.5).unwrap();
    (tvs, teacher, svs, student)
}

fn inputs(device: Device) -> Tensor {
    Tensor::randn([6, 1, 28, 28], (Kind::Float, Device::Cpu)).to_device(device)
}

#[test]
fn teacher_outputs_and_every_adapter_live_on_the_students_device() {
    let _rng = rng();
    for device in devices("teacher_outputs_and_every_adapter_live_on_the_students_device") {
        // The teacher stays on the CPU; the student and its adapters are on `device`.
        let (_tvs, teacher, svs, student) = models(Device::Cpu, device, 3);
        let kd = DeviceKd::new(svs.root() / "kd", &student, &teacher).unwrap();
        let xs = inputs(Device::Cpu);
        kd.dry_run(&xs).unwrap();
        let out = kd.forward_t_with(&xs.to_device(device), &xs, true).unwrap();
        assert_eq!(out.student_output.device(), device);
        assert_eq!(out.teacher_output.device(), device, "the teacher's output moves to the student's device");
        for (name, pair) in [("f1", &out.f1), ("f2", &out.f2), ("f3", &out.f3), ("kd", &out.kd)] {
            assert_eq!((pair.student.device(), pair.teacher.device()), (device, device), "pair {name}");
        }
        let loss = out.loss();
        assert_eq!(loss.device(), device);
        let value = f64::try_from(&loss).unwrap();
        assert!(value.is_finite() && value > 0.0, "{device:?}: loss {value}");
        loss.backward();
        for (name, variable) in svs.variables() {
            assert_eq!(variable.device(), device, "{name}");
            if name.starts_with("kd.f2") || name.starts_with("kd.f3") {
                assert!(variable.grad().defined(), "{device:?}: the adapter `{name}` got no gradient");
            }
        }
    }
}

#[test]
fn a_teacher_cache_feeds_a_student_on_its_device() {
    let _rng = rng();
    for device in devices("a_teacher_cache_feeds_a_student_on_its_device") {
        let dir = temp_dir(&format!("cache-{}", if device == Device::Cpu { "cpu" } else { "cuda" }));
        let (tvs, teacher, svs, student) = models(device, device, 5);
        let xs = inputs(device);
        let mut mapping = Mapping::new(&student, &teacher);
        mapping.add("features.1.conv", "features.1.conv", "conv").unwrap();
        mapping.add("", "", "logits").unwrap();
        let live = distill(&student, &teacher, mapping);
        // One write batch of every sample, read back in the same order: the same kernels run on the
        // same inputs, so the stored f32 values are the live ones exactly.
        CacheWriter::new(&dir, TeacherHash::of_var_store(&tvs).unwrap())
            .batch_size(6)
            .write(live.distillation(), &teacher, &xs)
            .unwrap();
        let cache = TeacherCache::open(&dir).unwrap();
        let mut mapping = Mapping::new(&student, &cache);
        mapping.add("features.1.conv", "features.1.conv", "conv").unwrap();
        mapping.add("", "", "logits").unwrap();
        let cached = distill(&student, &cache, mapping);
        let batch = cache.batch(&Tensor::arange(6, (Kind::Int64, device)), 0).unwrap();
        let from_cache = cached.forward_cached(&xs, &batch, false).unwrap();
        let from_teacher = live.forward_t(&xs, false).unwrap();
        for ((cs, ct, label), (ls, lt, _)) in from_cache.pairs().zip(from_teacher.pairs()) {
            assert_eq!((cs.device(), ct.device()), (device, device), "{label}");
            assert!(ct.equal(lt), "{device:?}, pair {label}: cached teacher tensors differ from the live ones");
            assert!(cs.equal(ls), "{device:?}, pair {label}");
        }
        assert_eq!(from_cache.teacher_output.device(), device);
        assert!(from_cache.teacher_output.equal(&from_teacher.teacher_output));
        drop(svs);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_training_checkpoint_restores_onto_the_models_device() {
    let _rng = rng();
    for device in devices("a_training_checkpoint_restores_onto_the_models_device") {
        let dir = temp_dir(&format!("checkpoint-{}", if device == Device::Cpu { "cpu" } else { "cuda" }));
        let file = dir.join("run.safetensors");
        let xs = inputs(Device::Cpu);
        let saved = {
            let (_tvs, teacher, svs, student) = models(device, device, 7);
            let kd = DeviceKd::new(svs.root() / "kd", &student, &teacher).unwrap();
            kd.dry_run(&xs.to_device(device)).unwrap();
            Owners::new(&svs, &student)
                .teacher(&teacher)
                .adapters(&(svs.root() / "kd"))
                .save_training(&file, 11)
                .unwrap();
            snapshot(&svs)
        };
        // Restored into models built from another seed, on the same device and on the CPU.
        for target in [device, Device::Cpu] {
            let (_tvs, teacher, svs, student) = models(target, target, 8);
            let kd = DeviceKd::new(svs.root() / "kd", &student, &teacher).unwrap();
            kd.dry_run(&xs.to_device(target)).unwrap();
            let owners = Owners::new(&svs, &student).teacher(&teacher).adapters(&(svs.root() / "kd"));
            assert_eq!(owners.load_training(&file).unwrap().step, 11);
            let restored = snapshot(&svs);
            assert_eq!(restored.len(), saved.len());
            for ((name, a), (_, b)) in restored.iter().zip(&saved) {
                assert_eq!(svs.variables()[name].device(), target, "{name}");
                assert!(a.equal(b), "{device:?} → {target:?}: `{name}` differs after the round trip");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Every variable, on the CPU, by name.
fn snapshot(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut named: Vec<_> = vs.variables().into_iter().map(|(n, t)| (n, t.detach().to_device(Device::Cpu))).collect();
    named.sort_by(|a, b| a.0.cmp(&b.0));
    named
}

#[test]
fn a_model_moves_to_each_device_and_a_missing_gpu_is_an_error() {
    let _rng = rng();
    for device in devices("a_model_moves_to_each_device_and_a_missing_gpu_is_an_error") {
        let (_tvs, teacher, mut svs, student) = models(Device::Cpu, Device::Cpu, 9);
        to_device(&mut svs, device).unwrap();
        assert_eq!(svs.device(), device);
        assert!(svs.variables().values().all(|v| v.device() == device));
        // Variables created after the move (the adapters) are on the device too.
        let kd = DeviceKd::new(svs.root() / "kd", &student, &teacher).unwrap();
        let xs = inputs(Device::Cpu);
        kd.dry_run(&xs).unwrap();
        let out = kd.forward_t_with(&xs.to_device(device), &xs, false).unwrap();
        assert_eq!(out.loss().device(), device);
    }
    // The GPU one past the last this process has (cuda:0 on a machine without GPUs).
    let missing = cuda_device_count();
    let expected = format!("no CUDA device is available as cuda:{missing}: this process sees {missing} CUDA device(s)");
    let (_tvs, _teacher, mut svs, _student) = models(Device::Cpu, Device::Cpu, 9);
    let before = snapshot(&svs);
    let err = to_device(&mut svs, Device::Cuda(missing)).unwrap_err();
    assert!(err.to_string().starts_with(&expected), "{err}");
    assert_eq!(svs.device(), Device::Cpu);
    assert!(snapshot(&svs).iter().zip(&before).all(|((_, a), (_, b))| a.equal(b) && a.device() == Device::Cpu));
    assert!(check_device(Device::Cpu).is_ok());
    let err = distill::jit::Module::load("tests/data/jit/tensor.pt", Device::Cuda(missing)).unwrap_err();
    assert!(
        matches!(err, distill::DistillError::NoCudaDevice { device, available } if device == missing && available == missing)
    );
}
