//! Loss schedules and balancing: schedule values at chosen steps (computed by hand), scheduled
//! criteria, a `distill!` model whose losses follow its schedules across steps, the missing-step
//! error, the rescaling of terms to the logits term, and the dynamic API's payloads.

mod common;

use common::Mlp;
use distill::criterion::Weighting;
use distill::prelude::*;
use distill::schedule::LossTerm;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Equal to f64 rounding.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

/// Equal to f32 rounding (the models compute in f32; sums in another order differ in the last bits).
fn near(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1e-3)
}

#[test]
fn schedule_values_at_chosen_steps() {
    let constant = Schedule::constant(0.3);
    assert_eq!([0, 1, 10_000].map(|s| constant.value(s)), [0.3; 3]);

    // 0 → 2 over steps 0..8: 0.25 per step.
    let warmup = Schedule::warmup(0.0, 2.0, 8);
    assert_eq!([0, 1, 4, 7, 8, 100].map(|s| warmup.value(s)), [0.0, 0.25, 1.0, 1.75, 2.0, 2.0]);

    // 1 until step 10, down to 0.5 at step 20.
    let linear = Schedule::linear(1.0, 0.5, 10, 20);
    assert_eq!([0, 10, 12, 15, 20, 30].map(|s| linear.value(s)), [1.0, 1.0, 0.9, 0.75, 0.5, 0.5]);

    // from + (to − from)·(1 − cos(π·x))/2 with x = (step − 100)/100: at x = 1/4, 1/2, 3/4.
    let cosine = Schedule::cosine(0.0, 4.0, 100, 200);
    let quarter = (1.0 - std::f64::consts::FRAC_1_SQRT_2) / 2.0; // (1 − cos(π/4))/2
    let expected = [(0, 0.0), (100, 0.0), (125, 4.0 * quarter), (150, 2.0), (175, 4.0 * (1.0 - quarter)), (200, 4.0)];
    for (step, want) in expected {
        assert!(close(cosine.value(step), want), "cosine at {step}: {} vs {want}", cosine.value(step));
    }
    // A decreasing cosine ramp mirrors it.
    assert!(close(Schedule::cosine(1.0, 0.0, 0, 4).value(1), 1.0 - quarter));

    let steps = Schedule::steps(1.0, [(10, 0.1), (20, 0.01)]);
    assert_eq!([0, 9, 10, 19, 20, 1000].map(|s| steps.value(s)), [1.0, 1.0, 0.1, 0.1, 0.01, 0.01]);
    assert_eq!(Schedule::steps(0.7, []).value(5), 0.7);

    // Composition: product, constant factors, one after another (the second counted from `at`).
    let product = Schedule::warmup(0.0, 1.0, 10) * Schedule::steps(1.0, [(5, 0.5)]);
    assert_eq!([0, 4, 5, 8, 20].map(|s| product.value(s)), [0.0, 0.4, 0.25, 0.4, 0.5]);
    let scaled = 3.0 * (Schedule::warmup(0.0, 1.0, 4) * 2.0);
    assert_eq!(scaled.value(1), 1.5);
    let then = Schedule::constant(0.0).then(100, Schedule::warmup(0.0, 1.0, 10));
    assert_eq!([0, 99, 100, 105, 110, 500].map(|s| then.value(s)), [0.0, 0.0, 0.0, 0.5, 1.0, 1.0]);
    assert_eq!(Schedule::from(0.25), Schedule::constant(0.25));
}

#[test]
fn invalid_schedules_say_why() {
    let cases = [
        (Schedule::constant(f64::NAN), "value must be finite"),
        (Schedule::linear(0.0, 1.0, 10, 5), "ends (step 5) before it starts (step 10)"),
        (Schedule::cosine(f64::INFINITY, 1.0, 0, 5), "start value must be finite"),
        (Schedule::steps(1.0, [(10, 0.5), (10, 0.1)]), "strictly increase, got step 10 after step 10"),
        (Schedule::steps(1.0, [(10, f64::NAN)]), "value at step 10 must be finite"),
        (Schedule::warmup(0.0, 1.0, 5) * Schedule::constant(f64::NAN), "must be finite"),
        (Schedule::constant(1.0).then(5, Schedule::linear(0.0, 1.0, 3, 2)), "before it starts"),
    ];
    for (schedule, reason) in cases {
        let err = schedule.validate().unwrap_err();
        assert!(err.contains(reason), "{schedule:?}: {err}");
    }
    assert!(Schedule::linear(0.0, 1.0, 5, 5).validate().is_ok(), "a jump at step 5");
    assert_eq!(Schedule::linear(0.0, 1.0, 5, 5).value(5), 1.0);
}

