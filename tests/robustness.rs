//! Run-time failures found by using the API as a careless or hostile user would: each is a
//! `DistillError` naming what to fix, or correct behaviour — never a panic, a poisoned thread or a
//! silent guess.

use distill::error::CaptureError;
use distill::module::PathError;
use distill::nn::{self, Module, ModuleT, VarStore};
use distill::Distillable;
use distill::{distill, DistillError, Mapping, Side};
use tch::{Device, Kind, Tensor};

fn randn(shape: &[i64]) -> Tensor {
    Tensor::randn(shape, (Kind::Float, Device::Cpu))
}

// ---- a panicking teacher -----------------------------------------------------------------------

/// A linear layer whose forward panics on demand.
#[derive(Debug, Distillable)]
struct Fragile {
    fc: nn::Linear,
    #[distill(skip)]
    panics: bool,
}

impl ModuleT for Fragile {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let out = self.fc.forward(xs);
        assert!(!self.panics, "the teacher's forward failed");
        out
    }
}

#[test]
fn a_teacher_that_panics_leaves_autograd_enabled() {
    let vs = VarStore::new(Device::Cpu);
    let student = Fragile { fc: nn::linear(vs.root() / "s", 3, 3, Default::default()), panics: false };
    let teacher = Fragile { fc: nn::linear(vs.root() / "t", 3, 3, Default::default()), panics: true };
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("fc", "fc", ()).unwrap();
    let dm = distill(&student, &teacher, mapping);
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dm.forward_t(&randn(&[2, 3]), true).is_ok()));
    assert!(caught.is_err(), "the teacher panicked");

    // Plain tch code on this thread still records gradients.
    let x = Tensor::from_slice(&[1.0f32, 2.0]).set_requires_grad(true);
    let y = (&x * 3.0).sum(Kind::Float);
    assert!(y.requires_grad(), "grad mode was left disabled by the panic");
    y.backward();
    assert_eq!(Vec::<f32>::try_from(x.grad()).unwrap(), [3.0, 3.0]);
}

// ---- layers held directly in a `Seq` -----------------------------------------------------------

#[derive(Debug, Distillable)]
struct Layers {
    layers: nn::Seq<nn::Linear>,
}

impl ModuleT for Layers {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.forward_t(xs, train)
    }
}

fn layers(p: &nn::Path, n: usize) -> Layers {
    Layers { layers: (0..n).map(|i| nn::linear(p / i, 4, 4, Default::default())).collect() }
}

#[test]
fn a_layer_held_in_a_seq_can_be_given_by_reference() -> Result<(), DistillError> {
    let vs = VarStore::new(Device::Cpu);
    let (student, teacher) = (layers(&(vs.root() / "s"), 3), layers(&(vs.root() / "t"), 3));
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add(&student.layers[1], &teacher.layers[1], ())?;
    assert_eq!(mapping.pairs()[0].student.path(), "layers.1");
    assert_eq!(mapping.pairs()[0].teacher.path(), "layers.1");
    let dm = distill(&student, &teacher, mapping);
    let xs = randn(&[2, 4]);
    let out = dm.forward_t(&xs, false)?;
    let (s, t, _) = out.get(0).expect("one pair");
    let by_hand = |m: &Layers| m.layers[1].forward(&m.layers[0].forward(&xs));
    assert!(s.equal(&by_hand(&student)) && t.equal(&by_hand(&teacher)));
    Ok(())
}

// ---- a `Seq` whose elements are called one by one ----------------------------------------------

#[derive(Debug, Distillable)]
struct Block {
    fc: nn::Linear,
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        self.fc.forward(xs).relu()
    }
}

/// Iterates over its `Seq` instead of calling it: the blocks run, their slots record nothing.
#[derive(Debug, Distillable)]
struct Looping {
    blocks: nn::Seq<Block>,
}

impl ModuleT for Looping {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for block in &self.blocks {
            h = block.forward_t(&h, train);
        }
        h
    }
}

