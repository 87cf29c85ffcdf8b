//! The sampled encoding (Sparse Logit Sampling) is unbiased: over many seeded draws, the mean of
//! the KL estimate and of its student gradient is the full KL's, within a bound from the
//! estimator's variance; an estimate without the importance weights fails the same bound.

use distill::criterion::{Criterion, Divergence, SampledKl, SampledLogits, SequenceKd, TokenCriterion, TokenReduction};
use tch::{Device, Kind, Tensor};

const V: i64 = 64;
/// Tokens drawn per position (Sparse Logit Sampling's ≈ 12).
const N: i64 = 12;
/// Independent encodings: rows of one encode call (draws are independent across rows).
const DRAWS: i64 = 20_000;
/// Standard deviations allowed: a 6σ deviation of a Gaussian mean has probability 2e-9, and the
/// generator is seeded, so the test is deterministic.
const SIGMAS: f64 = 6.0;

fn setup() -> (Tensor, Tensor) {
    tch::manual_seed(12);
    let opts = (Kind::Double, Device::Cpu);
    (Tensor::randn([1, 1, V], opts) * 2.0, Tensor::randn([1, 1, V], opts) * 2.0)
}

/// The mean over `DRAWS` encodings of the per-token estimate and of its student gradient, with the
/// standard error of each mean (the sample standard deviation over draws / √DRAWS).
fn draws(teacher: &Tensor, student: &Tensor, t: f64, proposal: f64, weighted: bool) -> (f64, f64, Vec<f64>, Vec<f64>) {
    let rows = teacher.expand([1, DRAWS, V], false).contiguous();
    let mut sampled = SampledLogits::f_encode(&rows, N, t, proposal, 2026).unwrap();
    if !weighted {
        sampled.weights = sampled.weights.ones_like() / N as f64;
    }
    let s = student.expand([1, DRAWS, V], false).contiguous().set_requires_grad(true);
    let per = SampledKl::new(t).f_per_token(&s, &sampled).unwrap();
    per.sum(Kind::Double).backward();
    let per = per.reshape([-1]);
    let g = s.grad().reshape([DRAWS, V]);
    let se = |x: &Tensor| x.std_dim([0].as_slice(), true, false) / (DRAWS as f64).sqrt();
    let f = |x: Tensor| Vec::<f64>::try_from(x.reshape([-1])).unwrap();
    (
        per.mean(Kind::Double).double_value(&[]),
        se(&per.unsqueeze(1)).double_value(&[0]),
        f(g.mean_dim([0].as_slice(), false, Kind::Double)),
        f(se(&g)),
    )
}

/// The full KL and its student gradient `(q − p)/T`, in f64.
fn full(teacher: &Tensor, student: &Tensor, t: f64) -> (f64, Vec<f64>) {
    let s = student.detach().set_requires_grad(true);
    let kd = SequenceKd::new(Divergence::ForwardKl, t).with_reduction(TokenReduction::Sum);
    let loss = kd.loss(&s, teacher);
    loss.backward();
    (loss.double_value(&[]), Vec::<f64>::try_from(s.grad().reshape([-1])).unwrap())
}

/// The exact standard deviation of one encoding's estimate: with draws `x ~ r` and
/// `Y = p(x)/r(x) · (log p(x) − log q(x))`, the estimate is the mean of `N` such `Y`, of variance
/// `(E_r[Y²] − KL²) / N`.
fn exact_sd(teacher: &Tensor, student: &Tensor, t: f64, proposal: f64) -> f64 {
    let log_p = (teacher / t).log_softmax(-1, Kind::Double);
    let log_q = (student / t).log_softmax(-1, Kind::Double);
    let log_r = (teacher / (t * proposal)).log_softmax(-1, Kind::Double);
    let y = (&log_p - &log_r).exp() * (&log_p - &log_q);
    let second = (log_r.exp() * &y * &y).sum(Kind::Double).double_value(&[]);
    let kl = (log_p.exp() * (&log_p - &log_q)).sum(Kind::Double).double_value(&[]);
    ((second - kl * kl) / N as f64).sqrt()
}

#[test]
fn the_sampled_estimate_is_unbiased_in_value_and_gradient() {
    let (teacher, student) = setup();
    for (t, proposal) in [(1.0, 1.0), (2.0, 1.0), (1.0, 2.0)] {
        let (kl, grad) = full(&teacher, &student, t);
        let (mean, se, gmean, gse) = draws(&teacher, &student, t, proposal, true);
        // The exact standard error of the mean, and the measured one, agree (a check of the
        // derivation); the bound uses the exact one.
        let sd = exact_sd(&teacher, &student, t, proposal) / (DRAWS as f64).sqrt();
        assert!((se / sd - 1.0).abs() < 0.1, "T={t} τ={proposal}: measured se {se:e}, exact {sd:e}");
        assert!((mean - kl).abs() <= SIGMAS * sd, "T={t} τ={proposal}: mean {mean} vs KL {kl} (σ {sd:e})");
        // Each gradient entry's mean within 6 of its measured standard errors (plus the f64
        // rounding of the sum of DRAWS terms, ε·DRAWS·|g|).
        for (v, ((m, s), g)) in gmean.iter().zip(&gse).zip(&grad).enumerate() {
            let bound = SIGMAS * s + 1e-16 * DRAWS as f64 * g.abs();
            assert!((m - g).abs() <= bound, "T={t} τ={proposal}: grad[{v}] mean {m} vs {g} (bound {bound:e})");
        }
    }
}

