//! The workload: a small CNN (3 blocks of conv 3×3 without bias → batch norm → ReLU; strides 1, 2,
//! 2), on `distill::nn` layers for the library's side and on raw `tch::nn` layers for the
//! hand-written one, and the pruned student as a channel slice of the teacher.

use distill::nn as dnn;
use distill::prelude::*;
use tch::nn::{self as tnn, VarStore};
use tch::{Device, Kind, Tensor};

/// Channel widths of the teacher's blocks.
pub(crate) const TEACHER: [i64; 3] = [16, 32, 64];
/// Channel widths of the student's blocks: the first channels of the teacher's.
pub(crate) const STUDENT: [i64; 3] = [8, 16, 32];
const STRIDES: [i64; 3] = [1, 2, 2];
/// Output classes of the classifier.
const CLASSES: i64 = 10;

#[derive(Debug, Distillable)]
pub(crate) struct Block {
    pub(crate) conv: dnn::Conv2D,
    pub(crate) bn: dnn::BatchNorm,
}

#[derive(Debug, Distillable)]
pub(crate) struct Net {
    pub(crate) features: dnn::Seq<Block>,
    pub(crate) classifier: dnn::Linear,
}

pub(crate) fn conv_config(stride: i64) -> tnn::ConvConfig {
    tnn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() }
}

impl Net {
    pub(crate) fn new(p: &tnn::Path, widths: &[i64]) -> Net {
        let mut features = dnn::Seq::new();
        let mut cin = 1;
        for (i, (&w, &s)) in widths.iter().zip(&STRIDES).enumerate() {
            let b = p / "features" / i;
            features.push(Block {
                conv: dnn::conv2d(&b / "conv", cin, w, 3, conv_config(s)),
                bn: dnn::batch_norm2d(&b / "bn", w, Default::default()),
            });
            cin = w;
        }
        Net { features, classifier: dnn::linear(p / "classifier", cin, CLASSES, Default::default()) }
    }
}

impl tnn::ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&self.conv.forward(xs), train).relu()
    }
}

impl tnn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.classifier.forward(&self.features.forward_t(xs, train).mean_dim([2, 3].as_slice(), false, None))
    }
}

// ---- the same CNN on raw tch::nn, with a forward that returns the intermediates ---------------------

pub(crate) struct RawNet {
    convs: Vec<tnn::Conv2D>,
    bns: Vec<tnn::BatchNorm>,
    classifier: tnn::Linear,
}

/// What the hand-written step needs: conv 0 and 1 outputs, block 2 output, logits.
pub(crate) struct Intermediates {
    pub(crate) c0: Tensor,
    pub(crate) c1: Tensor,
    pub(crate) b2: Tensor,
    pub(crate) logits: Tensor,
}

impl RawNet {
    pub(crate) fn new(p: &tnn::Path, widths: &[i64]) -> RawNet {
        let (mut convs, mut bns, mut cin) = (Vec::new(), Vec::new(), 1);
        for (i, (&w, &s)) in widths.iter().zip(&STRIDES).enumerate() {
            let b = p / "features" / i;
            convs.push(tnn::conv2d(&b / "conv", cin, w, 3, conv_config(s)));
            bns.push(tnn::batch_norm2d(&b / "bn", w, Default::default()));
            cin = w;
        }
        RawNet { convs, bns, classifier: tnn::linear(p / "classifier", cin, CLASSES, Default::default()) }
    }

    /// The plain forward, for (a): intermediates are dropped as soon as the next layer has run.
    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut h = xs.shallow_clone();
        for (conv, bn) in self.convs.iter().zip(&self.bns) {
            h = bn.forward_t(&conv.forward(&h), train).relu();
        }
        self.classifier.forward(&h.mean_dim([2, 3].as_slice(), false, None))
    }

    pub(crate) fn forward_intermediates(&self, xs: &Tensor, train: bool) -> Intermediates {
        let c0 = self.convs[0].forward(xs);
        let b0 = self.bns[0].forward_t(&c0, train).relu();
        let c1 = self.convs[1].forward(&b0);
        let b1 = self.bns[1].forward_t(&c1, train).relu();
        let c2 = self.convs[2].forward(&b1);
        let b2 = self.bns[2].forward_t(&c2, train).relu();
        let logits = self.classifier.forward(&b2.mean_dim([2, 3].as_slice(), false, None));
        Intermediates { c0, c1, b2, logits }
    }
}

/// Copies the first channels of `teacher` into `student` (a pruned copy, as the adapters expect).
pub(crate) fn slice_into(student_vs: &VarStore, teacher_vs: &VarStore) {
    let teacher = teacher_vs.variables();
    tch::no_grad(|| {
        for (name, mut var) in student_vs.variables() {
            let src = &teacher[&name];
            let mut view = src.shallow_clone();
            for (dim, &size) in var.size().iter().enumerate() {
                view = view.narrow(dim as i64, 0, size);
            }
            var.copy_(&view);
        }
    });
}

/// The random teacher both sides start from.
pub(crate) fn teacher_weights() -> VarStore {
    tch::manual_seed(0);
    let vs = VarStore::new(Device::Cpu);
    let _ = Net::new(&vs.root(), &TEACHER);
    vs
}

/// A batch of inputs and labels, the same on both sides.
pub(crate) fn batch_data(batch: i64) -> (Tensor, Tensor) {
    tch::manual_seed(1);
    (
        Tensor::randn([batch, 1, 28, 28], (Kind::Float, Device::Cpu)),
        Tensor::randint(10, [batch], (Kind::Int64, Device::Cpu)),
    )
}