fn pair(seed: i64) -> (Tensor, Tensor) {
    tch::manual_seed(seed);
    let opts = (Kind::Double, Device::Cpu);
    (Tensor::randn([4, 6], opts).set_requires_grad(true), Tensor::randn([4, 6], opts))
}

#[test]
fn scheduled_criteria_need_the_step() {
    let (s, t) = pair(1);
    let base = Mse.loss(&s, &t).double_value(&[]);
    let warm = Mse * Schedule::warmup(0.0, 1.0, 10);
    assert!(close(warm.loss_at(3, &s, &t, None).double_value(&[]), 0.3 * base));
    assert!(close(warm.f_loss_at(30, &s, &t, None).unwrap().double_value(&[]), base));
    // The wrapper says what it wraps: the schedule, and the criterion whose loss it weighs.
    let Some(Weighting::Scheduled(schedule, inner)) = warm.weighting() else { panic!("{:?}", warm.weighting()) };
    assert_eq!(*schedule, Schedule::warmup(0.0, 1.0, 10));
    assert!(close(inner.f_loss(&s, &t).unwrap().double_value(&[]), base));
    assert!(Mse.weighting().is_none());
    assert!(matches!((Mse * 2.0).weighting(), Some(Weighting::Constant(w, _)) if w == 2.0));

    // Without a step: an error (or the unchecked call's panic), never step 0.
    let err = warm.f_loss(&s, &t).unwrap_err();
    assert!(matches!(err, DistillError::MissingStep { .. }), "{err}");
    assert!(err.to_string().contains("set_step"), "{err}");
    let panic = std::panic::catch_unwind(|| warm.loss(&s, &t)).unwrap_err();
    assert!(panic.downcast_ref::<String>().is_some_and(|m| m.contains("no training step")));

    // Constant weights and schedules compose, inside or outside.
    let inside = (Mse * 2.0) * Schedule::warmup(0.0, 1.0, 10);
    let outside = (Mse * Schedule::warmup(0.0, 1.0, 10)) * 2.0;
    let both = Mse.scheduled(Schedule::steps(1.0, [(5, 0.5)])) * Schedule::constant(4.0);
    for (criterion, weight) in [(&inside as &dyn Criterion, 1.2), (&outside, 1.2), (&both, 2.0)] {
        assert!(close(criterion.loss_at(6, &s, &t, None).double_value(&[]), weight * base));
        assert!(matches!(criterion.f_loss(&s, &t), Err(DistillError::MissingStep { .. })));
    }
    assert!(matches!((Mse * 2.0 * 3.0).weighting(), Some(Weighting::Constant(w, _)) if w == 6.0));
    // Without a schedule the step changes nothing.
    let doubled = Mse * 2.0;
    assert!(close((&doubled as &dyn Criterion).loss_at(7, &s, &t, None).double_value(&[]), 2.0 * base));

    // The gradient is the schedule's value times the criterion's.
    warm.loss_at(5, &s, &t, None).backward();
    let want = (&s - &t).detach() * (2.0 * 0.5 / 24.0);
    assert!(s.grad().allclose(&want, 1e-12, 1e-12, false));

    // Closures, and criteria behind `dyn`; a scheduled criterion checks what it wraps.
    let gap = (|s: &Tensor, t: &Tensor| (s - t).abs().sum(None)).scheduled(Schedule::constant(0.5));
    let sum: f64 = (&s - &t).abs().sum(Kind::Double).double_value(&[]);
    assert!(close(gap.loss_at(0, &s, &t, None).double_value(&[]), 0.5 * sum));
    let boxed: Box<dyn Criterion> = Box::new(KlDiv::new(2.0) * Schedule::warmup(0.0, 1.0, 2));
    let kl = KlDiv::new(2.0).loss(&s, &t).double_value(&[]);
    assert!(close(boxed.loss_at(1, &s, &t, None).double_value(&[]), 0.5 * kl));
    assert!((KlDiv::new(-1.0) * Schedule::constant(1.0)).validate().is_err());
    assert!((Mse * Schedule::constant(f64::NAN)).validate().unwrap_err().contains("finite"));
    assert!((Mse * Schedule::constant(1.0)).check_shapes(&[2, 3], &[2, 4]).is_err());
    let err =
        (Mse * Schedule::constant(1.0)).f_loss_at(0, &s, &Tensor::zeros([4, 5], (Kind::Double, Device::Cpu)), None);
    assert!(matches!(err, Err(DistillError::ShapeMismatch { .. })));
}

