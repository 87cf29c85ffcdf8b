//! Adapters on string-path endpoints: a TorchScript teacher (outputs by name) and a teacher cache
//! (endpoints by stored name) have no typed modules, and fitted adapters still take their widths —
//! from the dry run of the live teacher, or from a cached batch with the teacher never loaded.
//! Two pairs of different widths, live, cached with the teacher in memory, and cache-only.

use std::path::PathBuf;

use distill::cache::{CacheWriter, TeacherCache, TeacherHash};
use distill::jit;
use distill::nn::{self, ModuleT, VarStore};
use distill::prelude::*;
use tch::{Device, Kind, Tensor};

/// A student narrower than the exported teacher (`tests/data/jit/features.pt`: bn1 has 4
/// channels, conv2 6): 2 and 3 channels, so each pair needs an adapter of its own width.
#[derive(Debug, Distillable)]
struct Narrow {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl Narrow {
    fn new(p: nn::Path) -> Narrow {
        let no_bias = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        Narrow {
            conv1: nn::conv2d(&p / "conv1", 1, 2, 3, no_bias),
            bn1: nn::batch_norm2d(&p / "bn1", 2, Default::default()),
            conv2: nn::conv2d(&p / "conv2", 2, 3, 3, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() }),
            fc: nn::linear(&p / "fc", 3, 3, Default::default()),
        }
    }
}

impl ModuleT for Narrow {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let h = h.apply(&self.conv2).relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        h.apply(&self.fc)
    }
}

distill! {
    /// FitNets hints from a TorchScript teacher's named outputs.
    struct Hints for Narrow => jit::Module {
        block1: fitted_conv1x1_adapter(student.bn1) => teacher["block1"] with Mse;
        conv2: fitted_conv1x1_adapter(student.conv2) => teacher["conv2"] with Mse;
    }
}

distill! {
    /// The same hints over a cache of that teacher: the teacher is never loaded.
    struct CachedHints for Narrow => TeacherCache {
        block1: fitted_conv1x1_adapter(student.bn1) => teacher["block1"] with Mse;
        conv2: fitted_conv1x1_adapter(student.conv2) => teacher["conv2"] with Mse;
    }
}

