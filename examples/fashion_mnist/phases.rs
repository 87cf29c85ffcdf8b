//! The run's phases, in order: the teacher, the two fine-tunes of the pruned student, the runs from
//! the teacher cache, the report. `run` in `main.rs` calls them; each prints its own lines.

use std::error::Error;
use std::fmt::Display;
use std::path::PathBuf;
use std::time::Instant;

use distill::nn::{ModuleT, VarStore};
use distill_ddp::ProcessGroup;
use tch::Device;

use crate::data::{FashionMnist, Split};
use crate::model::{Net, WIDTHS};
use crate::report::{self, Row};
use crate::train::{accuracy, one_cycle_lr, sgd, train, History, Schedule, Terms};
use crate::{cached, kd, parallel, params, prune, Args};

/// What every phase reads: the arguments, the data-parallel group (with `--ddp`), and whether this
/// process speaks for the group (rank 0, or the only process).
pub struct Ctx<'g> {
    pub args: Args,
    pub group: Option<&'g ProcessGroup>,
    pub main: bool,
}

impl Ctx<'_> {
    /// Prints `line` on the process that speaks for the group; the other ranks only train.
    pub fn say(&self, line: impl Display) {
        if self.main {
            println!("{line}");
        }
    }

    /// Test accuracy of `model`: rank 0's job (after training, every rank holds the same weights).
    fn evaluate(&self, model: &dyn ModuleT, test: &Split) -> f64 {
        if self.main {
            accuracy(model, test)
        } else {
            f64::NAN
        }
    }

    /// A fine-tune's schedule: `--finetune-epochs` at a constant learning rate of 0.01.
    fn finetune(&self, label: &str) -> Schedule {
        Schedule {
            epochs: self.args.finetune_epochs,
            batch_size: self.args.batch_size,
            lr: Box::new(|_, _| 0.01),
            label: label.into(),
        }
    }
}

/// The teacher, trained or loaded, with what the report says of it.
pub struct Teacher {
    pub vs: VarStore,
    pub net: Net,
    pub checkpoint: PathBuf,
    pub note: String,
    /// The training losses: `None` when loaded from a run whose history file is gone.
    pub history: Option<History>,
    pub accuracy: f64,
}

/// 1. Trains the teacher (or, unless `--retrain`, loads `OUT/teacher.safetensors`), freezes it and
///    measures its test accuracy.
pub fn teacher(ctx: &Ctx<'_>, data: &FashionMnist, device: Device) -> Result<Teacher, Box<dyn Error>> {
    let args = &ctx.args;
    let mut vs = VarStore::new(device);
    let net = Net::new(&vs.root(), &WIDTHS);
    let checkpoint = args.out.join("teacher.safetensors");
    let history_path = args.out.join("teacher_loss.csv");
    let mut load = checkpoint.is_file() && !args.retrain;
    if let Some(g) = ctx.group {
        // Rank 0 decides for all: every rank must train, or every rank must load.
        let flag = tch::Tensor::from_slice(&[i64::from(load)]);
        g.broadcast(&flag, 0)?;
        load = flag.int64_value(&[0]) == 1;
    }
    let (note, history) = if load {
        vs.load(&checkpoint).map_err(|e| {
            format!("cannot load {} ({e}); rerun with --retrain to train a new teacher", checkpoint.display())
        })?;
        let note = format!("loaded from `{}`", checkpoint.display());
        ctx.say(format_args!("teacher: {note}"));
        (note, report::load_history(&history_path))
    } else {
        let mut opt = sgd(&vs, 0.1, 0.9, 5e-4);
        let schedule = Schedule {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: Box::new(|step, total| one_cycle_lr(step, total, 0.1)),
            label: "teacher".into(),
        };
        let ddp = parallel(ctx.group, &[&vs])?;
        let history = train(&data.train, &mut opt, &schedule, ddp.as_ref(), |xs, ys| {
            let loss = net.forward_t(xs, true).cross_entropy_for_logits(ys);
            let value = loss.double_value(&[]);
            (loss, vec![("loss", value)])
        })?;
        match ctx.group {
            Some(g) => g.save_on_main(&vs, &checkpoint)?,
            None => vs.save(&checkpoint)?,
        }
        if ctx.main {
            report::save_history(&history_path, &history)?;
        }
        let note = format!("trained {} epochs in {:.0} s", args.epochs, history.elapsed.as_secs_f64());
        ctx.say(format_args!("teacher: {note}, saved to {}", checkpoint.display()));
        (note, Some(history))
    };
    vs.freeze();
    let accuracy = ctx.evaluate(&net, &data.test);
    ctx.say(format_args!("teacher test accuracy: {accuracy:.2}%"));
    Ok(Teacher { vs, net, checkpoint, note, history, accuracy })
}

