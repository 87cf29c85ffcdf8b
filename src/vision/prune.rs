//! Structured pruning of residual networks: slice the inner channels of each block, consistently.
//!
//! A residual block's output is added to its input, so its output width is tied to every other
//! block of the stage; its *inner* widths are free. Pruning them keeps the channels with the largest
//! L1 norm of the filters that produce them, slices the batch norm that follows, and the input
//! channels of the conv that consumes them:
//!
//! - [`BasicBlock`]: `conv1` outputs, `bn1`, `conv2` inputs;
//! - [`Bottleneck`]: `conv1` outputs, `bn1`, `conv2` inputs; and `conv2` outputs, `bn2`, `conv3` inputs;
//! - [`InvertedResidual`] with expansion: the expansion conv's outputs and batch norm, the depthwise
//!   conv (whose channels are its groups) and its batch norm, the projection's inputs. A block
//!   without expansion has no inner width (its depthwise conv works on the block's input) and is
//!   copied.
//!
//! The stem, the identity-path projections, the classifier and every block output keep their widths,
//! so the pruned network's block outputs pair with the teacher's directly, and its pruned convs pair
//! through `conv2d_adapter`/`inverted_conv2d_adapter` as a plain CNN's do.
//!
//! ```no_run
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::vision::{self, prune::prune_resnet};
//! let (teacher_vs, student_vs) = (tch::nn::VarStore::new(tch::Device::Cpu), tch::nn::VarStore::new(tch::Device::Cpu));
//! let teacher = vision::resnet18(teacher_vs.root(), 10)?;
//! let student = prune_resnet(student_vs.root(), &teacher, 0.25)?; // 25% of each block's inner channels
//! # Ok(()) }
//! ```

use std::borrow::Borrow;

use tch::nn::Path;
use tch::Tensor;

use super::mobilenet::{Classifier, ConvNormActivation, InvertedResidual, InvertedResidualConv, MobileNetV2Feature};
use super::resnet::Downsample;
use super::{BasicBlock, Bottleneck, MobileNetV2, ResNet, ResNetBlock};
use crate::adapter::ChannelMapError;
use crate::error::Result;
use crate::nn::{self, BatchNorm, Conv2D};
use crate::prune::PruneError;
use crate::prune::{keep_count, l1_keep, prune_batch_norm, prune_conv2d, prune_linear, KeptChannels};

/// A block whose inner channels can be pruned: one list of kept channels per inner width.
pub trait PruneInner: Sized {
    /// How many inner widths the block has (the number of lists [`prune_inner`](Self::prune_inner)
    /// takes): 1 for a `BasicBlock`, 2 for a `Bottleneck`, 1 or 0 for an `InvertedResidual`.
    fn inner_widths(&self) -> usize;

    /// For each inner width, the `keep_count(width, keep_ratio)` channels whose producing filters
    /// have the largest L1 norm ([`l1_keep`]), ascending.
    ///
    /// # Errors
    /// [`PruneError::KeepRatio`] when `keep_ratio` is not in `(0, 1]`.
    fn l1_inner_keep(&self, keep_ratio: f64) -> Result<Vec<Vec<i64>>>;

    /// A copy under `path` that keeps the inner channels `keep` (one list per inner width, each in
    /// the given order) and copies everything else; see the [module docs](self).
    ///
    /// # Errors
    /// [`PruneError::KeepLists`] for the wrong number of lists, [`ChannelMapError::NoneKept`] for an
    /// empty list; [`ChannelMapError::ChannelOutOfRange`], [`ChannelMapError::DuplicateChannel`] for a
    /// bad index.
    fn prune_inner<'a, P: Borrow<Path<'a>>>(&self, path: P, keep: &[Vec<i64>]) -> Result<Self>;
}

impl PruneInner for BasicBlock {
    fn inner_widths(&self) -> usize {
        1
    }

    fn l1_inner_keep(&self, keep_ratio: f64) -> Result<Vec<Vec<i64>>> {
        Ok(vec![l1_keep_filters(&self.conv1, keep_ratio)?])
    }

    fn prune_inner<'a, P: Borrow<Path<'a>>>(&self, path: P, keep: &[Vec<i64>]) -> Result<Self> {
        let p = path.borrow();
        let [inner] = lists(keep, "BasicBlock")?;
        Ok(BasicBlock {
            conv1: prune_conv2d(p / "conv1", &self.conv1, inner, None)?,
            bn1: prune_batch_norm(p / "bn1", &self.bn1, inner)?,
            relu: nn::relu(),
            conv2: prune_conv2d(p / "conv2", &self.conv2, &all(&self.conv2), Some(inner))?,
            bn2: copy_batch_norm(p / "bn2", &self.bn2)?,
            downsample: copy_downsample(p, self.downsample.as_deref())?,
        })
    }
}

