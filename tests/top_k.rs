//! The top-k logit encoding and its KL criterion: the packed tensors against PyTorch's
//! (`tests/data/criteria.json`, `scripts/gen_reference.py`; the loss values and gradients are checked
//! with the rest of the catalogue in `tests/criteria.rs`), equality with the full `KlDiv` when every
//! class is kept, gradients, and the errors for what the criterion cannot read.

use distill::criterion::{split_top_k, Criterion, KlDiv, Mse, TeacherEncoding, TopKKlDiv, TopKLogits};
use distill::DistillError;
use serde_json::Value;
use tch::{Device, Kind, Tensor};

mod common;

use common::bounds::{self, compare, CHAIN_DEPTH, U_F64};
use common::criterion_bounds as magnitude;

fn top_k_cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/criteria.json");
    let text = std::fs::read_to_string(path).expect("tests/data/criteria.json (run scripts/dev refs)");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    doc["cases"].as_array().expect("cases").iter().filter(|c| c["criterion"] == "TopKKlDiv").cloned().collect()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn shape(v: &Value) -> Vec<i64> {
    v.as_array().expect("array").iter().map(|x| x.as_i64().expect("integer")).collect()
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

fn randn(seed: i64, shape: &[i64], kind: Kind) -> Tensor {
    tch::manual_seed(seed);
    Tensor::randn(shape, (kind, Device::Cpu))
}

/// The encoding of every reference case equals PyTorch's: the same class indices in the same order,
/// and the log-probabilities within their rounding of PyTorch's f64 ones. `x/T − lse(x/T)` is
/// rounded relative to `|x/T| + |lse|` through the chain of a log-sum-exp over the `C` classes:
/// `(CHAIN_DEPTH + ⌈log₂ C⌉ + 1) · (u + u₆₄) · (|xᵢ/T| + |lse|)` per element, against the f64 values.
#[test]
fn encoding_matches_pytorch() {
    let cases = top_k_cases();
    assert!(cases.len() >= 8, "only {} top-k cases", cases.len());
    let mut ks = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let enc = &case["encoding"];
        let k = enc["k"].as_i64().unwrap();
        let t = case["params"]["temperature"].as_f64().unwrap();
        let logits_shape = shape(&enc["logits"]["shape"]);
        ks.push((k, logits_shape[1]));
        let logits = Tensor::from_slice(&f64s(&enc["logits"]["data"])).reshape(&logits_shape);
        let z = &logits / t;
        let lse = z.logsumexp([1], true);
        let depth = CHAIN_DEPTH + bounds::sum_depth(logits_shape[1] as usize);
        for kind in [Kind::Double, Kind::Float] {
            let key = if kind == Kind::Double { "f64" } else { "f32" };
            let packed = TopKLogits::new(k, t).f_encode(&logits.to_kind(kind)).unwrap();
            assert_eq!(packed.size(), [logits_shape[0], 2, k], "{name}");
            assert_eq!(packed.kind(), kind, "{name}");
            let want = Tensor::from_slice(&f64s(&enc["f64"])).reshape([logits_shape[0], 2, k]);
            let (got_values, got_indices) = split_top_k(&packed, logits_shape[1]).unwrap();
            let (want_values, want_indices) = split_top_k(&want, logits_shape[1]).unwrap();
            assert_eq!(values(&got_indices), values(&want_indices), "{name} [{key}]: class indices");
            let pytorch = Tensor::from_slice(&f64s(&enc[key])).reshape([logits_shape[0], 2, k]);
            assert_eq!(values(&split_top_k(&pytorch, logits_shape[1]).unwrap().1), values(&want_indices));
            let magnitude = values(&(z.gather(1, &want_indices, false).abs() + lse.abs()));
            let u = bounds::unit_roundoff(kind) + U_F64;
            let bound = |i: usize| depth * u * magnitude[i];
            let got = values(&got_values);
            let want = values(&want_values);
            let c = compare(&got, &want, bound);
            assert!(c.passes(), "{name} [{key}] log-prob {c}");
            // PyTorch's own values of that precision are within the same bound.
            let theirs = compare(&values(&split_top_k(&pytorch, logits_shape[1]).unwrap().0), &want, bound);
            assert!(theirs.passes(), "{name} [{key}] PyTorch's log-prob {theirs}");
            // A log-probability off by 10⁻³ of itself is rejected.
            let mut wrong = got.clone();
            let j = (0..wrong.len()).max_by(|&a, &b| want[a].abs().total_cmp(&want[b].abs())).unwrap();
            wrong[j] += 1e-3 * want[j].abs();
            assert!(!compare(&wrong, &want, bound).passes(), "{name} [{key}]: a log-prob off by 1e-3 passes");
            // Descending, and the reference's packed teacher is the f64 encoding itself.
            assert!(got.chunks(k as usize).all(|row| row.windows(2).all(|w| w[0] >= w[1])), "{name}");
        }
        let teacher = Tensor::from_slice(&f64s(&case["teacher"]["data"])).reshape(shape(&case["teacher"]["shape"]));
        assert_eq!(values(&teacher), f64s(&enc["f64"]), "{name}");
    }
    // Several k, including every class.
    assert!(
        ks.iter().any(|(k, c)| k == c) && ks.iter().any(|(k, _)| *k == 1) && ks.iter().any(|(k, c)| k < c && *k > 1)
    );
}