/// Without the importance weights a proposal other than `p` is biased, and the bound catches it.
#[test]
fn dropping_the_importance_weights_fails_the_bound() {
    let (teacher, student) = setup();
    let (kl, _) = full(&teacher, &student, 1.0);
    let (mean, _, _, _) = draws(&teacher, &student, 1.0, 2.0, false);
    let sd = exact_sd(&teacher, &student, 1.0, 2.0) / (DRAWS as f64).sqrt();
    assert!((mean - kl).abs() > SIGMAS * sd, "unweighted mean {mean} unexpectedly close to {kl}");
}

#[test]
fn packed_round_trip_and_errors() {
    let opts = (Kind::Float, Device::Cpu);
    let t = Tensor::randn([2, 3, 30], opts);
    let s = Tensor::randn([2, 3, 30], opts);
    let sampled = SampledLogits::f_encode(&t, 5, 1.0, 1.0, 7).unwrap();
    let again = SampledLogits::f_encode(&t, 5, 1.0, 1.0, 7).unwrap();
    assert!(sampled.ids.equal(&again.ids), "the same seed draws the same tokens");
    let packed = sampled.f_pack().unwrap();
    assert_eq!(packed.size(), [2, 3, 15]);
    let direct = SampledKl::new(1.0).f_loss_masked(&s, &sampled, None).unwrap();
    assert_eq!(SampledKl::new(1.0).loss(&s, &packed).double_value(&[]), direct.double_value(&[]));
    assert!(SampledLogits::f_encode(&t, 0, 1.0, 1.0, 7).is_err());
    assert!(SampledKl::new(1.0).f_loss(&s, &packed.narrow(-1, 0, 14)).is_err());
}

/// A NaN in the packed log-probabilities is named as such (NaN is not a positive number), for the
/// sampled encoding and the top-k tail alike; a positive one is still "not all ≤ 0".
#[test]
fn a_nan_packed_log_probability_is_named_as_nan() {
    use distill::criterion::{CriterionError, Packed, PackedProblem, TopKKl, TopKTail};
    use distill::DistillError;
    let opts = (Kind::Float, Device::Cpu);
    let t = Tensor::randn([1, 2, 30], opts);
    let s = Tensor::randn([1, 2, 30], opts);
    let problem = |err: DistillError| match err {
        DistillError::Criterion(CriterionError::InvalidPacked { encoding, problem }) => (encoding, problem),
        other => panic!("not an invalid packed encoding: {other}"),
    };
    let sampled = SampledLogits::f_encode(&t, 5, 1.0, 1.0, 7).unwrap().f_pack().unwrap();
    let top = TopKTail::f_encode(&t, 5, 1.0).unwrap().f_pack().unwrap();
    for (value, want) in [(f64::NAN, PackedProblem::NotFinite), (0.5, PackedProblem::PositiveLogProbability)] {
        let bad = sampled.copy();
        let _ = bad.get(0).get(1).narrow(0, 2, 1).fill_(value);
        let err = SampledKl::new(1.0).f_loss(&s, &bad).map(drop).unwrap_err();
        let message = err.to_string();
        assert_eq!(problem(err), (Packed::Sampled, want.clone()), "{message}");
        let said = if value.is_nan() { "log-probabilities hold NaN or +inf" } else { "not all ≤ 0" };
        assert!(message.contains(said), "{message}");
    }
    let bad = top.copy();
    let _ = bad.get(0).get(1).narrow(0, 2, 1).fill_(f64::NAN);
    let err = TopKKl::new(1.0).f_loss(&s, &bad).map(drop).unwrap_err();
    assert!(err.to_string().contains("log-probabilities hold NaN or +inf"), "{err}");
    assert_eq!(problem(err), (Packed::TopKTail, PackedProblem::NotFinite));
}

/// Zero tokens encode to the empty encoding (as `TopKTail::f_encode` does), whose loss is 0.
#[test]
fn an_empty_batch_encodes_to_nothing() {
    for shape in [[2, 0, 5], [0, 3, 5]] {
        let logits = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let empty = SampledLogits::f_encode(&logits, 4, 1.0, 1.0, 7).unwrap();
        let want = vec![shape[0], shape[1], 4];
        assert_eq!(
            (empty.ids.size(), empty.log_probs.size(), empty.weights.size()),
            (want.clone(), want.clone(), want)
        );
        assert_eq!(
            (empty.ids.kind(), empty.log_probs.kind(), empty.temperature),
            (Kind::Int64, Kind::Float, Some(1.0))
        );
        let student = Tensor::zeros(shape, (Kind::Float, Device::Cpu));
        let loss = SampledKl::new(1.0).f_loss_masked(&student, &empty, None).unwrap();
        assert_eq!(loss.double_value(&[]), 0.0);
    }
}
