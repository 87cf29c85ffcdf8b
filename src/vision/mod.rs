//! torchvision's ResNet-18/34/50 and MobileNetV2 on `distill::nn`: every module a distillation point,
//! every parameter named as in torchvision's `state_dict()`.
//!
//! A model trained in PyTorch loads unchanged:
//!
//! ```text
//! # Python
//! safetensors.torch.save_file(model.state_dict(), "resnet18.safetensors")
//! ```
//!
//! ```no_run
//! # fn main() -> Result<(), distill::DistillError> {
//! use distill::vision::{self, ResNetConfig};
//! let mut vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let config = ResNetConfig { in_channels: 1, small_input: true, ..Default::default() };
//! let net = vision::resnet18_with(vs.root(), 10, config)?;  // conv1.weight, layer1.0.bn1.running_mean, …
//! vision::load_torchvision(&mut vs, "resnet18.safetensors")?;
//! # Ok(()) }
//! ```
//!
//! The models compute what torchvision 0.28 computes (tested to 1e-4 in eval and train mode, batch
//! statistics and running-statistics updates included). Paths read as in PyTorch: in `distill!`,
//! `student.layer3[1].conv2` or `"layer3.1.conv2"`; `student.features[5]` or
//! `"features.5.conv.1.0"` for MobileNetV2. [`prune`] slices the inner channels of the residual
//! blocks, so that `conv2d_adapter` and `inverted_conv2d_adapter` apply to a pruned network.
//!
//! Differences from torchvision, none of which changes a parameter name or a result: activations are
//! out of place (an in-place ReLU would overwrite the captured output of the batch norm before it);
//! with the small-input stem, ResNet's `maxpool` is `None` rather than an `Identity`; constructors
//! return a `Result` instead of panicking on a bad width or class count.

mod error;
mod layers;
mod load;
mod mobilenet;
pub mod prune;
mod resnet;

pub use error::VisionError;
pub use layers::{relu6, ReLU6};
pub(crate) use load::{load_strict, load_strict_with};
pub use load::{load_torchvision, load_torchvision_under};
pub use mobilenet::{
    mobilenet_v2, mobilenet_v2_with, Classifier, ConvNormActivation, InvertedResidual, InvertedResidualConv,
    MobileNetV2, MobileNetV2Config, MobileNetV2Feature,
};
pub use resnet::{
    resnet, resnet18, resnet18_with, resnet34, resnet34_with, resnet50, resnet50_with, BasicBlock, Bottleneck,
    Downsample, ResNet, ResNetBlock, ResNetConfig,
};
