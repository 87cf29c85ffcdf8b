//! The teacher cache: cached pairs equal the live teacher's as it ran when the cache was written
//! (exactly in f32, within one f16 rounding in f16) and the live student's, for both front ends;
//! augmentation views replayed for the student, manifest mismatches reported, interrupted and
//! parallel shard writers.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bounds::{self, compare, CHAIN_DEPTH, U_F16, U_F32};
use common::criterion_bounds as magnitude;
use common::Net;
use distill::cache::{Augment, CacheError, CacheWriter, Encoding, Precision, TeacherCache, TeacherHash};
use distill::prelude::*;
use distill::{DistillError, DistillModel, Endpoint};
use tch::{nn::VarStore, Device, Kind, Tensor};

const SAMPLES: i64 = 10;
const SIDE: i64 = 12;

/// Teacher, student and inputs, the same in every process (fixed seed).
struct Setup {
    vs: VarStore,
    teacher: Net,
    student: Net,
    inputs: Tensor,
}

/// Held while a test draws from libtorch's global generator: the tests of this file run in parallel
/// threads, and a draw of one test between another's `manual_seed` and its last draw would give that
/// test other weights than a writer process (or a second `setup`) gets from the same seed.
static GLOBAL_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs `draw` alone on libtorch's global generator (see [`GLOBAL_RNG`]).
fn with_global_rng<T>(draw: impl FnOnce() -> T) -> T {
    let _alone = GLOBAL_RNG.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    draw()
}

fn setup() -> Setup {
    with_global_rng(|| {
        tch::manual_seed(17);
        let teacher_vs = VarStore::new(Device::Cpu);
        let teacher = Net::new(&teacher_vs.root(), &[4, 8, 16], 5);
        let vs = VarStore::new(Device::Cpu);
        let student = Net::new(&(vs.root() / "s"), &[4, 8, 16], 5);
        let inputs = Tensor::randn([SAMPLES, 1, SIDE, SIDE], (Kind::Float, Device::Cpu));
        Setup { vs: teacher_vs, teacher, student, inputs }
    })
}

fn hash(setup: &Setup) -> TeacherHash {
    TeacherHash::of_var_store(&setup.vs).unwrap()
}

/// The pairs every test distills through: a container element, a conv inside it, the logits.
fn mapping<'m, T: distill::side::SideModel>(student: &'m Net, teacher: &'m T) -> Mapping<'m, &'static str> {
    let mut mapping = Mapping::new(student, teacher);
    mapping.add("features.0", "features.0", "block").unwrap();
    mapping.add("features.1.conv", "features.1.conv", "conv").unwrap();
    mapping.add("", "", "logits").unwrap();
    mapping
}

