//! Small models shared by the integration tests.
#![allow(dead_code)]

use distill::nn::{self, ModuleT};
use distill::Distillable;
use tch::nn::Path;
use tch::Tensor;

/// conv → bn → relu.
#[derive(Debug, Distillable)]
pub struct Block {
    pub conv: nn::Conv2D,
    pub bn: nn::BatchNorm,
    pub act: nn::ReLU,
}

impl Block {
    pub fn new(p: &Path, c_in: i64, c_out: i64) -> Block {
        let cfg = nn::ConvConfig { padding: 1, bias: false, ..Default::default() };
        Block {
            conv: nn::conv2d(p / "conv", c_in, c_out, 3, cfg),
            bn: nn::batch_norm2d(p / "bn", c_out, Default::default()),
            act: nn::relu(),
        }
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.conv).apply_t(&self.bn, train).apply(&self.act)
    }
}

/// stem conv → `Seq<Block>` → head `Sequential` (pool, flatten, a closure doubling its input) →
/// classifier.
#[derive(Debug, Distillable)]
pub struct Net {
    pub stem: nn::Conv2D,
    pub features: nn::Seq<Block>,
    pub head: nn::Sequential,
    pub classifier: nn::Linear,
}

impl Net {
    pub fn new(p: &Path, widths: &[i64], classes: i64) -> Net {
        let stem = nn::conv2d(p / "stem", 1, widths[0], 3, nn::ConvConfig { padding: 1, ..Default::default() });
        let features =
            widths.windows(2).enumerate().map(|(i, w)| Block::new(&(p / "features" / i), w[0], w[1])).collect();
        let last = *widths.last().unwrap();
        let head = nn::seq().add(nn::adaptive_avg_pool2d([1, 1])).add(nn::flatten()).add_fn(|xs| xs * 2.0);
        let classifier = nn::linear(p / "classifier", last, classes, Default::default());
        Net { stem, features, head, classifier }
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.stem).apply_t(&self.features, train).apply_t(&self.head, train).apply(&self.classifier)
    }
}

/// A model of another type: an MLP over flattened 1×8×8 inputs, with a `Tap`-wrapped user struct
/// three levels deep (`body.inner.fc`).
#[derive(Debug, Distillable)]
pub struct Mlp {
    pub flatten: nn::Flatten,
    pub body: nn::Tap<Hidden>,
    pub out: nn::Linear,
}

#[derive(Debug, Distillable)]
pub struct Hidden {
    pub inner: Inner,
    pub act: nn::Gelu,
}

#[derive(Debug, Distillable)]
pub struct Inner {
    pub fc: nn::Linear,
}

impl Mlp {
    pub fn new(p: &Path, hidden: i64, classes: i64) -> Mlp {
        Mlp {
            flatten: nn::flatten(),
            body: nn::tap(Hidden {
                inner: Inner { fc: nn::linear(p / "body" / "inner" / "fc", 64, hidden, Default::default()) },
                act: nn::gelu(),
            }),
            out: nn::linear(p / "out", hidden, classes, Default::default()),
        }
    }
}

impl ModuleT for Hidden {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.apply(&self.inner.fc).apply(&self.act)
    }
}

impl ModuleT for Mlp {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.flatten).apply_t(&self.body, train).apply(&self.out)
    }
}

/// Hand-computed forward pieces, from the layers' weights only.
pub mod by_hand {
    use super::*;

    /// The 3×3, stride 1, padding 1 convolutions of these models.
    pub fn conv(xs: &Tensor, conv: &nn::Conv2D) -> Tensor {
        xs.conv2d(&conv.ws, conv.bs.as_ref(), [1, 1], [1, 1], [1, 1], 1)
    }

    /// Batch norm in evaluation mode: running statistics.
    pub fn bn_eval(xs: &Tensor, bn: &nn::BatchNorm) -> Tensor {
        let view = |t: &Tensor| t.view([1, -1, 1, 1]);
        let normed = (xs - view(&bn.running_mean)) / (view(&bn.running_var) + 1e-5).sqrt();
        normed * view(bn.ws.as_ref().unwrap()) + view(bn.bs.as_ref().unwrap())
    }

    pub fn linear(xs: &Tensor, lin: &nn::Linear) -> Tensor {
        xs.matmul(&lin.ws.tr()) + lin.bs.as_ref().unwrap()
    }

    /// Every intermediate of `Net` in evaluation mode: stem, then each block's conv/bn/relu, then
    /// the head's pooled, flattened and doubled tensors, then the logits.
    pub struct NetTrace {
        pub stem: Tensor,
        pub conv: Vec<Tensor>,
        pub bn: Vec<Tensor>,
        pub block: Vec<Tensor>,
        pub pooled: Tensor,
        pub flat: Tensor,
        pub doubled: Tensor,
        pub logits: Tensor,
    }

    pub fn net_eval(net: &Net, xs: &Tensor) -> NetTrace {
        let stem = conv(xs, &net.stem);
        let (mut convs, mut bns, mut blocks) = (vec![], vec![], vec![]);
        let mut h = stem.shallow_clone();
        for block in &net.features {
            let c = conv(&h, &block.conv);
            let b = bn_eval(&c, &block.bn);
            h = b.relu();
            convs.push(c);
            bns.push(b);
            blocks.push(h.shallow_clone());
        }
        let pooled = h.mean_dim([2, 3].as_slice(), true, tch::Kind::Float);
        let flat = pooled.flatten(1, -1);
        let doubled = &flat * 2.0;
        let logits = linear(&doubled, &net.classifier);
        NetTrace { stem, conv: convs, bn: bns, block: blocks, pooled, flat, doubled, logits }
    }
}

pub mod bounds;
pub mod criterion_bounds;
