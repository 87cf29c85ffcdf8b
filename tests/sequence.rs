//! The token-level sequence criteria against `tests/data/sequence.json` (`scripts/gen_sequence_reference.py`:
//! TRL 1.16's own `generalized_jsd_loss` for the JSD, f64 formulas for the others): values and
//! student gradients in f64 and f32, masks from labels, the four reductions, and a mutation check
//! that a loss off by a factor 1 + 1e-3 fails the same comparison.

use distill::criterion::{Criterion, Divergence, SequenceKd, TokenCriterion, TokenReduction};
use serde_json::Value;
use tch::{Kind, Tensor};

fn cases() -> Vec<Value> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/sequence.json");
    let text = std::fs::read_to_string(path).expect("tests/data/sequence.json");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    doc["cases"].as_array().expect("cases").clone()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("array").iter().map(|x| x.as_f64().expect("number")).collect()
}

fn i64s(v: &Value) -> Vec<i64> {
    v.as_array().expect("array").iter().map(|x| x.as_i64().expect("integer")).collect()
}

fn tensor(spec: &Value) -> Tensor {
    Tensor::from_slice(&f64s(&spec["data"])).reshape(i64s(&spec["shape"]))
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

fn criterion(case: &Value) -> SequenceKd {
    let p = |name: &str| case["params"][name].as_f64().unwrap();
    let divergence = match case["divergence"].as_str().unwrap() {
        "ForwardKl" => Divergence::ForwardKl,
        "ReverseKl" => Divergence::ReverseKl,
        "Jsd" => Divergence::Jsd { beta: p("beta") },
        "SkewKl" => Divergence::SkewKl { alpha: p("alpha") },
        "SkewReverseKl" => Divergence::SkewReverseKl { alpha: p("alpha") },
        "TotalVariation" => Divergence::TotalVariation,
        other => panic!("unknown divergence {other}"),
    };
    let reduction = TokenReduction::from_name(case["reduction"].as_str().unwrap()).unwrap();
    SequenceKd::new(divergence, case["temperature"].as_f64().unwrap()).with_reduction(reduction)
}

/// Error bounds of a computation in a float of unit roundoff `eps`, from the f64 inputs.
///
/// Derivation. Per token, `z/T` is rounded once (relative ε, and the inputs themselves once more in
/// f32). `logsumexp` = max + log Σ exp(z − max): the V-term sum carries ε·log₂V relative (pairwise
/// and vectorised summation), the log and the addition ε·(|max| + log V), so each log-probability
/// `z_v − lse` carries an absolute error of at most ε·(|z_v| + |lse| + log₂V + 2) ≤ ε·c with
/// `c = max|z/T| + |lse| + log₂V + 2` per side; the mixture's log-sum-exp of two adds ε·2 more.
/// A probability `exp(log p)` then carries that as a relative error. Every divergence is a sum over
/// the V terms of products of a probability with differences of log-probabilities (or of
/// probabilities, for TV), so a token's loss carries at most
/// `ε · [Σ_v (p_v + q_v) · (c_s + c_t + 4) + (log₂V + 3) · Σ_v |term_v|]`, where the second part is
/// the rounding of the products and of the V-term sum; `Σ_v |term_v| ≤ Σ_v (p_v + q_v) · (|log p_v| +
/// |log q_v|) + 1`. The reduction over N tokens adds `ε · log₂N · Σ w|ℓ|`. Each gradient entry
/// `∂ℓ/∂s_v` is `1/T` times a combination of `q_v`, `p_v` (and the mixture's share) with factors
/// bounded by the same log-probability differences, plus the softmax backward's `q_v · Σ_v' g_v'`:
/// its error is at most `ε · w/T · (p_v + q_v) · (c_s + c_t + log₂V + 8) · (1 + Σ_v |term_v|)`.
/// Doubled for the unnamed constant factors of libm's exp/log (≤ 1 ulp each).
fn bounds(case: &Value, eps: f64) -> (f64, Vec<f64>) {
    let s = tensor(&case["student"]);
    let t = tensor(&case["teacher"]);
    let temp = case["temperature"].as_f64().unwrap();
    let v = *s.size().last().unwrap();
    let (zs, zt) = (&s / temp, &t / temp);
    let (ls, lt) = (zs.log_softmax(-1, Kind::Double), zt.log_softmax(-1, Kind::Double));
    let (q, p) = (ls.exp(), lt.exp());
    let log2v = (v as f64).log2();
    let c = |z: &Tensor| z.abs().amax([-1], true) + z.logsumexp([-1], true).abs() + (log2v + 2.0);
    let (cs, ct) = (c(&zs), c(&zt));
    let mass = &p + &q;
    let terms = (&mass * (ls.abs() + lt.abs())).sum_dim_intlist(-1, true, Kind::Double) + 1.0;
    let per_token =
        ((&mass * (&cs + &ct + 4.0)).sum_dim_intlist(-1, true, Kind::Double) + &terms * (log2v + 3.0)) * eps;
    // Reduction weights w, as the criterion reduces.
    let shape = s.size();
    let (b, tt) = (shape[0], shape[1]);
    let valid = match case.get("labels") {
        Some(labels) => tensor(labels).ne(-100.0),
        None => Tensor::ones([b, tt], (Kind::Bool, tch::Device::Cpu)),
    };
    let reduction = TokenReduction::from_name(case["reduction"].as_str().unwrap()).unwrap();
    let w = reduction.weights(&valid, Kind::Double).unwrap().unsqueeze(-1);
    let n = (b * tt) as f64;
    let loss_bound = 2.0 * ((&per_token * &w).sum(Kind::Double).double_value(&[]) * (1.0 + eps * n.log2()));
    let grad = (&w / temp) * &mass * (&cs + &ct + (log2v + 8.0)) * &terms * (2.0 * eps);
    (loss_bound, values(&grad))
}

/// Runs every case in `kind`; the loss and gradients are scaled by `scale` (1 for the real check,
/// 1 + 1e-3 for the mutation check). Returns the failures.
fn check_all(kind: Kind, eps: f64, scale: f64) -> (usize, Vec<String>) {
    let cases = cases();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let c = criterion(case);
        let student = tensor(&case["student"]).to_kind(kind).set_requires_grad(true);
        let teacher = tensor(&case["teacher"]).to_kind(kind);
        let labels = case.get("labels").map(|l| tensor(l).to_kind(Kind::Int64));
        let loss = c.f_loss_with_targets(&student, &teacher, labels.as_ref()).unwrap() * scale;
        assert_eq!(loss.kind(), kind, "{name}: the loss keeps the input precision");
        loss.backward();
        let (loss_bound, grad_bound) = bounds(case, eps);
        let want = case["loss"].as_f64().unwrap();
        let got = loss.double_value(&[]);
        if !within(got, want, loss_bound) {
            failures.push(format!("{name}: loss {got} vs {want} (bound {loss_bound:e})"));
        }
        let want_grad = f64s(&case["grad"]);
        let got_grad = values(&student.grad());
        for (i, ((g, w), b)) in got_grad.iter().zip(&want_grad).zip(&grad_bound).enumerate() {
            if !within(*g, *w, *b) {
                failures.push(format!("{name}: grad[{i}] {g} vs {w} (bound {b:e})"));
                break;
            }
        }
    }
    (cases.len(), failures)
}