impl PruneInner for Bottleneck {
    fn inner_widths(&self) -> usize {
        2
    }

    fn l1_inner_keep(&self, keep_ratio: f64) -> Result<Vec<Vec<i64>>> {
        Ok(vec![l1_keep_filters(&self.conv1, keep_ratio)?, l1_keep_filters(&self.conv2, keep_ratio)?])
    }

    fn prune_inner<'a, P: Borrow<Path<'a>>>(&self, path: P, keep: &[Vec<i64>]) -> Result<Self> {
        let p = path.borrow();
        let [first, second] = lists(keep, "Bottleneck")?;
        Ok(Bottleneck {
            conv1: prune_conv2d(p / "conv1", &self.conv1, first, None)?,
            bn1: prune_batch_norm(p / "bn1", &self.bn1, first)?,
            conv2: prune_conv2d(p / "conv2", &self.conv2, second, Some(first))?,
            bn2: prune_batch_norm(p / "bn2", &self.bn2, second)?,
            conv3: prune_conv2d(p / "conv3", &self.conv3, &all(&self.conv3), Some(second))?,
            bn3: copy_batch_norm(p / "bn3", &self.bn3)?,
            relu: nn::relu(),
            downsample: copy_downsample(p, self.downsample.as_deref())?,
        })
    }
}

impl PruneInner for InvertedResidual {
    fn inner_widths(&self) -> usize {
        usize::from(self.conv.expand().is_some())
    }

    fn l1_inner_keep(&self, keep_ratio: f64) -> Result<Vec<Vec<i64>>> {
        match self.conv.expand() {
            Some(expand) => Ok(vec![l1_keep_filters(&expand.0, keep_ratio)?]),
            None => {
                keep_count(1, keep_ratio)?; // the ratio is checked all the same
                Ok(Vec::new())
            }
        }
    }

    fn prune_inner<'a, P: Borrow<Path<'a>>>(&self, path: P, keep: &[Vec<i64>]) -> Result<Self> {
        let p = path.borrow() / "conv";
        let conv = match &*self.conv {
            InvertedResidualConv::Expanded(expand, depthwise, project, bn) => {
                let [inner] = lists(keep, "InvertedResidual with expansion")?;
                InvertedResidualConv::Expanded(
                    nn::Tap::new(ConvNormActivation(
                        prune_conv2d(&p / 0 / 0, &expand.0, inner, None)?,
                        prune_batch_norm(&p / 0 / 1, &expand.1, inner)?,
                        super::relu6(),
                    )),
                    nn::Tap::new(ConvNormActivation(
                        prune_depthwise_conv2d(&p / 1 / 0, &depthwise.0, inner)?,
                        prune_batch_norm(&p / 1 / 1, &depthwise.1, inner)?,
                        super::relu6(),
                    )),
                    prune_conv2d(&p / 2, project, &all(project), Some(inner))?,
                    copy_batch_norm(&p / 3, bn)?,
                )
            }
            InvertedResidualConv::Unexpanded(depthwise, project, bn) => {
                let [] = lists(keep, "InvertedResidual without expansion")?;
                InvertedResidualConv::Unexpanded(
                    nn::Tap::new(copy_conv_norm_activation(&p / 0, depthwise)?),
                    copy_conv2d(&p / 1, project)?,
                    copy_batch_norm(&p / 2, bn)?,
                )
            }
        };
        Ok(InvertedResidual { conv: nn::Tap::new(conv), residual: self.residual })
    }
}