/// With every class kept, the top-k loss and its student gradient equal Hinton KD on the full logits:
/// the same sum in another order, so within `depth · u · M` of each other for each of the two
/// computations (`M` the magnitude of the KL's terms, `common::criterion_bounds::softmax_pair`), and
/// the gradient within `depth · u · (|gᵢ| + M / ‖s‖)` (the bound of `tests/criteria.rs`).
#[test]
fn every_class_kept_is_kl_div() {
    for kind in [Kind::Double, Kind::Float] {
        for (shape, t) in [([8, 10], 4.0), ([5, 3], 1.0), ([16, 100], 2.0)] {
            let mut student = (randn(11, &shape, kind) * 3.0).set_requires_grad(true);
            let teacher = randn(12, &shape, kind) * 3.0;
            let packed = TopKLogits::new(shape[1], t).f_encode(&teacher).unwrap();
            let top_k = TopKKlDiv::new(t).f_loss(&student, &packed).unwrap();
            top_k.backward();
            let top_k_grad = values(&student.grad());
            student.zero_grad();
            let full = KlDiv::new(t).f_loss(&student, &teacher).unwrap();
            full.backward();
            let (a, b) = (top_k.double_value(&[]), full.double_value(&[]));
            assert!(b > 0.01, "{b}");
            let (s64, t64) = (student.detach().to_kind(Kind::Double), teacher.to_kind(Kind::Double));
            let m = magnitude::softmax_pair(&s64, &t64, t);
            let depth = CHAIN_DEPTH + bounds::sum_depth(s64.numel());
            let u = 2.0 * bounds::unit_roundoff(kind);
            let loss = compare(&[a], &[b], |_| depth * u * m);
            assert!(loss.passes(), "{kind:?} {shape:?} T={t}: top-k vs KlDiv {loss}");
            assert!(!compare(&[a * (1.0 + 1e-3)], &[b], |_| depth * u * m).passes(), "a 1e-3 error passes");
            let full_grad = values(&student.grad());
            let floor = depth * u * m / bounds::norm(&s64);
            let grad = compare(&top_k_grad, &full_grad, |i| depth * u * full_grad[i].abs() + floor);
            assert!(grad.passes(), "{kind:?} {shape:?}: grad {grad}");
        }
    }
}

/// Fewer classes lose information: the loss differs from the full KD, but it is 0 when the student
/// equals the teacher, and it does not depend on how the student spreads the leftover mass.
#[test]
fn the_other_bucket_holds_the_leftover_mass() {
    let teacher = randn(21, &[6, 12], Kind::Double) * 2.0;
    let packed = TopKLogits::new(4, 2.0).f_encode(&teacher).unwrap();
    let kd = TopKKlDiv::new(2.0);
    assert!(kd.f_loss(&teacher, &packed).unwrap().double_value(&[]).abs() < 1e-12);

    // Hand-computed for one sample: p = (0.5, 0.3 | other 0.2), the student's softmax at T = 1.
    let packed = Tensor::from_slice(&[0.5f64.ln(), 0.3f64.ln(), 2.0, 0.0]).reshape([1, 2, 2]);
    let student = Tensor::from_slice(&[0.1f64, 0.4, 1.2, -0.3]).reshape([1, 4]);
    let q: Vec<f64> = values(&student.softmax(1, None));
    let (q_class2, q_class0, q_other) = (q[2], q[0], q[1] + q[3]);
    let want = 0.5 * (0.5f64 / q_class2).ln() + 0.3 * (0.3f64 / q_class0).ln() + 0.2 * (0.2f64 / q_other).ln();
    let got = TopKKlDiv::new(1.0).f_loss(&student, &packed).unwrap().double_value(&[]);
    assert!((got - want).abs() < 1e-12, "{got} vs {want}");
    // Moving the student's mass between classes 1 and 3 (both in the other bucket) changes nothing.
    let moved = Tensor::from_slice(&[0.1f64, -0.3, 1.2, 0.4]).reshape([1, 4]);
    let got_moved = TopKKlDiv::new(1.0).f_loss(&moved, &packed).unwrap().double_value(&[]);
    assert!((got_moved - want).abs() < 1e-12);

    // A temperature scales the student's logits and the whole by T².
    let got_t = TopKKlDiv::new(2.0).f_loss(&(&student * 2.0), &packed).unwrap().double_value(&[]);
    assert!((got_t - 4.0 * want).abs() < 1e-12, "{got_t} vs 4 × {want}");
}