distill! {
    /// Three terms: a warmed-up feature term, a feature term with a step change, and the logits.
    struct Balanced for Mlp => Mlp {
        hidden: student.body.inner.fc => teacher.body.inner.fc with Mse * Schedule::warmup(0.0, 1.0, 100);
        body: student.body => teacher.body with (Cosine * 2.0) * Schedule::steps(1.0, [(50, 0.5)]);
        logits: student => teacher with KlDiv::new(2.0) * 0.5;
    }
}

distill! {
    /// An invalid schedule.
    struct Backwards for Mlp => Mlp {
        hidden: student.body.inner.fc => teacher.body.inner.fc with Mse * Schedule::linear(1.0, 0.0, 10, 5);
    }
}

fn models(vs: &VarStore) -> (Mlp, Mlp, Tensor) {
    tch::manual_seed(7);
    let student = Mlp::new(&(vs.root() / "student"), 16, 10);
    let teacher = Mlp::new(&(vs.root() / "teacher"), 16, 10);
    (student, teacher, Tensor::randn([5, 1, 8, 8], (Kind::Float, Device::Cpu)))
}

fn scalar(t: &Tensor) -> f64 {
    t.double_value(&[])
}

#[test]
fn a_distill_model_follows_its_schedules_across_steps() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher, xs) = models(&vs);
    let mut kd = Balanced::new(vs.root() / "kd", &student, &teacher)?;
    assert_eq!(kd.step(), None);

    // No step, scheduled pairs: an error naming the first scheduled pair, before anything runs.
    let err = kd.forward_t(&xs, true).unwrap_err();
    assert!(matches!(&err, DistillError::MissingStep { pair } if pair == "hidden"), "{err}");

    let mut seen = Vec::new();
    for (step, hidden_weight, body_weight) in
        [(0, 0.0, 2.0), (25, 0.25, 2.0), (50, 0.5, 1.0), (100, 1.0, 1.0), (400, 1.0, 1.0)]
    {
        kd.set_step(step);
        assert_eq!(kd.step(), Some(step));
        let out = kd.forward_t(&xs, true)?;
        assert_eq!(out.hidden.step(), Some(step));
        let (hidden, body, logits) = (
            scalar(&Mse.loss(&out.hidden.student, &out.hidden.teacher)),
            scalar(&Cosine.loss(&out.body.student, &out.body.teacher)),
            scalar(&KlDiv::new(2.0).loss(&out.logits.student, &out.logits.teacher)),
        );
        assert!(hidden > 1e-3 && body > 1e-3 && logits > 1e-4, "{hidden} {body} {logits}");
        let losses = out.losses();
        assert_eq!(scalar(&losses.hidden), hidden * hidden_weight, "step {step}");
        assert_eq!(scalar(&losses.body), body * body_weight, "step {step}");
        assert_eq!(scalar(&losses.logits), logits * 0.5);
        assert_eq!(scalar(&out.hidden.loss()), scalar(&losses.hidden), "the pair's own loss agrees");
        let weights: Vec<f64> = losses.terms().map(|(_, term)| term.weight).collect();
        assert_eq!(weights, [hidden_weight, body_weight, 0.5]);
        let unweighted: Vec<f64> = losses.unweighted().map(|(_, l)| scalar(l)).collect();
        assert_eq!(unweighted, [hidden, body, logits]);
        assert!(losses.terms().all(|(_, term)| term.rescale.is_none()));
        let total = scalar(&out.loss());
        assert!(near(total, hidden * hidden_weight + body * body_weight + logits * 0.5));
        // Both values of each weighted term are in the log line.
        let text = losses.to_string();
        assert!(text.contains(&format!("logits={:.4} (raw {logits:.4}, weight 0.5000)", logits * 0.5)), "{text}");
        let hidden_text = if hidden_weight == 1.0 {
            format!("hidden={hidden:.4} body=") // weight 1: the value alone
        } else {
            format!("hidden={:.4} (raw {hidden:.4}, weight {hidden_weight:.4})", hidden * hidden_weight)
        };
        assert!(text.contains(&hidden_text), "{text}");
        seen.push(scalar(&losses.hidden));
    }
    assert_eq!(seen[0], 0.0, "the warm-up starts at 0");
    assert!(seen[1] > 0.0 && seen[2] > seen[1], "{seen:?}");

    // An unweighted term prints as before.
    distill! { struct Plain for Mlp => Mlp { logits: student => teacher with Mse; } }
    let plain = Plain::new(vs.root() / "plain", &student, &teacher)?;
    let out = plain.forward_t(&xs, false)?;
    assert_eq!(out.losses().to_string(), format!("logits={:.4}", scalar(&out.logits.loss())));
    assert_eq!(out.logits.weight()?, 1.0);

    // An invalid schedule is an error of `new()`, naming the pair.
    let Err(err) = Backwards::new(vs.root() / "backwards", &student, &teacher) else { panic!("an invalid schedule") };
    assert!(matches!(&err, DistillError::InvalidCriterion { pair, .. } if pair == "hidden"), "{err}");
    assert!(err.to_string().contains("before it starts"), "{err}");
    Ok(())
}

