//! Every user mistake of the dynamic API is a `DistillError` naming the side and the path.

mod common;

use common::{Block, Net};
use distill::error::CaptureError;
use distill::module::{Child, Distillable, PathError};
use distill::nn::{self, ModuleT, VarStore};
use distill::{distill, DistillError, Endpoint, Mapping, Port, Side};
use tch::{Device, Kind, Tensor};

fn net(widths: &[i64]) -> (VarStore, Net) {
    let vs = VarStore::new(Device::Cpu);
    let net = Net::new(&vs.root(), widths, 3);
    (vs, net)
}

fn xs() -> Tensor {
    Tensor::randn([2, 1, 6, 6], (Kind::Float, Device::Cpu))
}

#[test]
fn unknown_path_suggests_the_closest() {
    let (_a, student) = net(&[2, 3, 4]);
    let (_b, teacher) = net(&[2, 3, 4]);
    let mut mapping = Mapping::<()>::new(&student, &teacher);
    let err = mapping.add("features.1.cnv", "features.1.conv", ()).map(|_| ()).unwrap_err();
    match &err {
        DistillError::Path(PathError::UnknownPath { side, path, suggestion }) => {
            assert_eq!(*side, Side::Student);
            assert_eq!(path, "features.1.cnv");
            assert_eq!(suggestion.as_deref(), Some("features.1.conv"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(err.to_string(), "the student has no module `features.1.cnv` (did you mean `features.1.conv`?)");

    let err = mapping.add("stem", "clasifier", ()).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::UnknownPath { side: Side::Teacher, suggestion: Some(s), .. }) if s == "classifier")
    );

    let err = mapping.add("stem", "completely.unrelated", ()).map(|_| ()).unwrap_err();
    assert!(matches!(err, DistillError::Path(PathError::UnknownPath { suggestion: None, .. })));
    assert!(mapping.is_empty(), "failed adds leave the mapping unchanged");
}

#[test]
fn index_out_of_range_names_the_container_and_length() {
    let (_a, student) = net(&[2, 3, 4]);
    let (_b, teacher) = net(&[2, 3, 4]);
    let mut mapping = Mapping::<()>::new(&student, &teacher);
    let err = mapping.add("features.7.conv", "stem", ()).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::IndexOutOfRange { side: Side::Student, container, index: 7, len: 2 }) if container == "features"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "index 7 is out of range for `features` on the student: it has 2 children");

    let err = mapping.add("stem", teacher.features.slot(9), ()).map(|_| ()).unwrap_err();
    assert!(
        matches!(&err, DistillError::Path(PathError::IndexOutOfRange { side: Side::Teacher, index: 9, len: 2, .. })),
        "{err:?}"
    );
    let err = mapping.add("head.3", "stem", ()).map(|_| ()).unwrap_err();
    assert!(matches!(&err, DistillError::Path(PathError::IndexOutOfRange { index: 3, len: 3, .. })), "{err:?}");
}

/// A model holding modules that cannot record themselves.
#[derive(Debug)]
struct Plain {
    raw: tch::nn::Linear,
    blocks: Vec<Block>,
}

impl Distillable for Plain {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        visit(Child::field("raw", &self.raw));
        visit(Child::field("blocks", &self.blocks));
    }
}

impl ModuleT for Plain {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}

#[test]
fn modules_that_cannot_record_are_refused_at_add() {
    let vs = VarStore::new(Device::Cpu);
    let plain = Plain {
        raw: tch::nn::linear(vs.root() / "raw", 2, 2, Default::default()),
        blocks: vec![Block::new(&(vs.root() / "blocks" / 0), 1, 2)],
    };
    let mut mapping = Mapping::<()>::new(&plain, &plain);
    for path in ["raw", "blocks.0"] {
        let err = mapping.add(path, "", ()).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, DistillError::Path(PathError::NotRecordable { side: Side::Student, path: p, .. }) if p == path),
            "{err:?}"
        );
        assert!(err.to_string().contains("cannot record its output"));
    }
    // The block's own layers record themselves.
    mapping.add("blocks.0.conv", &plain.blocks[0].bn, ()).unwrap();
}

#[test]
fn a_module_of_another_model_is_refused() {
    let (_a, student) = net(&[2, 3, 4]);
    let (_b, teacher) = net(&[2, 3, 4]);
    let mut mapping = Mapping::<()>::new(&student, &teacher);
    let err = mapping.add(&teacher.stem, "stem", ()).map(|_| ()).unwrap_err();
    assert!(matches!(err, DistillError::Path(PathError::NotInModel { side: Side::Student, .. })), "{err:?}");
    let err = mapping.add("stem", student.features.slot(0), ()).map(|_| ()).unwrap_err();
    assert!(matches!(err, DistillError::Path(PathError::NotInModel { side: Side::Teacher, .. })), "{err:?}");
}

#[test]
fn a_mapping_used_with_other_models_is_refused() {
    let (_a, student) = net(&[2, 3, 4]);
    let (_b, teacher) = net(&[2, 3, 4]);
    let (_c, other) = net(&[2, 3, 4]);
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("stem", "stem", ()).unwrap();
    let dm = distill(&other, &teacher, mapping);
    assert!(matches!(dm.forward_t(&xs(), false), Err(DistillError::ModelMismatch)));
}

