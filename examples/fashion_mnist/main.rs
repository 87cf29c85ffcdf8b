//! Prune → distill on Fashion-MNIST: ENOT's workflow, checked against the same workflow in PyTorch.
//!
//! 1. Train the teacher CNN (or reuse `OUT/teacher.safetensors` from an earlier run).
//! 2. Prune every conv to `--keep` of its filters by L1 norm (batch norms and classifier sliced).
//! 3. Fine-tune two copies of the pruned student with the same batches and seed: one with
//!    cross-entropy only, one with cross-entropy + feature distillation through `conv2d_adapter`
//!    + Hinton KD on the logits.
//! 4. Report the four test accuracies (`OUT/results.md`) and the loss curves (`OUT/loss_curves.png`).
//!
//! Run it with `scripts/dev main [ARGS…]` (or `cargo run --release --example fashion_mnist -- ARGS`).
//! With `--ddp` it is one rank of a data-parallel run started by torchrun (`scripts/dev ddp N`):
//! every training run splits each global batch over the ranks and averages gradients; rank 0
//! evaluates, writes the checkpoint and the report.

mod cached;
mod data;
mod kd;
mod model;
mod phases;
mod prune;
mod report;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use distill::nn::VarStore;
use distill_ddp::{DataParallel, DdpConfig, ProcessGroup};
use tch::Device;

use phases::Ctx;

/// Prune a Fashion-MNIST CNN and distill it back (the `distill` crate's main example).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder with the four Fashion-MNIST IDX files (gzipped or not).
    #[arg(long, default_value = data::DEFAULT_DIR)]
    data: PathBuf,
    /// Output folder: teacher checkpoint, results.md, loss_curves.png.
    #[arg(long, default_value = "out/fashion_mnist")]
    out: PathBuf,
    /// Teacher training epochs (one-cycle SGD).
    #[arg(long, default_value_t = 8)]
    epochs: usize,
    /// Fine-tuning epochs, for each of the two students.
    #[arg(long, default_value_t = 2)]
    finetune_epochs: usize,
    /// Mini-batch size (teacher and fine-tunes).
    #[arg(long, default_value_t = 128)]
    batch_size: i64,
    /// Fraction of each conv's filters the student keeps (by L1 norm).
    #[arg(long, default_value_t = 0.25)]
    keep: f64,
    /// Intra-op threads for libtorch.
    #[arg(long, default_value_t = 2)]
    threads: i32,
    /// Seed for initialisation and batch order.
    #[arg(long, default_value_t = 0)]
    seed: i64,
    /// Use only the first N training images (quick smoke runs; accuracy will be lower).
    #[arg(long)]
    limit: Option<i64>,
    /// Distill with the pairs of a TOML file (`examples/fashion_mnist/kd.toml` is the `distill!`
    /// declaration of kd.rs, and gives the same numbers) instead of the `distill!` declaration.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Train the teacher even when a checkpoint exists (and overwrite it).
    #[arg(long)]
    retrain: bool,
    /// Run as one rank of a data-parallel group launched by torchrun (reads RANK, WORLD_SIZE,
    /// MASTER_ADDR, MASTER_PORT); `--batch-size` stays the global batch.
    #[arg(long)]
    ddp: bool,
    /// Also fine-tune from a teacher cache: write the teacher's outputs once (2 shards, random-crop
    /// and flip views), train the same distillation from it, and compare accuracy and time.
    #[arg(long)]
    teacher_cache: bool,
    /// With `--teacher-cache`: augmentation views stored per image (epoch e reads view e mod V).
    #[arg(long, default_value_t = 2)]
    cache_views: usize,
    /// With `--ddp`: seconds a rank waits for the others before failing.
    #[arg(long, default_value_t = 300)]
    ddp_timeout: u64,
}

/// Joins the data-parallel group (with `--ddp`), checking that the global batch splits evenly.
fn join_group(args: &Args) -> Result<Option<ProcessGroup>, Box<dyn Error>> {
    if !args.ddp {
        return Ok(None);
    }
    let timeout = Duration::from_secs(args.ddp_timeout);
    let config = DdpConfig::from_env()?.with_timeout(timeout).with_rendezvous_timeout(timeout);
    let group = ProcessGroup::new(&config)?;
    if args.batch_size % group.world_size() as i64 != 0 {
        return Err(format!("--batch-size {} does not split over {} ranks", args.batch_size, group.world_size()).into());
    }
    Ok(Some(group))
}

/// Gradient averaging over `group` for `stores`, after copying rank 0's values to every rank.
fn parallel<'g>(
    group: Option<&'g ProcessGroup>,
    stores: &[&VarStore],
) -> Result<Option<DataParallel<'g>>, Box<dyn Error>> {
    let Some(group) = group else { return Ok(None) };
    let ddp = DataParallel::new(group, stores)?;
    ddp.broadcast_parameters()?;
    Ok(Some(ddp))
}

fn params(vs: &VarStore) -> i64 {
    vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The whole experiment: set-up, then each phase of [`phases`] in order.
fn run(args: Args) -> Result<(), Box<dyn Error>> {
    // libtorch allocates with posix_memalign; glibc would mmap and page-fault every large buffer on
    // every step (≈7× slower convolutions here). One explicit call at start-up fixes it.
    let tuned = distill::tune_allocator();
    tch::set_num_threads(args.threads);
    tch::manual_seed(args.seed);
    if !(args.keep > 0.0 && args.keep <= 1.0) {
        return Err(format!("--keep must be in (0, 1], got {}", args.keep).into());
    }
    let group = join_group(&args)?;
    let group = group.as_ref();
    let ctx = Ctx { main: group.is_none_or(ProcessGroup::is_main), group, args };
    if let Some(g) = group {
        ctx.say(format_args!(
            "data-parallel: {} ranks over Gloo, global batch {} = {} per rank",
            g.world_size(),
            ctx.args.batch_size,
            ctx.args.batch_size / g.world_size() as i64
        ));
    }
    let started = Instant::now();
    let device = Device::Cpu;
    std::fs::create_dir_all(&ctx.args.out)?;
    let data = load_data(&ctx, tuned)?;

    let teacher = phases::teacher(&ctx, &data, device)?;
    let tunes = phases::fine_tunes(&ctx, &data, &teacher, device)?;
    if !ctx.main {
        return Ok(());
    }
    let cached_rows = phases::cached_runs(&ctx, &data, &teacher, &tunes)?;
    phases::report(&ctx, started, teacher, &tunes, cached_rows)
}

/// Fashion-MNIST from `--data`, the training split cut to `--limit` images if given.
fn load_data(ctx: &Ctx<'_>, tuned: bool) -> Result<data::FashionMnist, Box<dyn Error>> {
    let args = &ctx.args;
    let mut data = data::load(&args.data)?;
    if let Some(n) = args.limit {
        let n = n.clamp(1, data.train.len());
        data.train =
            data::Split { images: data.train.images.narrow(0, 0, n), labels: data.train.labels.narrow(0, 0, n) };
    }
    ctx.say(format_args!(
        "Fashion-MNIST from {}: {} train / {} test images, standardised (mean {:.4}, std {:.4}); {} threads, allocator tuned: {tuned}",
        args.data.display(),
        data.train.len(),
        data.test.len(),
        data.mean,
        data.std,
        args.threads
    ));
    Ok(data)
}