#[test]
fn terms_rescale_to_the_logits_term() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher, xs) = models(&vs);
    let Err(err) = Balanced::new(vs.root() / "kd", &student, &teacher)?.rescale_to("logit") else {
        panic!("no such label")
    };
    assert!(err.to_string().contains("no pair has that label; the labels are hidden, body, logits"), "{err}");
    let mut kd = Balanced::new(vs.root() / "kd", &student, &teacher)?.rescale_to("logits")?;
    assert_eq!(kd.rescaled_to(), Some("logits"));
    kd.set_step(25);

    let out = kd.forward_t(&xs, true)?;
    assert_eq!((out.hidden.rescaled_to(), out.body.rescaled_to(), out.logits.rescaled_to()), (Some(2), Some(2), None));
    let losses = out.losses();
    let raw: Vec<f64> = losses.unweighted().map(|(_, l)| scalar(l)).collect();
    let (hidden, body, logits) = (raw[0], raw[1], raw[2]);
    // Each rescaled term takes the logits term's raw magnitude, then its own weight.
    assert!(near(scalar(&losses.hidden), 0.25 * logits), "{} vs {}", scalar(&losses.hidden), 0.25 * logits);
    assert!(near(scalar(&losses.body), 2.0 * logits));
    assert_eq!(scalar(&losses.logits), 0.5 * logits, "the reference is not rescaled");
    let factors: Vec<Option<f64>> = losses.terms().map(|(_, term)| term.rescale.as_ref().map(scalar)).collect();
    assert!(near(factors[0].unwrap(), logits / hidden) && near(factors[1].unwrap(), logits / body));
    assert_eq!(factors[2], None);
    assert!(losses.to_string().contains(", rescaled ×"), "{losses}");
    assert!(near(scalar(&out.loss()), (0.25 + 2.0 + 0.5) * logits));
    // The pair's own loss is not rescaled.
    assert!(near(scalar(&out.hidden.loss()), 0.25 * hidden));

    // The gradient of a rescaled term is its own, times the factor (which has no gradient).
    let w = &student.body.inner.fc.ws;
    let [rescaled_grad] = <[Tensor; 1]>::try_from(Tensor::run_backward(&[&losses.hidden], &[w], true, false)).unwrap();
    let by_hand = Mse.loss(&out.hidden.student, &out.hidden.teacher) * (0.25 * logits / hidden);
    let [want] = <[Tensor; 1]>::try_from(Tensor::run_backward(&[&by_hand], &[w], true, false)).unwrap();
    assert!(rescaled_grad.allclose(&want, 1e-5, 1e-8, false));
    assert!(scalar(&rescaled_grad.abs().max()) > 0.0);
    Ok(())
}