/// A model whose forward skips one layer, calls another twice and edits a third's output in place.
#[derive(Debug)]
struct Quirky {
    unused: nn::Linear,
    twice: nn::Conv2D,
    edited: nn::Conv2D,
}

impl Quirky {
    fn new(vs: &VarStore) -> Quirky {
        let p = vs.root();
        let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
        Quirky {
            unused: nn::linear(&p / "unused", 2, 2, Default::default()),
            twice: nn::conv2d(&p / "twice", 1, 1, 3, cfg),
            edited: nn::conv2d(&p / "edited", 1, 1, 3, cfg),
        }
    }
}

impl ModuleT for Quirky {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let h = xs.apply(&self.twice).apply(&self.twice);
        let mut out = h.apply(&self.edited);
        let _ = out.relu_();
        out
    }
}

impl Distillable for Quirky {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        visit(Child::field("unused", &self.unused));
        visit(Child::field("twice", &self.twice));
        visit(Child::field("edited", &self.edited));
    }
}

fn run_one<'e>(model: &Quirky, student: impl distill::IntoEndpoint<'e>) -> Result<Vec<Tensor>, DistillError> {
    let mut mapping = Mapping::new(model, model);
    mapping.add(student, "", ()).unwrap();
    let dm = distill(model, model, mapping);
    let out = dm.forward_t(&xs(), false)?;
    let (s, _, _) = out.get(0).unwrap();
    Ok(s.calls().iter().map(Tensor::shallow_clone).collect())
}

#[test]
fn a_module_that_did_not_run_is_an_error() {
    let vs = VarStore::new(Device::Cpu);
    let model = Quirky::new(&vs);
    let err = run_one(&model, "unused").unwrap_err();
    assert!(
        matches!(&err, DistillError::Capture(CaptureError::NotCalled { side: Side::Student, path, port: Port::Output }) if path == "unused"),
        "{err:?}"
    );
}

#[test]
fn a_module_that_ran_twice_is_an_error_unless_all_calls_are_asked_for() {
    let vs = VarStore::new(Device::Cpu);
    let model = Quirky::new(&vs);
    let err = run_one(&model, "twice").unwrap_err();
    assert!(
        matches!(&err, DistillError::Capture(CaptureError::CalledMoreThanOnce { calls: 2, path, .. }) if path == "twice"),
        "{err:?}"
    );

    let x = xs();
    let mut mapping = Mapping::new(&model, &model);
    mapping.add(Endpoint::path("twice").all_calls(), Endpoint::path("twice").all_calls().input(), ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let out = dm.forward_t(&x, false).unwrap();
    let (s, t, _) = out.get(0).unwrap();
    let first = x.apply(&*model.twice);
    let second = first.apply(&*model.twice);
    assert_eq!(s.calls().len(), 2);
    assert!(s.calls()[0].allclose(&first, 1e-6, 1e-6, false));
    assert!(s.calls()[1].allclose(&second, 1e-6, 1e-6, false));
    assert!(t.calls()[0].equal(&x), "input of the first call is the model input");
    assert!(t.calls()[1].allclose(&first, 1e-6, 1e-6, false), "input of the second call is the first output");
}

#[test]
fn an_in_place_edit_after_capture_is_an_error() {
    let vs = VarStore::new(Device::Cpu);
    let model = Quirky::new(&vs);
    let err = run_one(&model, "edited").unwrap_err();
    assert!(
        matches!(&err, DistillError::Capture(CaptureError::ModifiedInPlace { side: Side::Student, path, port: Port::Output, .. }) if path == "edited"),
        "{err:?}"
    );
    assert!(err.to_string().contains("modified in place"));
    // Its input was not edited.
    assert_eq!(run_one(&model, Endpoint::path("edited").input()).unwrap().len(), 1);
}

/// Panics in forward on demand.
#[derive(Debug)]
struct Fragile {
    conv: nn::Conv2D,
    panic: std::sync::atomic::AtomicBool,
}

impl ModuleT for Fragile {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        let out = xs.apply(&self.conv);
        assert!(!self.panic.load(std::sync::atomic::Ordering::SeqCst), "forward failed");
        out
    }
}

impl Distillable for Fragile {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        visit(Child::field("conv", &self.conv));
    }
}

#[test]
fn a_panic_in_forward_leaves_nothing_armed() {
    let vs = VarStore::new(Device::Cpu);
    let model = Fragile {
        conv: nn::conv2d(vs.root() / "conv", 1, 2, 3, Default::default()),
        panic: std::sync::atomic::AtomicBool::new(true),
    };
    let mut mapping = Mapping::new(&model, &model);
    mapping.add("conv", "conv", ()).unwrap();
    let dm = distill(&model, &model, mapping);
    let x = xs();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| dm.forward_t(&x, false).map(|_| ())));
    assert!(caught.is_err(), "the forward panicked");
    assert!(!distill::__private::capture::is_armed(), "the guard disarmed while unwinding");

    model.panic.store(false, std::sync::atomic::Ordering::SeqCst);
    let out = dm.forward_t(&x, false).unwrap();
    let (s, t, _) = out.get(0).unwrap();
    let expected = x.apply(&*model.conv);
    assert_eq!(s.calls().len(), 1, "nothing from the panicked pass leaked in");
    assert!(s.equal(&expected) && t.equal(&expected));
}
