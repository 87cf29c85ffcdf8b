//! The CNN of the reference workflow: four blocks (conv 3×3 without bias, batch norm, ReLU; strides 1, 2, 2, 2),
//! global average pooling, a linear classifier. Teacher and pruned student share the type; only the
//! widths differ.

use distill::nn::{self, ModuleT};
use distill::Distillable;
use tch::Tensor;

/// Teacher widths and strides.
pub const WIDTHS: [i64; 4] = [32, 64, 128, 256];
pub const STRIDES: [i64; 4] = [1, 2, 2, 2];
pub const CLASSES: i64 = 10;

/// conv → batch norm → ReLU.
#[derive(Debug, Distillable)]
pub struct Block {
    pub conv: nn::Conv2D,
    pub bn: nn::BatchNorm,
}

/// `features` (a `Seq`, so every block is a distillation point) → global average pool → `classifier`.
#[derive(Debug, Distillable)]
pub struct Net {
    pub features: nn::Seq<Block>,
    pub classifier: nn::Linear,
}

/// The convolution config of block `i`: 3×3, padding 1, no bias.
pub fn conv_config(stride: i64) -> nn::ConvConfig {
    nn::ConvConfig { stride, padding: 1, bias: false, ..Default::default() }
}

impl Net {
    /// A freshly initialised network with the given block widths (tch's default initialisation).
    pub fn new(p: &nn::Path, widths: &[i64]) -> Net {
        let features = p / "features";
        let mut in_channels = 1;
        let mut blocks = nn::Seq::new();
        for (i, (&width, &stride)) in widths.iter().zip(&STRIDES).enumerate() {
            let b = &features / i;
            blocks.push(Block {
                conv: nn::conv2d(&b / "conv", in_channels, width, 3, conv_config(stride)),
                bn: nn::batch_norm2d(&b / "bn", width, Default::default()),
            });
            in_channels = width;
        }
        Net { features: blocks, classifier: nn::linear(p / "classifier", in_channels, CLASSES, Default::default()) }
    }

    /// The output channels of each block.
    pub fn widths(&self) -> Vec<i64> {
        self.features.iter().map(|b| b.conv.ws.size()[0]).collect()
    }
}

impl ModuleT for Block {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.bn.forward_t(&xs.apply(&self.conv), train).relu()
    }
}

impl ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        self.features.forward_t(xs, train).mean_dim([2, 3].as_slice(), false, tch::Kind::Float).apply(&self.classifier)
    }
}