#[test]
fn a_seq_iterated_by_hand_says_its_elements_ran_unrecorded() {
    let vs = VarStore::new(Device::Cpu);
    let p = vs.root();
    let model =
        Looping { blocks: (0..2).map(|i| Block { fc: nn::linear(&p / i, 4, 4, Default::default()) }).collect() };
    let mut mapping = Mapping::new(&model, &model);
    mapping.add("blocks.1", "blocks.1", ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let err = dm.forward_t(&randn(&[2, 4]), false).unwrap_err();
    assert!(
        matches!(&err, DistillError::Capture(CaptureError::ElementNotRecorded { side: Side::Teacher, path, container }) if path == "blocks.1" && container == "blocks"),
        "{err:?}"
    );
    let message = err.to_string();
    for needle in [
        "`blocks.1`",
        "`blocks`",
        "seq.forward_t",
        "self.blocks.elements()",
        "forward_at",
        "for element in &self.blocks",
    ] {
        assert!(message.contains(needle), "{needle:?} is missing from: {message}");
    }

    // A module of the block itself still records, however the block is called.
    let mut mapping = Mapping::new(&model, &model);
    mapping.add("blocks.1.fc", &model.blocks[1].fc, ()).unwrap();
    assert!(distill(&model, &model, mapping).forward_t(&randn(&[2, 4]), false).is_ok());
}

// ---- index segments are written one way ---------------------------------------------------------

#[test]
fn index_segments_with_a_sign_or_leading_zeros_are_refused() {
    let vs = VarStore::new(Device::Cpu);
    let model =
        Looping { blocks: (0..3).map(|i| Block { fc: nn::linear(vs.root() / i, 4, 4, Default::default()) }).collect() };
    let mut mapping = Mapping::<()>::new(&model, &model);
    for (path, suggestion) in
        [("blocks.+1.fc", "blocks.1.fc"), ("blocks.01.fc", "blocks.1.fc"), ("blocks.00", "blocks.0")]
    {
        let err = mapping.add(path, "blocks.1", ()).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, DistillError::Path(PathError::UnknownPath { side: Side::Student, path: p, suggestion: Some(s) }) if p == path && s == suggestion),
            "{path}: {err:?}"
        );
    }
    assert!(mapping.is_empty());
    mapping.add("blocks.1.fc", "blocks.0", ()).unwrap();
}

// ---- many pairs ---------------------------------------------------------------------------------

/// 10,000 pairs by slot and 10,000 by reference: each add is checked against the model, and the
/// mapping keeps the right paths (building it took 40–52 s when each add walked the whole tree).
#[test]
fn ten_thousand_pairs_by_slot_and_by_reference() -> Result<(), DistillError> {
    const N: usize = 10_000;
    let model = Layered { layers: (0..N).map(|_| nn::relu()).collect() };
    let mut by_slot = Mapping::<usize>::new(&model, &model);
    let mut by_reference = Mapping::<usize>::new(&model, &model);
    for i in 0..N {
        let j = N - 1 - i;
        by_slot.add(model.layers.slot(i), model.layers.slot(j), i)?;
        by_reference.add(&model.layers[i], &model.layers[j], i)?;
    }
    for mapping in [&by_slot, &by_reference] {
        assert_eq!(mapping.len(), N);
        for (i, pair) in mapping.pairs().iter().enumerate() {
            assert_eq!(
                (pair.student.path(), pair.teacher.path()),
                (format!("layers.{i}").as_str(), format!("layers.{}", N - 1 - i).as_str())
            );
            assert_eq!(pair.payload, i);
        }
    }
    let dm = distill(&model, &model, by_reference);
    let out = dm.forward_t(&randn(&[1, 2]), false)?;
    assert_eq!(out.len(), N);
    Ok(())
}

#[derive(Debug, Distillable)]
struct Layered {
    layers: nn::Seq<nn::ReLU>,
}

impl ModuleT for Layered {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.layers.forward_t(xs, train)
    }
}