/// The two fine-tunes of the pruned student: their accuracies and losses.
pub struct FineTunes {
    pub student_params: i64,
    pub pruned: f64,
    pub ce: f64,
    pub kd: f64,
    pub ce_history: History,
    pub kd_history: History,
}

/// 2–3. Prunes two identical students from the teacher and fine-tunes them on the same batches (the
///    same seed, the same steps): cross-entropy only, and cross-entropy + distillation.
pub fn fine_tunes(
    ctx: &Ctx<'_>,
    data: &FashionMnist,
    teacher: &Teacher,
    device: Device,
) -> Result<FineTunes, Box<dyn Error>> {
    let args = &ctx.args;
    let ce_vs = VarStore::new(device);
    let ce_student = prune::prune_net(&teacher.net, &ce_vs.root(), args.keep)?;
    let kd_vs = VarStore::new(device);
    let kd_student = prune::prune_net(&teacher.net, &kd_vs.root(), args.keep)?;
    let pruned = ctx.evaluate(&ce_student, &data.test);
    ctx.say(format_args!(
        "student: widths {:?} (teacher {:?}), {} of {} parameters; before fine-tuning {pruned:.2}%",
        ce_student.widths(),
        teacher.net.widths(),
        params(&ce_vs),
        params(&teacher.vs),
    ));

    tch::manual_seed(args.seed + 1);
    let mut opt = sgd(&ce_vs, 0.01, 0.9, 0.0);
    let ddp = parallel(ctx.group, &[&ce_vs])?;
    let ce_history = train(&data.train, &mut opt, &ctx.finetune("fine-tune CE"), ddp.as_ref(), |xs, ys| {
        let loss = ce_student.forward_t(xs, true).cross_entropy_for_logits(ys);
        let value = loss.double_value(&[]);
        (loss, vec![("loss", value)] as Terms)
    })?;
    let ce = ctx.evaluate(&ce_student, &data.test);
    ctx.say(format_args!("fine-tuned, cross-entropy only: {ce:.2}% ({:.0} s)", ce_history.elapsed.as_secs_f64()));

    // Adapters first: the RNG seed then fixes the batch order exactly as for the CE-only run.
    let kd_path = kd_vs.root() / "kd";
    let kd_step = match &args.config {
        None => kd::kd_step(&kd_path, &kd_student, &teacher.net)?,
        Some(file) => {
            let config = distill::config::Config::from_file(file)?;
            let names = config.names().collect::<Vec<_>>().join(", ");
            ctx.say(format_args!("distillation: the pairs of `{}` ({names})", file.display()));
            kd::config_step(&kd_path, &kd_student, &teacher.net, config)?
        }
    };
    tch::manual_seed(args.seed + 1);
    let mut opt = sgd(&kd_vs, 0.01, 0.9, 0.0);
    let ddp = parallel(ctx.group, &[&kd_vs])?;
    let kd_history = train(&data.train, &mut opt, &ctx.finetune("fine-tune distill"), ddp.as_ref(), kd_step)?;
    let kd = ctx.evaluate(&kd_student, &data.test);
    ctx.say(format_args!("fine-tuned, distilled: {kd:.2}% ({:.0} s)", kd_history.elapsed.as_secs_f64()));
    Ok(FineTunes { student_params: params(&ce_vs), pruned, ce, kd, ce_history, kd_history })
}

