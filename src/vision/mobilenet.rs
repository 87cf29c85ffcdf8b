//! MobileNetV2 as torchvision builds it (`torchvision.models.mobilenetv2`), with the same module
//! paths and parameter names.

use std::borrow::Borrow;

use tch::nn::{Init, LinearConfig, ModuleT, Path};
use tch::Tensor;

use super::layers::{batch_norm, conv, ReLU6};
use super::resnet::positive;
use super::VisionError;
use crate::__private::{Children, FieldSchema, Schema};
use crate::error::Result;
use crate::module::Child;
use crate::StaticSchema;
use crate::{nn, Distillable};

/// Options of [`mobilenet_v2_with`] beyond the number of classes. The default is torchvision's model
/// for 224×224 RGB images.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MobileNetV2Config {
    /// Channels of the input images (torchvision: 3). In PyTorch, replace `features[0][0]` to match.
    pub in_channels: i64,
    /// The small-input stem for 28×28 or 32×32 images: the first conv has stride 1 instead of 2. The
    /// PyTorch equivalent: `model.features[0][0] = nn.Conv2d(in_channels, c, 3, 1, 1, bias=False)`.
    pub small_input: bool,
    /// Multiplies every width (torchvision's `width_mult`), rounded to a multiple of `round_nearest`.
    pub width_mult: f64,
    /// Widths are multiples of this (torchvision's `round_nearest`; 1 turns rounding off).
    pub round_nearest: i64,
    /// Dropout probability before the classifier (torchvision's `dropout`).
    pub dropout: f64,
}

impl Default for MobileNetV2Config {
    fn default() -> Self {
        MobileNetV2Config { in_channels: 3, small_input: false, width_mult: 1.0, round_nearest: 8, dropout: 0.2 }
    }
}

/// torchvision's `Conv2dNormActivation` with ReLU6: a bias-free conv, a batch norm and a ReLU6
/// (children `0`, `1`, `2`, as torchvision's `nn.Sequential`).
#[derive(Debug, Distillable)]
pub struct ConvNormActivation(pub nn::Conv2D, pub nn::BatchNorm, pub ReLU6);

impl ModuleT for ConvNormActivation {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply(&self.0).apply_t(&self.1, train).apply(&self.2)
    }
}

/// The layers of an [`InvertedResidual`] (torchvision's `conv` `nn.Sequential`, children `0`, `1`…).
// A few hundred bytes per block, in a model of megabytes: boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Distillable)]
pub enum InvertedResidualConv {
    /// Expansion ratio above 1: the 1×1 expansion, the depthwise 3×3 conv (both with batch norm and
    /// ReLU6), the 1×1 projection and its batch norm.
    Expanded(nn::Tap<ConvNormActivation>, nn::Tap<ConvNormActivation>, nn::Conv2D, nn::BatchNorm),
    /// Expansion ratio 1: the depthwise 3×3 conv (with batch norm and ReLU6), the 1×1 projection
    /// and its batch norm.
    Unexpanded(nn::Tap<ConvNormActivation>, nn::Conv2D, nn::BatchNorm),
}

impl InvertedResidualConv {
    /// The 1×1 expansion, if the block expands.
    pub fn expand(&self) -> Option<&ConvNormActivation> {
        match self {
            InvertedResidualConv::Expanded(expand, ..) => Some(expand),
            InvertedResidualConv::Unexpanded(..) => None,
        }
    }

    /// The depthwise 3×3 conv with its batch norm and ReLU6.
    pub fn depthwise(&self) -> &ConvNormActivation {
        match self {
            InvertedResidualConv::Expanded(_, depthwise, ..) | InvertedResidualConv::Unexpanded(depthwise, ..) => {
                depthwise
            }
        }
    }

    /// The 1×1 projection conv and its batch norm.
    pub fn project(&self) -> (&nn::Conv2D, &nn::BatchNorm) {
        match self {
            InvertedResidualConv::Expanded(_, _, conv, bn) | InvertedResidualConv::Unexpanded(_, conv, bn) => {
                (conv, bn)
            }
        }
    }
}

