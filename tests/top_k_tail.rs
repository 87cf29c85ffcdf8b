//! Top-k with an exact tail at vocabulary scale (V = 49 152, k = 1024, true tail mass ~1e-7): the
//! tail computed from the excluded logits holds to 1e-6 relative of f64 and gives the tail tokens'
//! gradient to 1e-3 relative, while the two naive forms (`1 − Σp` and `log1mexp` of the kept mass)
//! fail both.

use distill::criterion::{Criterion, Divergence, SequenceKd, TokenCriterion, TokenKd, TopKKl, TopKTail};
use tch::{Device, Kind, Tensor};

const V: i64 = 49_152;
const K: i64 = 1024;
const TOKENS: i64 = 4;

/// Teacher logits `[1, TOKENS, V]` in f32: `K` head tokens ~ N(0, 1) and a tail ~ N(0, 1) − 19.5,
/// so that the tail holds ≈ (V − K)/K · e^{−19.5} ≈ 1.6e-7 of the mass; the head is well separated,
/// so the top k are the head. The student: the teacher plus N(0, 0.3) noise on the head and ln 3 on
/// the tail (its tail mass ≈ 3× the teacher's, so the tail term changes the tail gradient by ~1/3).
fn logits() -> (Tensor, Tensor) {
    tch::manual_seed(49_152);
    let opts = (Kind::Float, Device::Cpu);
    let perm = Tensor::randperm(V, (Kind::Int64, Device::Cpu));
    let mut offset = Tensor::full([V], -19.5, opts);
    let _ = offset.index_fill_(0, &perm.narrow(0, 0, K), 0.0);
    let teacher = (Tensor::randn([1, TOKENS, V], opts) + &offset).contiguous();
    let head = offset.eq(0.0).to_kind(Kind::Float);
    let student_shift = Tensor::randn([1, TOKENS, V], opts) * 0.3 * &head + (head.neg() + 1.0) * 3f64.ln();
    (teacher.shallow_clone(), (&teacher + &student_shift).contiguous())
}

fn f64s(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(t.to_kind(Kind::Double).reshape([-1])).unwrap()
}

/// The true tail mass per token, in f64 from the f32 logits.
fn tail_mass_f64(teacher: &Tensor) -> Vec<f64> {
    let z = teacher.to_kind(Kind::Double);
    let all = z.logsumexp([-1], false);
    let (_, ids) = z.topk(K, -1, true, true);
    let tail = z.scatter_value(-1, &ids, f64::NEG_INFINITY).logsumexp([-1], false);
    f64s(&(tail - all).exp())
}

fn relative(got: &[f64], want: &[f64]) -> Vec<f64> {
    got.iter().zip(want).map(|(g, w)| if g.is_finite() { (g - w).abs() / w.abs() } else { f64::INFINITY }).collect()
}

#[test]
fn the_excluded_logits_tail_holds_where_both_naive_forms_fail() {
    let (teacher, _) = logits();
    let truth = tail_mass_f64(&teacher);
    assert!(truth.iter().all(|&m| (5e-8..5e-7).contains(&m)), "tail masses {truth:?}");

    let exact = TopKTail::f_encode(&teacher, K, 1.0).unwrap();
    assert_eq!(exact.tail.kind(), Kind::Float);
    let exact_rel = relative(&f64s(&exact.tail.exp()), &truth);

    // The naive forms, in f32 from the kept f32 log-probabilities.
    let kept = exact.log_probs.shallow_clone();
    let one_minus = f64s(&(kept.exp().sum_dim_intlist(-1, false, Kind::Float).neg() + 1.0));
    let log1mexp = f64s(&(-kept.logsumexp([-1], false).expm1()).log().exp());
    let (one_minus_rel, log1mexp_rel) = (relative(&one_minus, &truth), relative(&log1mexp, &truth));
    eprintln!(
        "true tail {truth:?}\nexcluded-logits rel. error {exact_rel:?}\n1 − Σp {one_minus:?}\nlog1mexp {log1mexp:?}"
    );

    // The exact tail: within 1e-6 relative of f64 (its f32 log-mass ≈ −15.6 is itself rounded to
    // half an ulp, 4.8e-7 absolute, i.e. relative in the mass).
    assert!(exact_rel.iter().all(|&r| r <= 1e-6), "excluded-logits tail off by {exact_rel:?}");
    // Both naive forms lose the tail (the kept mass near 1 has an f32 ulp of 6e-8, a third of the
    // tail): each is off by more than 1 % on every token, four orders of magnitude past 1e-6.
    assert!(one_minus_rel.iter().all(|&r| r > 1e-2), "1 − Σp unexpectedly close: {one_minus_rel:?}");
    assert!(log1mexp_rel.iter().all(|&r| r > 1e-2), "log1mexp unexpectedly close: {log1mexp_rel:?}");
}