#[test]
fn sequence_criteria_match_the_reference_in_f64() {
    let (n, failures) = check_all(Kind::Double, f64::EPSILON / 2.0, 1.0);
    assert!(n >= 60, "expected the full case list, got {n}");
    assert!(failures.is_empty(), "{} of {n} failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn sequence_criteria_match_the_reference_in_f32() {
    let (n, failures) = check_all(Kind::Float, f64::from(f32::EPSILON) / 2.0, 1.0);
    assert!(failures.is_empty(), "{} of {n} failed:\n{}", failures.len(), failures.join("\n"));
}

/// The bounds are tight enough to catch a loss off by one part in a thousand, in every case.
#[test]
fn a_loss_scaled_by_one_plus_1e3_fails_every_case() {
    for (kind, eps) in [(Kind::Double, f64::EPSILON / 2.0), (Kind::Float, f64::from(f32::EPSILON) / 2.0)] {
        let (n, failures) = check_all(kind, eps, 1.0 + 1e-3);
        let failed: std::collections::BTreeSet<&str> = failures.iter().map(|f| f.split(':').next().unwrap()).collect();
        let names: Vec<String> = cases().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect();
        let missed: Vec<&String> = names.iter().filter(|n| !failed.contains(n.as_str())).collect();
        assert!(missed.is_empty(), "{kind:?}: {} of {n} cases missed the mutation: {missed:?}", missed.len());
    }
}

#[test]
fn beta_zero_and_one_are_exactly_forward_and_reverse_kl() {
    let s = Tensor::randn([2, 3, 17], (Kind::Float, tch::Device::Cpu));
    let t = Tensor::randn([2, 3, 17], (Kind::Float, tch::Device::Cpu));
    let v = |d: Divergence| SequenceKd::new(d, 1.5).loss(&s, &t).double_value(&[]);
    assert_eq!(v(Divergence::Jsd { beta: 0.0 }), v(Divergence::ForwardKl));
    assert_eq!(v(Divergence::Jsd { beta: 1.0 }), v(Divergence::ReverseKl));
    // The mixture form tends to 0 at the ends (TRL's discontinuity, kept on purpose).
    assert!(v(Divergence::Jsd { beta: 1e-9 }) < 1e-6 * v(Divergence::ForwardKl));
}

#[test]
fn masked_tokens_do_not_count_and_an_empty_mask_is_zero() {
    let s = Tensor::randn([2, 4, 9], (Kind::Double, tch::Device::Cpu)).set_requires_grad(true);
    let t = Tensor::randn([2, 4, 9], (Kind::Double, tch::Device::Cpu));
    let kd = SequenceKd::new(Divergence::ReverseKl, 1.0);
    let mask = Tensor::from_slice(&[1i64, 1, 0, 0, 0, 1, 1, 1]).reshape([2, 4]);
    let masked = kd.loss_masked(&s, &t, Some(&mask));
    // Garbage at masked positions changes nothing.
    let noisy = &s + Tensor::from_slice(&[0.0f64, 0.0, 1e3, -1e3, 5.0, 0.0, 0.0, 0.0]).reshape([2, 4, 1]);
    assert!((kd.loss_masked(&noisy, &t, Some(&mask)) - &masked).abs().double_value(&[]) < 1e-12);
    masked.backward();
    let g = s.grad();
    assert_eq!(g.narrow(1, 2, 2).select(0, 0).abs().sum(Kind::Double).double_value(&[]), 0.0);
    let none = Tensor::zeros([2, 4], (Kind::Int64, tch::Device::Cpu));
    for r in [TokenReduction::Token, TokenReduction::Sequence, TokenReduction::Batch, TokenReduction::Sum] {
        assert_eq!(kd.with_reduction(r).loss_masked(&s, &t, Some(&none)).double_value(&[]), 0.0, "{r:?}");
    }
    // A mask of the wrong shape is an error, not a broadcast.
    assert!(kd.f_loss_masked(&s, &t, Some(&Tensor::ones([2, 3], (Kind::Int64, tch::Device::Cpu)))).is_err());
}

#[test]
fn invalid_parameters_and_shapes_are_errors() {
    let s = Tensor::randn([2, 3, 5], (Kind::Float, tch::Device::Cpu));
    assert!(SequenceKd::new(Divergence::Jsd { beta: 1.5 }, 1.0).validate().is_err());
    assert!(SequenceKd::new(Divergence::SkewKl { alpha: -0.1 }, 1.0).validate().is_err());
    assert!(SequenceKd::new(Divergence::ForwardKl, 0.0).validate().is_err());
    let kd = SequenceKd::default();
    assert!(kd.f_loss(&s, &Tensor::randn([2, 3, 6], (Kind::Float, tch::Device::Cpu))).is_err());
    let labels = Tensor::zeros([2, 4], (Kind::Int64, tch::Device::Cpu));
    assert!(kd.f_loss_with_targets(&s, &s, Some(&labels)).is_err());
    let float_labels = Tensor::zeros([2, 3], (Kind::Float, tch::Device::Cpu));
    assert!(kd.f_loss_with_targets(&s, &s, Some(&float_labels)).is_err());
}

mod in_the_dsl {
    use distill::criterion::{Divergence, SequenceKd};
    use distill::prelude::*;
    use tch::{nn::VarStore, Device, Kind, Tensor};

    /// A toy language-model head: `[B, T, 6]` features → `[B, T, 10]` logits.
    #[derive(Debug, Distillable)]
    struct Head {
        proj: nn::Linear,
    }

    impl nn::ModuleT for Head {
        fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
            self.proj.forward_t(xs, train)
        }
    }

    distill! {
        struct TokenKd for Head => Head {
            kd: student => teacher with SequenceKd::new(Divergence::Jsd { beta: 0.5 }, 2.0);
        }
    }

    /// The batch's token labels reach the criterion through `with_targets`: tokens labelled −100
    /// are left out, exactly as the criterion called directly with those labels.
    #[test]
    fn labels_mask_the_tokens_of_a_distill_pair() -> Result<(), DistillError> {
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let student = Head { proj: nn::linear(vs.root() / "s", 6, 10, Default::default()) };
        let teacher = Head { proj: nn::linear(vs.root() / "t", 6, 10, Default::default()) };
        let kd = TokenKd::new(vs.root() / "kd", &student, &teacher)?;
        let xs = Tensor::randn([2, 4, 6], (Kind::Float, Device::Cpu));
        let labels = Tensor::from_slice(&[1i64, 2, -100, -100, -100, 3, 4, 5]).reshape([2, 4]);
        let out = kd.forward_t(&xs, true)?.with_targets(&labels);
        let got = out.kd.loss();
        let direct = SequenceKd::new(Divergence::Jsd { beta: 0.5 }, 2.0).loss_with_targets(
            &out.kd.student,
            &out.kd.teacher,
            Some(&labels),
        );
        assert_eq!(got.double_value(&[]), direct.double_value(&[]));
        let all = SequenceKd::new(Divergence::Jsd { beta: 0.5 }, 2.0).loss(&out.kd.student, &out.kd.teacher);
        assert_ne!(got.double_value(&[]), all.double_value(&[]), "the mask changes the loss");
        Ok(())
    }
}

