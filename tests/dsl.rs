//! Every grammar form of `distill!` and `#[derive(Distillable)]`, compiled and run: labels (given
//! and derived), string paths (static and into a `Sequential`), tuple fields, enums, generics, the
//! bare root, both adapters, weighted criteria, closures, doc comments, per-pair options, targets,
//! teacher modes — and the run-time errors of `new()` and `forward_t`.

use distill::error::CaptureError;
use distill::module::PathError;
use distill::prelude::*;
use nn::{Module, ModuleT};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

fn mse(s: &Tensor, t: &Tensor) -> Tensor {
    (s - t).square().mean(Kind::Float)
}

// ---- models covering every kind of child ----------------------------------------------------

/// A tuple struct: children `0` and `1`.
#[derive(Debug, Distillable)]
struct Pair2(nn::Linear, nn::Linear);

impl ModuleT for Pair2 {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.1.forward(&self.0.forward(xs).relu())
    }
}

/// An enum: children of the active variant.
#[derive(Debug, Distillable)]
enum Head {
    Linear(nn::Linear),
    Deep {
        first: nn::Linear,
        #[distill(rename = "last")]
        second: nn::Linear,
    },
    #[allow(dead_code)]
    Nothing,
}

impl ModuleT for Head {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        match self {
            Head::Linear(l) => l.forward(xs),
            Head::Deep { first, second } => second.forward(&first.forward(xs).relu()),
            Head::Nothing => xs.shallow_clone(),
        }
    }
}

/// Generic over its layer type.
#[derive(Debug, Distillable)]
struct Stack<L> {
    layers: nn::Seq<L>,
}

impl<L: ModuleT> ModuleT for Stack<L> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.forward_t(xs, train)
    }
}

#[derive(Debug, Distillable)]
struct Mlp {
    stack: Stack<nn::Linear>,
    pair: Pair2,
    vec: Vec<nn::Linear>,
    array: [Pair2; 2],
    shared: nn::Linear,
    head: Head,
    dynamic: nn::Sequential,
    tapped: nn::Tap<Pair2>,
    boxed: Box<nn::Linear>,
    maybe: Option<nn::Linear>,
    #[distill(skip)]
    calls: i64,
}

const W: i64 = 6;

fn linear(p: nn::Path, n: &str) -> nn::Linear {
    nn::linear(&p / n, W, W, Default::default())
}

fn pair2(p: nn::Path) -> Pair2 {
    Pair2(linear(&p / "0", "l"), linear(&p / "1", "l"))
}

fn mlp(p: nn::Path, deep: bool) -> Mlp {
    let stack = Stack { layers: (0..3).map(|i| linear(&p / "stack" / i, "l")).collect() };
    let head = if deep {
        Head::Deep { first: linear(&p / "head", "first"), second: linear(&p / "head", "second") }
    } else {
        Head::Linear(linear(&p / "head", "0"))
    };
    Mlp {
        stack,
        pair: pair2(&p / "pair"),
        vec: (0..2).map(|i| linear(&p / "vec", &i.to_string())).collect(),
        array: [pair2(&p / "array0"), pair2(&p / "array1")],
        shared: linear(p.clone(), "shared"),
        head,
        dynamic: nn::seq().add(linear(&p / "dyn", "0")).add_fn(|xs| xs.tanh()).add(pair2(&p / "dyn2")),
        tapped: nn::tap(pair2(&p / "tapped")),
        boxed: Box::new(linear(p.clone(), "boxed")),
        maybe: Some(linear(p.clone(), "maybe")),
        calls: 2,
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = self.stack.forward_t(xs, train);
        h = self.pair.forward_t(&h, train);
        for l in &self.vec {
            h = l.forward(&h);
        }
        for p in &self.array {
            h = p.forward_t(&h, train);
        }
        for _ in 0..self.calls {
            h = self.shared.forward(&h); // one module, called twice
        }
        h = self.head.forward_t(&h, train);
        h = self.dynamic.forward_t(&h, train);
        h = self.tapped.forward_t(&h, train);
        h = self.boxed.forward(&h);
        if let Some(m) = &self.maybe {
            h = m.forward(&h);
        }
        h
    }
}

// ---- the grammar -----------------------------------------------------------------------------

