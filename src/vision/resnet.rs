//! ResNet-18/34/50 as torchvision builds them (`torchvision.models.resnet`), with the same module
//! paths and parameter names.

use std::borrow::Borrow;

use tch::nn::{ModuleT, Path};
use tch::Tensor;

use super::layers::{batch_norm, conv, conv_config, torch_linear};
use super::VisionError;
use crate::error::Result;
use crate::{nn, Distillable};

/// Options of [`resnet18_with`] and the other ResNet constructors beyond the number of classes.
///
/// The default is torchvision's model for 224×224 RGB images.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResNetConfig {
    /// Channels of the input images (torchvision: 3). In PyTorch, replace `conv1` to match.
    pub in_channels: i64,
    /// The small-input stem for 28×28 or 32×32 images: `conv1` is a 3×3 conv with stride 1 and
    /// padding 1, and there is no max pool, so `layer1` sees the full resolution. The PyTorch
    /// equivalent: `model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)` and
    /// `model.maxpool = nn.Identity()` (parameter names do not change).
    pub small_input: bool,
    /// Initialises the last batch norm of each block's residual branch (`bn2` of a `BasicBlock`,
    /// `bn3` of a `Bottleneck`) with zero weights, as torchvision's `zero_init_residual=True`.
    pub zero_init_residual: bool,
}

impl Default for ResNetConfig {
    fn default() -> Self {
        ResNetConfig { in_channels: 3, small_input: false, zero_init_residual: false }
    }
}

/// torchvision's `downsample`: a strided 1×1 conv and a batch norm on the identity path of the first
/// block of a stage (children `0` and `1`, as torchvision's `nn.Sequential`).
#[derive(Debug, Distillable)]
pub struct Downsample(pub nn::Conv2D, pub nn::BatchNorm);

impl ModuleT for Downsample {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.0).apply_t(&self.1, train)
    }
}

/// The residual block of ResNet-18/34: two 3×3 convs (`conv1`, `conv2`), each followed by a batch
/// norm, `relu` applied after `bn1` and after the sum (so it runs twice, as torchvision's), and the
/// optional [`Downsample`] of the identity path.
#[derive(Debug, Distillable)]
pub struct BasicBlock {
    /// 3×3 conv, `inplanes` → `planes`, carrying the block's stride.
    pub conv1: nn::Conv2D,
    /// Batch norm after `conv1`.
    pub bn1: nn::BatchNorm,
    /// The ReLU, applied twice per forward.
    pub relu: nn::ReLU,
    /// 3×3 conv, `planes` → `planes`.
    pub conv2: nn::Conv2D,
    /// Batch norm after `conv2`.
    pub bn2: nn::BatchNorm,
    /// The projection of the identity path when the stride or the width changes.
    pub downsample: Option<nn::Tap<Downsample>>,
}

/// The residual block of ResNet-50 (torchvision's "ResNet V1.5": the stride is on the 3×3 conv):
/// 1×1 `conv1` to the inner width, 3×3 `conv2`, 1×1 `conv3` to 4× the planes, each followed by a
/// batch norm; `relu` after `bn1`, `bn2` and the sum (three calls).
#[derive(Debug, Distillable)]
pub struct Bottleneck {
    /// 1×1 conv, `inplanes` → inner width.
    pub conv1: nn::Conv2D,
    /// Batch norm after `conv1`.
    pub bn1: nn::BatchNorm,
    /// 3×3 conv, inner width → inner width, carrying the block's stride.
    pub conv2: nn::Conv2D,
    /// Batch norm after `conv2`.
    pub bn2: nn::BatchNorm,
    /// 1×1 conv, inner width → `4 · planes`.
    pub conv3: nn::Conv2D,
    /// Batch norm after `conv3`.
    pub bn3: nn::BatchNorm,
    /// The ReLU, applied three times per forward.
    pub relu: nn::ReLU,
    /// The projection of the identity path when the stride or the width changes.
    pub downsample: Option<nn::Tap<Downsample>>,
}

/// A residual block a [`ResNet`] is made of: [`BasicBlock`] or [`Bottleneck`].
pub trait ResNetBlock: ModuleT + Distillable + Sized {
    /// Output channels per `planes` (torchvision's `expansion`: 1 or 4).
    const EXPANSION: i64;