impl ModuleT for InvertedResidualConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let xs = match self.expand() {
            Some(expand) => xs.apply_t(expand, train),
            None => xs.shallow_clone(),
        };
        let (project, bn) = self.project();
        xs.apply_t(self.depthwise(), train).apply(project).apply_t(bn, train)
    }
}

/// torchvision's `InvertedResidual`: `conv` (expansion, depthwise, projection), added to its input
/// when the stride is 1 and the widths agree.
#[derive(Debug, Distillable)]
pub struct InvertedResidual {
    /// The block's layers.
    pub conv: nn::Tap<InvertedResidualConv>,
    #[distill(skip)]
    pub(crate) residual: bool,
}

impl InvertedResidual {
    /// Whether the block adds its input to its output (torchvision's `use_res_connect`).
    pub fn uses_residual(&self) -> bool {
        self.residual
    }
}

impl ModuleT for InvertedResidual {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let out = xs.apply_t(&self.conv, train);
        if self.residual {
            xs + out
        } else {
            out
        }
    }
}

/// An element of [`MobileNetV2::features`]: the stem and last `ConvNormActivation`s, or an
/// `InvertedResidual`. Transparent in paths: `features.0.0` is the stem's conv, `features.3.conv.1.0`
/// the depthwise conv of the third block, as in PyTorch.
// A few hundred bytes per element, in a model of megabytes: boxing would only add indirection.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum MobileNetV2Feature {
    /// `features.0` and the last element.
    ConvNormActivation(ConvNormActivation),
    /// Every other element.
    InvertedResidual(InvertedResidual),
}

impl ModuleT for MobileNetV2Feature {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        match self {
            MobileNetV2Feature::ConvNormActivation(layer) => layer.forward_t(xs, train),
            MobileNetV2Feature::InvertedResidual(block) => block.forward_t(xs, train),
        }
    }
}

// Written by hand rather than derived: the derive would name the variant's field `0` and put it in
// every path (`features.0.0.0`); this one shows the variant's own children instead.
impl Distillable for MobileNetV2Feature {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        match self {
            MobileNetV2Feature::ConvNormActivation(layer) => layer.visit_children(visit),
            MobileNetV2Feature::InvertedResidual(block) => block.visit_children(visit),
        }
    }
}

impl StaticSchema for MobileNetV2Feature {
    const SCHEMA: Schema = Schema {
        records: false,
        children: Children::Variants {
            variants: &[fields_of(&ConvNormActivation::SCHEMA), fields_of(&InvertedResidual::SCHEMA)],
        },
    };
}

/// The fields of a struct's schema (every derived struct has `Children::Fields`).
const fn fields_of(schema: &'static Schema) -> &'static [FieldSchema] {
    match schema.children {
        Children::Fields { fields } => fields,
        _ => &[],
    }
}

/// torchvision's MobileNetV2 classifier: dropout and the linear layer (children `0`, `1`).
#[derive(Debug, Distillable)]
pub struct Classifier(pub nn::Dropout, pub nn::Linear);

impl ModuleT for Classifier {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply_t(&self.0, train).apply(&self.1)
    }
}

/// torchvision's MobileNetV2: `features` (stem, 17 inverted residual blocks, a last 1×1
/// conv), global average pooling, `classifier`.
///
/// Module paths and parameter names are torchvision's (`features.0.0.weight`,
/// `features.2.conv.1.0.weight`, `classifier.1.bias`…). torchvision's `features` holds modules of
/// different types, so typed paths in `distill!` stop at `student.features[5]`; the layers inside are
/// reached by string (`"features.5.conv.1.0"`, checked when the distillation is built). An adapter
/// needs typed endpoints: for an inner layer, build it from the typed layers
/// (`conv2d_adapter(path, &teacher_block.conv.depthwise().0, &student_block.conv.depthwise().0).build()`) and
/// pair the string paths through `Mapping`.
#[derive(Debug, Distillable)]
pub struct MobileNetV2 {
    /// The stem, the inverted residual blocks and the last conv.
    pub features: nn::Seq<MobileNetV2Feature>,
    /// Dropout and the linear classifier.
    pub classifier: nn::Tap<Classifier>,
}

impl ModuleT for MobileNetV2 {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        xs.apply_t(&self.features, train).adaptive_avg_pool2d([1, 1]).flatten(1, -1).apply_t(&self.classifier, train)
    }
}

