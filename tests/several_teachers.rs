//! Distillation from several teachers, in both front ends: a two-teacher distillation's pairs equal
//! those of two one-teacher distillations, each teacher runs once per forward (a teacher without
//! pairs not at all), each in its own mode, errors name the teacher, and a TorchScript teacher works
//! beside a `distill::nn` one.

mod common;

use std::cell::Cell;
use std::path::PathBuf;

use distill::error::CaptureError;
use distill::jit::{self, JitError};
use distill::module::PathError;
use distill::nn::{self, ModuleT, VarStore};
use distill::prelude::*;
use tch::{Device, Kind, Tensor};

/// A model that counts its forwards and remembers the last `train` flag it was run with.
#[derive(Debug, Distillable)]
struct Net {
    features: nn::Seq<nn::Linear>,
    head: nn::Linear,
    #[distill(skip)]
    calls: Cell<usize>,
    #[distill(skip)]
    last_train: Cell<Option<bool>>,
}

impl Net {
    fn new(p: nn::Path, width: i64) -> Net {
        Net {
            features: nn::Seq::from(vec![
                nn::linear(&p / "features" / 0, 4, width, Default::default()),
                nn::linear(&p / "features" / 1, width, 8, Default::default()),
            ]),
            head: nn::linear(&p / "head", 8, 3, Default::default()),
            calls: Cell::new(0),
            last_train: Cell::new(None),
        }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.calls.set(self.calls.get() + 1);
        self.last_train.set(Some(train));
        let h = self.features.forward_t(xs, train).relu();
        self.head.forward_t(&h, train)
    }
}

/// A teacher of another type: paths into it are checked against `WideNet`, not `Net`.
#[derive(Debug, Distillable)]
struct WideNet {
    body: nn::Linear,
    classifier: nn::Linear,
    #[distill(skip)]
    calls: Cell<usize>,
    #[distill(skip)]
    last_train: Cell<Option<bool>>,
}

impl WideNet {
    fn new(p: nn::Path) -> WideNet {
        WideNet {
            body: nn::linear(&p / "body", 4, 16, Default::default()),
            classifier: nn::linear(&p / "classifier", 16, 3, Default::default()),
            calls: Cell::new(0),
            last_train: Cell::new(None),
        }
    }
}

impl ModuleT for WideNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.calls.set(self.calls.get() + 1);
        self.last_train.set(Some(train));
        self.classifier.forward_t(&self.body.forward_t(xs, train).relu(), train)
    }
}

distill! {
    /// Features from the big teacher, a hidden layer and the logits from the wide one.
    struct Ens for Net => (big: Net, wide: WideNet) {
        f1: student.features[1] => big.features[1] with Mse;
        hid: student.features[0] => learned_linear_adapter(wide.body) with Mse;
        kd: student => wide with KlDiv::new(4.0);
        "head" => big["head"] with L1;
    }
}

distill! {
    struct FromBig for Net => Net {
        f1: student.features[1] => teacher.features[1] with Mse;
        "head" => "head" with L1;
    }
}