    /// A block under `p` from `inplanes` channels to `planes · EXPANSION`, the stride on its
    /// spatial conv, with its identity-path projection if any. `zero_init_residual` zeroes the weight
    /// of the residual branch's last batch norm.
    fn build(
        p: &Path,
        inplanes: i64,
        planes: i64,
        stride: i64,
        downsample: Option<Downsample>,
        zero_init_residual: bool,
    ) -> Self;
}

impl ResNetBlock for BasicBlock {
    const EXPANSION: i64 = 1;

    fn build(p: &Path, inplanes: i64, planes: i64, stride: i64, downsample: Option<Downsample>, zero: bool) -> Self {
        let block = BasicBlock {
            conv1: conv(p / "conv1", inplanes, planes, 3, stride, 1),
            bn1: batch_norm(p / "bn1", planes),
            relu: nn::relu(),
            conv2: conv(p / "conv2", planes, planes, 3, 1, 1),
            bn2: batch_norm(p / "bn2", planes),
            downsample: downsample.map(nn::Tap::new),
        };
        if zero {
            zero_weight(&block.bn2);
        }
        block
    }
}

impl ResNetBlock for Bottleneck {
    const EXPANSION: i64 = 4;

    fn build(p: &Path, inplanes: i64, planes: i64, stride: i64, downsample: Option<Downsample>, zero: bool) -> Self {
        let out = planes * Self::EXPANSION;
        let block = Bottleneck {
            conv1: conv(p / "conv1", inplanes, planes, 1, 1, 1),
            bn1: batch_norm(p / "bn1", planes),
            conv2: conv(p / "conv2", planes, planes, 3, stride, 1),
            bn2: batch_norm(p / "bn2", planes),
            conv3: conv(p / "conv3", planes, out, 1, 1, 1),
            bn3: batch_norm(p / "bn3", out),
            relu: nn::relu(),
            downsample: downsample.map(nn::Tap::new),
        };
        if zero {
            zero_weight(&block.bn3);
        }
        block
    }
}

impl ModuleT for BasicBlock {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply(&self.conv1).apply_t(&self.bn1, train).apply(&self.relu);
        let out = out.apply(&self.conv2).apply_t(&self.bn2, train);
        let identity = identity(xs, self.downsample.as_ref(), train);
        (out + identity).apply(&self.relu)
    }
}

impl ModuleT for Bottleneck {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply(&self.conv1).apply_t(&self.bn1, train).apply(&self.relu);
        let out = out.apply(&self.conv2).apply_t(&self.bn2, train).apply(&self.relu);
        let out = out.apply(&self.conv3).apply_t(&self.bn3, train);
        let identity = identity(xs, self.downsample.as_ref(), train);
        (out + identity).apply(&self.relu)
    }
}

/// The identity path: `xs`, or its projection.
fn identity(xs: &Tensor, downsample: Option<&nn::Tap<Downsample>>, train: bool) -> Tensor {
    match downsample {
        Some(downsample) => xs.apply_t(downsample, train),
        None => xs.shallow_clone(),
    }
}

fn zero_weight(bn: &nn::BatchNorm) {
    if let Some(ws) = &bn.ws {
        let mut ws = ws.shallow_clone();
        tch::no_grad(|| {
            let _ = ws.fill_(0.0);
        });
    }
}

/// torchvision's ResNet: stem (`conv1`, `bn1`, `relu`, `maxpool`), four stages `layer1`…`layer4`
/// of residual blocks, `avgpool`, `fc`.
///
/// Module paths and parameter names are torchvision's (`layer3.1.conv2.weight`,
/// `layer2.0.downsample.0.weight`, `bn1.running_mean`, `fc.bias`…), so a PyTorch `state_dict` saved
/// with `safetensors.torch.save_file` loads with `VarStore::load` or, checked strictly,
/// [`load_torchvision`](super::load_torchvision). In `distill!` the paths read as in PyTorch:
/// `student.layer3[1].conv2`, or `"layer3.1.conv2"`; a `downsample` is optional, so it is reached by
/// string (`"layer2.0.downsample.0"`).
#[derive(Debug, Distillable)]
pub struct ResNet<B> {
    /// The stem conv: 7×7 stride 2 (3×3 stride 1 with the small-input stem).
    pub conv1: nn::Conv2D,
    /// Batch norm after `conv1`.
    pub bn1: nn::BatchNorm,
    /// ReLU after `bn1`.
    pub relu: nn::ReLU,
    /// 3×3 max pool, stride 2, padding 1; `None` with the small-input stem (torchvision: `Identity`).
    pub maxpool: Option<nn::MaxPool2D>,
    /// 64 · expansion channels, stride 1.
    pub layer1: nn::Seq<B>,
    /// 128 · expansion channels, stride 2.
    pub layer2: nn::Seq<B>,
    /// 256 · expansion channels, stride 2.
    pub layer3: nn::Seq<B>,
    /// 512 · expansion channels, stride 2.
    pub layer4: nn::Seq<B>,
    /// Global average pooling.
    pub avgpool: nn::AdaptiveAvgPool2D,
    /// The classifier.
    pub fc: nn::Linear,
}