#[test]
fn rescaling_in_the_dynamic_api() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher, xs) = models(&vs);
    let mut mapping: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    mapping.add("body.inner.fc", "body.inner.fc", Box::new(Mse * 0.5))?;
    mapping.add("out", "out", Box::new(KlDiv::new(2.0)))?;
    let mut kd = Distillation::from_mapping(&student, mapping)?;
    let err = kd.set_rescale_to(Some("logits")).unwrap_err();
    assert!(err.to_string().contains("out => out"), "the labels are listed: {err}");
    kd.set_rescale_to(Some("out => out"))?;
    assert_eq!(kd.rescale_to(), Some("out => out"));
    let out = kd.forward_t(&xs, true)?;
    let losses = out.losses();
    let terms: Vec<&LossTerm> = losses.terms().map(|(_, term)| term).collect();
    let (hidden, logits) = (terms[0], terms[1]);
    assert!(logits.rescale.is_none(), "the reference is not rescaled");
    let factor = scalar(&logits.unweighted) / scalar(&hidden.unweighted);
    let applied = scalar(hidden.rescale.as_ref().expect("the hidden term is rescaled"));
    assert!(near(applied, factor.min(distill::schedule::MAX_RESCALE)), "{applied} vs {factor}");
    assert!(near(scalar(&hidden.weighted), 0.5 * applied * scalar(&hidden.unweighted)));
    // The factor carries no gradient: the hidden term's gradient is its own, times the factor.
    let w = &student.body.inner.fc.ws;
    let [rescaled_grad] =
        <[Tensor; 1]>::try_from(Tensor::run_backward(&[&hidden.weighted], &[w], true, false)).unwrap();
    let [own_grad] = <[Tensor; 1]>::try_from(Tensor::run_backward(&[&hidden.unweighted], &[w], true, false)).unwrap();
    assert!(rescaled_grad.allclose(&(own_grad * (0.5 * applied)), 1e-5, 1e-8, false));
    assert!(scalar(&rescaled_grad.abs().max()) > 0.0);
    Ok(())
}

#[test]
fn scheduled_payloads_in_the_dynamic_api() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher, xs) = models(&vs);
    let mut mapping: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    mapping.add("body.inner.fc", "body.inner.fc", Box::new(Mse * Schedule::warmup(0.0, 1.0, 10)))?;
    mapping.add("out", "out", Box::new(KlDiv::new(2.0) * 0.5))?;
    // A boxed criterion is a criterion: as a `Distillation`, the pairs are checked against them.
    let mut checked: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    checked.add("body.inner.fc", "body.inner.fc", Box::new(Mse * Schedule::warmup(0.0, 1.0, 10)))?;
    checked.add("out", "out", Box::new(KlDiv::new(2.0) * 0.5))?;
    assert_eq!(Distillation::from_mapping(&student, checked)?.dry_run(&xs)?.pairs.len(), 2);
    let dm = distill::distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, true)?;
    let step = 4;
    let losses: Vec<f64> = out.pairs().map(|(s, t, c)| scalar(&c.loss_at(step, s, t, None))).collect();
    let (s, t, _) = out.get(0).unwrap();
    assert!(near(losses[0], 0.4 * scalar(&Mse.loss(s, t))));
    let (s, t, _) = out.get(1).unwrap();
    assert!(near(losses[1], 0.5 * scalar(&KlDiv::new(2.0).loss(s, t))));
    let (s, t, payload) = out.get(0).unwrap();
    assert!(matches!(payload.f_loss(s, t), Err(DistillError::MissingStep { .. })));
    assert!(near(scalar(&payload.loss_at(20, s, t, None)), scalar(&Mse.loss(s, t))));
    let Some(Weighting::Scheduled(_, inner)) = payload.weighting() else { panic!("{:?}", payload.weighting()) };
    assert!(near(scalar(&inner.f_loss(s, t)?), scalar(&Mse.loss(s, t))));

    // A mapping whose boxed criterion does not accept its pair's shapes is reported by the check.
    let mut mapping: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    mapping.add("body.inner.fc", "out", Box::new(Mse * Schedule::constant(1.0)))?;
    let err = Distillation::from_mapping(&student, mapping)?.dry_run(&xs).unwrap_err();
    assert!(err.to_string().contains("equal shapes"), "{err}");
    Ok(())
}