/// With `--teacher-cache`: the distilled fine-tune again with its teacher side written once and read
/// back, first one plain view (what the live run sees), then `--cache-views` random-crop + flip
/// views. One report row each.
pub fn cached_runs(
    ctx: &Ctx<'_>,
    data: &FashionMnist,
    teacher: &Teacher,
    tunes: &FineTunes,
) -> Result<Vec<Row>, Box<dyn Error>> {
    let args = &ctx.args;
    if !args.teacher_cache {
        return Ok(Vec::new());
    }
    if ctx.group.is_some() {
        return Err("--teacher-cache runs in one process: leave out --ddp".into());
    }
    let hash = distill::cache::TeacherHash::of_file(&teacher.checkpoint)?;
    let live_seconds = tunes.kd_history.elapsed.as_secs_f64();
    let finetune = |label: &str| ctx.finetune(label);
    let mut rows = Vec::new();
    for views in [None, Some(args.cache_views)] {
        let setting = cached::Setting { views, keep: args.keep, seed: args.seed, live_seconds };
        let run = cached::fine_tune(&setting, &args.out, &teacher.net, &hash, &data.train, &finetune)?;
        let acc = ctx.evaluate(&run.student, &data.test);
        ctx.say(format_args!("fine-tuned, distilled from the teacher cache ({}): {acc:.2}%", setting.describe()));
        rows.push(run.row(acc, &setting));
    }
    Ok(rows)
}

/// 4. Prints and writes `OUT/results.md` (with PyTorch's reference accuracies when the settings are
///    the reference run's) and `OUT/loss_curves.png`.
pub fn report(
    ctx: &Ctx<'_>,
    started: Instant,
    teacher: Teacher,
    tunes: &FineTunes,
    cached_rows: Vec<Row>,
) -> Result<(), Box<dyn Error>> {
    let args = &ctx.args;
    let reference = args.limit.is_none()
        && args.keep == 0.25
        && args.epochs == 8
        && args.finetune_epochs == 2
        && args.batch_size == 128;
    let r = |v: f64| reference.then_some(v);
    let rows = [
        Row {
            name: "teacher",
            params: params(&teacher.vs),
            accuracy: teacher.accuracy,
            reference: r(92.47),
            note: teacher.note,
        },
        Row {
            name: "pruned student, before fine-tuning",
            params: tunes.student_params,
            accuracy: tunes.pruned,
            reference: r(10.00),
            note: format!("{:.0}% of each conv's filters, by L1 norm", args.keep * 100.0),
        },
        Row {
            name: "fine-tuned, cross-entropy only",
            params: tunes.student_params,
            accuracy: tunes.ce,
            reference: r(88.79),
            note: format!("{} epochs SGD lr 0.01 m 0.9", args.finetune_epochs),
        },
        Row {
            name: "fine-tuned with `distill`",
            params: tunes.student_params,
            accuracy: tunes.kd,
            reference: r(89.61),
            note: "CE + MSE on blocks 1–3 conv outputs via `conv2d_adapter` + KL (T = 4) on logits; same batches"
                .into(),
        },
    ];
    let rows: Vec<Row> = rows.into_iter().chain(cached_rows).collect();
    let layout = match ctx.group {
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
    let text = report::plot(&png, teacher.history.as_ref(), &tunes.ce_history, &tunes.kd_history)?;
    println!(
        "wrote {} and {}{}",
        args.out.join("results.md").display(),
        png.display(),
        if text { "" } else { " (no font found: curves drawn without labels)" }
    );
    Ok(())
}