/// A top-k that holds all the mass (the other bucket is empty) contributes nothing for the bucket,
/// and a teacher probability that underflows to 0 contributes nothing either: no NaN in the loss or
/// the gradient.
#[test]
fn empty_buckets_contribute_nothing() {
    let packed = Tensor::from_slice(&[0.0f64, f64::NEG_INFINITY, 1.0, 0.0]).reshape([1, 2, 2]);
    let student = Tensor::from_slice(&[0.5f64, 2.0, -1.0]).reshape([1, 3]).set_requires_grad(true);
    let loss = TopKKlDiv::new(1.0).f_loss(&student, &packed).unwrap();
    let log_q1 = values(&student.log_softmax(1, None))[1];
    assert!((loss.double_value(&[]) + log_q1).abs() < 1e-12, "p = (1, 0 | 0): the loss is −log q₁");
    loss.backward();
    let grad = values(&student.grad());
    let q = values(&student.softmax(1, None));
    for (i, (g, q)) in grad.iter().zip(&q).enumerate() {
        let want = q - if i == 1 { 1.0 } else { 0.0 };
        assert!((g - want).abs() < 1e-12, "grad[{i}] {g} vs {want}");
    }
}

/// The student gets the gradient; a teacher tensor that requires grad gets none (it is data).
#[test]
fn gradients_flow_to_the_student_only() {
    let student = randn(31, &[4, 6], Kind::Float).set_requires_grad(true);
    let packed = TopKLogits::new(2, 3.0).f_encode(&randn(32, &[4, 6], Kind::Float)).unwrap();
    assert!(!packed.requires_grad(), "the encoding is detached");
    let packed = packed.set_requires_grad(true);
    let loss = (TopKKlDiv::new(3.0) * 0.5).f_loss(&student, &packed).unwrap();
    loss.backward();
    assert!(values(&student.grad()).iter().any(|g| g.abs() > 1e-4));
    assert!(!packed.grad().defined() || values(&packed.grad()).iter().all(|g| *g == 0.0));
}

#[test]
fn a_packed_teacher_of_another_kind_is_read_in_the_student_kind() {
    let teacher = randn(41, &[3, 8], Kind::Double);
    let student = randn(42, &[3, 8], Kind::Float);
    let packed64 = TopKLogits::new(3, 2.0).f_encode(&teacher).unwrap();
    let packed32 = TopKLogits::new(3, 2.0).f_encode(&teacher.to_kind(Kind::Float)).unwrap();
    let a = TopKKlDiv::new(2.0).f_loss(&student, &packed64).unwrap();
    let b = TopKKlDiv::new(2.0).f_loss(&student, &packed32).unwrap();
    assert_eq!(a.kind(), Kind::Float);
    // The f64 packed values read in f32 round once more than the f32 encoding did: the two losses
    // differ by the rounding of what they sum, `depth · u · M`.
    let m = magnitude::top_k_kl(&student.to_kind(Kind::Double), &packed64, 2.0);
    let depth = CHAIN_DEPTH + bounds::sum_depth(student.numel());
    let c = compare(&[a.double_value(&[])], &[b.double_value(&[])], |_| 2.0 * depth * bounds::U_F32 * m);
    assert!(c.passes(), "{c}");
    // Half-precision logits are encoded in f32, whose indices are exact.
    let half = TopKLogits::new(3, 2.0).f_encode(&teacher.to_kind(Kind::Half)).unwrap();
    assert_eq!(half.kind(), Kind::Float);
}