distill! {
    struct FromWide for Net => WideNet {
        hid: student.features[0] => learned_linear_adapter(teacher.body) with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

struct Models {
    vs: VarStore,
    student: Net,
    big: Net,
    wide: WideNet,
}

fn models() -> Models {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let student = Net::new(vs.root() / "student", 6);
    let big = Net::new(vs.root() / "big", 12);
    let wide = WideNet::new(vs.root() / "wide");
    Models { vs, student, big, wide }
}

fn xs() -> Tensor {
    tch::manual_seed(1);
    Tensor::randn([5, 4], (Kind::Float, Device::Cpu))
}

fn same(a: &Tensor, b: &Tensor) -> bool {
    a.size() == b.size() && a.equal(b)
}

fn reset_calls(m: &Models) {
    for calls in [&m.student.calls, &m.big.calls, &m.wide.calls] {
        calls.set(0);
    }
}

#[test]
fn two_teachers_give_the_pairs_of_two_one_teacher_distillations() {
    let m = models();
    let xs = xs();
    let ens = Ens::new(m.vs.root() / "ens", &m.student, &m.big, &m.wide).unwrap();
    let from_big = FromBig::new(m.vs.root() / "big_kd", &m.student, &m.big).unwrap();
    let from_wide = FromWide::new(m.vs.root() / "wide_kd", &m.student, &m.wide).unwrap();
    // The two `hid` adapters start from the same weights: copied, not drawn twice after the same
    // seed from libtorch's global generator, which the other tests of this file draw from at the
    // same time in their own threads.
    let variables = m.vs.variables();
    let mut copied = 0;
    for (name, variable) in &variables {
        if let Some(adapter) = name.strip_prefix("wide_kd.hid") {
            tch::no_grad(|| variable.shallow_clone().copy_(&variables[&format!("ens.hid{adapter}")]));
            copied += 1;
        }
    }
    assert!(copied > 0, "the hid adapter's variables: {:?}", variables.keys().collect::<Vec<_>>());

    let out = ens.forward_t(&xs, true).unwrap();
    let big = from_big.forward_t(&xs, true).unwrap();
    let wide = from_wide.forward_t(&xs, true).unwrap();
    assert_eq!(Ens::LABELS, ["f1", "hid", "kd", "head"]);
    for (mine, theirs) in [(&out.f1, &big.f1), (&out.head, &big.head), (&out.hid, &wide.hid), (&out.kd, &wide.kd)] {
        assert!(same(&mine.student, &theirs.student), "{}", mine.label());
        assert!(same(&mine.teacher, &theirs.teacher), "{}", mine.label());
        assert_eq!(f64::try_from(mine.loss()).unwrap(), f64::try_from(theirs.loss()).unwrap(), "{}", mine.label());
    }
    // The adapter sits on the wide teacher's side: 16 features mapped to the student's 6.
    assert_eq!(out.hid.teacher.size(), [5, 6]);
    assert!(same(&out.big_output, &big.teacher_output));
    assert!(same(&out.wide_output, &wide.teacher_output));
    assert!(same(&out.student_output, &big.student_output));
    let total = f64::try_from(out.loss()).unwrap();
    let expected = f64::try_from(big.loss() + wide.loss()).unwrap();
    // The same four f32 pair losses (equal above, bit for bit), summed in another grouping: each
    // sum of 4 terms rounds at most 3 times, each relative to at most Σ|lᵢ| (γ₃), so the two
    // totals differ by at most 2 · 3u · Σ|lᵢ|.
    let terms: f64 =
        [&out.f1, &out.hid, &out.kd, &out.head].iter().map(|p| f64::try_from(p.loss()).unwrap().abs()).sum();
    let bound = 6.0 * common::bounds::U_F32 * terms;
    assert!((total - expected).abs() <= bound, "{total} vs {expected} (bound {bound:e})");
}

#[test]
fn each_teacher_runs_once_per_forward() {
    let m = models();
    let ens = Ens::new(m.vs.root() / "ens", &m.student, &m.big, &m.wide).unwrap();
    reset_calls(&m);
    ens.forward_t(&xs(), true).unwrap();
    assert_eq!([m.student.calls.get(), m.big.calls.get(), m.wide.calls.get()], [1, 1, 1]);
    ens.dry_run(&xs()).unwrap();
    assert_eq!([m.student.calls.get(), m.big.calls.get(), m.wide.calls.get()], [2, 2, 2]);
    assert_eq!(ens.distillation().teachers().collect::<Vec<_>>(), ["big", "wide"]);
    let teachers: Vec<_> = (0..4).map(|pair| ens.distillation().teacher_of(pair).unwrap()).collect();
    assert_eq!(teachers, ["big", "wide", "wide", "big"]);
}

#[test]
fn each_teacher_has_its_own_mode() {
    let m = models();
    let ens = Ens::new(m.vs.root() / "ens", &m.student, &m.big, &m.wide).unwrap();
    assert_eq!(ens.big_mode(), TeacherMode::default());
    let ens = ens.big_grad(true).wide_train(true);
    assert_eq!(ens.big_mode(), TeacherMode { grad: true, train: false });
    assert_eq!(ens.wide_mode(), TeacherMode { grad: false, train: true });
    let out = ens.forward_t(&xs(), false).unwrap();
    assert!(out.f1.teacher.requires_grad() && out.head.teacher.requires_grad(), "big runs with gradient");
    assert!(!out.kd.teacher.requires_grad() && !out.wide_output.requires_grad(), "wide runs without");
    // The adapter's own weight makes the adapted tensor require gradient; the capture itself does not.
    assert!(out.hid.teacher.requires_grad());
    assert_eq!(m.big.last_train.get(), Some(false));
    assert_eq!(m.wide.last_train.get(), Some(true));
    assert_eq!(m.student.last_train.get(), Some(false));

    let ens = ens.teacher_grad(false).teacher_train(true);
    assert_eq!(ens.big_mode(), TeacherMode { grad: false, train: true });
    assert_eq!(ens.wide_mode(), TeacherMode { grad: false, train: true });
    assert!(std::ptr::eq(ens.big(), &m.big) && std::ptr::eq(ens.wide(), &m.wide));
}

#[test]
fn the_mapping_with_several_teachers_gives_the_pairs_of_one_teacher_mappings() {
    let m = models();
    let xs = xs();
    let mut mapping =
        Mapping::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("wide", &m.wide)]).unwrap();
    mapping.add_from("big", "features.1", "features.1", "f1").unwrap();
    mapping.add_from("wide", &m.student.head, "", "kd").unwrap();
    mapping.add_from("big", "head", &m.big.head, "head").unwrap();
    assert_eq!(mapping.teacher_names(), ["big", "wide"]);
    let ens = distill_teachers(&m.student, mapping);

    let mut big_mapping = Mapping::new(&m.student, &m.big);
    big_mapping.add("features.1", "features.1", "f1").unwrap().add("head", "head", "head").unwrap();
    let from_big = distill(&m.student, &m.big, big_mapping);
    let mut wide_mapping = Mapping::new(&m.student, &m.wide);
    wide_mapping.add("head", "", "kd").unwrap();
    let from_wide = distill(&m.student, &m.wide, wide_mapping);

    reset_calls(&m);
    let out = ens.forward_t(&xs, true).unwrap();
    assert_eq!([m.student.calls.get(), m.big.calls.get(), m.wide.calls.get()], [1, 1, 1]);
    let big = from_big.forward_t(&xs, true).unwrap();
    let wide = from_wide.forward_t(&xs, true).unwrap();
    let expected = [(big.get(0).unwrap(), "big"), (wide.get(0).unwrap(), "wide"), (big.get(1).unwrap(), "big")];
    assert_eq!(out.len(), 3);
    for (index, ((s, t, payload), teacher)) in out.pairs().zip(expected).enumerate() {
        let ((es, et, epayload), eteacher) = teacher;
        assert_eq!(payload, epayload);
        assert_eq!(out.teacher_of(index), Some(eteacher));
        assert!(same(s, es) && same(t, et), "{payload}");
    }
    assert!(same(out.teacher_output_of("big").unwrap(), &big.teacher_output));
    assert!(same(out.teacher_output_of("wide").unwrap(), &wide.teacher_output));
    assert!(!out.teacher_output.defined(), "with several teachers each output is named");
    assert_eq!(ens.mapping().pairs()[1].teacher_index, 1);
}

