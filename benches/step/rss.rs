//! Benchmark (d): peak RSS of each side of (b), each in its own process (this binary re-executed
//! with `--rss-child hand|distill`), and of the PyTorch baseline.

use std::process::{Command, Stdio};

use crate::models::{batch_data, teacher_weights};
use crate::python::script;
use crate::sides::{Front, Hand, Side};
use crate::summary::Summary;
use crate::Args;

/// Runs one side of (b) for a while in this process and prints its peak RSS.
pub(crate) fn rss_child(args: &Args, side: &str) {
    let batch = args.batch[0];
    let src = teacher_weights();
    let (xs, ys) = batch_data(batch);
    let mut s: Box<dyn Side> = match side {
        "hand" => Box::new(Hand::new(&src)),
        "distill" => Box::new(Front::new(&src)),
        other => panic!("unknown side {other}"),
    };
    // Reset the kernel's high-water mark (VmHWM) so that it covers the training steps only.
    let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
    let before = proc_status_kib("VmRSS");
    for _ in 0..RSS_STEPS {
        drop(s.step(&xs, &ys));
    }
    println!("maxrss_kib {}", maxrss_kib());
    if let (true, Some(before), Some(hwm)) = (reset, before, proc_status_kib("VmHWM")) {
        println!("steps_kib {}", hwm - before);
    }
}

/// Training steps per RSS process (memory peaks within the first few).
const RSS_STEPS: usize = 50;
/// Processes per side for (d); the median is reported.
const RSS_SAMPLES: usize = 5;
/// KiB per MiB, for the report.
const KIB_PER_MIB: f64 = 1024.0;

/// A `kB` field of `/proc/self/status` (Linux).
fn proc_status_kib(field: &str) -> Option<i64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()
}

fn maxrss_kib() -> i64 {
    // SAFETY: getrusage writes into the zeroed struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss
}

/// What a child process reported: peak RSS (KiB) and, where the kernel allows resetting the
/// high-water mark, how far RSS rose during the training steps.
#[derive(Clone, Copy, Debug)]
struct Rss {
    peak: i64,
    steps: Option<i64>,
}

fn child_rss(mut cmd: Command) -> Option<Rss> {
    let out = cmd.stderr(Stdio::inherit()).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.trim().parse().ok());
    Some(Rss { peak: field("maxrss_kib ")?, steps: field("steps_kib ") })
}

pub(crate) fn bench_rss(args: &Args, batch: i64, summary: &mut Summary) {
    let exe = std::env::current_exe().unwrap();
    let side = |name: &str| {
        let mut cmd = Command::new(&exe);
        cmd.args(["--rss-child", name, "--batch", &batch.to_string(), "--threads", &args.threads.to_string()]);
        if args.untuned {
            cmd.arg("--untuned");
        }
        child_rss(cmd)
    };
    let python = || {
        let mut py = Command::new(&args.python);
        py.arg(script()).args(["--rss", "--steps", &RSS_STEPS.to_string(), "--batch", &batch.to_string()]);
        py.args(["--threads", &args.threads.to_string()]);
        child_rss(py)
    };
    // Several processes per side, interleaved; the median of each (samples scatter by 1 MiB at batch 8
    // and up to ±8 MiB at batch 128: heap layout depends on how the two worker threads interleave).
    let (mut hands, mut fronts, mut pythons) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RSS_SAMPLES {
        hands.extend(side("hand"));
        fronts.extend(side("distill"));
        pythons.extend(python());
    }
    if std::env::var_os("DISTILL_BENCH_VERBOSE").is_some() {
        eprintln!("rss samples (KiB): hand {hands:?}, distill {fronts:?}, python {pythons:?}");
    }
    let mid = |v: &[Rss], f: fn(&Rss) -> Option<i64>| {
        let mut v: Vec<i64> = v.iter().filter_map(f).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let peak = |r: &Rss| Some(r.peak);
    let steps = |r: &Rss| r.steps;
    let (hand, front, py) = (mid(&hands, peak), mid(&fronts, peak), mid(&pythons, peak));
    let (hand_steps, front_steps, py_steps) = (mid(&hands, steps), mid(&fronts, steps), mid(&pythons, steps));
    let mib = |k: Option<i64>| k.map_or("n/a".to_owned(), |k| format!("{:.1} MiB", k as f64 / KIB_PER_MIB));
    let ratio = |a: Option<i64>, b: Option<i64>| match (a, b) {
        (Some(a), Some(b)) if b > 0 => format!("{:.3}×", a as f64 / b as f64),
        _ => "n/a".into(),
    };
    summary.add(
        "(d) peak RSS, `distill!` / hand-written",
        batch,
        format!("{} / {} = {}", mib(front), mib(hand), ratio(front, hand)),
    );
    summary.add(
        "(d) RSS growth during the steps, `distill!` / hand-written",
        batch,
        format!("{} / {} = {}", mib(front_steps), mib(hand_steps), ratio(front_steps, hand_steps)),
    );
    summary.add(
        "(d′) PyTorch process: peak RSS (growth during the steps)",
        batch,
        format!("{} ({})", mib(py), mib(py_steps)),
    );
    println!(
        "(d) rss    batch {batch:>3}: distill {} vs hand-written tch {} peak RSS → {}; during the steps +{} vs +{} → {} (PyTorch hooks: {}, +{})",
        mib(front),
        mib(hand),
        ratio(front, hand),
        mib(front_steps),
        mib(hand_steps),
        ratio(front_steps, hand_steps),
        mib(py),
        mib(py_steps)
    );
}