/// A copy of `net` under `path` with every block's inner channels pruned to `keep_ratio` by L1 norm
/// ([`PruneInner::l1_inner_keep`], then [`PruneInner::prune_inner`]); the stem, the projections and
/// `fc` are copied. Variables keep torchvision's names.
///
/// # Errors
/// [`PruneError::KeepRatio`] when `keep_ratio` is not in `(0, 1]`, [`PruneError::UnknownConfig`] when a
/// layer was wrapped without its config (`from_tch`).
pub fn prune_resnet<'a, B, P>(path: P, net: &ResNet<B>, keep_ratio: f64) -> Result<ResNet<B>>
where
    B: ResNetBlock + PruneInner,
    P: Borrow<Path<'a>>,
{
    let p = path.borrow();
    keep_count(1, keep_ratio)?;
    let stage = |name: &str, blocks: &nn::Seq<B>| -> Result<nn::Seq<B>> {
        let p = p / name;
        let pruned =
            blocks.iter().enumerate().map(|(i, block)| block.prune_inner(&p / i, &block.l1_inner_keep(keep_ratio)?));
        pruned.collect::<Result<Vec<B>>>().map(nn::Seq::from)
    };
    Ok(ResNet {
        conv1: copy_conv2d(p / "conv1", &net.conv1)?,
        bn1: copy_batch_norm(p / "bn1", &net.bn1)?,
        relu: nn::relu(),
        maxpool: net.maxpool.as_ref().map(copy_max_pool),
        layer1: stage("layer1", &net.layer1)?,
        layer2: stage("layer2", &net.layer2)?,
        layer3: stage("layer3", &net.layer3)?,
        layer4: stage("layer4", &net.layer4)?,
        avgpool: nn::adaptive_avg_pool2d(net.avgpool.output_size),
        fc: prune_linear(p / "fc", &net.fc, None, None)?,
    })
}

/// A copy of `net` under `path` with the expansion of every inverted residual block pruned to
/// `keep_ratio` by L1 norm ([`PruneInner`]); the stem, the last conv and the classifier are copied.
///
/// # Errors
/// As [`prune_resnet`].
pub fn prune_mobilenet_v2<'a, P: Borrow<Path<'a>>>(path: P, net: &MobileNetV2, keep_ratio: f64) -> Result<MobileNetV2> {
    let p = path.borrow();
    keep_count(1, keep_ratio)?;
    let features = p / "features";
    let mut layers = Vec::with_capacity(net.features.len());
    for (i, layer) in net.features.iter().enumerate() {
        layers.push(match layer {
            MobileNetV2Feature::ConvNormActivation(layer) => {
                MobileNetV2Feature::ConvNormActivation(copy_conv_norm_activation(&features / i, layer)?)
            }
            MobileNetV2Feature::InvertedResidual(block) => MobileNetV2Feature::InvertedResidual(
                block.prune_inner(&features / i, &block.l1_inner_keep(keep_ratio)?)?,
            ),
        });
    }
    let Classifier(dropout, linear) = &*net.classifier;
    let linear = prune_linear(p / "classifier" / 1, linear, None, None)?;
    Ok(MobileNetV2 {
        features: layers.into_iter().collect(),
        classifier: nn::Tap::new(Classifier(nn::dropout(dropout.p), linear)),
    })
}

/// A copy of the depthwise conv `conv` (one group per channel, `weight` of shape `[C, 1, kh, kw]`)
/// under `path` with the channels `keep` (in that order): the kept channels' filters and biases,
/// `groups = keep.len()`, the same kernel, stride, padding and dilation. Pruning a depthwise conv's
/// input prunes its output: the two are the same channels.
///
/// The copy carries the record of its pruning, as [`prune_conv2d`]'s does
/// ([`Conv::pruned_from`](crate::nn::Conv::pruned_from): `conv`'s weight shape, `keep` as the
/// output channels and the one input channel of each group), so that `conv2d_adapter` and
/// `inverted_conv2d_adapter` select the kept channels however training changes the weights, and a
/// [`PruneRecord`](crate::prune::PruneRecord) can save it.
///
/// # Errors
/// [`PruneError::NotDepthwise`] or [`PruneError::DepthwiseGroups`] when `conv` is not depthwise,
/// [`PruneError::UnknownConfig`] when it was wrapped without its config, [`ChannelMapError::NoneKept`]
/// when `keep` is empty; [`ChannelMapError::ChannelOutOfRange`], [`ChannelMapError::DuplicateChannel`]
/// for a bad index.
pub fn prune_depthwise_conv2d<'a, P: Borrow<Path<'a>>>(path: P, conv: &Conv2D, keep: &[i64]) -> Result<Conv2D> {
    let Some(&config) = conv.config() else {
        return Err(PruneError::UnknownConfig { layer: "conv", wrapper: "Conv" }.into());
    };
    let size = conv.ws.size();
    let &[channels, 1, kh, kw] = size.as_slice() else {
        return Err(PruneError::NotDepthwise { shape: size }.into());
    };
    if config.groups != channels {
        return Err(PruneError::DepthwiseGroups { groups: config.groups, channels }.into());
    }
    check_channels(keep, channels)?;
    // A depthwise weight is `[C, 1, kh, kw]`: its input dimension is the single channel of each
    // group, kept whole, so the record of a copy is `keep` on the outputs and `[0]` on the inputs.
    let record = KeptChannels::new(&size, keep.to_vec(), vec![0])?;
    let index = Tensor::from_slice(keep).f_to_device(conv.ws.device())?;
    let kept = keep.len() as i64;
    // The bias the conv holds, not the one its config claims, as `prune_conv2d` does.
    let config = tch::nn::ConvConfigND { groups: kept, bias: conv.bs.is_some(), ..config };
    let mut pruned = nn::conv(path, kept, kept, [kh, kw], config);
    copy_into(&pruned.ws, &conv.ws.f_index_select(0, &index)?)?;
    if let (Some(dst), Some(src)) = (&pruned.bs, &conv.bs) {
        copy_into(dst, &src.f_index_select(0, &index)?)?;
    }
    pruned.set_pruned_from(record)?;
    Ok(pruned)
}

