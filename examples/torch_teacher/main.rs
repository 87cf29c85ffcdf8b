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
#[path = "../fashion_mnist/train.rs"]
#[allow(dead_code)]
mod train;

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use clap::Parser;
use distill::jit;
use distill::nn::{ModuleT, VarStore};
use distill::prelude::*;
use distill::vision::{self, BasicBlock, ResNet, ResNetConfig};
use tch::{Device, Kind, Tensor};

use data::Split;
use train::{accuracy, ce_and_pairs, one_cycle_lr, sgd, train, Schedule, Terms};

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

/// What `train_teacher.py` reports in `teacher.json`.
struct TeacherReport {
    correct: i64,
    total: i64,
    mean: f64,
    std: f64,
}

fn read_report(path: &std::path::Path) -> Result<TeacherReport, Box<dyn Error>> {
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let number = |key: &str| json[key].as_f64().ok_or_else(|| format!("{}: no number `{key}`", path.display()));
    Ok(TeacherReport {
        correct: number("test_correct")? as i64,
        total: number("test_images")? as i64,
        mean: number("mean")?,
        std: number("std")?,
    })
}

fn config() -> ResNetConfig {
    ResNetConfig { in_channels: 1, small_input: true, ..Default::default() }
}

/// The first `n` images of `split` (all of it for 0).
fn first(split: &Split, n: i64) -> Split {
    let n = if n <= 0 { split.len() } else { n.min(split.len()) };
    Split { images: split.images.narrow(0, 0, n), labels: split.labels.narrow(0, 0, n) }
}

/// The first `n` images of a seeded shuffle of `split` (all of it for 0).
fn subset(split: &Split, n: i64, seed: i64) -> Split {
    if n <= 0 || n >= split.len() {
        return Split { images: split.images.shallow_clone(), labels: split.labels.shallow_clone() };
    }
    tch::manual_seed(seed);
    let idx = Tensor::randperm(split.len(), (Kind::Int64, Device::Cpu)).narrow(0, 0, n);
    Split { images: split.images.index_select(0, &idx), labels: split.labels.index_select(0, &idx) }
}