distill! {
    /// Every endpoint form.
    #[derive(Debug)]
    pub struct Everything for Mlp => Mlp {
        /// A labelled typed path through a generic struct and a `Seq` slot.
        stacked: student.stack.layers[1] => teacher.stack.layers[1] with Mse;
        student.pair.0 => teacher.pair.0 with L1 * 0.5;                      // tuple field; label `pair_0`
        student.vec[1] => teacher.vec[1] with 2.0 * Mse;                     // Vec of recording layers
        student.array[1].1 => teacher.array[1].1 with |s, t| (s - t).abs().mean(Kind::Float); // array, inner index
        "head.last" => "head.last" with Mse;                                 // into an enum, renamed
        "dynamic.2.1" => "dynamic.2.1" with Mse;                             // into a Sequential, checked by new()
        dyn_slot: student.dynamic[1] => teacher.dynamic[1] with Mse;         // a Sequential slot (a closure)
        student.tapped => teacher.tapped with Mse;                           // Tap<user struct>
        student.boxed => teacher.boxed with Mse;
        "maybe" => "maybe" with Mse;                                        // an `Option` is reached by name
        shared: student.shared => teacher.shared with Mse, all_calls;        // every call, concatenated
        shared_in: student.shared => teacher.shared with Mse, all_calls, input;
        student => teacher with mse;                                         // a fn item as criterion; label `output`
        student => teacher with Mse, input;                                  // label `input`
    }
}

#[test]
fn every_endpoint_form_runs_and_matches_hand_computed_tensors() -> Result<(), DistillError> {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s", true), mlp(vs.root() / "t", true));
    let kd = Everything::new(vs.root() / "kd", &student, &teacher)?;
    assert_eq!(
        Everything::LABELS,
        [
            "stacked",
            "pair_0",
            "vec_1",
            "array_1_1",
            "head_last",
            "dynamic_2_1",
            "dyn_slot",
            "tapped",
            "boxed",
            "maybe",
            "shared",
            "shared_in",
            "output",
            "input"
        ]
    );
    let paths: Vec<&str> = kd.distillation().student_endpoints().iter().map(|e| e.path()).collect();
    assert_eq!(
        paths,
        [
            "stack.layers.1",
            "pair.0",
            "vec.1",
            "array.1.1",
            "head.last",
            "dynamic.2.1",
            "dynamic.1",
            "tapped",
            "boxed",
            "maybe",
            "shared",
            "shared",
            "",
            ""
        ]
    );
    let _ = format!("{kd:?}"); // the user's `#[derive(Debug)]` reached the generated struct

    let xs = randn(&[3, W]);
    let out = kd.forward_t(&xs, false)?;

    // Hand-computed intermediates of the student.
    let s = &student;
    let h1 = s.stack.layers[1].forward(&s.stack.layers[0].forward(&xs));
    assert!(out.stacked.student.equal(&h1));
    let h = s.stack.layers[2].forward(&h1);
    assert!(out.pair_0.student.equal(&s.pair.0.forward(&h)));
    let h = s.pair.forward_t(&h, false);
    let v0 = s.vec[0].forward(&h);
    assert!(out.vec_1.student.equal(&s.vec[1].forward(&v0)));
    let h = s.array[0].forward_t(&s.vec[1].forward(&v0), false);
    let a1 = s.array[1].0.forward(&h).relu();
    assert!(out.array_1_1.student.equal(&s.array[1].1.forward(&a1)));
    let h = s.array[1].forward_t(&h, false);
    let sh1 = s.shared.forward(&h);
    let sh2 = s.shared.forward(&sh1);
    assert!(out.shared.student.equal(&Tensor::cat(&[&sh1, &sh2], 0)), "all calls, in call order");
    assert!(out.shared_in.student.equal(&Tensor::cat(&[&h, &sh1], 0)), "inputs of all calls");
    let Head::Deep { first, second } = &s.head else { unreachable!() };
    let head = second.forward(&first.forward(&sh2).relu());
    assert!(out.head_last.student.equal(&head));
    let d0 = s.dynamic[0].forward_t(&head, false);
    assert!(out.dyn_slot.student.equal(&d0.tanh()));
    let d2 = s.dynamic.forward_t(&head, false);
    assert!(out.dynamic_2_1.student.equal(&d2));
    let t = s.tapped.forward_t(&d2, false);
    assert!(out.tapped.student.equal(&t));
    let b = s.boxed.forward(&t);
    assert!(out.boxed.student.equal(&b));
    let m = s.maybe.as_ref().unwrap().forward(&b);
    assert!(out.maybe.student.equal(&m));
    assert!(out.output.student.equal(&m) && out.student_output.equal(&m));
    assert!(out.input.student.equal(&xs));

    // Criteria, weights and closures.
    let l1 = (&out.pair_0.student - &out.pair_0.teacher).abs().mean(Kind::Float) * 0.5;
    assert!(out.pair_0.loss().allclose(&l1, 1e-6, 1e-7, false));
    let two_mse = mse(&out.vec_1.student, &out.vec_1.teacher) * 2.0;
    assert!(out.vec_1.loss().allclose(&two_mse, 1e-6, 1e-7, false));
    let total: f64 = out.pairs().iter().map(|p| p.loss().double_value(&[])).sum();
    let loss = out.loss().double_value(&[]);
    assert!((loss - total).abs() <= 1e-5 * total.abs().max(1.0), "{loss} vs {total}");
    let labels: Vec<&str> = out.pairs().iter().map(|p| p.label()).collect();
    assert_eq!(labels, Everything::LABELS);
    Ok(())
}

