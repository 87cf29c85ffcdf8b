//! Tappable layers mirroring `tch::nn`.
//!
//! Constructors take an `nn::Path` and a config exactly like tch's (`nn::conv2d(p / "conv", 1, 16, 3,
//! Default::default())`) and create the same variables under the same names, so VarStore and
//! safetensors checkpoints of tch models load unchanged. Each wrapped layer derefs to the tch layer
//! (`conv.ws`, `conv.bs`) and implements tch's `Module`/`ModuleT`.
//!
//! What they add is a tap: when a distillation arms it, the layer records its input and output.
//! Containers ([`Seq`], [`Sequential`]) record each child's call, so any child — a user struct too — is
//! a distillation point; [`Tap`] makes any module one.
//!
//! Initialisation is tch's (weights Kaiming-uniform with the ReLU gain, conv biases 0), which is not
//! PyTorch's: [`pytorch_linear_config`] and [`pytorch_conv2d_config`] give PyTorch's.

mod activation;
mod batch_norm;
pub(crate) mod capture;
mod chain;
mod conv;
mod dropout;
mod element;
mod embedding;
mod flatten;
mod init;
mod layer_norm;
pub(crate) mod leaf;
mod linear;
mod pool;
mod seq;
mod sequential;
mod tap;
mod tch_leaves;

pub use activation::{gelu, identity, relu, sigmoid, silu, tanh, Gelu, Identity, ReLU, SiLU, Sigmoid, Tanh};
pub use batch_norm::{batch_norm1d, batch_norm2d, batch_norm3d, BatchNorm};
pub use conv::{conv, conv1d, conv2d, conv3d, Conv, Conv1D, Conv2D, Conv3D};
pub use dropout::{dropout, Dropout};
pub use element::Element;
pub use embedding::{embedding, Embedding};
pub use flatten::{flatten, Flatten};
pub use init::{pytorch_conv2d_config, pytorch_linear_config, PYTORCH_WEIGHT_INIT};
pub use layer_norm::{layer_norm, LayerNorm};
pub use linear::{linear, Linear};
pub use pool::{adaptive_avg_pool2d, avg_pool2d, max_pool2d, AdaptiveAvgPool2D, AvgPool2D, MaxPool2D};
pub use seq::Seq;
pub use sequential::{seq, Layer, Sequential};
pub use tap::{tap, Tap};

pub use crate::point::Slot;

// What users need next to our layers, so that `distill::nn` can replace `tch::nn` in imports.
pub use tch::nn::{
    Adam, AdamW, BatchNormConfig, ConvConfig, ConvConfigND, EmbeddingConfig, Init, LayerNormConfig, LinearConfig,
    Module, ModuleT, Optimizer, OptimizerConfig, Path, RmsProp, Sgd, VarStore,
};