#[test]
fn mapping_modes_and_teachers_without_pairs() {
    let m = models();
    let mut mapping =
        Mapping::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("wide", &m.wide)]).unwrap();
    mapping.add_from("big", "features.0", "features.0", ()).unwrap();
    let ens = distill_teachers(&m.student, mapping)
        .with_teacher_mode("big", TeacherMode { grad: true, train: true })
        .unwrap();
    assert_eq!(ens.teacher_mode("big"), Some(TeacherMode { grad: true, train: true }));
    assert_eq!(ens.teacher_mode("wide"), Some(TeacherMode::default()));
    assert_eq!(ens.teacher_mode("deep"), None);
    reset_calls(&m);
    let out = ens.forward_t(&xs(), false).unwrap();
    assert_eq!([m.big.calls.get(), m.wide.calls.get()], [1, 0], "a teacher without pairs does not run");
    assert_eq!(m.big.last_train.get(), Some(true));
    let (_, teacher, ()) = out.get(0).unwrap();
    assert!(teacher.requires_grad());
    assert!(out.teacher_output_of("wide").is_none());
    assert!(out.teacher_output_of("big").is_some());

    let error = distill_teachers(
        &m.student,
        Mapping::<()>::with_teachers(&m.student, [("big", &m.big as &dyn SideModel)]).unwrap(),
    )
    .with_teacher_mode("bgi", TeacherMode::default())
    .unwrap_err();
    assert_eq!(error.to_string(), "no teacher `bgi` (did you mean `big`?); the teachers are `big`");
}