/// The student's gradient on the tail tokens, `(q_j − p_tail · q_j / q_tail) / (T·N)`, against the
/// same loss in f64 (f64 logits, f64 encoding): within 1e-3 relative with the exact tail; with either
/// naive tail the factor `1 − p_tail/q_tail` (≈ 2/3) is wrong and the gradient fails.
#[test]
fn the_tail_tokens_gradient_is_exact_only_with_the_excluded_logits_tail() {
    let (teacher, student) = logits();
    let kd = TopKKl::new(1.0);
    let tail_grad = |student: &Tensor, top: &TopKTail| -> Vec<f64> {
        let s = student.detach().set_requires_grad(true);
        kd.f_loss_masked(&s, top, None).unwrap().backward();
        let tail_tokens = top.ids.ones_like().to_kind(Kind::Bool).logical_not();
        let keep = Tensor::ones([1, TOKENS, V], (Kind::Bool, Device::Cpu)).scatter(-1, &top.ids, &tail_tokens);
        f64s(&s.grad().masked_select(&keep))
    };
    let top64 = TopKTail::f_encode(&teacher.to_kind(Kind::Double), K, 1.0).unwrap();
    let want = tail_grad(&student.to_kind(Kind::Double), &top64);
    assert_eq!(want.len() as i64, TOKENS * (V - K));

    let exact = TopKTail::f_encode(&teacher, K, 1.0).unwrap();
    let got = tail_grad(&student, &exact);
    let worst = relative(&got, &want).into_iter().fold(0.0, f64::max);
    assert!(worst <= 1e-3, "exact tail: worst relative error on tail tokens {worst:e}");

    let naive = |tail: Tensor| TopKTail {
        ids: exact.ids.shallow_clone(),
        log_probs: exact.log_probs.shallow_clone(),
        tail,
        temperature: exact.temperature,
    };
    let kept = exact.log_probs.shallow_clone();
    let one_minus = (kept.exp().sum_dim_intlist(-1, false, Kind::Float).neg() + 1.0).log();
    let log1mexp = (-kept.logsumexp([-1], false).expm1()).log();
    for (name, tail) in [("1 − Σp", one_minus), ("log1mexp", log1mexp)] {
        let got = tail_grad(&student, &naive(tail));
        let worst = relative(&got, &want).into_iter().fold(0.0, f64::max);
        assert!(worst > 1e-3, "{name}: the naive tail unexpectedly gives the tail gradient ({worst:e})");
    }
}

/// The packed form round-trips through the `Criterion` interface, and `k = V` is the full forward KL.
#[test]
fn packed_round_trip_and_full_k() {
    let opts = (Kind::Double, Device::Cpu);
    let s = Tensor::randn([2, 3, 40], opts);
    let t = Tensor::randn([2, 3, 40], opts);
    let top = TopKTail::f_encode(&t, 7, 2.0).unwrap();
    let packed = top.f_pack().unwrap();
    assert_eq!(packed.size(), [2, 3, 15]);
    let labels = Tensor::from_slice(&[1i64, -100, 3, 4, 5, -100]).reshape([2, 3]);
    let via_criterion = TopKKl::new(2.0).f_loss_with_targets(&s, &packed, Some(&labels)).unwrap();
    let valid = labels.ne(-100);
    let direct = TopKKl::new(2.0).f_loss_masked(&s, &top, Some(&valid)).unwrap();
    assert_eq!(via_criterion.double_value(&[]), direct.double_value(&[]));
    let all = TopKTail::f_encode(&t, 40, 2.0).unwrap();
    let full = SequenceKd::new(Divergence::ForwardKl, 2.0).loss(&s, &t).double_value(&[]);
    // Same terms summed in another order: |Δ| ≤ ε₆₄ · 40 terms · a few units of magnitude.
    assert!((TopKKl::new(2.0).f_loss_masked(&s, &all, None).unwrap().double_value(&[]) - full).abs() < 1e-13);
    // A packed tensor with an id out of the vocabulary is an error.
    let bad = packed.copy();
    let _ = bad.narrow(-1, 7, 1).fill_(40.0);
    assert!(TopKKl::new(2.0).f_loss(&s, &bad).is_err());
    assert!(TopKKl::new(2.0).check_shapes(&[2, 3, 40], &[2, 3, 14]).is_err());
}