impl<B: ResNetBlock> ModuleT for ResNet<B> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let mut xs = xs.apply(&self.conv1).apply_t(&self.bn1, train).apply(&self.relu);
        if let Some(maxpool) = &self.maxpool {
            xs = xs.apply(maxpool);
        }
        for layer in [&self.layer1, &self.layer2, &self.layer3, &self.layer4] {
            xs = xs.apply_t(layer, train);
        }
        xs.apply(&self.avgpool).flatten(1, -1).apply(&self.fc)
    }
}

/// ResNet-18 (`BasicBlock`, stages of 2, 2, 2, 2 blocks) under `p` with `num_classes` outputs, as
/// `torchvision.models.resnet18(num_classes=…)`.
///
/// ```no_run
/// # fn main() -> Result<(), distill::DistillError> {
/// let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
/// let net = distill::vision::resnet18(vs.root(), 1000)?;
/// distill::vision::load_torchvision(&mut vs, "resnet18.safetensors")?; // a torchvision state_dict
/// # Ok(()) }
/// ```
///
/// # Errors
/// [`VisionError::BelowOne`](super::VisionError::BelowOne) when `num_classes < 1`; as [`resnet`] otherwise.
pub fn resnet18<'a, P: Borrow<Path<'a>>>(p: P, num_classes: i64) -> Result<ResNet<BasicBlock>> {
    resnet(p, [2, 2, 2, 2], num_classes, ResNetConfig::default())
}

/// [`resnet18`] with options (input channels, the small-input stem…).
///
/// # Errors
/// [`VisionError::BelowOne`](super::VisionError::BelowOne) when `num_classes < 1` or
/// `config.in_channels < 1`; as [`resnet`] otherwise.
pub fn resnet18_with<'a, P: Borrow<Path<'a>>>(
    p: P,
    num_classes: i64,
    config: ResNetConfig,
) -> Result<ResNet<BasicBlock>> {
    resnet(p, [2, 2, 2, 2], num_classes, config)
}

/// ResNet-34 (`BasicBlock`, stages of 3, 4, 6, 3 blocks), as `torchvision.models.resnet34`.
///
/// # Errors
/// As [`resnet18`].
pub fn resnet34<'a, P: Borrow<Path<'a>>>(p: P, num_classes: i64) -> Result<ResNet<BasicBlock>> {
    resnet(p, [3, 4, 6, 3], num_classes, ResNetConfig::default())
}

/// [`resnet34`] with options.
///
/// # Errors
/// As [`resnet18_with`].
pub fn resnet34_with<'a, P: Borrow<Path<'a>>>(
    p: P,
    num_classes: i64,
    config: ResNetConfig,
) -> Result<ResNet<BasicBlock>> {
    resnet(p, [3, 4, 6, 3], num_classes, config)
}

/// ResNet-50 (`Bottleneck`, stages of 3, 4, 6, 3 blocks, 2048 features), as
/// `torchvision.models.resnet50`.
///
/// # Errors
/// As [`resnet18`].
pub fn resnet50<'a, P: Borrow<Path<'a>>>(p: P, num_classes: i64) -> Result<ResNet<Bottleneck>> {
    resnet(p, [3, 4, 6, 3], num_classes, ResNetConfig::default())
}