/// `|got − want| ≤ bound`, false for a NaN on either side (which a plain `>` would let through).
fn within(got: f64, want: f64, bound: f64) -> bool {
    (got - want).abs().partial_cmp(&bound).is_some_and(|order| order.is_le())
}

/// A class both sides rule out (a `−∞` logit on each) is a class that is not there: every
/// divergence's value and student gradient equal those of the same logits without it, in f64 (to
/// a few ulps: the two computations round alike but not identically), and the gradient at the
/// ruled-out class is 0, not NaN (which would poison every logit through the softmax).
#[test]
fn a_class_both_sides_rule_out_counts_as_absent_in_the_value_and_the_gradient() {
    let divergences = [
        Divergence::ForwardKl,
        Divergence::ReverseKl,
        Divergence::Jsd { beta: 0.5 },
        Divergence::SkewKl { alpha: 0.1 },
        Divergence::SkewReverseKl { alpha: 0.1 },
        Divergence::TotalVariation,
    ];
    let with = |values: &[f64]| Tensor::from_slice(values).view([1, 1, values.len() as i64]);
    for divergence in divergences {
        let kd = SequenceKd::new(divergence, 1.0);
        let run = |student: &[f64], teacher: &[f64]| {
            let s = with(student).set_requires_grad(true);
            let loss = kd.f_loss_masked(&s, &with(teacher), None).unwrap();
            loss.backward();
            (loss.double_value(&[]), values(&s.grad()))
        };
        let (value, grad) = run(&[0.0, 1.0, f64::NEG_INFINITY], &[0.5, 0.0, f64::NEG_INFINITY]);
        let (without, grad_without) = run(&[0.0, 1.0], &[0.5, 0.0]);
        assert!((value - without).abs() <= 8.0 * f64::EPSILON * without.abs(), "{divergence:?}: {value} vs {without}");
        assert_eq!(grad[2], 0.0, "{divergence:?}: {grad:?}");
        for (g, w) in grad[..2].iter().zip(&grad_without) {
            assert!(
                (g - w).abs() <= 8.0 * f64::EPSILON * w.abs().max(1e-300),
                "{divergence:?}: {grad:?} vs {grad_without:?}"
            );
        }
    }
}

/// Labels of kind `u8` compare with −100 as integers: in `u8`, −100 wraps to 156, and a label 156
/// must still count.
#[test]
fn a_u8_label_156_is_a_label_not_the_ignore_index() {
    let student = Tensor::randn([1, 2, 200], (Kind::Double, tch::Device::Cpu));
    let teacher = Tensor::randn([1, 2, 200], (Kind::Double, tch::Device::Cpu));
    let kd = SequenceKd::default();
    let as_i64 = kd.f_loss_with_targets(&student, &teacher, Some(&Tensor::from_slice2(&[[156i64, 3]]))).unwrap();
    let as_u8 = kd
        .f_loss_with_targets(&student, &teacher, Some(&Tensor::from_slice2(&[[156i64, 3]]).to_kind(Kind::Uint8)))
        .unwrap();
    assert_eq!(as_u8.double_value(&[]), as_i64.double_value(&[]));
    let one = kd.f_loss_with_targets(&student, &teacher, Some(&Tensor::from_slice2(&[[-100i64, 3]]))).unwrap();
    assert_ne!(as_u8.double_value(&[]), one.double_value(&[]), "the label 156 was dropped");
}