/// `Head::Linear` has no `last`: the string path is fine for the type, but not for this value.
#[test]
fn enum_paths_are_checked_against_the_active_variant() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s", false), mlp(vs.root() / "t", true));
    let err = Everything::new(vs.root() / "kd", &student, &teacher).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::UnknownPath { side: distill::Side::Student, path, .. }) if path == "head.last"),
        "{err}"
    );
}

// ---- adapters, labels derived from roots, targets, teacher modes -----------------------------

#[derive(Debug, Distillable)]
struct Wide {
    inner: nn::Linear,
    out: nn::Linear,
}

impl ModuleT for Wide {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.out.forward(&self.inner.forward(xs).relu())
    }
}

fn wide(p: nn::Path, hidden: i64) -> Wide {
    Wide {
        inner: nn::linear(&p / "inner", 4, hidden, Default::default()),
        out: nn::linear(&p / "out", hidden, 3, Default::default()),
    }
}

distill! {
    struct Learned for Wide => Wide {
        narrowed: student.inner => learned_linear_adapter(teacher.inner) with Mse;
        widened: learned_inverted_linear_adapter(student.inner) => teacher.inner with Mse;
        both: learned_inverted_linear_adapter(student.out) => learned_linear_adapter(teacher.out) with Cosine;
        logits: student => teacher with Dkd::default();
    }
}

#[test]
fn learned_adapters_on_either_side_and_targets() -> Result<(), DistillError> {
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (wide(vs.root() / "s", 5), wide(vs.root() / "t", 9));
    let kd = Learned::new(vs.root() / "kd", &student, &teacher)?;
    let names: Vec<String> = vs.variables().into_keys().collect();
    for prefix in ["kd.narrowed.", "kd.widened.", "kd.both.student.", "kd.both.teacher."] {
        assert!(names.iter().any(|n| n.starts_with(prefix)), "{prefix} in {names:?}");
    }
    let xs = randn(&[8, 4]);
    let out = kd.forward_t(&xs, true)?;
    assert_eq!(out.narrowed.teacher.size(), [8, 5]);
    assert_eq!(out.widened.student.size(), [8, 9]);
    assert_eq!(out.both.student.size(), out.both.teacher.size());

    // Targets reach criteria that use them.
    let ys = Tensor::from_slice(&[0i64, 1, 2, 0, 1, 2, 0, 1]);
    let without = out.logits.loss();
    let out = out.with_targets(&ys);
    assert!(out.logits.targets().is_some());
    let with = out.logits.loss();
    let expected = Dkd::default().loss_with_targets(&out.logits.student, &out.logits.teacher, Some(&ys));
    assert!(with.allclose(&expected, 1e-6, 1e-7, false));
    assert!(!with.allclose(&without, 1e-9, 1e-9, false), "DKD with labels differs from its argmax fallback");
    Ok(())
}

#[test]
fn teacher_modes_and_separate_inputs() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (wide(vs.root() / "s", 5), wide(vs.root() / "t", 5));
    distill! {
        struct Plain for Wide => Wide {
            student.inner => teacher.inner with Mse;
        }
    }
    let kd = Plain::new(vs.root(), &student, &teacher)?;
    let (xs, txs) = (randn(&[2, 4]), randn(&[2, 4]));
    let out = kd.forward_t_with(&xs, &txs, true)?;
    assert!(out.teacher_output.equal(&teacher.forward_t(&txs, false)));
    assert!(out.student_output.equal(&student.forward_t(&xs, true)));
    assert!(!out.inner.teacher.requires_grad(), "no-grad teacher by default");

    let kd = kd.teacher_grad(true).teacher_train(true);
    assert!(kd.teacher_mode().grad && kd.teacher_mode().train);
    let out = kd.forward_t(&xs, true)?;
    assert!(out.inner.teacher.requires_grad());
    assert!(std::ptr::eq(kd.student(), &student) && std::ptr::eq(kd.teacher(), &teacher));
    Ok(())
}