/// [`resnet50`] with options.
///
/// # Errors
/// As [`resnet18_with`].
pub fn resnet50_with<'a, P: Borrow<Path<'a>>>(
    p: P,
    num_classes: i64,
    config: ResNetConfig,
) -> Result<ResNet<Bottleneck>> {
    resnet(p, [3, 4, 6, 3], num_classes, config)
}

/// A ResNet of `B` blocks with `blocks[i]` blocks in stage `i + 1`, as torchvision's
/// `ResNet(block, layers, num_classes)` (ResNet-101 is `resnet::<Bottleneck>(p, [3, 4, 23, 3], …)`).
///
/// # Errors
/// [`VisionError::BelowOne`](super::VisionError::BelowOne) when `num_classes < 1` or
/// `config.in_channels < 1`, [`VisionError::EmptyStage`](super::VisionError::EmptyStage) when a stage has
/// no block, [`VisionError::SizeOverflow`](super::VisionError::SizeOverflow) when `num_classes` or
/// `in_channels` is so large that a weight's element count overflows `i64`.
pub fn resnet<'a, B: ResNetBlock, P: Borrow<Path<'a>>>(
    p: P,
    blocks: [usize; 4],
    num_classes: i64,
    config: ResNetConfig,
) -> Result<ResNet<B>> {
    let p = p.borrow();
    positive("num_classes", num_classes)?;
    positive("in_channels", config.in_channels)?;
    if let Some(stage) = blocks.iter().position(|&n| n == 0) {
        return Err(VisionError::EmptyStage { stage: stage + 1 }.into());
    }
    // The two weights an option scales: libtorch multiplies their element counts out.
    for (layer, dims) in [("conv1", [64, config.in_channels, 7, 7]), ("fc", [num_classes, 512 * B::EXPANSION, 1, 1])] {
        if dims.iter().try_fold(1_i64, |n, &d| n.checked_mul(d)).is_none() {
            return Err(VisionError::SizeOverflow { layer: layer.to_owned(), what: "weight's element count" }.into());
        }
    }
    let (conv1, maxpool) = if config.small_input {
        (conv(p / "conv1", config.in_channels, 64, 3, 1, 1), None)
    } else {
        let conv1 = nn::conv2d(p / "conv1", config.in_channels, 64, 7, conv_config(2, 3, 1));
        let mut maxpool = nn::max_pool2d(3);
        (maxpool.stride, maxpool.padding) = ([2, 2], [1, 1]);
        (conv1, Some(maxpool))
    };
    let mut inplanes = 64;
    let mut stage = |name: &str, planes: i64, count: usize, stride: i64| {
        let layer = make_layer::<B>(&(p / name), inplanes, planes, count, stride, config.zero_init_residual);
        inplanes = planes * B::EXPANSION;
        layer
    };
    let layer1 = stage("layer1", 64, blocks[0], 1);
    let layer2 = stage("layer2", 128, blocks[1], 2);
    let layer3 = stage("layer3", 256, blocks[2], 2);
    let layer4 = stage("layer4", 512, blocks[3], 2);
    Ok(ResNet {
        conv1,
        bn1: batch_norm(p / "bn1", 64),
        relu: nn::relu(),
        maxpool,
        layer1,
        layer2,
        layer3,
        layer4,
        avgpool: nn::adaptive_avg_pool2d([1, 1]),
        fc: torch_linear(p / "fc", 512 * B::EXPANSION, num_classes),
    })
}

/// torchvision's `_make_layer`: the first block strided and projected when needed, then `count - 1`
/// blocks at the stage's width.
fn make_layer<B: ResNetBlock>(
    p: &Path,
    inplanes: i64,
    planes: i64,
    count: usize,
    stride: i64,
    zero: bool,
) -> nn::Seq<B> {
    let out = planes * B::EXPANSION;
    let downsample = (stride != 1 || inplanes != out).then(|| {
        let p = p / 0 / "downsample";
        Downsample(conv(&p / 0, inplanes, out, 1, stride, 1), batch_norm(&p / 1, out))
    });
    let first = B::build(&(p / 0), inplanes, planes, stride, downsample, zero);
    std::iter::once(first).chain((1..count).map(|i| B::build(&(p / i), out, planes, 1, None, zero))).collect()
}

pub(super) fn positive(what: &'static str, value: i64) -> Result<()> {
    if value < 1 {
        return Err(VisionError::BelowOne { what, value }.into());
    }
    Ok(())
}
