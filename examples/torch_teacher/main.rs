//! A teacher trained in PyTorch, a student in Rust (the `distill` crate's PyTorch-interop example).
//!
//! `train_teacher.py` (beside this file) trains torchvision's ResNet-18 with the small-input stem on
//! Fashion-MNIST and exports it twice: its `state_dict` as safetensors and a TorchScript feature
//! extractor whose outputs are named fx nodes. This program then
//!
//! 1. loads the weights into `distill::vision::resnet18_with` and checks it against PyTorch: the same
//!    logits on 64 check images (to 1e-4) and the same test accuracy;
//! 2. prunes the inner channels of every residual block (`distill::vision::prune::prune_resnet`);
//! 3. fine-tunes two copies of the pruned student on the same batches: cross-entropy only, and
//!    cross-entropy + feature distillation of every stage output against the TorchScript teacher, by
//!    fx node name, + Hinton KD on its logits;
//! 4. prints and writes `OUT/results.md` with the accuracies.
//!
//! Run it with `scripts/dev example torch_teacher [ARGS…]`, which runs the Python half first when its
//! files are missing.

#[path = "../fashion_mnist/data.rs"]
#[allow(dead_code)]
mod data;
mod phases;
#[path = "../fashion_mnist/train.rs"]
#[allow(dead_code)]
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use distill::jit;
use distill::prelude::*;
use distill::vision::{BasicBlock, ResNet};

/// Distill a PyTorch-trained ResNet-18 (TorchScript teacher) into its pruned Rust copy.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder with the four Fashion-MNIST IDX files.
    #[arg(long, default_value = data::DEFAULT_DIR)]
    data: PathBuf,
    /// Folder with the teacher's exports (from train_teacher.py) and for results.md.
    #[arg(long, default_value = "out/torch_teacher")]
    out: PathBuf,
    /// Fraction of each block's inner channels the student keeps.
    #[arg(long, default_value_t = 0.25)]
    keep: f64,
    /// Fine-tuning epochs.
    #[arg(long, default_value_t = 1)]
    epochs: usize,
    /// Training images used for fine-tuning (a seeded random subset; 0 for all 60 000). As many as
    /// the teacher was trained on by default: with few labelled images the teacher's knowledge is what
    /// the student lacks (with 6000 the cross-entropy fine-tune alone overtakes this small teacher).
    #[arg(long, default_value_t = 3000)]
    train_images: i64,
    /// Test images used for the accuracies: the first N, 0 for all 10 000. By default the images
    /// PyTorch's accuracy was measured on (`train_teacher.py --test-images`, 2000 unless told), so
    /// that the Rust teacher's predictions can be compared with PyTorch's one for one.
    #[arg(long)]
    test_images: Option<i64>,
    /// Mini-batch size.
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    /// Fine-tuning learning rate (SGD, momentum 0.9).
    #[arg(long, default_value_t = 0.01)]
    lr: f64,
    /// Intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Seed of the subset and the batch order.
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

distill! {
    /// The pruned student against the TorchScript teacher: every stage's output by fx node name (a
    /// pruned block keeps its output width, so the pairs need no adapter) and the logits.
    pub struct FromTorch for ResNet<BasicBlock> => jit::Module {
        /// Stage outputs.
        l1: student.layer1 => teacher["layer1"] with Mse;
        l2: student.layer2 => teacher["layer2"] with Mse;
        l3: student.layer3 => teacher["layer3"] with Mse;
        l4: student.layer4 => teacher["layer4"] with Mse;
        /// Hinton KD on the logits (T = 4).
        kd: student => teacher["logits"] with KlDiv::new(4.0);
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    distill::tune_allocator();
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let start = Instant::now();
    let (report, dataset) = phases::inputs(&args)?;
    let teacher = phases::teacher(&args, &report, &dataset)?;
    let tunes = phases::fine_tunes(&args, &teacher, &dataset)?;
    phases::table(&args, &teacher, &tunes, start)
}