fn main() -> Result<(), Box<dyn Error>> {
    distill::tune_allocator();
    let args = Args::parse();
    tch::set_num_threads(args.threads);
    let start = Instant::now();
    let files = ["teacher.safetensors", "teacher.pt", "teacher_check.safetensors", "teacher.json"];
    if let Some(missing) = files.iter().find(|f| !args.out.join(f).exists()) {
        return Err(format!(
            "{} is missing: run `python3 examples/torch_teacher/train_teacher.py --out {}` first (scripts/dev \
             example torch_teacher does)",
            args.out.join(missing).display(),
            args.out.display()
        )
        .into());
    }
    let report = read_report(&args.out.join("teacher.json"))?;
    let dataset = data::load(&args.data)?;
    if (dataset.mean - report.mean).abs() > 1e-6 || (dataset.std - report.std).abs() > 1e-6 {
        return Err(format!(
            "the data's standardisation (mean {}, std {}) differs from the teacher's ({}, {})",
            dataset.mean, dataset.std, report.mean, report.std
        )
        .into());
    }

    // 1. The PyTorch weights in the Rust ResNet-18: the same numbers as PyTorch.
    let mut teacher_vs = VarStore::new(Device::Cpu);
    let rust_teacher = vision::resnet18_with(teacher_vs.root(), 10, config())?;
    vision::load_torchvision(&mut teacher_vs, args.out.join("teacher.safetensors"))?;
    teacher_vs.freeze();
    let check = tch::Tensor::read_safetensors(args.out.join("teacher_check.safetensors"))?;
    let get = |name: &str| check.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone());
    let (images, logits) = (get("images").ok_or("no `images`")?, get("logits").ok_or("no `logits`")?);
    let rust_logits = tch::no_grad(|| rust_teacher.forward_t(&images, false));
    let logit_diff = f64::try_from((&rust_logits - &logits).abs().max())?;
    let torch_teacher = jit::Module::load(args.out.join("teacher.pt"), Device::Cpu)?.with_output("logits")?;
    let pytorch_accuracy = 100.0 * report.correct as f64 / report.total as f64;
    let test_set = first(&dataset.test, args.test_images.unwrap_or(report.total));
    let rust_accuracy = accuracy(&rust_teacher, &test_set);
    println!(
        "teacher: PyTorch {pytorch_accuracy:.2}%, the same weights in distill::vision {rust_accuracy:.2}% \
         (logits on {} check images differ by at most {logit_diff:.1e})",
        images.size()[0]
    );
    if logit_diff > 1e-4 {
        return Err(format!("the Rust ResNet-18 differs from PyTorch's by {logit_diff:e} (> 1e-4)").into());
    }
    if test_set.len() == report.total {
        let rust_correct = (rust_accuracy * test_set.len() as f64 / 100.0).round() as i64;
        println!(
            "test-set predictions: PyTorch {} correct, distill::vision {rust_correct} correct{}",
            report.correct,
            if rust_correct == report.correct { " (equal)" } else { " (NOT equal)" }
        );
    } else {
        println!(
            "(accuracies on the first {} test images; PyTorch's is on the first {})",
            test_set.len(),
            report.total
        );
    }

    // 2. Prune the inner channels of every block.
    let train_set = subset(&dataset.train, args.train_images, args.seed);
    let (ce_vs, kd_vs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let ce_student = vision::prune::prune_resnet(ce_vs.root(), &rust_teacher, args.keep)?;
    let kd_student = vision::prune::prune_resnet(kd_vs.root(), &rust_teacher, args.keep)?;
    let params = |vs: &VarStore| vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>();
    let pruned_accuracy = accuracy(&ce_student, &test_set);
    println!(
        "pruned to {:.0}% of the blocks' inner channels: {} → {} parameters, {pruned_accuracy:.2}% before fine-tuning",
        100.0 * args.keep,
        params(&teacher_vs),
        params(&ce_vs)
    );

    // 3. Two fine-tunes on the same batches.
    let schedule = |label: &str| Schedule {
        epochs: args.epochs,
        batch_size: args.batch_size,
        lr: Box::new({
            let max = args.lr;
            move |step, total| one_cycle_lr(step, total, max)
        }),
        label: label.to_owned(),
    };
    tch::manual_seed(args.seed);
    let mut opt = sgd(&ce_vs, args.lr, 0.9, 0.0);
    let ce_history = train(&train_set, &mut opt, &schedule("cross-entropy"), None, |xs, ys| {
        let loss = ce_student.forward_t(xs, true).cross_entropy_for_logits(ys);
        let terms: Terms = vec![("loss", loss.double_value(&[]))];
        (loss, terms)
    })?;
    let ce_accuracy = accuracy(&ce_student, &test_set);

    let kd = FromTorch::new(kd_vs.root() / "kd", &kd_student, &torch_teacher)?;
    println!("pairs on a sample batch:\n{}", kd.dry_run(&train_set.images.narrow(0, 0, 2))?);
    tch::manual_seed(args.seed);
    let mut opt = sgd(&kd_vs, args.lr, 0.9, 0.0);
    let kd_history = train(&train_set, &mut opt, &schedule("distill"), None, |xs, ys| {
        let out = kd.forward_t(xs, true).expect("every pair was checked by the dry run");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let losses = out.losses();
        ce_and_pairs(ce, losses.total(), losses.iter())
    })?;
    let kd_accuracy = accuracy(&kd_student, &test_set);

    // 4. The table.
    let rows = [
        ("teacher, PyTorch (torchvision ResNet-18)", params(&teacher_vs), pytorch_accuracy, String::new()),
        ("teacher, same weights in distill::vision", params(&teacher_vs), rust_accuracy, String::new()),
        ("pruned student, before fine-tuning", params(&ce_vs), pruned_accuracy, String::new()),
        (
            "fine-tuned, cross-entropy only",
            params(&ce_vs),
            ce_accuracy,
            format!("{:.0} s", ce_history.elapsed.as_secs_f64()),
        ),
        (
            "fine-tuned with `distill!` against the TorchScript teacher",
            params(&kd_vs),
            kd_accuracy,
            format!("{:.0} s", kd_history.elapsed.as_secs_f64()),
        ),
    ];
    let mut table = String::from("| model | parameters | test accuracy | fine-tune time |\n|---|---:|---:|---:|\n");
    for (name, count, acc, time) in rows {
        table.push_str(&format!("| {name} | {count} | **{acc:.2}%** | {time} |\n"));
    }
    let settings = format!(
        "keep {}, {} epoch(s) on {} training images, accuracies on the first {} test images, batch {}, lr {}, \
         {} threads, seed {}; total run {:.0} s",
        args.keep,
        args.epochs,
        train_set.len(),
        test_set.len(),
        args.batch_size,
        args.lr,
        args.threads,
        args.seed,
        start.elapsed().as_secs_f64()
    );
    println!("\n{table}\n{settings}");
    std::fs::write(args.out.join("results.md"), format!("{table}\n{settings}\n"))?;
    Ok(())
}
