//! Benchmark (e): the distillation step with the teacher read from a teacher cache, against the live
//! step (b), the cross-entropy-only step (the floor: no teacher at all) and the PyTorch-hooks live
//! step (c); and the bytes a cache stores per sample.

use std::path::PathBuf;

use distill::cache::{CacheWriter, Encoding, Manifest, Precision, TeacherCache, TeacherHash};
use distill::prelude::*;
use tch::nn::{self as tnn, VarStore};
use tch::{Kind, Tensor};

use crate::models::Net;
use crate::models::{batch_data, teacher_weights};
use crate::python::Python;
use crate::sides::{leaked_models, sgd, Front, Side, SmallKd};
use crate::summary::{add_ratio, Summary};
use crate::timing::{calibrate, fmt_ms, interleave, time_round};
use crate::Args;

/// The student trained on cross-entropy alone: what a step costs without any teacher.
struct CrossEntropy {
    student: &'static Net,
    opt: tnn::Optimizer,
}

impl Side for CrossEntropy {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let loss = self.student.forward_t(xs, true).cross_entropy_for_logits(ys);
        self.opt.backward_step(&loss);
        loss
    }
}

/// (b)'s step with the teacher side read from a cache of the batch's samples (ids `0..batch`),
/// gathered from memory in the step itself (a prefetching reader would hide even that).
struct Cached {
    kd: SmallKd<'static>,
    cache: TeacherCache,
    ids: Tensor,
    opt: tnn::Optimizer,
    /// The cache's directory: its shards are memory-mapped, so it stays until the side is dropped.
    dir: PathBuf,
}

impl Drop for Cached {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Side for Cached {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let batch = self.cache.batch(&self.ids, 0).expect("ids in the cache");
        let out = self.kd.forward_cached(xs, &batch, true).expect("checked pairs");
        let loss = out.student_output.cross_entropy_for_logits(ys) + out.loss();
        self.opt.backward_step(&loss);
        loss
    }
}

fn cache_dir(batch: i64, name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("distill-bench-cache-{}-{batch}-{name}", std::process::id()))
}

/// The top-k storage of the logits compared in bytes: the top 5 of the classes at T = 4, in f16.
const TOP_K: Encoding = Encoding::top_k(5, 4.0, Precision::F16);

/// The manifest of a cache of (b)'s teacher endpoints over `xs` with f16 features and top-k logits
/// ([`TOP_K`]); the cache itself is only measured, not read (its logits need `TopKKlDiv`, and (b)'s
/// step uses `KlDiv`).
fn top_k_manifest(src: &VarStore, xs: &Tensor) -> Manifest {
    let (teacher, student, svs) = leaked_models(src);
    let kd = SmallKd::new(svs.root() / "kd", student, teacher).expect("valid pairs");
    let dir = cache_dir(xs.size()[0], "top-k");
    let _ = std::fs::remove_dir_all(&dir);
    let hash = TeacherHash::of_var_store(src).expect("hashable weights");
    let report = CacheWriter::new(&dir, hash)
        .encoding(Encoding::F16)
        .endpoint_encoding("", TOP_K)
        .write(kd.distillation(), teacher, xs)
        .expect("cache written");
    let _ = std::fs::remove_dir_all(&dir);
    report.manifest
}

/// Bytes per sample of the teacher's logits (the endpoint `""`).
fn logits_bytes(manifest: &Manifest) -> usize {
    manifest.endpoints.iter().filter(|e| e.path.is_empty()).map(|e| e.encoding.bytes_per_sample(&e.shape)).sum()
}