/// A copy of a conv, grouped or not, under `path`.
fn copy_conv2d<'a, P: Borrow<Path<'a>>>(path: P, conv: &Conv2D) -> Result<Conv2D> {
    match conv.config() {
        Some(config) if config.groups != 1 => prune_depthwise_conv2d(path, conv, &all(conv)),
        _ => prune_conv2d(path, conv, &all(conv), None),
    }
}

fn copy_batch_norm<'a, P: Borrow<Path<'a>>>(path: P, bn: &BatchNorm) -> Result<BatchNorm> {
    let channels: Vec<i64> = (0..bn.running_mean.size().first().copied().unwrap_or(0)).collect();
    prune_batch_norm(path, bn, &channels)
}

fn copy_conv_norm_activation<'a, P: Borrow<Path<'a>>>(
    path: P,
    layer: &ConvNormActivation,
) -> Result<ConvNormActivation> {
    let p = path.borrow();
    Ok(ConvNormActivation(copy_conv2d(p / 0, &layer.0)?, copy_batch_norm(p / 1, &layer.1)?, super::relu6()))
}

/// The block's `downsample` copied under `block_path / "downsample"`.
fn copy_downsample(block_path: &Path, downsample: Option<&Downsample>) -> Result<Option<nn::Tap<Downsample>>> {
    let Some(Downsample(conv, bn)) = downsample else {
        return Ok(None);
    };
    let p = block_path / "downsample";
    Ok(Some(nn::Tap::new(Downsample(copy_conv2d(&p / 0, conv)?, copy_batch_norm(&p / 1, bn)?))))
}

fn copy_max_pool(pool: &nn::MaxPool2D) -> nn::MaxPool2D {
    let mut copy = nn::max_pool2d(1);
    (copy.kernel_size, copy.stride, copy.padding, copy.dilation, copy.ceil_mode) =
        (pool.kernel_size, pool.stride, pool.padding, pool.dilation, pool.ceil_mode);
    copy
}

/// The L1-strongest `keep_count(filters, keep_ratio)` filters of `conv`.
fn l1_keep_filters(conv: &Conv2D, keep_ratio: f64) -> Result<Vec<i64>> {
    let filters = conv.ws.size().first().copied().unwrap_or(0);
    l1_keep(&conv.ws, keep_count(filters, keep_ratio)?)
}

/// Every output channel of `conv`, in order.
fn all(conv: &Conv2D) -> Vec<i64> {
    (0..conv.ws.size().first().copied().unwrap_or(0)).collect()
}

/// `keep` as exactly `N` lists, or an error naming the block.
fn lists<'k, const N: usize>(keep: &'k [Vec<i64>], block: &'static str) -> Result<[&'k [i64]; N]> {
    let lists: Vec<&[i64]> = keep.iter().map(Vec::as_slice).collect();
    lists.try_into().map_err(|lists: Vec<&[i64]>| PruneError::KeepLists { block, widths: N, lists: lists.len() }.into())
}

/// Checks that `keep` holds distinct channels of `0..channels`, at least one.
fn check_channels(keep: &[i64], channels: i64) -> Result<()> {
    const WHAT: &str = "channel";
    if keep.is_empty() {
        return Err(ChannelMapError::NoneKept { what: WHAT }.into());
    }
    let mut seen = vec![false; usize::try_from(channels).unwrap_or(0)];
    for &index in keep {
        let Some(slot) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) else {
            return Err(ChannelMapError::ChannelOutOfRange { what: WHAT, index, channels }.into());
        };
        if std::mem::replace(slot, true) {
            return Err(ChannelMapError::DuplicateChannel { what: WHAT, index }.into());
        }
    }
    Ok(())
}

/// Copies `src` into the variable `dst` without recording it for autograd.
fn copy_into(dst: &Tensor, src: &Tensor) -> Result<()> {
    let mut dst = dst.shallow_clone();
    tch::no_grad(|| dst.f_copy_(src))?;
    Ok(())
}