fn writer(dir: &Path, setup: &Setup) -> CacheWriter {
    CacheWriter::new(dir, hash(setup)).shards(2).batch_size(3).views(2, Augment::crop_flip(2)).seed(5)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("distill-cache-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn ids(list: &[i64]) -> Tensor {
    Tensor::from_slice(list)
}

/// The view the teacher saw at write time, computed independently of the cache.
fn live_view(inputs: &Tensor, list: &[i64], view: usize) -> Tensor {
    let augment = Augment::crop_flip(2);
    augment.apply(&inputs.index_select(0, &ids(list)), &augment.draw_batch(5, list, view)).unwrap()
}

/// Rows `list` of what `run` gives (one tensor per output, batch first) when it runs as the writer
/// ran the teacher: on each batch the cache was written in (consecutive ids within each shard, the
/// manifest's write batch size at a time) at `view`.
///
/// This is the exact reference for what a cache stores. A matrix product's row can depend, in its
/// last bit, on the batch it is computed in: MKL's sgemm gives another rounding of the same row at
/// some batch sizes, and more of them on its AVX2 code path (`MKL_CBWR=AVX2` on an AVX-512 machine),
/// so the teacher run on a batch of another composition than the writer's is not a bit-exact
/// reference.
fn as_written(
    cache: &TeacherCache,
    setup: &Setup,
    list: &[i64],
    view: usize,
    run: impl Fn(&Tensor) -> Vec<Tensor>,
) -> Vec<Tensor> {
    let manifest = cache.manifest();
    let size = manifest.write_batch_size.expect("a layout-3 cache records its write batch size");
    let mut outputs: Vec<Vec<Tensor>> = Vec::new();
    for shard in &manifest.shards {
        for start in (shard.start..shard.end).step_by(size) {
            let batch: Vec<i64> = (start..(start + size).min(shard.end)).map(|id| id as i64).collect();
            for (index, output) in run(&live_view(&setup.inputs, &batch, view)).into_iter().enumerate() {
                if outputs.len() <= index {
                    outputs.push(Vec::new());
                }
                outputs[index].push(output);
            }
        }
    }
    // The shards' batches cover the ids in order: their rows concatenated are rows `0..N`.
    outputs.iter().map(|rows| Tensor::cat(rows, 0).index_select(0, &ids(list))).collect()
}

/// The teacher's tensor of each pair of `live`, then its output, on `xs` (the student in evaluation
/// mode: no running statistic moves).
fn teacher_tensors<P>(live: &DistillModel<'_, Net, Net, P>, xs: &Tensor) -> Vec<Tensor> {
    let out = live.forward_t(xs, false).unwrap();
    out.pairs().map(|(_, t, _)| t.shallow_clone()).chain([out.teacher_output.shallow_clone()]).collect()
}

/// The teacher's tensors of `kd`'s three pairs on `xs` (the student in evaluation mode).
fn dsl_teacher_tensors(kd: &CachedKd<'_>, xs: &Tensor) -> Vec<Tensor> {
    let out = kd.forward_t(xs, false).unwrap();
    vec![out.block.teacher, out.conv.teacher, out.logits.teacher]
}

/// `CachedKd`'s total loss on `student`'s tensors of the pairs and the `teacher` tensors given, as
/// the distillation sums it: the pairs' losses in declaration order.
fn dsl_loss(student: [&Tensor; 3], teacher: &[Tensor]) -> f64 {
    let terms = [
        Mse.loss(student[0], &teacher[0]),
        Mse.loss(student[1], &teacher[1]),
        KlDiv::new(4.0).loss(student[2], &teacher[2]),
    ];
    (&terms[0] + &terms[1] + &terms[2]).double_value(&[])
}

/// Half the spacing of f16's subnormals (2⁻²⁴): the rounding of a value below f16's smallest normal.
const F16_SUBNORMAL_ROUNDING: f64 = 2.980_232_238_769_531_2e-8;

/// A cached f16 value is the live f32 value rounded to nearest once: within `u₁₆ · |x|` (u₁₆ = 2⁻¹¹)
/// in f16's normal range, and within half a subnormal step below it. A value off by twice that
/// (a second rounding, or a truncation) is rejected.
fn assert_close_f16(cached: &Tensor, live: &Tensor, what: &str) {
    let bound = |t: &Tensor| t.to_kind(Kind::Double).abs() * U_F16 + F16_SUBNORMAL_ROUNDING;
    let slack = (cached.to_kind(Kind::Double) - live.to_kind(Kind::Double)).abs() - bound(live);
    let worst = slack.max().double_value(&[]);
    assert!(worst <= 0.0, "{what}: a cached f16 value is {worst:e} beyond one f16 rounding of the live one");
    let wrong = live.to_kind(Kind::Double) * (1.0 + 2.0 * U_F16);
    let largest = (wrong - live.to_kind(Kind::Double)).abs() - bound(live);
    assert!(largest.max().double_value(&[]) > 0.0, "{what}: two f16 roundings would pass");
}

// ---- exactness ------------------------------------------------------------------------------

#[test]
fn mapping_pairs_from_the_cache_equal_live_pairs_exactly_in_f32() {
    let setup = setup();
    let dir = temp_dir("mapping-f32");
    writer(&dir, &setup)
        .write(
            distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher)).distillation(),
            &setup.teacher,
            &setup.inputs,
        )
        .unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    cache.check_teacher(&hash(&setup)).unwrap();
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let cached = distill(&setup.student, &cache, mapping(&setup.student, &cache));
    // Batches in another order and composition than they were written in, over 3 epochs of 2 views.
    for (epoch, list) in [(0, vec![7i64, 2, 9]), (1, vec![0, 5, 3, 8]), (2, vec![9, 1])] {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        assert_eq!(batch.view(), epoch % 2);
        let raw = setup.inputs.index_select(0, &ids(&list));
        let xv = live_view(&setup.inputs, &list, epoch % 2);
        let from_cache = cached.forward_cached(&raw, &batch, false).unwrap();
        let from_teacher = live.forward_t(&xv, false).unwrap();
        let written = as_written(&cache, &setup, &list, epoch % 2, |xs| teacher_tensors(&live, xs));
        let pairs = from_cache.pairs().zip(from_teacher.pairs()).zip(&written);
        for (((cs, ct, label), (ls, _, _)), lt) in pairs {
            assert_eq!(ct.size(), lt.size(), "{label}");
            assert!(ct.equal(lt), "epoch {epoch}, pair {label}: teacher tensors differ");
            assert!(cs.equal(ls), "epoch {epoch}, pair {label}: student tensors differ");
        }
        assert!(from_cache.teacher_output.equal(&written[written.len() - 1]));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn mapping_pairs_from_an_f16_cache_are_within_one_f16_rounding() {
    let setup = setup();
    let dir = temp_dir("mapping-f16");
    let live = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let report = writer(&dir, &setup)
        .encoding(Encoding::F16)
        .endpoint_encoding("", Encoding::F32)
        .write(live.distillation(), &setup.teacher, &setup.inputs)
        .unwrap();
    let kinds: Vec<Encoding> = report.manifest.endpoints.iter().map(|e| e.encoding).collect();
    assert_eq!(kinds, [Encoding::F16, Encoding::F16, Encoding::F32]);
    let cache = TeacherCache::open(&dir).unwrap();
    let cached = distill(&setup.student, &cache, mapping(&setup.student, &cache));
    let list = [4i64, 1, 8, 6];
    let batch = cache.batch(&ids(&list), 1).unwrap();
    let from_cache = cached.forward_cached(&setup.inputs.index_select(0, &ids(&list)), &batch, false).unwrap();
    let written = as_written(&cache, &setup, &list, 1, |xs| teacher_tensors(&live, xs));
    for ((_, ct, label), lt) in from_cache.pairs().zip(&written) {
        assert_eq!(ct.kind(), Kind::Float, "{label}: read back as f32");
        assert_close_f16(ct, lt, label);
    }
    // The logits were stored in f32: exact.
    assert!(from_cache.get(2).unwrap().1.equal(&written[2]));
    let _ = std::fs::remove_dir_all(&dir);
}

distill! {
    /// Pairs named by typed paths, read from a cache.
    struct CachedKd for Net => Net {
        block: student.features[0] => teacher.features[0] with Mse;
        conv: student.features[1].conv => teacher.features[1].conv with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

#[test]
fn dsl_pairs_from_the_cache_equal_live_pairs_exactly_in_f32_and_losses_too() {
    let setup = setup();
    let dir = temp_dir("dsl-f32");
    let kd = CachedKd::new(setup.vs.root() / "kd", &setup.student, &setup.teacher).unwrap();
    writer(&dir, &setup).write(kd.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let stored: Vec<&str> = cache.manifest().endpoints.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(stored, ["features.0", "features.1.conv", ""]);
    for (epoch, list) in [(0, vec![3i64, 0, 6]), (3, vec![9, 8, 2, 5])] {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        let from_cache = kd.forward_cached(&setup.inputs.index_select(0, &ids(&list)), &batch, true).unwrap();
        let from_teacher = kd.forward_t(&live_view(&setup.inputs, &list, epoch % 2), true).unwrap();
        let written = as_written(&cache, &setup, &list, epoch % 2, |xs| dsl_teacher_tensors(&kd, xs));
        assert!(from_cache.block.teacher.equal(&written[0]));
        assert!(from_cache.conv.teacher.equal(&written[1]));
        assert!(from_cache.logits.teacher.equal(&written[2]));
        assert!(from_cache.student_output.equal(&from_teacher.student_output));
        let students = [&from_teacher.block.student, &from_teacher.conv.student, &from_teacher.logits.student];
        assert_eq!(from_cache.loss().double_value(&[]), dsl_loss(students, &written));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- top-k logits ---------------------------------------------------------------------------

distill! {
    /// Hinton KD from top-k logits at T = 4, read from a cache.
    struct TopKKd for Net => Net {
        logits: student => teacher with TopKKlDiv::new(4.0);
    }
}

distill! {
    /// Top-k KD at another temperature than the cache's.
    struct TopKKdAtTwo for Net => Net {
        logits: student => teacher with TopKKlDiv::new(2.0);
    }
}

distill! {
    /// Hinton KD on live logits, the reference.
    struct LiveKd for Net => Net {
        logits: student => teacher with KlDiv::new(4.0);
    }
}

/// A cache of the teacher's logits only, stored as top `k` at temperature 4.
fn top_k_cache(name: &str, setup: &Setup, k: i64, values: Precision) -> (PathBuf, TeacherCache) {
    let dir = temp_dir(name);
    let kd = TopKKd::new(setup.vs.root() / "topk", &setup.student, &setup.teacher).unwrap();
    writer(&dir, setup)
        .endpoint_encoding("", Encoding::top_k(k, 4.0, values))
        .write(kd.distillation(), &setup.teacher, &setup.inputs)
        .unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    (dir, cache)
}

#[test]
fn a_top_k_cache_of_every_class_gives_the_full_kl_divergence() {
    let setup = setup();
    let (dir, cache) = top_k_cache("topk-all", &setup, 5, Precision::F32);
    let kd = TopKKd::new(setup.vs.root() / "topk", &setup.student, &setup.teacher).unwrap();
    let live = LiveKd::new(setup.vs.root() / "live", &setup.student, &setup.teacher).unwrap();
    for (epoch, list) in [(0, vec![6i64, 1, 3]), (1, vec![2, 9, 0, 5])] {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        let from_cache = kd.forward_cached(&setup.inputs.index_select(0, &ids(&list)), &batch, false).unwrap();
        let from_teacher = live.forward_t(&live_view(&setup.inputs, &list, epoch % 2), false).unwrap();
        assert_eq!(from_cache.logits.teacher.size(), [list.len() as i64, 2, 5], "the packed [B, 2, k] tensor");
        assert_eq!(from_cache.logits.teacher.kind(), Kind::Float);
        let (cached, full) = (from_cache.loss().double_value(&[]), from_teacher.loss().double_value(&[]));
        assert!(full > 1e-4, "a loss that can tell a difference: {full}");
        // The cache adds nothing: its packed tensor is the encoding of the logits the teacher gave
        // when the cache was written, bit for bit.
        let written = as_written(&cache, &setup, &list, epoch % 2, |xs| vec![setup.teacher.forward_t(xs, false)]);
        let by_hand = TopKLogits::new(5, 4.0).f_encode(&written[0]).unwrap();
        let live_logits = &from_teacher.logits.teacher;
        assert!(from_cache.logits.teacher.equal(&by_hand), "epoch {epoch}: the stored top-5 differ");
        // KlDiv and TopKKlDiv compute the same sum in another order: each is within `depth · u · M`
        // of the exact value, `M` the magnitude of the KL's terms (`common::criterion_bounds`).
        let (s, t) = (from_teacher.logits.student.to_kind(Kind::Double), live_logits.to_kind(Kind::Double));
        let depth = CHAIN_DEPTH + bounds::sum_depth(s.numel());
        let bound = 2.0 * depth * U_F32 * magnitude::softmax_pair(&s, &t, 4.0);
        let c = compare(&[cached], &[full], |_| bound);
        assert!(c.passes(), "epoch {epoch}: top-5 of 5 classes vs KlDiv {c}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The error the f16 rounding of the stored log-probabilities `v_k = log p_k` (each by at most
/// `δ_k = u₁₆|v_k|` plus half a subnormal step) makes in the top-k loss, to first order, plus the
/// f32 rounding of the two computations. The loss's derivative in `v_k` is
/// `T²/N · p_k · ((v_k − log q_k) − (log p_o − log q_o))` (through `p_k` and the rest bucket's
/// `p_o = 1 − Σ p_k`), so the bound is `T²/N · Σ p_k |…| δ_k`.
fn f16_values_bound(student: &Tensor, packed: &Tensor, temperature: f64) -> f64 {
    let (s, packed) = (student.to_kind(Kind::Double), packed.to_kind(Kind::Double));
    let (n, t) = (s.size()[0] as f64, temperature);
    let v = packed.select(1, 0);
    let indices = packed.select(1, 1).to_kind(Kind::Int64);
    let z = &s / t;
    let lse = z.logsumexp([1], true);
    let log_q = z.gather(1, &indices, false) - &lse;
    let p = v.exp();
    let p_other = (-p.sum_dim_intlist(1, true, Kind::Double) + 1.0).clamp_min(f64::MIN_POSITIVE);
    let log_q_other = z.scatter_value(1, &indices, f64::NEG_INFINITY).logsumexp([1], true) - &lse;
    let slope = &p * ((&v - log_q) - (p_other.log() - log_q_other)).abs();
    let delta = v.abs() * U_F16 + F16_SUBNORMAL_ROUNDING;
    let f16 = t * t / n * (slope * delta).sum(Kind::Double).double_value(&[]);
    let depth = CHAIN_DEPTH + bounds::sum_depth(s.numel());
    f16 + 2.0 * depth * U_F32 * magnitude::top_k_kl(&s, &packed, t)
}

/// The top-2 loss from the cache and from the live logits encoded by hand, for `values`, the bound
/// on their difference, and the loss with the hand-encoded values rounded to bfloat16 instead (a
/// mistake: 8 bits of mantissa, 8× f16's rounding).
fn top_two_losses(name: &str, values: Precision) -> Vec<(f64, f64, f64, f64)> {
    let setup = setup();
    let (dir, cache) = top_k_cache(name, &setup, 2, values);
    let mut mapping = Mapping::new(&setup.student, &cache);
    mapping.add("", "", TopKKlDiv::new(4.0)).unwrap();
    let cached = distill(&setup.student, &cache, mapping);
    let mut losses = Vec::new();
    for (epoch, list) in [(0, vec![8i64, 4, 7]), (3, vec![1, 0, 9, 2, 6])] {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        let out = cached.forward_cached(&setup.inputs.index_select(0, &ids(&list)), &batch, false).unwrap();
        let (student, packed, criterion) = out.get(0).unwrap();
        let (student, packed) = (student.tensor(), packed.tensor());
        let written = as_written(&cache, &setup, &list, epoch % 2, |xs| vec![setup.teacher.forward_t(xs, false)]);
        let by_hand = TopKLogits::new(2, 4.0).f_encode(&written[0]).unwrap();
        assert!(packed.select(1, 1).equal(&by_hand.select(1, 1)), "the class indices are exact");
        if values == Precision::F32 {
            assert!(packed.equal(&by_hand), "f32 log-probabilities are exact");
        } else {
            assert_close_f16(&packed.select(1, 0), &by_hand.select(1, 0), "f16 log-probabilities");
        }
        let from_cache = criterion.f_loss(student, packed).unwrap().double_value(&[]);
        let expected = TopKKlDiv::new(4.0).f_loss(student, &by_hand).unwrap().double_value(&[]);
        assert!(expected > 1e-4, "a loss that can tell a difference: {expected}");
        let log_p = by_hand.select(1, 0).to_kind(Kind::BFloat16).to_kind(Kind::Float);
        let bf16 = Tensor::stack(&[log_p, by_hand.select(1, 1)], 1);
        let coarse = TopKKlDiv::new(4.0).f_loss(student, &bf16).unwrap().double_value(&[]);
        losses.push((from_cache, expected, f16_values_bound(student, &by_hand, 4.0), coarse));
    }
    let _ = std::fs::remove_dir_all(&dir);
    losses
}

#[test]
fn a_top_k_cache_of_fewer_classes_gives_top_k_kl_on_the_live_logits() {
    for (cached, expected, _, _) in top_two_losses("topk-2-f32", Precision::F32) {
        assert_eq!(cached, expected, "f32 values: exactly");
    }
    // The loss is a difference of nearby terms, so the values' 2⁻¹¹ rounding grows in it: within
    // the first-order bound of `f16_values_bound`, which values rounded to bfloat16 exceed.
    for (cached, expected, bound, bf16) in top_two_losses("topk-2-f16", Precision::F16) {
        let c = compare(&[cached], &[expected], |_| bound);
        eprintln!("f16 top-2 loss: {c} (relative bound {:e})", bound / expected);
        assert!(c.passes(), "f16 values: {c}");
        let wrong = compare(&[bf16], &[expected], |_| bound);
        eprintln!("bfloat16 top-2 loss: {wrong}");
        assert!(!wrong.passes(), "bfloat16 values pass: {wrong}");
    }
}

#[test]
fn top_k_logits_read_at_another_temperature_or_not_as_top_k_are_a_mismatch() {
    let setup = setup();
    let (dir, cache) = top_k_cache("topk-mismatch", &setup, 3, Precision::F32);
    let list = [0i64, 1];
    let raw = setup.inputs.index_select(0, &ids(&list));
    let batch = cache.batch(&ids(&list), 0).unwrap();
    let mismatch = |error: DistillError| match error {
        DistillError::CacheMismatch { what, cached, expected, .. } => (what, cached, expected),
        other => panic!("expected a cache mismatch, got {other}"),
    };
    let at_two = TopKKdAtTwo::new(setup.vs.root() / "two", &setup.student, &setup.teacher).unwrap();
    let (what, cached, expected) = mismatch(at_two.forward_cached(&raw, &batch, false).err().unwrap());
    assert!(what.contains("the teacher's own output") && what.contains("`logits`"), "{what}");
    assert!(cached.contains("temperature 4"), "{cached}");
    assert!(expected.contains("temperature 2"), "{expected}");
    let full = LiveKd::new(setup.vs.root() / "live", &setup.student, &setup.teacher).unwrap();
    let (what, cached, expected) = mismatch(full.forward_cached(&raw, &batch, false).err().unwrap());
    assert!(what.contains("`logits`"), "{what}");
    assert!(cached.contains("top 3 logits at temperature 4"), "{cached}");
    assert!(expected.contains("the teacher's tensor as it is"), "{expected}");
    // The dynamic front end, with criterion payloads: the distillation they build checks them.
    let mut mapping = Mapping::new(&setup.student, &cache);
    mapping.add("", "", KlDiv::new(4.0)).unwrap();
    let (what, _, expected) = mismatch(Distillation::from_mapping(&setup.student, mapping).err().unwrap());
    assert!(
        what.contains("the teacher's own output") && expected.contains("the teacher's tensor as it is"),
        "{what}: {expected}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_k_storage_needs_logits_and_counts_k_values_and_indices_per_sample() {
    let setup = setup();
    let dir = temp_dir("topk-features");
    let kd = CachedKd::new(setup.vs.root() / "kd", &setup.student, &setup.teacher).unwrap();
    let error = writer(&dir, &setup)
        .endpoint_encoding("features.0", Encoding::top_k(2, 4.0, Precision::F32))
        .write(kd.distillation(), &setup.teacher, &setup.inputs)
        .err()
        .unwrap();
    assert!(
        matches!(&error, DistillError::Cache(CacheError::TopKNeedsLogits { path, .. }) if path == "features.0")
            && error.to_string().contains("`features.0`")
            && error.to_string().contains("[N, C]"),
        "{error}"
    );
    let _ = std::fs::remove_dir_all(&dir);

    let (dir, cache) = top_k_cache("topk-bytes", &setup, 2, Precision::F16);
    let entry = &cache.manifest().endpoints[0];
    assert_eq!(entry.shape, [5], "the manifest keeps the class count");
    assert_eq!(entry.encoding, Encoding::TopK { k: 2, temperature: 4.0, values: Precision::F16 });
    assert_eq!(cache.manifest().bytes_per_sample_view(), 2 * 2 + 2 * 4, "two f16 values and two i32 indices");
    let shard = Tensor::read_safetensors(dir.join(&cache.manifest().shards[0].file)).unwrap();
    let kinds: Vec<(String, Kind, Vec<i64>)> =
        shard.iter().filter(|(n, _)| n.starts_with("endpoint")).map(|(n, t)| (n.clone(), t.kind(), t.size())).collect();
    assert!(kinds.contains(&("endpoint.0".to_owned(), Kind::Half, vec![5, 2, 2])), "{kinds:?}");
    assert!(kinds.contains(&("endpoint.0.indices".to_owned(), Kind::Int, vec![5, 2, 2])), "{kinds:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cache_of_the_first_layout_version_still_reads() {
    let setup = setup();
    let dir = temp_dir("format-1");
    let kd = CachedKd::new(setup.vs.root() / "kd", &setup.student, &setup.teacher).unwrap();
    writer(&dir, &setup).write(kd.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let path = dir.join("manifest.json");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("\"format\": 3"));
    let expected = TeacherCache::open(&dir).unwrap().batch(&ids(&[2, 7]), 1).unwrap().endpoint("").unwrap().copy();
    // As version 1 wrote it: shards without metadata (no checksum, no manifest hash), a manifest
    // without the fields version 3 added.
    for shard in ["shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"] {
        let tensors = Tensor::read_safetensors(dir.join(shard)).unwrap();
        Tensor::write_safetensors(&tensors, dir.join(shard)).unwrap();
    }
    let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
    manifest["format"] = 1.into();
    for field in ["inputs", "teacher_mode", "write_batch_size"] {
        manifest.as_object_mut().unwrap().remove(field);
    }
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    assert_eq!(cache.manifest().format, 1);
    assert!(cache.batch(&ids(&[2, 7]), 1).unwrap().endpoint("").unwrap().equal(&expected));
    std::fs::write(&path, text.replace("\"format\": 3", "\"format\": 4")).unwrap();
    assert!(matches!(TeacherCache::open(&dir), Err(DistillError::Cache(CacheError::File { .. }))));
    // A manifest that is not JSON: the parser's error is the source, not only a string.
    std::fs::write(&path, "{ not json").unwrap();
    let err = TeacherCache::open(&dir).err().unwrap();
    let source = std::error::Error::source(&err).and_then(|e| e.downcast_ref::<serde_json::Error>());
    assert!(source.is_some_and(serde_json::Error::is_syntax), "{err:?}");
    // One that cannot be read: the operating system's error.
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let err = TeacherCache::open(&dir).err().unwrap();
    assert!(std::error::Error::source(&err).is_some_and(|e| e.is::<std::io::Error>()), "{err:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- the teacher not in memory ---------------------------------------------------------------

distill! {
    /// The pairs of `CachedKd`, with the teacher side a cache: string paths, checked against the
    /// manifest by `new()`.
    struct FromCacheKd for Net => TeacherCache {
        block: student.features[0] => teacher["features.0"] with Mse;
        conv: student.features[1].conv => teacher["features.1.conv"] with Mse;
        logits: student => teacher with KlDiv::new(4.0);
    }
}

#[test]
fn a_distill_model_over_a_cache_trains_without_the_teacher_and_equals_the_live_one() {
    let setup = setup();
    let dir = temp_dir("dsl-no-teacher");
    let live = CachedKd::new(setup.vs.root() / "kd", &setup.student, &setup.teacher).unwrap();
    writer(&dir, &setup).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let kd = FromCacheKd::new(setup.vs.root() / "kd-cache", &setup.student, &cache).unwrap();
    for (epoch, list) in [(0, vec![5i64, 2, 8]), (1, vec![0, 9, 4, 1])] {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        let from_cache = kd.forward_cached(&setup.inputs.index_select(0, &ids(&list)), &batch, true).unwrap();
        let from_teacher = live.forward_t(&live_view(&setup.inputs, &list, epoch % 2), true).unwrap();
        let written = as_written(&cache, &setup, &list, epoch % 2, |xs| dsl_teacher_tensors(&live, xs));
        assert!(from_cache.block.teacher.equal(&written[0]));
        assert!(from_cache.block.student.equal(&from_teacher.block.student));
        assert!(from_cache.conv.teacher.equal(&written[1]));
        assert!(from_cache.logits.teacher.equal(&written[2]));
        assert!(from_cache.student_output.equal(&from_teacher.student_output));
        let block = Mse.loss(&from_teacher.block.student, &written[0]).double_value(&[]);
        assert_eq!(from_cache.block.loss().double_value(&[]), block);
        let students = [&from_teacher.block.student, &from_teacher.conv.student, &from_teacher.logits.student];
        assert_eq!(from_cache.loss().double_value(&[]), dsl_loss(students, &written));
    }
    // The cache cannot run as a teacher: `kd.forward_t` does not compile
    // (tests/ui/dsl_cache_teacher_has_no_forward.rs).
    let _ = std::fs::remove_dir_all(&dir);
}

distill! {
    /// A string path the cache does not store.
    struct TypoKd for Net => TeacherCache {
        block: student.features[0] => teacher["features.O"] with Mse;
    }
}

#[test]
fn a_string_path_the_cache_does_not_store_is_an_error_from_new() {
    let setup = setup();
    let dir = temp_dir("dsl-no-teacher-typo");
    let live = CachedKd::new(setup.vs.root() / "kd", &setup.student, &setup.teacher).unwrap();
    writer(&dir, &setup).write(live.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let error = TypoKd::new(setup.vs.root() / "typo", &setup.student, &cache).err().unwrap().to_string();
    assert!(error.contains("`features.O` (output) is not stored (did you mean `features.0`?"), "{error}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- augmentation replay --------------------------------------------------------------------

#[test]
fn the_students_replayed_view_is_the_view_the_teacher_saw() {
    let setup = setup();
    let dir = temp_dir("replay");
    let mut inputs = Mapping::new(&setup.student, &setup.teacher);
    inputs.add(Endpoint::root().input(), Endpoint::root().input(), ()).unwrap();
    let engine = distill(&setup.student, &setup.teacher, inputs);
    CacheWriter::new(&dir, hash(&setup))
        .views(3, Augment::crop_flip(2))
        .seed(5)
        .write(engine.distillation(), &setup.teacher, &setup.inputs)
        .unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let list = [2i64, 7, 4, 9, 0, 1];
    let raw = setup.inputs.index_select(0, &ids(&list));
    let mut seen = Vec::new();
    for epoch in 0..6 {
        let batch = cache.batch(&ids(&list), epoch).unwrap();
        assert_eq!(batch.view(), epoch % 3, "epoch e reads view e mod V");
        let teacher_saw = batch.endpoint_input("").unwrap();
        assert!(batch.replay(&raw).unwrap().equal(teacher_saw), "epoch {epoch}");
        // The crop box and flip by hand: zero-pad by 2, take SIDE × SIDE at (top, left), mirror.
        let params = Vec::<i64>::try_from(batch.view_params().reshape([-1])).unwrap();
        for (i, p) in params.chunks(3).enumerate() {
            assert!((0..=4).contains(&p[0]) && (0..=4).contains(&p[1]) && (0..=1).contains(&p[2]));
            let padded = raw.get(i as i64).constant_pad_nd([2, 2, 2, 2]);
            let mut expected = padded.narrow(1, p[0], SIDE).narrow(2, p[1], SIDE);
            if p[2] == 1 {
                expected = expected.flip([2]);
            }
            assert!(teacher_saw.get(i as i64).equal(&expected), "sample {}, view {}", list[i], epoch % 3);
        }
        seen.push(params);
    }
    assert_eq!(seen[0], seen[3], "epochs 0 and 3 read the same view");
    assert_ne!(seen[0], seen[1], "views differ");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- mismatches -----------------------------------------------------------------------------

fn mismatch_what(error: DistillError) -> String {
    match error {
        DistillError::CacheMismatch { what, .. } => what,
        other => panic!("expected a cache mismatch, got {other}"),
    }
}

#[test]
fn a_cache_of_other_teacher_weights_is_a_mismatch() {
    let setup = setup();
    let dir = temp_dir("other-weights");
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let student_hash = TeacherHash::of_tensors(setup.student.features.get(0).map(|b| ("w", &b.conv.ws))).unwrap();
    let error = cache.check_teacher(&student_hash).unwrap_err();
    assert!(error.to_string().contains(&student_hash.to_string()), "{error}");
    assert_eq!(mismatch_what(error), "the teacher weights' hash");
    // A writer of other weights into the same directory refuses to mix them in.
    let error = CacheWriter::new(&dir, student_hash)
        .shards(2)
        .batch_size(3)
        .views(2, Augment::crop_flip(2))
        .seed(5)
        .shard(1)
        .write(engine.distillation(), &setup.teacher, &setup.inputs);
    std::fs::remove_file(dir.join("shard-00001-of-00002.safetensors")).unwrap();
    let error = error.err().map(mismatch_what);
    // Shard 1 was complete: skipped, and the configuration compared with the manifest.
    assert_eq!(error.as_deref(), Some("the teacher weights' hash"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_endpoint_the_cache_does_not_store_is_a_mismatch_naming_it() {
    let setup = setup();
    let dir = temp_dir("other-endpoint");
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    // The dynamic API: checked when the pair is added.
    let mut other = Mapping::new(&setup.student, &cache);
    let error = other.add("features.1", "features.1", ()).unwrap_err();
    assert!(error.to_string().contains("`features.0` (output), `features.1.conv` (output)"), "{error}");
    assert_eq!(mismatch_what(error), "the teacher endpoint `features.1` (output)");
    // By reference: a cache has no modules.
    assert!(matches!(
        other.add("features.0", &setup.teacher.stem, ()),
        Err(DistillError::Cache(CacheError::NoModules))
    ));
    // The typed front end: checked by the cached forward.
    distill! {
        struct OtherKd for Net => Net {
            bn: student.features[1].bn => teacher.features[1].bn with Mse;
        }
    }
    let kd = OtherKd::new(setup.vs.root() / "other", &setup.student, &setup.teacher).unwrap();
    let batch = cache.batch(&ids(&[0, 1]), 0).unwrap();
    let error = kd.forward_cached(&setup.inputs.narrow(0, 0, 2), &batch, true).unwrap_err();
    assert_eq!(mismatch_what(error), "the teacher endpoint `features.1.bn` (output)");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inputs_of_another_shape_are_a_mismatch() {
    let setup = setup();
    let dir = temp_dir("other-shape");
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    assert_eq!(cache.manifest().input_shape, [1, SIDE, SIDE]);
    assert_eq!(cache.manifest().endpoints[1].shape, [16, SIDE, SIDE]);
    let cached = distill(&setup.student, &cache, mapping(&setup.student, &cache));
    let batch = cache.batch(&ids(&[0, 1]), 0).unwrap();
    let wider = with_global_rng(|| Tensor::randn([2, 1, SIDE + 4, SIDE + 4], (Kind::Float, Device::Cpu)));
    let error = cached.forward_cached(&wider, &batch, false).unwrap_err();
    assert!(error.to_string().contains("[2, 1, 12, 12] in the cache, [2, 1, 16, 16] here"), "{error}");
    assert_eq!(mismatch_what(error), "the input batch's shape (the batch's samples, then each sample's input shape)");
    // Sample ids outside the cache.
    assert!(matches!(
        cache.batch(&ids(&[3, SAMPLES]), 0),
        Err(DistillError::Cache(CacheError::SampleNotCached { .. }))
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- shard writers in other processes ------------------------------------------------------

/// Runs this test binary's `shard_writer_process` test as a child writing into `dir`.
fn spawn_writer(dir: &Path, shard: Option<usize>, die_at: Option<i64>) -> std::process::Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command.args(["--exact", "shard_writer_process", "--nocapture", "--test-threads", "1"]);
    command.env("DISTILL_CACHE_WRITER_DIR", dir);
    if let Some(shard) = shard {
        command.env("DISTILL_CACHE_WRITER_SHARD", shard.to_string());
    }
    if let Some(id) = die_at {
        command.env("DISTILL_CACHE_WRITER_DIE_AT", id.to_string());
    }
    command.stdout(std::process::Stdio::null()).spawn().unwrap()
}

/// A writer process, when run by `spawn_writer`; nothing otherwise. With `DIE_AT`, the process
/// exits while loading the batch holding that sample id, as a crash mid-shard would.
#[test]
fn shard_writer_process() {
    let Some(dir) = std::env::var_os("DISTILL_CACHE_WRITER_DIR") else { return };
    let setup = setup();
    let shard = std::env::var("DISTILL_CACHE_WRITER_SHARD").ok().map(|s| s.parse::<usize>().unwrap());
    let die_at = std::env::var("DISTILL_CACHE_WRITER_DIE_AT").ok().map(|s| s.parse::<i64>().unwrap());
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let mut writer = writer(Path::new(&dir), &setup);
    if let Some(shard) = shard {
        writer = writer.shard(shard);
    }
    writer
        .write_with(engine.distillation(), &setup.teacher, SAMPLES as usize, |list| {
            if die_at.is_some_and(|id| list.contains(&id)) {
                std::process::exit(3);
            }
            Ok(setup.inputs.index_select(0, &ids(list)))
        })
        .unwrap();
}

fn files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (entry.file_name().to_string_lossy().into_owned(), std::fs::read(entry.path()).unwrap())
        })
        .collect();
    files.sort();
    files
}

/// The cache written by one writer in this process.
fn reference_cache(name: &str) -> (PathBuf, Vec<(String, Vec<u8>)>) {
    let setup = setup();
    let dir = temp_dir(name);
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let report = writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!(report.written, [0, 1]);
    let files = files(&dir);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["manifest.json", "shard-00000-of-00002.safetensors", "shard-00001-of-00002.safetensors"]);
    (dir, files)
}

#[test]
fn two_shard_writers_in_separate_processes_give_the_same_cache_as_one_writer() {
    let (reference, expected) = reference_cache("one-writer");
    let dir = temp_dir("two-processes");
    let mut children = [spawn_writer(&dir, Some(1), None), spawn_writer(&dir, Some(0), None)];
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    assert!(files(&dir) == expected, "the two processes' cache differs from one writer's");
    TeacherCache::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&reference);
}

#[test]
fn a_writer_killed_mid_shard_then_rerun_gives_a_complete_correct_cache() {
    let (reference, expected) = reference_cache("uninterrupted");
    let dir = temp_dir("killed");
    // Dies loading the second batch of shard 1 (samples 5..10, batches of 3).
    let status = spawn_writer(&dir, None, Some(8)).wait().unwrap();
    assert_eq!(status.code(), Some(3));
    // What a crash inside the shard's own write would leave: a partial temporary file.
    std::fs::write(dir.join("shard-00001-of-00002.safetensors.tmp-999999"), b"partial").unwrap();
    let error = TeacherCache::open(&dir).unwrap_err();
    assert!(matches!(error, DistillError::Cache(CacheError::Incomplete { shard: 1, shards: 2, .. })), "{error}");
    assert!(error.to_string().contains("shard 1 of 2"), "{error}");
    assert!(error.to_string().ends_with("run the writer with shard 1 of 2"), "{error}");
    let shard0 = std::fs::read(dir.join("shard-00000-of-00002.safetensors")).unwrap();
    // The rerun writes only the missing shard and clears the partial file.
    let setup = setup();
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let report = writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!((report.written, report.skipped), (vec![1], vec![0]));
    assert_eq!(std::fs::read(dir.join("shard-00000-of-00002.safetensors")).unwrap(), shard0);
    assert!(files(&dir) == expected, "the completed cache differs from an uninterrupted one");
    TeacherCache::open(&dir).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&reference);
}

#[test]
fn prefetched_batches_equal_direct_batches_in_the_loaders_order() {
    let setup = setup();
    let dir = temp_dir("prefetch");
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    let cache = TeacherCache::open(&dir).unwrap();
    let order = with_global_rng(|| Tensor::randperm(SAMPLES, (Kind::Int64, Device::Cpu)));
    let batches: Vec<Tensor> = order.split(4, 0);
    let prefetched: Vec<_> = cache.prefetch(batches.iter().map(Tensor::shallow_clone).collect(), 1, 2).collect();
    assert_eq!(prefetched.len(), batches.len());
    for (batch, list) in prefetched.into_iter().zip(&batches) {
        let batch = batch.unwrap();
        let direct = cache.batch(list, 1).unwrap();
        assert!(batch.ids().equal(list));
        for path in ["features.0", "features.1.conv", ""] {
            assert!(batch.endpoint(path).unwrap().equal(direct.endpoint(path).unwrap()), "{path}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_teacher_hash_depends_on_every_weight_and_not_on_order() {
    let (a, b) = (setup(), setup());
    assert_eq!(hash(&a), hash(&b), "same seed, same weights");
    assert!(hash(&a).as_str().starts_with("sha256:") && hash(&a).as_str().len() == 7 + 64);
    let named = a.vs.variables();
    let mut forward: Vec<(&String, &Tensor)> = named.iter().collect();
    forward.sort_by(|x, y| x.0.cmp(y.0));
    let backward: Vec<(&String, &Tensor)> = forward.iter().rev().copied().collect();
    assert_eq!(TeacherHash::of_tensors(forward).unwrap(), TeacherHash::of_tensors(backward).unwrap());
    let _ = tch::no_grad(|| b.teacher.classifier.ws.get(0).get(0).f_add_(&Tensor::from(1e-6)).unwrap());
    assert_ne!(hash(&a), hash(&b), "one changed weight changes the hash");
}

#[test]
fn a_torchscript_teachers_hash_is_that_of_its_parameters() {
    let pt = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit/features.pt");
    let module = distill::jit::Module::load(&pt, Device::Cpu).unwrap();
    let hash = TeacherHash::of_jit(&module).unwrap();
    assert_eq!(hash, TeacherHash::of_jit(&distill::jit::Module::load(&pt, Device::Cpu).unwrap()).unwrap());
    assert_ne!(hash, TeacherHash::of_file(&pt).unwrap(), "parameters, not the file's bytes");
}

/// Named tensors built without a random generator, of several kinds and shapes (a matrix, a
/// vector, an empty tensor, booleans, half floats and a one-byte scalar), for a hash pinned below.
fn fixed_tensors() -> Vec<(&'static str, Tensor)> {
    vec![
        ("block.weight", Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]) / 7.0),
        ("block.bias", Tensor::from_slice(&[0.5f64, -1.25])),
        ("block.steps", Tensor::from_slice(&[3i64, -4, 5])),
        ("empty", Tensor::zeros([0, 4], (Kind::Float, Device::Cpu))),
        ("mask", Tensor::from_slice(&[true, false, true])),
        ("half", Tensor::from_slice(&[1.5f32, -2.0, 65504.0]).to_kind(Kind::Half)),
        ("flag", Tensor::from(7u8)),
    ]
}

#[test]
fn the_teacher_hash_of_a_fixed_store_is_what_earlier_releases_computed() {
    // Pinned: a cache records this hash in its manifest, so a change to how a store is hashed would
    // make every existing cache a mismatch for its own teacher.
    let tensors = fixed_tensors();
    let hash = TeacherHash::of_tensors(tensors.iter().map(|(name, tensor)| (*name, tensor))).unwrap();
    assert_eq!(hash.as_str(), "sha256:63f2497ab52213786caf21e8ca93a9f19fce145724ff8d81f373ce833269706a");
}

#[test]
fn a_store_with_a_learnable_scalar_hashes_and_the_scalar_counts() {
    let store = |value: f64| {
        let vs = VarStore::new(Device::Cpu);
        let _ = vs.root().var("scale", &[], tch::nn::Init::Const(value));
        let _ = vs.root().var("weight", &[2, 2], tch::nn::Init::Const(0.25));
        vs
    };
    let (a, b, c) = (store(1.5), store(1.5), store(2.5));
    let hash = TeacherHash::of_var_store(&a).unwrap();
    assert_eq!(hash, TeacherHash::of_var_store(&b).unwrap(), "same variables, same hash");
    assert_ne!(hash, TeacherHash::of_var_store(&c).unwrap(), "the scalar's value is hashed");
    // The scalar's shape is hashed too: the same value as a 1-element vector is another store.
    let scalar = Tensor::from(1.5f32);
    let vector = Tensor::from_slice(&[1.5f32]);
    assert_ne!(
        TeacherHash::of_tensors([("scale", &scalar)]).unwrap(),
        TeacherHash::of_tensors([("scale", &vector)]).unwrap()
    );
    // Scalars of every width: doubles, 64-bit integers, half floats.
    for kind in [Kind::Double, Kind::Int64, Kind::Half, Kind::BFloat16] {
        let scalar = Tensor::from(3.0f32).to_kind(kind);
        assert!(TeacherHash::of_tensors([("s", &scalar)]).is_ok(), "{kind:?}");
    }
}

#[test]
fn a_shard_truncated_after_it_was_written_is_written_again_by_a_rerun() {
    let (dir, expected) = reference_cache("truncated-after");
    let shard1 = dir.join("shard-00001-of-00002.safetensors");
    let whole = std::fs::read(&shard1).unwrap();
    std::fs::write(&shard1, &whole[..whole.len() / 2]).unwrap();
    let setup = setup();
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let report = writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap();
    assert_eq!((report.written, report.skipped), (vec![1], vec![0]));
    assert!(files(&dir) == expected, "the repaired cache differs from the one written in one go");
    TeacherCache::open(&dir).unwrap().verify().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_folder_holding_a_token_cache_is_refused_and_left_as_it_is() {
    let setup = setup();
    let dir = temp_dir("holds-tokens");
    std::fs::create_dir_all(&dir).unwrap();
    // A token cache names its shards as an image cache does: writing here would replace them.
    std::fs::write(dir.join("token-manifest.json"), b"{}").unwrap();
    std::fs::write(dir.join("shard-00000-of-00002.safetensors"), b"a token shard").unwrap();
    let before = files(&dir);
    let engine = distill(&setup.student, &setup.teacher, mapping(&setup.student, &setup.teacher));
    let error = writer(&dir, &setup).write(engine.distillation(), &setup.teacher, &setup.inputs).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("it holds a token cache (`token-manifest.json`), whose shards this writer would replace"),
        "{error}"
    );
    assert!(files(&dir) == before, "the folder changed");
    let _ = std::fs::remove_dir_all(&dir);
}