/// Half-precision logits at T = 300: the loss is computed in f32 and equals the f64 loss of the
/// same (f16) logits within f32's rounding, amplified by `T²` as the magnitude bound says, plus
/// one rounding to the logits' kind. Computed in f16 it was 28.5 against 5.16, and −93.5 in bf16:
/// each `log p − log q` (about 1/T) rounded at 2⁻¹¹·|log p|, then multiplied by T² = 9·10⁴.
#[test]
fn half_precision_logits_at_a_large_temperature() {
    let t = 300.0;
    let teacher = randn(300, &[8, 10], Kind::Float) * 3.0;
    let student = (randn(301, &[8, 10], Kind::Float) * 3.0).to_kind(Kind::Half);
    let packed = TopKLogits::new(3, t).f_encode(&teacher.to_kind(Kind::Half)).unwrap();
    let (s64, p64) = (student.to_kind(Kind::Double), packed.to_kind(Kind::Double));
    let want = TopKKlDiv::new(t).f_loss(&s64, &p64).unwrap().double_value(&[]);
    let m = magnitude::top_k_kl(&s64, &p64, t);
    let depth = CHAIN_DEPTH + bounds::sum_depth(student.numel());
    for (kind, u_kind) in [(Kind::Half, bounds::U_F16), (Kind::BFloat16, 2f64.powi(-8))] {
        let loss = TopKKlDiv::new(t).f_loss(&student.to_kind(kind), &packed).unwrap();
        assert_eq!(loss.kind(), kind);
        let c = compare(&[loss.double_value(&[])], &[want], |_| depth * bounds::U_F32 * m + u_kind * want.abs());
        assert!(c.passes(), "{kind:?}: {c}");
    }
    assert!(want > 1.0, "a KL of unrelated logits, at T²: {want}");
}

/// A loss that the `T²` factor puts past f16's largest number (65 504) is an error naming its f32
/// value, not +inf: one sample whose teacher and student favour different classes by 6000 (20 at
/// T = 300) has a KL of about 20, times T² = 9·10⁴.
#[test]
fn a_loss_past_the_half_precision_range_is_an_error() {
    let t = 300.0;
    let mut teacher = [0.0f32; 10];
    let mut student = [0.0f32; 10];
    teacher[0] = 6000.0;
    student[1] = 6000.0;
    let packed = TopKLogits::new(3, t).f_encode(&Tensor::from_slice(&teacher).view([1, 10])).unwrap();
    let student = Tensor::from_slice(&student).view([1, 10]);
    let want = TopKKlDiv::new(t).f_loss(&student.to_kind(Kind::Double), &packed.to_kind(Kind::Double)).unwrap();
    let want = want.double_value(&[]);
    assert!(want > 1e6, "{want}");
    let err = TopKKlDiv::new(t).f_loss(&student.to_kind(Kind::Half), &packed).unwrap_err();
    let message = err.to_string();
    match err {
        DistillError::Criterion(distill::criterion::CriterionError::LossOutOfRange { value, kind: Kind::Half }) => {
            let m = magnitude::top_k_kl(&student.to_kind(Kind::Double), &packed.to_kind(Kind::Double), t);
            let c = compare(&[value], &[want], |_| (CHAIN_DEPTH + bounds::sum_depth(10)) * bounds::U_F32 * m);
            assert!(c.passes(), "{c}");
        }
        other => panic!("{other}"),
    }
    assert!(message.contains("does not fit the inputs' kind Half"), "{message}");
    // In bf16 (up to 3.4·10³⁸) it fits.
    let bf16 = TopKKlDiv::new(t).f_loss(&student.to_kind(Kind::BFloat16), &packed).unwrap().double_value(&[]);
    assert!((bf16 - want).abs() <= 2f64.powi(-8) * want + 1.0, "{bf16} vs {want}");
}

#[test]
fn the_temperature_at_which_a_criterion_reads_top_k() {
    assert_eq!(TopKKlDiv::new(2.5).teacher_encoding(), TeacherEncoding::TopKLogits { temperature: 2.5 });
    assert_eq!((TopKKlDiv::new(2.5) * 0.3).teacher_encoding(), TeacherEncoding::TopKLogits { temperature: 2.5 });
    assert_eq!(
        (0.3 * (TopKKlDiv::default() * 2.0)).teacher_encoding(),
        TeacherEncoding::TopKLogits { temperature: 4.0 }
    );
    assert_eq!(KlDiv::new(2.5).teacher_encoding(), TeacherEncoding::Plain);
    assert_eq!((Mse * 2.0).teacher_encoding(), TeacherEncoding::Plain);
    let closure = |s: &Tensor, t: &Tensor| (s - t).square().mean(None);
    assert_eq!(closure.teacher_encoding(), TeacherEncoding::Plain);
    let boxed: Box<dyn Criterion> = Box::new(TopKKlDiv::new(1.5) * 2.0);
    assert_eq!(boxed.teacher_encoding(), TeacherEncoding::TopKLogits { temperature: 1.5 });
}