#[test]
fn mapping_errors_name_the_teacher() {
    let m = models();
    let mut mapping =
        Mapping::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("wide", &m.wide)]).unwrap();
    let error = mapping.add_from("wdie", "head", "", ()).unwrap_err();
    assert!(matches!(&error, DistillError::UnknownTeacher { suggestion: Some(s), .. } if s == "wide"), "{error}");
    let error = mapping.add_from("wide", "head", "clasifier", ()).unwrap_err();
    assert_eq!(error.to_string(), "teacher `wide`: the teacher has no module `clasifier` (did you mean `classifier`?)");
    let error = mapping.add_from("big", "head", &m.wide.body, ()).unwrap_err();
    assert!(
        matches!(&error, DistillError::InTeacher { teacher, source } if teacher == "big"
        && matches!(**source, DistillError::Path(PathError::NotInModel { .. }))),
        "{error}"
    );
    let error = mapping.add("head", "head", ()).unwrap_err();
    assert!(error.to_string().contains("add_from"), "{error}");
    assert!(mapping.is_empty(), "failed additions leave the mapping unchanged");

    let twice = Mapping::<()>::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("big", &m.wide)]);
    assert!(twice.unwrap_err().to_string().contains("`big` is given twice"));
    let none = Mapping::<()>::with_teachers(&m.student, []);
    assert!(none.is_err());

    // A mapping of several teachers goes to `distill_teachers`, not `distill`.
    let mut mapping =
        Mapping::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("wide", &m.wide)]).unwrap();
    mapping.add_from("big", "head", "head", ()).unwrap();
    let error = distill(&m.student, &m.big, mapping).forward_t(&xs(), false).unwrap_err();
    assert!(error.to_string().contains("distill_teachers"), "{error}");
    // The one teacher of `Mapping::new` is named `teacher`.
    let mut mapping = Mapping::new(&m.student, &m.big);
    mapping.add_from("teacher", "head", "head", ()).unwrap();
    let model = distill(&m.student, &m.big, mapping);
    let out = model.forward_t(&xs(), false).unwrap();
    assert!(same(out.teacher_output_of("teacher").unwrap(), &out.teacher_output));
    assert_eq!(out.teacher_of(0), Some("teacher"));
}

#[test]
fn forward_errors_name_the_teacher() {
    let m = models();
    /// A teacher whose forward skips its `body` recording: `body` does not run.
    #[derive(Debug, Distillable)]
    struct Skipping {
        body: nn::Linear,
        classifier: nn::Linear,
    }
    impl ModuleT for Skipping {
        fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
            self.classifier.ws.matmul(&xs.narrow(1, 0, 4).transpose(0, 1)).transpose(0, 1)
        }
    }
    let skipping = Skipping {
        body: nn::linear(m.vs.root() / "skip" / "body", 4, 4, Default::default()),
        classifier: nn::linear(m.vs.root() / "skip" / "classifier", 4, 3, Default::default()),
    };
    let mut mapping =
        Mapping::with_teachers(&m.student, [("big", &m.big as &dyn SideModel), ("odd", &skipping)]).unwrap();
    mapping.add_from("big", "head", "head", ()).unwrap();
    mapping.add_from("odd", "features.0", "body", ()).unwrap();
    let error = distill_teachers(&m.student, mapping).forward_t(&xs(), false).unwrap_err();
    assert!(
        matches!(&error, DistillError::InTeacher { teacher, source } if teacher == "odd"
        && matches!(**source, DistillError::Capture(CaptureError::NotCalled { .. }))),
        "{error}"
    );
}

