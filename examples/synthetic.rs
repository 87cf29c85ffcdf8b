//! Distils a small CNN teacher into a narrower student on synthetic data with the dynamic
//! `Mapping` API, printing the named per-term losses as they go down.
//!
//! Run: `scripts/dev example synthetic` (or `cargo run --release --example synthetic` with libtorch set up).

use distill::prelude::*;
use nn::{Module, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};

/// conv 3×3 → batch norm → ReLU.
#[derive(Debug, Distillable)]
struct Block {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
    act: nn::ReLU,
}

impl Block {
    fn new(p: nn::Path, c_in: i64, c_out: i64, stride: i64) -> Block {
        let cfg = nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() };
        Block {
            conv: nn::conv2d(&p / "conv", c_in, c_out, 3, cfg),
            bn: nn::batch_norm2d(&p / "bn", c_out, Default::default()),
            act: nn::relu(),
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.act.forward(&self.bn.forward_t(&self.conv.forward(xs), train))
    }
}

/// Three blocks, 2×2 average pooling, a linear classifier.
#[derive(Debug, Distillable)]
struct Cnn {
    features: nn::Seq<Block>,
    pool: nn::AdaptiveAvgPool2D,
    classifier: nn::Linear,
}

impl Cnn {
    fn new(p: nn::Path, widths: [i64; 3]) -> Cnn {
        let mut features = nn::Seq::new();
        let mut c_in = 1;
        for (i, &w) in widths.iter().enumerate() {
            features.push(Block::new(&p / "features" / i, c_in, w, if i == 0 { 1 } else { 2 }));
            c_in = w;
        }
        Cnn {
            features,
            pool: nn::adaptive_avg_pool2d([2, 2]),
            classifier: nn::linear(&p / "classifier", 4 * c_in, CLASSES, Default::default()),
        }
    }
}

impl ModuleT for Cnn {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let h = self.features.forward_t(xs, train);
        self.classifier.forward(&self.pool.forward(&h).flatten(1, -1))
    }
}

const CLASSES: i64 = 4;
const BATCH: i64 = 64;

/// A synthetic task with structure a CNN can learn: the class is the argmax of a fixed random
/// projection of the image's four quadrant means.
struct Task {
    projection: Tensor,
}

impl Task {
    fn batch(&self) -> (Tensor, Tensor) {
        let xs = Tensor::randn([BATCH, 1, 16, 16], (Kind::Float, Device::Cpu));
        let pooled = xs.adaptive_avg_pool2d([2, 2]).flatten(1, -1);
        let ys = pooled.matmul(&self.projection).argmax(1, false);
        (xs, ys)
    }
}

fn accuracy(model: &Cnn, task: &Task) -> f64 {
    tch::no_grad(|| {
        let (xs, ys) = task.batch();
        f64::try_from(model.forward_t(&xs, false).accuracy_for_logits(&ys)).unwrap_or(0.0)
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    distill::tune_allocator();
    tch::manual_seed(0);
    let task = Task { projection: Tensor::randn([4, CLASSES], (Kind::Float, Device::Cpu)) };

    // 1. A teacher, trained on the task.
    let teacher_vs = nn::VarStore::new(Device::Cpu);
    let teacher = Cnn::new(teacher_vs.root(), [16, 32, 64]);
    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&teacher_vs, 0.05)?;
    for _ in 0..300 {
        let (xs, ys) = task.batch();
        opt.backward_step(&teacher.forward_t(&xs, true).cross_entropy_for_logits(&ys));
    }
    println!("teacher accuracy: {:.1}%", 100.0 * accuracy(&teacher, &task));

    // 2. A narrower student, distilled through attention maps of two blocks and the logits.
    let student_vs = nn::VarStore::new(Device::Cpu);
    let student = Cnn::new(student_vs.root(), [8, 16, 32]);
    let terms = ["at1", "at2", "kd"];
    let mut mapping: Mapping<Box<dyn Criterion>> = Mapping::new(&student, &teacher);
    mapping.add("features.1", "features.1", Box::new(AttentionTransfer::default() * 100.0))?;
    mapping.add(student.features.slot(2), &teacher.features[2].conv, Box::new(AttentionTransfer::default() * 100.0))?;
    mapping.add(&student.classifier, "", Box::new(KlDiv::new(4.0)))?;
    let dm = distill(&student, &teacher, mapping);

    let mut opt = nn::Sgd { momentum: 0.9, ..Default::default() }.build(&student_vs, 0.05)?;
    let mut sums = [0.0; 4];
    for step in 1..=300 {
        let (xs, ys) = task.batch();
        let out = dm.forward_t(&xs, true)?;
        let ce = out.student_output.cross_entropy_for_logits(&ys);
        let mut loss = ce.shallow_clone();
        sums[0] += f64::try_from(&ce)?;
        for (i, (s, t, criterion)) in out.pairs().enumerate() {
            let term = criterion.loss(s, t);
            sums[i + 1] += f64::try_from(&term)?;
            loss += term;
        }
        opt.backward_step(&loss);
        if step % 50 == 0 {
            let named: Vec<String> =
                terms.iter().zip(&sums[1..]).map(|(name, sum)| format!("{name}={:.4}", sum / 50.0)).collect();
            println!("step {step:>3}: ce={:.4} {}", sums[0] / 50.0, named.join(" "));
            sums = [0.0; 4];
        }
    }
    println!("student accuracy: {:.1}%", 100.0 * accuracy(&student, &task));
    Ok(())
}