/// The fused loss with cross-entropy ([`TokenKd`]) on the same tiny tail: its value within the f32
/// bound of the f64 autograd computation and the tail tokens' gradient within 1e-3 relative.
#[test]
fn the_fused_loss_with_cross_entropy_keeps_the_tail() {
    let (teacher, student) = logits();
    let labels = Tensor::from_slice(&[5i64, 17, -100, 40_000]).reshape([1, TOKENS]);
    let valid = labels.ne(-100);
    let tail_tokens = |top: &TopKTail| {
        let tail = top.ids.ones_like().to_kind(Kind::Bool).logical_not();
        let keep = Tensor::ones([1, TOKENS, V], (Kind::Bool, Device::Cpu)).scatter(-1, &top.ids, &tail);
        keep.logical_and(&valid.unsqueeze(-1))
    };
    // f64 through autograd: the per-token KL plus half the cross-entropy, mean over labelled tokens.
    let s64 = student.to_kind(Kind::Double).set_requires_grad(true);
    let top64 = TopKTail::f_encode(&teacher.to_kind(Kind::Double), K, 1.0).unwrap();
    let kd = TopKKl::new(1.0).f_per_token(&s64, &top64).unwrap();
    let y = labels.clamp_min(0).unsqueeze(-1);
    let ce = s64.log_softmax(-1, Kind::Double).gather(-1, &y, false).squeeze_dim(-1).neg();
    let want = ((kd + ce * 0.5) * valid.to_kind(Kind::Double)).sum(Kind::Double) / 3.0;
    want.backward();
    let want_grad = f64s(&s64.grad().masked_select(&tail_tokens(&top64)));

    let exact = TopKTail::f_encode(&teacher, K, 1.0).unwrap();
    let s = student.detach().set_requires_grad(true);
    let got = TokenKd::new(TopKKl::new(1.0), 0.5).f_loss(&s, &exact, &labels, None).unwrap();
    got.backward();
    let got_grad = f64s(&s.grad().masked_select(&tail_tokens(&exact)));
    assert_eq!(got_grad.len() as i64, 3 * (V - K));
    let worst = relative(&got_grad, &want_grad).into_iter().fold(0.0, f64::max);
    assert!(worst <= 1e-3, "fused: worst relative error on tail tokens {worst:e}");
    // Each token's log-probabilities are off by ε₃₂·A, A = 2·max|z| + 2·log₂V + 8 ≤ 2·25 + 40 = 90
    // here (|z| < 25: N(0, 1) draws shifted by −19.5 and ln 3), weighted by the buckets' total mass
    // 1 and the cross-entropy's 0.5, doubled for exp/log: |Δ| ≤ 2·6e-8·90·1.5 ≈ 1.6e-5.
    let (got, want) = (got.double_value(&[]), want.double_value(&[]));
    assert!((got - want).abs() <= 1.6e-5, "fused value {got} vs f64 {want}");
    // The encoding's own f32 rounding (teacher log-probabilities, f32 vs f64) is within that too:
    // it moves each term by ε₃₂·|log p| ≤ 6e-8·25.
}

/// Logits without a distribution (a NaN or +inf logit, or every logit −inf) are refused when
/// encoded: encoded, their top-k and tail would be NaN or −inf, which the losses read as a loss of
/// 0. A single −inf logit is a token the teacher rules out, and encodes.
#[test]
fn logits_without_a_distribution_are_refused_and_an_empty_batch_encodes_to_nothing() {
    let row = |values: [f64; 4]| Tensor::from_slice(&values).view([1, 1, 4]);
    let inf = f64::INFINITY;
    for broken in [[0.0, f64::NAN, 1.0, 2.0], [0.0, inf, 1.0, 2.0], [-inf, -inf, -inf, -inf]] {
        let err = TopKTail::f_encode(&row(broken), 2, 1.0).map(drop).unwrap_err();
        assert!(err.to_string().contains("1 token(s) of the logits to encode have no distribution"), "{err}");
    }
    TopKTail::f_encode(&row([0.0, -inf, 1.0, 2.0]), 2, 1.0).unwrap();

    let empty = TopKTail::f_encode(&Tensor::zeros([2, 0, 5], (Kind::Float, Device::Cpu)), 3, 1.0).unwrap();
    assert_eq!(
        (empty.ids.size(), empty.log_probs.size(), empty.tail.size()),
        (vec![2, 0, 3], vec![2, 0, 3], vec![2, 0])
    );
}

/// A teacher of another vocabulary: its top-k ids are outside the student's logits, which is a
/// named error, not libtorch's bare index error from the gather.
#[test]
fn a_teacher_of_a_larger_vocabulary_is_a_named_error() {
    let teacher = Tensor::randn([1, 3, 50], (Kind::Float, Device::Cpu));
    let encoded = TopKTail::f_encode(&teacher, 4, 1.0).unwrap();
    let highest = encoded.ids.max().int64_value(&[]);
    let student = Tensor::randn([1, 3, 10], (Kind::Float, Device::Cpu));
    let err = TopKKl::new(1.0).f_loss_masked(&student, &encoded, None).map(drop).unwrap_err();
    assert!(err.to_string().contains("outside the student's vocabulary 0..10"), "{err}");
    // Packed, as a token cache stores it: the same check, where the loss reads the ids.
    let err = TopKKl::new(1.0).f_loss(&student, &encoded.f_pack().unwrap()).map(drop).unwrap_err();
    assert!(err.to_string().contains("outside the student's vocabulary 0..10"), "{err}");
    assert!(highest >= 10, "the draw put every top-4 id below 10: {highest}");
}
