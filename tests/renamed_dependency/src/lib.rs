//! `distill` as a dependency named `kd`: both macros, told `crate = "kd"`, expand to code that
//! compiles and runs without a crate named `distill` in scope.
#![deny(warnings, missing_docs)]

use kd::nn::{self, ModuleT};
use kd::prelude::{AttentionTransfer, Mse};
use kd::{distill, DistillError, Distillable};
use tch::Tensor;

/// conv → relu.
#[derive(Debug, Distillable)]
#[distill(crate = "kd")]
pub struct Block {
    /// The convolution.
    pub conv: nn::Conv2D,
    /// The activation.
    pub act: nn::ReLU,
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.apply(&self.conv).apply(&self.act)
    }
}

/// Blocks and a generic head.
#[derive(Debug, Distillable)]
#[distill(crate = "kd")]
pub struct Net<H> {
    /// The blocks.
    pub features: nn::Seq<Block>,
    /// The head.
    pub head: H,
}

impl<H: ModuleT> ModuleT for Net<H> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.head.forward_t(&self.features.forward_t(xs, train), train)
    }
}

distill! {
    #[distill(crate = "kd")]
    /// Every kind of endpoint, through the renamed crate.
    pub struct Kd for Net<nn::Flatten> => Net<nn::Flatten> {
        conv0: student.features[0].conv => kd::adapter::conv2d_adapter(teacher.features[0].conv) with Mse;
        "features.1" => teacher.features[1] with AttentionTransfer::default();
        student => teacher with Mse;
    }
}

/// A net with `widths` channels per block.
pub fn net(p: &nn::Path, widths: &[i64]) -> Net<nn::Flatten> {
    let cfg = nn::ConvConfig { padding: 1, ..Default::default() };
    let mut cin = 1;
    let mut features = nn::Seq::new();
    for (i, &w) in widths.iter().enumerate() {
        features.push(Block { conv: nn::conv2d(p / "features" / i / "conv", cin, w, 3, cfg), act: nn::relu() });
        cin = w;
    }
    Net { features, head: nn::flatten() }
}

/// One forward of [`Kd`], self-distilling `net`: the total loss.
pub fn self_distill(vs: &nn::VarStore, net: &Net<nn::Flatten>, xs: &Tensor) -> Result<Tensor, DistillError> {
    let kd = Kd::new(vs.root() / "kd", net, net)?;
    Ok(kd.forward_t(xs, false)?.loss())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn both_macros_work_through_the_renamed_crate() -> Result<(), DistillError> {
        let vs = nn::VarStore::new(Device::Cpu);
        let model = net(&(vs.root() / "net"), &[2, 3]);
        let xs = Tensor::randn([2, 1, 5, 5], (Kind::Float, Device::Cpu));
        // The selection adapter maps the net onto itself, so every term is zero.
        let loss = self_distill(&vs, &model, &xs)?;
        assert_eq!(loss.double_value(&[]), 0.0);
        assert_eq!(Kd::LABELS, ["conv0", "features_1", "output"]);
        Ok(())
    }
}
