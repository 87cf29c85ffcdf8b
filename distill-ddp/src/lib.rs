//! # distill-ddp — data-parallel distillation on libtorch's own distributed engine
//!
//! Several processes train one model together: each holds a copy, trains on its own shard of the
//! data, and averages gradients with the others after every backward pass. The communication is
//! libtorch's c10d — the engine behind PyTorch's `DistributedDataParallel` — reached through a small
//! C++ shim: a `TCPStore` rendezvous and a Gloo process group (CPU tensors; NCCL for CUDA tensors
//! with the `cuda` feature). Processes are started by PyTorch's own launcher:
//!
//! ```text
//! torchrun --no-python --nproc-per-node 2 target/release/examples/fashion_mnist --ddp
//! ```
//!
//! - [`init_from_env`] joins the group torchrun describes (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
//!   `MASTER_ADDR`, `MASTER_PORT`); [`DdpConfig`] sets timeouts, the backend and Gloo's sockets.
//! - [`DataParallel`] broadcasts rank 0's parameters and buffers and averages gradients in buckets.
//! - [`DistributedSampler`] gives each rank its own shard of the data each epoch.
//! - [`ProcessGroup::println_main`] and [`ProcessGroup::save_on_main`] log and save once.
//!
//! Every failure — a peer that died or stopped answering, a rendezvous that timed out, any C++
//! exception in libtorch — is a [`DdpError`], never a hang: collectives give up after
//! [`DdpConfig::timeout`]. The exception: a collective given tensors of different sizes on
//! different ranks, which Gloo cannot report (see [`ProcessGroup`]); [`DataParallel`] checks that
//! every rank's buffers have the same sizes before its first collective.
//!
//! ```no_run
//! use distill_ddp::{init_from_env, DataParallel, DistributedSampler};
//! use tch::nn::{self, Module, OptimizerConfig};
//!
//! let group = init_from_env()?;
//! let vs = nn::VarStore::new(group.device());
//! let model = nn::linear(vs.root(), 4, 2, Default::default());
//! let ddp = DataParallel::new(&group, &[&vs])?;
//! ddp.broadcast_parameters()?;
//! let mut opt = nn::Sgd::default().build(&vs, 0.1)?;
//! let (xs, ys) = (tch::Tensor::randn([64, 4], tch::kind::FLOAT_CPU), tch::Tensor::zeros([64], tch::kind::INT64_CPU));
//! let sampler = DistributedSampler::for_group(64, &group)?.seed(0);
//! for epoch in 0..2 {
//!     let shard = tch::Tensor::from_slice(&sampler.indices(epoch));
//!     for batch in shard.split(8, 0) {
//!         let loss = model.forward(&xs.index_select(0, &batch)).cross_entropy_for_logits(&ys.index_select(0, &batch));
//!         ddp.backward_step(&mut opt, &loss)?;
//!     }
//! }
//! group.save_on_main(&vs, "model.safetensors")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![warn(missing_docs)]

mod bucket;
mod config;
mod error;
mod ffi;
mod group;
mod parallel;
mod rank0;
mod sampler;

pub use config::{Backend, DdpConfig, GlooDevice, StoreHost};
pub use error::DdpError;
pub use group::{init_from_env, nccl_available, ProcessGroup};
pub use parallel::{DataParallel, DEFAULT_BUCKET_BYTES};
pub use sampler::{DistributedSampler, Tail};
