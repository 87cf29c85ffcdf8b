//! The two Rust sides of benchmark (b): the same distillation step hand-written in tch, and through
//! `distill!`.

use distill::prelude::*;
use tch::nn::{self as tnn, VarStore};
use tch::{Kind, Reduction, Tensor};

use crate::models::{slice_into, Net, RawNet, STUDENT, TEACHER};

/// SGD as both sides configure it.
const LEARNING_RATE: f64 = 0.01;
const MOMENTUM: f64 = 0.9;
/// Temperature of the KD term on the logits.
const KD_TEMPERATURE: f64 = 4.0;
/// The `eps` of `F.normalize`, which attention transfer normalises its maps with.
const NORMALIZE_EPS: f64 = 1e-12;

mod hand {
    //! The hand-written side's losses and adapters, written out in tch as a user without the library
    //! would (same formulas as `distill::criterion`'s `Mse`, `AttentionTransfer`, `KlDiv`).
    use super::*;

    pub fn mse(s: &Tensor, t: &Tensor) -> Tensor {
        s.mse_loss(t, Reduction::Mean)
    }

    pub fn attention_transfer(s: &Tensor, t: &Tensor) -> Tensor {
        let am = |x: &Tensor| {
            let a = x.pow_tensor_scalar(2).mean_dim([1].as_slice(), false, None).flatten(1, -1);
            let norm = a.norm_scalaropt_dim(2, [1].as_slice(), true).clamp_min(NORMALIZE_EPS);
            a / norm
        };
        (am(s) - am(t)).pow_tensor_scalar(2).mean(None)
    }

    pub fn kl_div(s: &Tensor, t: &Tensor, temperature: f64) -> Tensor {
        let n = s.size()[0] as f64;
        let ls = (s / temperature).log_softmax(-1, None);
        let pt = (t / temperature).softmax(-1, None);
        ls.kl_div(&pt, Reduction::Sum, false) * (temperature * temperature / n)
    }

    /// A 1×1 conv without bias selecting teacher channel `j` for student channel `j` (the student is
    /// the first channels of the teacher).
    pub fn selection_adapter(p: tnn::Path, teacher: i64, student: i64) -> tnn::Conv2D {
        let conv = tnn::conv2d(p, teacher, student, 1, tnn::ConvConfig { bias: false, ..Default::default() });
        let eye = Tensor::eye_m(student, teacher, (Kind::Float, conv.ws.device())).view([student, teacher, 1, 1]);
        tch::no_grad(|| conv.ws.shallow_clone().copy_(&eye));
        conv
    }
}

pub(crate) trait Side {
    /// One training step; returns the loss (before the update).
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor;
}

/// Hand-written tch: raw layers, explicit intermediates, losses written out.
pub(crate) struct Hand {
    teacher: RawNet,
    student: RawNet,
    adapters: [tnn::Conv2D; 2],
    opt: tnn::Optimizer,
    _vs: (VarStore, VarStore),
}

impl Hand {
    /// Both models on the device of `teacher_src`.
    pub(crate) fn new(teacher_src: &VarStore) -> Hand {
        let device = teacher_src.device();
        let mut tvs = VarStore::new(device);
        let teacher = RawNet::new(&tvs.root(), &TEACHER);
        tvs.copy(teacher_src).expect("same variables");
        tvs.freeze();
        let svs = VarStore::new(device);
        let student = RawNet::new(&svs.root(), &STUDENT);
        slice_into(&svs, &tvs);
        let kd = svs.root() / "kd";
        let adapters = [
            hand::selection_adapter(&kd / "f0", TEACHER[0], STUDENT[0]),
            hand::selection_adapter(&kd / "f1", TEACHER[1], STUDENT[1]),
        ];
        let opt = tnn::Sgd { momentum: MOMENTUM, ..Default::default() }.build(&svs, LEARNING_RATE).unwrap();
        Hand { teacher, student, adapters, opt, _vs: (tvs, svs) }
    }
}

impl Side for Hand {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let t = tch::no_grad(|| self.teacher.forward_intermediates(xs, false));
        let s = self.student.forward_intermediates(xs, true);
        let loss = s.logits.cross_entropy_for_logits(ys)
            + hand::mse(&s.c0, &self.adapters[0].forward(&t.c0))
            + hand::mse(&s.c1, &self.adapters[1].forward(&t.c1))
            + hand::attention_transfer(&s.b2, &t.b2)
            + hand::kl_div(&s.logits, &t.logits, KD_TEMPERATURE);
        self.opt.backward_step(&loss);
        loss
    }
}

distill! {
    /// (b)'s step through the DSL: two adapter pairs, attention transfer, KD on the logits.
    pub(crate) struct SmallKd for Net => Net {
        f0: student.features[0].conv => conv2d_adapter(teacher.features[0].conv) with Mse;
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        at2: student.features[2] => teacher.features[2] with AttentionTransfer::default();
        logits: student => teacher with KlDiv::new(4.0);
    }
}

/// Through `distill!`: `distill::nn` models, pairs captured by the engine, losses by the library.
pub(crate) struct Front {
    kd: SmallKd<'static>,
    opt: tnn::Optimizer,
}

/// The models of a `distill!` side: the teacher (weights of `teacher_src`, frozen), the student
/// sliced from it, and the student's VarStore, on the device of `teacher_src`. Leaked: `SmallKd` borrows both models, and the bench
/// keeps them for the whole process.
pub(crate) fn leaked_models(teacher_src: &VarStore) -> (&'static Net, &'static Net, &'static VarStore) {
    let device = teacher_src.device();
    let tvs: &'static mut VarStore = Box::leak(Box::new(VarStore::new(device)));
    let teacher: &'static Net = Box::leak(Box::new(Net::new(&tvs.root(), &TEACHER)));
    tvs.copy(teacher_src).expect("same variables");
    tvs.freeze();
    let svs: &'static VarStore = Box::leak(Box::new(VarStore::new(device)));
    let student: &'static Net = Box::leak(Box::new(Net::new(&svs.root(), &STUDENT)));
    slice_into(svs, tvs);
    (teacher, student, svs)
}

/// The SGD both sides train with.
pub(crate) fn sgd(vs: &VarStore) -> tnn::Optimizer {
    tnn::Sgd { momentum: MOMENTUM, ..Default::default() }.build(vs, LEARNING_RATE).unwrap()
}

impl Front {
    pub(crate) fn new(teacher_src: &VarStore) -> Front {
        let (teacher, student, svs) = leaked_models(teacher_src);
        let kd = SmallKd::new(svs.root() / "kd", student, teacher).expect("valid pairs");
        Front { kd, opt: sgd(svs) }
    }
}

impl Side for Front {
    fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Tensor {
        let out = self.kd.forward_t(xs, true).expect("checked pairs");
        let loss = out.student_output.cross_entropy_for_logits(ys) + out.loss();
        self.opt.backward_step(&loss);
        loss
    }
}