fn teacher() -> jit::Module {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit/features.pt");
    jit::Module::load(path, Device::Cpu).unwrap()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-string-path-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn inputs() -> Tensor {
    // Deterministic, independent of the global generator (tests run in parallel).
    Tensor::arange(10 * 16 * 16, (Kind::Float, Device::Cpu)).reshape([10, 1, 16, 16]).sin()
}

#[test]
fn fitted_adapters_on_string_paths_train_live_cached_and_cache_only_alike() {
    let teacher = teacher();
    let xs = inputs();
    let vs = VarStore::new(Device::Cpu);
    let student = Narrow::new(vs.root() / "student");

    // Live: the dry run sizes each adapter from the traced outputs, 2 → 4 and 3 → 6 channels, and
    // reports the raw and adapted shapes.
    let live = Hints::new(vs.root() / "hints", &student, &teacher).unwrap();
    let report = live.dry_run(&xs.narrow(0, 0, 2)).unwrap();
    assert_eq!(report.pairs[0].student_raw, [2, 2, 16, 16]);
    assert_eq!(report.pairs[0].student, [2, 4, 16, 16]);
    assert_eq!(report.pairs[1].student_raw, [2, 3, 8, 8]);
    assert_eq!(report.pairs[1].student, [2, 6, 8, 8]);
    assert_eq!(
        report.to_string(),
        "block1: student [2, 2, 16, 16] → [2, 4, 16, 16], teacher [2, 4, 16, 16]\n\
         conv2: student [2, 3, 8, 8] → [2, 6, 8, 8], teacher [2, 6, 8, 8]"
    );

    // A cache of the teacher's two outputs, written by the live distillation's engine.
    let dir = temp_dir("jit");
    CacheWriter::new(&dir, TeacherHash::of_jit(&teacher).unwrap())
        .batch_size(4)
        .write(live.distillation(), &teacher, &xs)
        .unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let list = Tensor::from_slice(&[7i64, 1, 4]);
    let batch = cache.batch(&list, 0).unwrap();
    let picked = xs.index_select(0, &list);

    // Cached, with the teacher in memory: the same pairs as live, bit for bit.
    let from_teacher = live.forward_t(&picked, true).unwrap();
    let cached = live.forward_cached(&picked, &batch, true).unwrap();
    assert!(cached.block1.teacher.equal(&from_teacher.block1.teacher));
    assert!(cached.conv2.teacher.equal(&from_teacher.conv2.teacher));
    assert!(cached.conv2.student.equal(&from_teacher.conv2.student));
    assert_eq!(cached.loss().double_value(&[]), from_teacher.loss().double_value(&[]));

    // Cache-only: `forward_cached` before any dry run says the adapter is not fitted; the dry run
    // from a cached batch fits it with the teacher never run.
    let only_vs = VarStore::new(Device::Cpu);
    let only = CachedHints::new(only_vs.root() / "hints", &student, &cache).unwrap();
    let error = only.forward_cached(&picked, &batch, true).err().unwrap().to_string();
    assert!(error.contains("not fitted yet"), "{error}");
    // (`only.dry_run(&picked)` does not compile: the teacher is a cache.)
    let cached_report = only.dry_run_cached(&picked, &batch).unwrap();
    assert_eq!(cached_report.pairs[0].student, [3, 4, 16, 16]);
    assert_eq!(cached_report.pairs[1].student, [3, 6, 8, 8]);
    // With the live adapters' weights, the cache-only distillation computes the live losses.
    let mut only_vs = only_vs;
    only_vs.copy(&vs).unwrap();
    let from_cache = only.forward_cached(&picked, &batch, true).unwrap();
    assert!(from_cache.block1.student.equal(&from_teacher.block1.student));
    assert!(from_cache.conv2.teacher.equal(&from_teacher.conv2.teacher));
    assert_eq!(from_cache.loss().double_value(&[]), from_teacher.loss().double_value(&[]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_over_a_cache_sizes_its_fitted_adapters_from_a_cached_batch() {
    let teacher = teacher();
    let xs = inputs();
    let vs = VarStore::new(Device::Cpu);
    let student = Narrow::new(vs.root() / "student");
    let dir = temp_dir("config");
    {
        let live = Hints::new(vs.root() / "hints", &student, &teacher).unwrap();
        CacheWriter::new(&dir, TeacherHash::of_jit(&teacher).unwrap())
            .write(live.distillation(), &teacher, &xs)
            .unwrap();
    }
    // The teacher is gone: what follows reads the cache only.
    drop(teacher);
    let cache = TeacherCache::open(&dir).unwrap();

    let text = "[[pair]]\nname = \"block1\"\nstudent = \"bn1\"\nteacher = \"block1\"\n\
                student_adapter = \"fitted_conv1x1_adapter\"\ncriterion = \"Mse\"\n\
                [[pair]]\nname = \"conv2\"\nstudent = \"conv2\"\nteacher = \"conv2\"\n\
                student_adapter = \"fitted_conv1x1_adapter\"\ncriterion = \"Mse\"\n";
    let config = distill::config::Config::parse(text, "hints.toml").unwrap();
    let config_vs = VarStore::new(Device::Cpu);
    let model = config.distill(&(config_vs.root() / "kd"), &student, &cache).unwrap();
    let list = Tensor::from_slice(&[3i64, 9]);
    let batch = cache.batch(&list, 0).unwrap();
    let picked = xs.index_select(0, &list);
    let report = model.dry_run_cached(&picked, &batch).unwrap();
    assert_eq!(
        report.to_string(),
        "block1: student [2, 2, 16, 16] → [2, 4, 16, 16], teacher [2, 4, 16, 16]\n\
                                    conv2: student [2, 3, 8, 8] → [2, 6, 8, 8], teacher [2, 6, 8, 8]"
    );
    let out = model.forward_cached(&picked, &batch, true).unwrap();
    let losses = out.f_losses().unwrap();
    assert_eq!(losses.iter().len(), 2);
    assert!(losses.iter().all(|(_, loss)| loss.double_value(&[]) > 0.0));

    // An adapter that reads the teacher's module has none to read on a cache: an error naming the pair.
    let text = "[[pair]]\nname = \"sel\"\nstudent = \"conv2\"\nteacher = \"conv2\"\n\
                teacher_adapter = \"conv2d_adapter\"\ncriterion = \"Mse\"\n";
    let config = distill::config::Config::parse(text, "sel.toml").unwrap();
    let error = config.distill(&(config_vs.root() / "sel"), &student, &cache).err().unwrap().to_string();
    assert!(error.contains("pair[0].teacher_adapter") && error.contains("conv2d_adapter"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}
