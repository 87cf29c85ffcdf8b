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

mod data;
mod kd;
mod model;
mod prune;
mod report;
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use distill::nn::{ModuleT, VarStore};
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
    /// Train the teacher even when a checkpoint exists (and overwrite it).
    #[arg(long)]
    retrain: bool,
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
    let started = Instant::now();
    let device = Device::Cpu;
    std::fs::create_dir_all(&args.out)?;

    let mut data = data::load(&args.data)?;
    if let Some(n) = args.limit {
        let n = n.clamp(1, data.train.len());
        data.train =
            data::Split { images: data.train.images.narrow(0, 0, n), labels: data.train.labels.narrow(0, 0, n) };
    }
    println!(
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
    if checkpoint.is_file() && !args.retrain {
        teacher_vs.load(&checkpoint).map_err(|e| {
            format!("cannot load {} ({e}); rerun with --retrain to train a new teacher", checkpoint.display())
        })?;
        teacher_note = format!("loaded from `{}`", checkpoint.display());
        teacher_history = report::load_history(&history_path);
        println!("teacher: {teacher_note}");
    } else {
        let mut opt = sgd(&teacher_vs, 0.1, 0.9, 5e-4);
        let schedule = Schedule {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: Box::new(|step, total| one_cycle_lr(step, total, 0.1)),
            label: "teacher".into(),
        };
        let history = train(&data.train, &mut opt, &schedule, |xs, ys| {
            let loss = teacher.forward_t(xs, true).cross_entropy_for_logits(ys);
            let value = loss.double_value(&[]);
            (loss, vec![("loss", value)])
        });
        teacher_vs.save(&checkpoint)?;
        report::save_history(&history_path, &history)?;
        teacher_note = format!("trained {} epochs in {:.0} s", args.epochs, history.elapsed.as_secs_f64());
        println!("teacher: {teacher_note}, saved to {}", checkpoint.display());
        teacher_history = Some(history);
    }
    teacher_vs.freeze();
    let teacher_acc = accuracy(&teacher, &data.test);
    println!("teacher test accuracy: {teacher_acc:.2}%");

    // 2. Two identical pruned students.
    let ce_vs = VarStore::new(device);
    let ce_student = prune::prune_net(&teacher, &ce_vs.root(), args.keep)?;
    let kd_vs = VarStore::new(device);
    let kd_student = prune::prune_net(&teacher, &kd_vs.root(), args.keep)?;
    let pruned_acc = accuracy(&ce_student, &data.test);
    println!(
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
    let ce_history = train(&data.train, &mut opt, &finetune("fine-tune CE"), |xs, ys| {
        let loss = ce_student.forward_t(xs, true).cross_entropy_for_logits(ys);
        let value = loss.double_value(&[]);
        (loss, vec![("loss", value)] as Terms)
    });
    let ce_acc = accuracy(&ce_student, &data.test);
    println!("fine-tuned, cross-entropy only: {ce_acc:.2}% ({:.0} s)", ce_history.elapsed.as_secs_f64());

    // Adapters first: the RNG seed then fixes the batch order exactly as for the CE-only run.
    let kd_step = kd::kd_step(&(kd_vs.root() / "kd"), &kd_student, &teacher)?;
    tch::manual_seed(args.seed + 1);
    let mut opt = sgd(&kd_vs, 0.01, 0.9, 0.0);
    let kd_history = train(&data.train, &mut opt, &finetune("fine-tune distill"), kd_step);
    let kd_acc = accuracy(&kd_student, &data.test);
    println!("fine-tuned, distilled: {kd_acc:.2}% ({:.0} s)", kd_history.elapsed.as_secs_f64());

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
    let header = format!(
        "Fashion-MNIST, 10k test images; seed {}, {} threads, batch {}, run time {:.0} s",
        args.seed,
        args.threads,
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