distill! {
    /// A feature pair that starts matched (a pruned copy's kept layer) beside the logits term.
    struct StartsMatched for Mlp => Mlp {
        hidden: student.body.inner.fc => teacher.body.inner.fc with Mse;
        logits: student => teacher with KlDiv::new(2.0);
    }
}

/// How far the student's hidden layer is from the teacher's after `steps` SGD steps on the
/// distillation loss alone, starting equal to it up to relative `rounding`, with the hidden term
/// rescaled to the logits term; and the hidden term's rescaling factors.
fn drift_after_steps(rounding: f64, steps: u64) -> Result<(f64, Vec<f64>), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher, _) = models(&vs);
    // Values of their own, not libtorch's global generator, which the file's other tests reseed
    // from other threads: the two runs compared must start from the same weights and inputs.
    let pattern = |shape: &[i64], phase: f64| {
        let n: i64 = shape.iter().product();
        (Tensor::arange(n, (Kind::Float, Device::Cpu)) * 0.7 + phase).sin().view(shape)
    };
    let mut variables: Vec<_> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    for (index, (_, var)) in variables.iter().enumerate() {
        let fan_in = *var.size().last().unwrap_or(&1) as f64;
        tch::no_grad(|| var.shallow_clone().copy_(&(pattern(&var.size(), index as f64) / fan_in.sqrt())));
    }
    let xs = pattern(&[5, 1, 8, 8], 0.5);
    // Equal up to rounding, as a pruned copy's kept channels are through a selection adapter.
    let noise = pattern(&teacher.body.inner.fc.ws.size(), 2.0);
    let rounding = noise * &teacher.body.inner.fc.ws.abs() * rounding;
    tch::no_grad(|| student.body.inner.fc.ws.shallow_clone().copy_(&(&teacher.body.inner.fc.ws + rounding)));
    tch::no_grad(|| {
        student.body.inner.fc.bs.as_ref().unwrap().shallow_clone().copy_(teacher.body.inner.fc.bs.as_ref().unwrap())
    });
    let mut kd = StartsMatched::new(vs.root() / "kd", &student, &teacher)?.rescale_to("logits")?;
    // The teacher runs under no-grad, so the optimizer moves the student (and adapters) only.
    let mut opt = tch::nn::OptimizerConfig::build(tch::nn::Sgd::default(), &vs, 0.1)?;
    let mut factors = Vec::new();
    for step in 0..steps {
        kd.set_step(step);
        let out = kd.forward_t(&xs, true)?;
        let losses = out.losses();
        if let Some(factor) = losses.terms().next().and_then(|(_, term)| term.rescale.as_ref().map(scalar)) {
            factors.push(factor);
        }
        opt.backward_step(&out.loss());
    }
    let drift = (&student.body.inner.fc.ws - &teacher.body.inner.fc.ws).abs().max();
    Ok((scalar(&drift), factors))
}

#[test]
fn a_term_that_starts_matched_is_not_blown_up_by_rescaling() -> Result<(), DistillError> {
    // Matched up to rounding (1e-6 relative), the hidden term's loss is ~1e-13 at step 0. Uncapped,
    // its factor is ~1e11 and the layer ends far from where an exact start leaves it; capped, the
    // noise weighs at most 1000× itself and the two runs end within a few percent.
    let (exact, _) = drift_after_steps(0.0, 5)?;
    let (rounded, factors) = drift_after_steps(1e-6, 5)?;
    assert!(
        (rounded - exact).abs() <= 0.05 * exact,
        "drift {rounded} from a rounded start vs {exact} from an exact one (factors {factors:?})"
    );
    assert_eq!(factors[0], distill::schedule::MAX_RESCALE, "step 0 is capped: {factors:?}");
    assert!(factors.iter().all(|&factor| factor <= distill::schedule::MAX_RESCALE), "{factors:?}");
    Ok(())
}