/// The inverted residual setting of MobileNetV2: expansion ratio, output channels, blocks, stride.
const SETTING: [[i64; 4]; 7] =
    [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];

/// MobileNetV2 under `p` with `num_classes` outputs, as
/// `torchvision.models.mobilenet_v2(num_classes=…)`.
///
/// # Errors
/// [`VisionError::BelowOne`](super::VisionError::BelowOne) when `num_classes < 1`; as
/// [`mobilenet_v2_with`] otherwise.
pub fn mobilenet_v2<'a, P: Borrow<Path<'a>>>(p: P, num_classes: i64) -> Result<MobileNetV2> {
    mobilenet_v2_with(p, num_classes, MobileNetV2Config::default())
}

/// [`mobilenet_v2`] with options (input channels, the small-input stem, width multiplier, dropout).
///
/// # Errors
/// [`VisionError::BelowOne`](super::VisionError::BelowOne) when `num_classes`, `in_channels` or
/// `round_nearest` is below 1, [`VisionError::WidthMultiplier`](super::VisionError::WidthMultiplier) when
/// `width_mult` is not a positive finite number, [`VisionError::DropoutOutOfRange`](super::VisionError::DropoutOutOfRange) when
/// `dropout` is not in `[0, 1]`, [`VisionError::SizeOverflow`](super::VisionError::SizeOverflow) when a
/// width or a weight's element count does not fit in `i64`. Memory is not checked: options that
/// fit `i64` but not memory make tch's variable allocation panic, as for any tch layer.
pub fn mobilenet_v2_with<'a, P: Borrow<Path<'a>>>(
    p: P,
    num_classes: i64,
    config: MobileNetV2Config,
) -> Result<MobileNetV2> {
    let p = p.borrow();
    positive("num_classes", num_classes)?;
    positive("in_channels", config.in_channels)?;
    positive("round_nearest", config.round_nearest)?;
    if !(config.width_mult.is_finite() && config.width_mult > 0.0) {
        return Err(VisionError::WidthMultiplier { value: config.width_mult }.into());
    }
    if !(0.0..=1.0).contains(&config.dropout) {
        return Err(VisionError::DropoutOutOfRange { value: config.dropout }.into());
    }
    let Plan { stem, blocks, last } = plan(num_classes, &config)?;
    let features = p / "features";
    let stem_stride = if config.small_input { 1 } else { 2 };
    let mut layers = vec![MobileNetV2Feature::ConvNormActivation(conv_norm_activation(
        &(&features / 0),
        config.in_channels,
        stem,
        3,
        stem_stride,
        1,
    ))];
    let mut input = stem;
    for [block_input, output, stride, expand_ratio] in blocks {
        let block = inverted_residual(&(&features / layers.len()), block_input, output, stride, expand_ratio);
        layers.push(MobileNetV2Feature::InvertedResidual(block));
        input = output;
    }
    let index = layers.len();
    layers.push(MobileNetV2Feature::ConvNormActivation(conv_norm_activation(
        &(&features / index),
        input,
        last,
        1,
        1,
        1,
    )));
    let linear_config =
        LinearConfig { ws_init: Init::Randn { mean: 0.0, stdev: 0.01 }, bs_init: Some(Init::Const(0.0)), bias: true };
    let linear = nn::linear(p / "classifier" / 1, last, num_classes, linear_config);
    Ok(MobileNetV2 {
        features: layers.into_iter().collect(),
        classifier: nn::Tap::new(Classifier(nn::dropout(config.dropout), linear)),
    })
}

/// The widths of every layer, worked out before any variable is made.
struct Plan {
    /// The stem's output width.
    stem: i64,
    /// `[input, output, stride, expand_ratio]` of each inverted residual block, in order.
    blocks: Vec<[i64; 4]>,
    /// The last conv's output width.
    last: i64,
}