#[test]
fn invalid_parameters_and_shapes_are_errors() {
    let kd = TopKKlDiv::new(4.0);
    assert!(kd.check_shapes(&[8, 10], &[8, 2, 3]).is_ok());
    assert!(kd.check_shapes(&[8, 10], &[8, 2, 10]).is_ok());
    for (student, teacher, reason) in [
        (&[8, 10][..], &[8, 2, 11][..], "more than the student's 10"),
        (&[8, 10], &[4, 2, 3], "same batch size"),
        (&[8, 10], &[8, 10], "(N, 2, k)"),
        (&[8, 10], &[8, 3, 3], "(N, 2, k)"),
        (&[8, 10], &[8, 2, 0], "(N, 2, k)"),
        (&[8, 10, 2], &[8, 2, 3], "2 dimensions (N, C)"),
        (&[0, 10], &[0, 2, 3], "empty"),
    ] {
        let err = kd.check_shapes(student, teacher).unwrap_err();
        assert!(err.contains(reason), "{student:?} / {teacher:?}: {err}");
    }
    let s = randn(51, &[4, 10], Kind::Float);
    let err = kd.f_loss(&s, &randn(52, &[4, 10], Kind::Float)).unwrap_err();
    assert!(matches!(err, DistillError::ShapeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("packed top-k"), "{err}");

    for t in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let reason = TopKKlDiv::new(t).validate().unwrap_err();
        assert!(reason.contains("temperature must be finite and > 0"), "{reason}");
        let packed = TopKLogits::new(2, 1.0).f_encode(&s).unwrap();
        assert!(matches!(TopKKlDiv::new(t).f_loss(&s, &packed), Err(DistillError::InvalidCriterion { .. })));
        assert!(TopKLogits::new(2, t).f_encode(&s).is_err());
    }
    assert!(TopKLogits::new(0, 1.0).f_encode(&s).unwrap_err().to_string().contains("≥ 1"));
    let err = TopKLogits::new(11, 1.0).f_encode(&s).unwrap_err().to_string();
    assert!(err.contains("k = 11 is more than the 10 classes"), "{err}");
    let err = TopKLogits::new(2, 1.0).f_encode(&s.reshape([2, 2, 10])).unwrap_err().to_string();
    assert!(err.contains("2 dimensions (N, C)"), "{err}");
    let err = TopKLogits::new(2, 1.0).f_encode(&s.to_kind(Kind::Int64)).unwrap_err().to_string();
    assert!(err.contains("floating-point"), "{err}");
}

/// What `split_top_k` (and so the criterion) refuses in a packed tensor's content.
#[test]
fn malformed_packed_tensors_are_errors() {
    let student = randn(61, &[2, 5], Kind::Double);
    let good = TopKLogits::new(2, 1.0).f_encode(&randn(62, &[2, 5], Kind::Double)).unwrap();
    assert!(split_top_k(&good, 5).is_ok());
    let with = |row: i64, values: &[f64]| {
        let packed = good.copy();
        packed.select(1, row).copy_(&Tensor::from_slice(values).reshape([2, 2]));
        packed
    };
    for (packed, classes, reason) in [
        (with(1, &[0.0, 5.0, 1.0, 2.0]), 5, "outside 0..5"),
        (with(1, &[0.0, -1.0, 1.0, 2.0]), 5, "outside 0..5"),
        (with(1, &[0.0, 1.5, 1.0, 2.0]), 5, "whole numbers"),
        (with(1, &[3.0, 3.0, 1.0, 2.0]), 5, "same class index twice"),
        (with(0, &[2.0, 1.0, -1.0, -2.0]), 5, "not logits"),
        (with(0, &[f64::NAN, -1.0, -1.0, -2.0]), 5, "NaN"),
        (good.copy(), 1, "more than the 1 classes"),
        (good.to_kind(Kind::Int64), 5, "floating-point"),
        (good.to_kind(Kind::Half), 3000, "only up to 2048 classes"),
    ] {
        let err = split_top_k(&packed, classes).unwrap_err().to_string();
        assert!(err.contains(reason), "{err}");
        if classes == 5 && packed.kind() == Kind::Double {
            let err = TopKKlDiv::new(1.0).f_loss(&student, &packed).unwrap_err();
            assert!(err.to_string().contains(reason), "{err}");
        }
    }
    assert!(split_top_k(&good.to_kind(Kind::Half), 2048).is_ok());
    // The unchecked call panics with the reason.
    let bad = with(1, &[3.0, 3.0, 1.0, 2.0]);
    let panic = std::panic::catch_unwind(|| TopKKlDiv::new(1.0).loss(&student, &bad)).unwrap_err();
    assert!(panic.downcast_ref::<String>().is_some_and(|m| m.contains("same class index twice")));
}
