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
mod prune;
mod report;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Parser;
use distill::nn::{ModuleT, VarStore};
use distill_ddp::{DataParallel, DdpConfig, ProcessGroup};
use tch::Device;

use model::{Net, WIDTHS};
use report::Row;
use train::{accuracy, one_cycle_lr, sgd, train, Schedule, Terms};

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
    // Rank 0 speaks for the group; the others only train.
    let main = group.is_none_or(ProcessGroup::is_main);
    macro_rules! say {
        ($($arg:tt)*) => { if main { println!($($arg)*) } };
    }
    if let Some(g) = group {
        say!(
            "data-parallel: {} ranks over Gloo, global batch {} = {} per rank",
            g.world_size(),
            args.batch_size,
            args.batch_size / g.world_size() as i64
        );
    }
    let started = Instant::now();
    let device = Device::Cpu;
    std::fs::create_dir_all(&args.out)?;

    let mut data = data::load(&args.data)?;
    if let Some(n) = args.limit {
        let n = n.clamp(1, data.train.len());
        data.train =
            data::Split { images: data.train.images.narrow(0, 0, n), labels: data.train.labels.narrow(0, 0, n) };
    }
    say!(
        "Fashion-MNIST from {}: {} train / {} test images, standardised (mean {:.4}, std {:.4}); {} threads, allocator tuned: {tuned}",
        args.data.display(),
        data.train.len(),
        data.test.len(),
        data.mean,
        data.std,
        args.threads
    );

    // 1. Teacher.
    let mut teacher_vs = VarStore::new(device);
    let teacher = Net::new(&teacher_vs.root(), &WIDTHS);
    let checkpoint = args.out.join("teacher.safetensors");
    let history_path = args.out.join("teacher_loss.csv");
    let teacher_history;
    let teacher_note;
    let mut load = checkpoint.is_file() && !args.retrain;
    if let Some(g) = group {
        // Rank 0 decides for all: every rank must train, or every rank must load.
        let flag = tch::Tensor::from_slice(&[i64::from(load)]);
        g.broadcast(&flag, 0)?;
        load = flag.int64_value(&[0]) == 1;
    }
    if load {
        teacher_vs.load(&checkpoint).map_err(|e| {
            format!("cannot load {} ({e}); rerun with --retrain to train a new teacher", checkpoint.display())
        })?;
        teacher_note = format!("loaded from `{}`", checkpoint.display());
        teacher_history = report::load_history(&history_path);
        say!("teacher: {teacher_note}");
    } else {
        let mut opt = sgd(&teacher_vs, 0.1, 0.9, 5e-4);
        let schedule = Schedule {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: Box::new(|step, total| one_cycle_lr(step, total, 0.1)),
            label: "teacher".into(),
        };
        let ddp = parallel(group, &[&teacher_vs])?;
        let history = train(&data.train, &mut opt, &schedule, ddp.as_ref(), |xs, ys| {
            let loss = teacher.forward_t(xs, true).cross_entropy_for_logits(ys);
            let value = loss.double_value(&[]);
            (loss, vec![("loss", value)])
        })?;
        match group {
            Some(g) => g.save_on_main(&teacher_vs, &checkpoint)?,
            None => teacher_vs.save(&checkpoint)?,
        }
        if main {
            report::save_history(&history_path, &history)?;
        }
        teacher_note = format!("trained {} epochs in {:.0} s", args.epochs, history.elapsed.as_secs_f64());
        say!("teacher: {teacher_note}, saved to {}", checkpoint.display());
        teacher_history = Some(history);
    }
    teacher_vs.freeze();
    // Evaluation is rank 0's job: after training, every rank holds the same weights.
    let evaluate = |model: &dyn ModuleT| if main { accuracy(model, &data.test) } else { f64::NAN };
    let teacher_acc = evaluate(&teacher);
    say!("teacher test accuracy: {teacher_acc:.2}%");

    // 2. Two identical pruned students.
    let ce_vs = VarStore::new(device);
    let ce_student = prune::prune_net(&teacher, &ce_vs.root(), args.keep)?;
    let kd_vs = VarStore::new(device);
    let kd_student = prune::prune_net(&teacher, &kd_vs.root(), args.keep)?;
    let pruned_acc = evaluate(&ce_student);
    say!(
        "student: widths {:?} (teacher {:?}), {} of {} parameters; before fine-tuning {pruned_acc:.2}%",
        ce_student.widths(),
        teacher.widths(),
        params(&ce_vs),
        params(&teacher_vs),
    );

    // 3. Fine-tunes: same seed, hence the same batches, same steps.
    let finetune = |label: &str| Schedule {
        epochs: args.finetune_epochs,
        batch_size: args.batch_size,
        lr: Box::new(|_, _| 0.01),
        label: label.into(),
    };
    tch::manual_seed(args.seed + 1);
    let mut opt = sgd(&ce_vs, 0.01, 0.9, 0.0);
    let ddp = parallel(group, &[&ce_vs])?;
    let ce_history = train(&data.train, &mut opt, &finetune("fine-tune CE"), ddp.as_ref(), |xs, ys| {
        let loss = ce_student.forward_t(xs, true).cross_entropy_for_logits(ys);
        let value = loss.double_value(&[]);
        (loss, vec![("loss", value)] as Terms)
    })?;
    let ce_acc = evaluate(&ce_student);
    say!("fine-tuned, cross-entropy only: {ce_acc:.2}% ({:.0} s)", ce_history.elapsed.as_secs_f64());

    // Adapters first: the RNG seed then fixes the batch order exactly as for the CE-only run.
    let kd_path = kd_vs.root() / "kd";
    let kd_step = match &args.config {
        None => kd::kd_step(&kd_path, &kd_student, &teacher)?,
        Some(file) => {
            let config = distill::config::Config::from_file(file)?;
            say!("distillation: the pairs of `{}` ({})", file.display(), config.names().collect::<Vec<_>>().join(", "));
            kd::config_step(&kd_path, &kd_student, &teacher, config)?
        }
    };
    tch::manual_seed(args.seed + 1);
    let mut opt = sgd(&kd_vs, 0.01, 0.9, 0.0);
    let ddp = parallel(group, &[&kd_vs])?;
    let kd_history = train(&data.train, &mut opt, &finetune("fine-tune distill"), ddp.as_ref(), kd_step)?;
    let kd_acc = evaluate(&kd_student);
    say!("fine-tuned, distilled: {kd_acc:.2}% ({:.0} s)", kd_history.elapsed.as_secs_f64());
    if !main {
        return Ok(());
    }
    let mut cached_rows = Vec::new();
    if args.teacher_cache {
        if group.is_some() {
            return Err("--teacher-cache runs in one process: leave out --ddp".into());
        }
        // The same distillation with its teacher side written once and read back: first one plain
        // view (what the live run sees), then `--cache-views` random-crop + flip views.
        let hash = distill::cache::TeacherHash::of_file(&checkpoint)?;
        let live_seconds = kd_history.elapsed.as_secs_f64();
        for views in [None, Some(args.cache_views)] {
            let setting = cached::Setting { views, keep: args.keep, seed: args.seed, live_seconds };
            let run = cached::fine_tune(&setting, &args.out, &teacher, &hash, &data.train, &finetune)?;
            let acc = evaluate(&run.student);
            say!("fine-tuned, distilled from the teacher cache ({}): {acc:.2}%", setting.describe());
            cached_rows.push(run.row(acc, &setting));
        }
    }

    // 4. Report.
    let reference = args.limit.is_none()
        && args.keep == 0.25
        && args.epochs == 8
        && args.finetune_epochs == 2
        && args.batch_size == 128;
    let r = |v: f64| reference.then_some(v);
    let student_params = params(&ce_vs);
    let rows = [
        Row {
            name: "teacher",
            params: params(&teacher_vs),
            accuracy: teacher_acc,
            reference: r(92.47),
            note: teacher_note,
        },
        Row {
            name: "pruned student, before fine-tuning",
            params: student_params,
            accuracy: pruned_acc,
            reference: r(10.00),
            note: format!("{:.0}% of each conv's filters, by L1 norm", args.keep * 100.0),
        },
        Row {
            name: "fine-tuned, cross-entropy only",
            params: student_params,
            accuracy: ce_acc,
            reference: r(88.79),
            note: format!("{} epochs SGD lr 0.01 m 0.9", args.finetune_epochs),
        },
        Row {
            name: "fine-tuned with `distill`",
            params: student_params,
            accuracy: kd_acc,
            reference: r(89.61),
            note: "CE + MSE on blocks 1–3 conv outputs via `conv2d_adapter` + KL (T = 4) on logits; same batches"
                .into(),
        },
    ];
    let rows: Vec<Row> = rows.into_iter().chain(cached_rows).collect();
    let layout = match group {
        Some(g) => format!("{} ranks × {} threads (data-parallel)", g.world_size(), args.threads),
        None => format!("{} threads", args.threads),
    };
    let header = format!(
        "Fashion-MNIST, 10k test images; seed {}, {layout}, batch {}, run time {:.0} s",
        args.seed,
        args.batch_size,
        started.elapsed().as_secs_f64()
    );
    let md = report::markdown(&rows, &header);
    std::fs::write(args.out.join("results.md"), &md)?;
    println!("\n{md}");
    let png = args.out.join("loss_curves.png");
    let text = report::plot(&png, teacher_history.as_ref(), &ce_history, &kd_history)?;
    println!(
        "wrote {} and {}{}",
        args.out.join("results.md").display(),
        png.display(),
        if text { "" } else { " (no font found: curves drawn without labels)" }
    );
    Ok(())
}
