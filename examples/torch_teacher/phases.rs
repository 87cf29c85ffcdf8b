//! The example's phases, in order: its inputs, the teacher checked against PyTorch, the two
//! fine-tunes of the pruned student, the table. `main` calls them; each prints its own lines.

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use distill::jit;
use distill::nn::{ModuleT, VarStore};
use distill::vision::{self, BasicBlock, ResNet, ResNetConfig};
use tch::{Device, Kind, Tensor};

use crate::data::{self, FashionMnist, Split};
use crate::train::{accuracy, ce_and_pairs, one_cycle_lr, sgd, train, Schedule, Terms};
use crate::{Args, FromTorch};

/// What `train_teacher.py` reports in `teacher.json`.
pub struct TeacherReport {
    correct: i64,
    total: i64,
    mean: f64,
    std: f64,
}

fn read_report(path: &Path) -> Result<TeacherReport, Box<dyn Error>> {
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

fn params(vs: &VarStore) -> usize {
    vs.trainable_variables().iter().map(Tensor::numel).sum()
}

/// The teacher's report from `train_teacher.py` and the data, standardised as the teacher was
/// trained: an error naming what is missing or differs.
pub fn inputs(args: &Args) -> Result<(TeacherReport, FashionMnist), Box<dyn Error>> {
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
    Ok((report, dataset))
}

/// The teacher twice, the PyTorch weights in the Rust ResNet-18 and the TorchScript module, with
/// the test images the accuracies are measured on.
pub struct Teacher {
    vs: VarStore,
    rust: ResNet<BasicBlock>,
    torch: jit::Module,
    pytorch_accuracy: f64,
    rust_accuracy: f64,
    test_set: Split,
}

/// 1. Loads the PyTorch weights into the Rust ResNet-18 and checks it gives PyTorch's numbers: the
///    logits on the check images (to 1e-4) and the test-set predictions.
pub fn teacher(args: &Args, report: &TeacherReport, dataset: &FashionMnist) -> Result<Teacher, Box<dyn Error>> {
    let mut vs = VarStore::new(Device::Cpu);
    let rust = vision::resnet18_with(vs.root(), 10, config())?;
    vision::load_torchvision(&mut vs, args.out.join("teacher.safetensors"))?;
    vs.freeze();
    let check = tch::Tensor::read_safetensors(args.out.join("teacher_check.safetensors"))?;
    let get = |name: &str| check.iter().find(|(n, _)| n == name).map(|(_, t)| t.shallow_clone());
    let (images, logits) = (get("images").ok_or("no `images`")?, get("logits").ok_or("no `logits`")?);
    let rust_logits = tch::no_grad(|| rust.forward_t(&images, false));
    let logit_diff = f64::try_from((&rust_logits - &logits).abs().max())?;
    let torch = jit::Module::load(args.out.join("teacher.pt"), Device::Cpu)?.with_output("logits")?;
    let pytorch_accuracy = 100.0 * report.correct as f64 / report.total as f64;
    let test_set = first(&dataset.test, args.test_images.unwrap_or(report.total));
    let rust_accuracy = accuracy(&rust, &test_set);
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
    Ok(Teacher { vs, rust, torch, pytorch_accuracy, rust_accuracy, test_set })
}

/// The pruned student's accuracies and sizes, before and after each fine-tune.
pub struct FineTunes {
    train_images: i64,
    ce_params: usize,
    kd_params: usize,
    pruned_accuracy: f64,
    ce_accuracy: f64,
    kd_accuracy: f64,
    ce_seconds: f64,
    kd_seconds: f64,
}

/// 2–3. Prunes the inner channels of every block, twice, and fine-tunes the two copies on the same
///    batches: cross-entropy only, and cross-entropy + distillation against the TorchScript teacher.
pub fn fine_tunes(args: &Args, teacher: &Teacher, dataset: &FashionMnist) -> Result<FineTunes, Box<dyn Error>> {
    let train_set = subset(&dataset.train, args.train_images, args.seed);
    let (ce_vs, kd_vs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let ce_student = vision::prune::prune_resnet(ce_vs.root(), &teacher.rust, args.keep)?;
    let kd_student = vision::prune::prune_resnet(kd_vs.root(), &teacher.rust, args.keep)?;
    let pruned_accuracy = accuracy(&ce_student, &teacher.test_set);
    println!(
        "pruned to {:.0}% of the blocks' inner channels: {} → {} parameters, {pruned_accuracy:.2}% before fine-tuning",
        100.0 * args.keep,
        params(&teacher.vs),
        params(&ce_vs)
    );

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
    let ce_accuracy = accuracy(&ce_student, &teacher.test_set);

    let kd = FromTorch::new(kd_vs.root() / "kd", &kd_student, &teacher.torch)?;
    println!("pairs on a sample batch:\n{}", kd.dry_run(&train_set.images.narrow(0, 0, 2))?);
    tch::manual_seed(args.seed);
    let mut opt = sgd(&kd_vs, args.lr, 0.9, 0.0);
    let kd_history = train(&train_set, &mut opt, &schedule("distill"), None, |xs, ys| {
        let out = kd.forward_t(xs, true).expect("every pair was checked by the dry run");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let losses = out.losses();
        ce_and_pairs(ce, losses.total(), losses.iter())
    })?;
    let kd_accuracy = accuracy(&kd_student, &teacher.test_set);
    Ok(FineTunes {
        train_images: train_set.len(),
        ce_params: params(&ce_vs),
        kd_params: params(&kd_vs),
        pruned_accuracy,
        ce_accuracy,
        kd_accuracy,
        ce_seconds: ce_history.elapsed.as_secs_f64(),
        kd_seconds: kd_history.elapsed.as_secs_f64(),
    })
}

/// 4. Prints the table of accuracies and writes it to `OUT/results.md`.
pub fn table(args: &Args, teacher: &Teacher, tunes: &FineTunes, start: Instant) -> Result<(), Box<dyn Error>> {
    let teacher_params = params(&teacher.vs);
    let rows = [
        ("teacher, PyTorch (torchvision ResNet-18)", teacher_params, teacher.pytorch_accuracy, String::new()),
        ("teacher, same weights in distill::vision", teacher_params, teacher.rust_accuracy, String::new()),
        ("pruned student, before fine-tuning", tunes.ce_params, tunes.pruned_accuracy, String::new()),
        ("fine-tuned, cross-entropy only", tunes.ce_params, tunes.ce_accuracy, format!("{:.0} s", tunes.ce_seconds)),
        (
            "fine-tuned with `distill!` against the TorchScript teacher",
            tunes.kd_params,
            tunes.kd_accuracy,
            format!("{:.0} s", tunes.kd_seconds),
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
        tunes.train_images,
        teacher.test_set.len(),
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