/// Writes the cache of (b)'s teacher endpoints over `xs` and builds the cached side.
fn cached_side(src: &VarStore, xs: &Tensor, encoding: Encoding) -> Cached {
    let (teacher, student, svs) = leaked_models(src);
    let kd = SmallKd::new(svs.root() / "kd", student, teacher).expect("valid pairs");
    let batch = xs.size()[0];
    let dir = cache_dir(batch, &format!("{encoding:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    let hash = TeacherHash::of_var_store(src).expect("hashable weights");
    CacheWriter::new(&dir, hash).encoding(encoding).write(kd.distillation(), teacher, xs).expect("cache written");
    let cache = TeacherCache::open(&dir).expect("complete cache");
    Cached { kd, cache, ids: Tensor::arange(batch, (Kind::Int64, tch::Device::Cpu)), opt: sgd(svs), dir }
}

fn cross_entropy_side(src: &VarStore) -> CrossEntropy {
    let (_, student, svs) = leaked_models(src);
    CrossEntropy { student, opt: sgd(svs) }
}

pub(crate) fn bench_cache(args: &Args, batch: i64, summary: &mut Summary) {
    let src = teacher_weights();
    let (xs, ys) = batch_data(batch);
    let mut ce = cross_entropy_side(&src);
    let mut live = Front::new(&src);
    let mut cached = cached_side(&src, &xs, Encoding::F32);
    let f16 = cached_side(&src, &xs, Encoding::F16);
    let top_k = top_k_manifest(&src, &xs);
    let bytes = |c: &Cached| c.cache.manifest().bytes_per_sample_view();
    println!(
        "(e) cache  batch {batch:>3}: bytes stored per sample: f32 {} B, f16 {} B, f16 with top-5 f16 logits {} B \
         (logits alone: f32 {} B, top-5 {} B)",
        bytes(&cached),
        bytes(&f16),
        top_k.bytes_per_sample_view(),
        logits_bytes(cached.cache.manifest()),
        logits_bytes(&top_k)
    );
    summary.add(
        "(e′) cache bytes per sample (f32 / f16 / f16 + top-5 logits)",
        batch,
        format!("{} B / {} B / {} B", bytes(&cached), bytes(&f16), top_k.bytes_per_sample_view()),
    );
    let n = calibrate(|| drop(ce.step(&xs, &ys)), args.round_ms);
    for _ in 0..5 {
        drop(cached.step(&xs, &ys));
        drop(live.step(&xs, &ys));
    }
    let mut py = match Python::start(args, batch) {
        Ok(py) => Some(py),
        Err(e) => {
            println!("(e) cache  batch {batch:>3}: Python baseline skipped: {e}");
            None
        }
    };
    let mut run_ce = || time_round(n, || drop(ce.step(&xs, &ys)));
    let mut run_cached = || time_round(n, || drop(cached.step(&xs, &ys)));
    let mut run_live = || time_round(n, || drop(live.step(&xs, &ys)));
    let m = match py.as_mut() {
        Some(py) => {
            let mut run_py = || py.round(n);
            interleave(args.rounds, &mut [&mut run_ce, &mut run_cached, &mut run_live, &mut run_py])
        }
        None => interleave(args.rounds, &mut [&mut run_ce, &mut run_cached, &mut run_live]),
    };
    let to_ce = add_ratio(summary, "(e) cached step / cross-entropy-only step", batch, m[1], m[0]);
    let to_live = add_ratio(summary, "(e) cached step / live `distill!` step", batch, m[1], m[2]);
    print!(
        "(e) cache  batch {batch:>3}: cached {} vs CE-only {} → {to_ce:.3}× (target ≤ 1.15×); vs live {} → {to_live:.3}×",
        fmt_ms(m[1]),
        fmt_ms(m[0]),
        fmt_ms(m[2])
    );
    if let Some(&p) = m.get(3) {
        let to_py = add_ratio(summary, "(e) cached step / PyTorch hooks live step", batch, m[1], p);
        print!(
            "; vs PyTorch hooks live {} → {to_py:.3}×{}",
            fmt_ms(p),
            if batch == 8 { " (target ≤ 0.5×)" } else { "" }
        );
    }
    println!();
}

/// The cached step computes what the live step does (same weights, same first loss); no timing.
pub(crate) fn smoke_test() {
    let src = teacher_weights();
    let (xs, ys) = batch_data(4);
    let mut live = Front::new(&src);
    let mut cached = cached_side(&src, &xs, Encoding::F32);
    for _ in 0..3 {
        let (l, c) = (live.step(&xs, &ys).double_value(&[]), cached.step(&xs, &ys).double_value(&[]));
        assert_eq!(l, c, "the cached step computes another loss than the live one");
    }
    // Ten classes: 40 bytes of f32 logits, 5 × (2 + 4) bytes of top-5 f16 values and i32 indices.
    let top_k = top_k_manifest(&src, &xs);
    assert_eq!((logits_bytes(cached.cache.manifest()), logits_bytes(&top_k)), (40, 30));
}