// ---- errors found by new() and forward_t -----------------------------------------------------

distill! {
    #[derive(Debug)]
    struct OutOfRange for Mlp => Mlp {
        student.stack.layers[7] => teacher.stack.layers[0] with Mse;
    }
}

distill! {
    #[derive(Debug)]
    struct InnerOutOfRange for Mlp => Mlp {
        a: student.array[1].0 => teacher.vec[5] with Mse;
    }
}

distill! {
    #[derive(Debug)]
    struct BadDynamic for Mlp => Mlp {
        "dynamic.2.2" => "dynamic.2.1" with Mse;
    }
}

distill! {
    struct Mismatch for Wide => Wide {
        student.inner => teacher.inner with Mse;
        related: student.inner => teacher.inner with SimilarityPreserving;
    }
}

#[test]
fn run_time_errors_come_from_new_and_forward() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s", true), mlp(vs.root() / "t", true));
    let err = OutOfRange::new(vs.root(), &student, &teacher).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::IndexOutOfRange { container, index: 7, len: 3, .. }) if container == "stack.layers"),
        "{err}"
    );
    let err = InnerOutOfRange::new(vs.root(), &student, &teacher).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::IndexOutOfRange { side: distill::Side::Teacher, container, index: 5, len: 2 }) if container == "vec"),
        "{err}"
    );
    let err = BadDynamic::new(vs.root(), &student, &teacher).unwrap_err();
    assert!(matches!(&err, DistillError::Path(PathError::UnknownPath { path, .. }) if path == "dynamic.2.2"), "{err}");

    let (student, teacher) = (wide(vs.root() / "ws", 5), wide(vs.root() / "wt", 7));
    let kd = Mismatch::new(vs.root(), &student, &teacher)?;
    let err = kd.forward_t(&randn(&[4, 4]), false).unwrap_err();
    assert!(
        matches!(&err, DistillError::ShapeMismatch { pair, student, teacher, .. } if pair == "inner" && student == &[4, 5] && teacher == &[4, 7]),
        "{err}"
    );
    Ok(())
}

distill! {
    struct Twice for Mlp => Mlp {
        student.shared => teacher.shared with Mse;
    }
}

#[test]
fn a_module_called_twice_needs_all_calls() {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s", true), mlp(vs.root() / "t", true));
    let kd = Twice::new(vs.root(), &student, &teacher).unwrap();
    let err = kd.forward_t(&randn(&[2, W]), false).unwrap_err();
    assert!(matches!(err, DistillError::Capture(CaptureError::CalledMoreThanOnce { calls: 2, .. })), "{err}");
}

#[test]
fn losses_display_named_terms() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (wide(vs.root() / "s", 5), wide(vs.root() / "t", 5));
    let kd = Mismatch::new(vs.root(), &student, &teacher)?;
    let out = kd.forward_t(&randn(&[4, 4]), false)?;
    let losses = out.losses();
    let text = losses.to_string();
    let terms: Vec<&str> = text.split(' ').collect();
    assert_eq!(terms.len(), 2, "{text}");
    for ((label, loss), term) in losses.iter().zip(&terms) {
        assert_eq!(*term, format!("{label}={:.4}", loss.double_value(&[])));
    }
    assert!(terms[0].starts_with("inner=") && terms[1].starts_with("related="));
    Ok(())
}

// ---- `distill!` inside `macro_rules!` ---------------------------------------------------------

/// A `macro_rules!` front end over `distill!`: the index arrives as a `$i:literal` fragment and the
/// criterion as an `$c:expr` one, each in an invisible group, and the label is derived from the
/// index and the closure's parameter types are inferred all the same.
macro_rules! wide_kd {
    ($name:ident, $index:literal, $criterion:expr) => {
        distill! {
            struct $name for Mlp => Mlp {
                student.vec[$index] => teacher.vec[$index] with $criterion;
            }
        }
    };
}

wide_kd!(FromMacro, 1, |s, t| (s - t).square().mean(Kind::Float));

#[test]
fn macro_rules_fragments_label_and_infer_as_written_tokens() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (mlp(vs.root() / "s", true), mlp(vs.root() / "t", true));
    let kd = FromMacro::new(vs.root() / "kd", &student, &teacher)?;
    assert_eq!(FromMacro::LABELS, ["vec_1"]);
    let out = kd.forward_t(&randn(&[2, W]), false)?;
    assert!(out.vec_1.loss().allclose(&mse(&out.vec_1.student, &out.vec_1.teacher), 1e-6, 1e-7, false));
    Ok(())
}