/// The layers' widths, with checked arithmetic: a width, or a weight's element count (which
/// libtorch multiplies out), that overflows `i64` is [`VisionError::SizeOverflow`] naming the
/// layer, where it was an overflow panic in a debug build (a wrong width in a release one).
fn plan(num_classes: i64, config: &MobileNetV2Config) -> Result<Plan, VisionError> {
    let overflow = |layer: String, what| VisionError::SizeOverflow { layer, what };
    let width = |index: usize, width: f64| {
        make_divisible(width * config.width_mult, config.round_nearest)
            .ok_or_else(|| overflow(format!("features.{index}"), "width"))
    };
    let weight = |layer: String, dims: &[i64]| match dims.iter().try_fold(1_i64, |n, &d| n.checked_mul(d)) {
        Some(_) => Ok(()),
        None => Err(overflow(layer, "weight's element count")),
    };
    let stem = width(0, 32.0)?;
    weight("features.0.0".to_owned(), &[stem, config.in_channels, 3, 3])?;
    let mut blocks = Vec::new();
    let mut input = stem;
    for [t, c, n, s] in SETTING {
        let output = width(blocks.len() + 1, c as f64)?;
        for i in 0..n {
            let at = |layer: &str| format!("features.{}.conv.{layer}", blocks.len() + 1);
            // Expanded blocks: 1×1 `0.0`, depthwise `1.0`, projection `2`; unexpanded ones lack the first.
            let (depthwise, project) = if t == 1 { ("0.0", "1") } else { ("1.0", "2") };
            let hidden = input.checked_mul(t).ok_or_else(|| overflow(at(depthwise), "width"))?;
            if t != 1 {
                weight(at("0.0"), &[hidden, input])?;
            }
            weight(at(depthwise), &[hidden, 3, 3])?;
            weight(at(project), &[output, hidden])?;
            blocks.push([input, output, if i == 0 { s } else { 1 }, t]);
            input = output;
        }
    }
    let index = blocks.len() + 1;
    let last = make_divisible(1280.0 * config.width_mult.max(1.0), config.round_nearest)
        .ok_or_else(|| overflow(format!("features.{index}"), "width"))?;
    weight(format!("features.{index}.0"), &[last, input])?;
    weight("classifier.1".to_owned(), &[num_classes, last])?;
    Ok(Plan { stem, blocks, last })
}

/// torchvision's `_make_divisible`: `v` rounded to the nearest multiple of `divisor` (at least
/// `divisor`), rounded up once more when that loses over 10%; `None` when the result does not fit
/// in `i64`.
fn make_divisible(v: f64, divisor: i64) -> Option<i64> {
    let shifted = (v + divisor as f64 / 2.0).floor();
    // `as` saturates: refuse from 2⁶³ (`i64::MAX as f64` rounds up to it), infinity included,
    // rather than take i64::MAX. `v` is a product of finite positive numbers, never NaN.
    if shifted.is_nan() || shifted >= 2f64.powi(63) {
        return None;
    }
    let rounded = (shifted as i64 / divisor * divisor).max(divisor);
    if (rounded as f64) < 0.9 * v {
        rounded.checked_add(divisor)
    } else {
        Some(rounded)
    }
}

fn conv_norm_activation(p: &Path, c_in: i64, c_out: i64, k: i64, stride: i64, groups: i64) -> ConvNormActivation {
    ConvNormActivation(conv(p / 0, c_in, c_out, k, stride, groups), batch_norm(p / 1, c_out), ReLU6::default())
}

/// torchvision's `InvertedResidual(inp, oup, stride, expand_ratio)`.
fn inverted_residual(p: &Path, input: i64, output: i64, stride: i64, expand_ratio: i64) -> InvertedResidual {
    let p = p / "conv";
    let hidden = input * expand_ratio;
    let conv = if expand_ratio == 1 {
        InvertedResidualConv::Unexpanded(
            nn::Tap::new(conv_norm_activation(&(&p / 0), hidden, hidden, 3, stride, hidden)),
            conv(&p / 1, hidden, output, 1, 1, 1),
            batch_norm(&p / 2, output),
        )
    } else {
        InvertedResidualConv::Expanded(
            nn::Tap::new(conv_norm_activation(&(&p / 0), input, hidden, 1, 1, 1)),
            nn::Tap::new(conv_norm_activation(&(&p / 1), hidden, hidden, 3, stride, hidden)),
            conv(&p / 2, hidden, output, 1, 1, 1),
            batch_norm(&p / 3, output),
        )
    };
    InvertedResidual { conv: nn::Tap::new(conv), residual: stride == 1 && input == output }
}