/// The student of the TorchScript fixtures: conv → batch norm → conv → linear.
#[derive(Debug, Distillable)]
struct ConvNet {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    fc: nn::Linear,
}

impl ConvNet {
    fn new(p: nn::Path) -> ConvNet {
        let no_bias = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        ConvNet {
            conv1: nn::conv2d(&p / "conv1", 1, 4, 3, no_bias),
            bn1: nn::batch_norm2d(&p / "bn1", 4, Default::default()),
            conv2: nn::conv2d(&p / "conv2", 4, 6, 3, nn::ConvConfig { stride: 2, padding: 1, ..Default::default() }),
            fc: nn::linear(&p / "fc", 6, 3, Default::default()),
        }
    }
}

impl ModuleT for ConvNet {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = xs.apply(&self.conv1).apply_t(&self.bn1, train).relu();
        let h = h.apply(&self.conv2).relu().adaptive_avg_pool2d([1, 1]).flatten(1, -1);
        h.apply(&self.fc)
    }
}

distill! {
    /// Logits from a TorchScript teacher, features from a Rust one.
    struct Mixed for ConvNet => (torch: jit::Module, mine: ConvNet) {
        kd: student => torch["logits"] with KlDiv::new(4.0);
        block1: student.bn1 => torch["block1"] with Mse;
        c2: student.conv2 => mine.conv2 with Mse;
    }
}

distill! {
    struct TorchOnly for ConvNet => jit::Module {
        kd: student => teacher["logits"] with KlDiv::new(4.0);
        block1: student.bn1 => teacher["block1"] with Mse;
    }
}

#[test]
fn a_torchscript_teacher_beside_a_distill_nn_teacher() {
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/jit/features.pt");
    let torch = jit::Module::load(&fixture, Device::Cpu).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let student = ConvNet::new(vs.root() / "student");
    let mine = ConvNet::new(vs.root() / "mine");
    let xs = Tensor::randn([2, 1, 8, 8], (Kind::Float, Device::Cpu));

    let mixed = Mixed::new(vs.root() / "mixed", &student, &torch, &mine).unwrap();
    let alone = TorchOnly::new(vs.root() / "alone", &student, &torch).unwrap();
    let out = mixed.forward_t(&xs, false).unwrap();
    let reference = alone.forward_t(&xs, false).unwrap();
    assert!(same(&out.kd.teacher, &reference.kd.teacher));
    assert!(same(&out.block1.teacher, &reference.block1.teacher));
    assert!(same(
        &out.c2.teacher,
        &mine.conv2.forward_t(&mine.bn1.forward_t(&mine.conv1.forward_t(&xs, false), false).relu(), false)
    ));
    assert!(!out.torch_output.defined(), "a dict teacher without a chosen output has no output of its own");
    assert_eq!(out.mine_output.size(), [2, 3]);

    // Names of a TorchScript teacher are checked by `new()`, the error naming the teacher.
    distill! {
        struct Typo for ConvNet => (torch: jit::Module, mine: ConvNet) {
            kd: student => torch["logit"] with KlDiv::new(4.0);
            c2: student.conv2 => mine.conv2 with Mse;
        }
    }
    let Err(error) = Typo::new(vs.root() / "typo", &student, &torch, &mine) else {
        panic!("a misspelt output name is an error")
    };
    assert!(
        matches!(&error, DistillError::InTeacher { teacher, source } if teacher == "torch"
        && matches!(**source, DistillError::Jit(JitError::UnknownOutput { .. }))),
        "{error}"
    );
}
