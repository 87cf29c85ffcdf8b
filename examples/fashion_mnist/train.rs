//! Training loops: the teacher (SGD + one-cycle), the fine-tunes (plain SGD, any loss), evaluation.

use std::time::{Duration, Instant};

use distill::nn::{ModuleT, OptimizerConfig, VarStore};
use distill_ddp::{DataParallel, DdpError, DistributedSampler};
use indicatif::{ProgressBar, ProgressStyle};
use tch::{Kind, Tensor};

use crate::data::{batches, Split};

/// Named loss terms of one step, in display order; the first is the total that is minimised.
pub type Terms = Vec<(&'static str, f64)>;

/// A distillation step's loss, cross-entropy `ce` plus the pairs' `total`, and its named terms:
/// `loss`, `ce`, then each pair's (weighted) term in `pairs`' order.
pub fn ce_and_pairs<'t>(
    ce: Tensor,
    total: Tensor,
    pairs: impl IntoIterator<Item = (&'static str, &'t Tensor)>,
) -> (Tensor, Terms) {
    let loss = &ce + total;
    let mut terms: Terms = vec![("loss", loss.double_value(&[])), ("ce", ce.double_value(&[]))];
    terms.extend(pairs.into_iter().map(|(label, value)| (label, value.double_value(&[]))));
    (loss, terms)
}

/// Per-step loss terms of one training run, for the report's curves.
#[derive(Clone, Debug, Default)]
pub struct History {
    pub names: Vec<&'static str>,
    /// One row per step, in the order of `names`.
    pub steps: Vec<Vec<f64>>,
    pub elapsed: Duration,
}

impl History {
    /// The series of term `name`, if it was logged.
    pub fn series(&self, name: &str) -> Option<Vec<f64>> {
        let at = self.names.iter().position(|n| *n == name)?;
        Some(self.steps.iter().map(|row| row[at]).collect())
    }
}

/// Learning rate of PyTorch's `OneCycleLR` (cosine annealing, `pct_start` 0.3, `div_factor` 25,
/// `final_div_factor` 1e4, two phases) at `step` of `total` steps.
pub fn one_cycle_lr(step: usize, total: usize, max_lr: f64) -> f64 {
    let initial = max_lr / 25.0;
    let min = initial / 1e4;
    let up_end = 0.3 * total as f64 - 1.0;
    let down_end = total as f64 - 1.0;
    let anneal =
        |start: f64, end: f64, pct: f64| end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0);
    let s = step as f64;
    if s <= up_end {
        anneal(initial, max_lr, s / up_end)
    } else {
        anneal(max_lr, min, (s - up_end) / (down_end - up_end))
    }
}

/// What a training run needs besides the model.
pub struct Schedule {
    pub epochs: usize,
    pub batch_size: i64,
    /// Learning rate for a step (`step`, `total_steps`).
    pub lr: Box<dyn Fn(usize, usize) -> f64>,
    pub label: String,
}

fn style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>22} [{bar:28}] {pos:>4}/{len} {msg} [{elapsed_precise}<{eta_precise}]")
        .expect("valid template")
        .progress_chars("=> ")
}

/// Trains with `opt` for `schedule`; `step` computes the named loss terms of a batch (the first
/// term is the loss to minimise). Shuffles with tch's generator, so `tch::manual_seed` fixes the order.
///
/// With `parallel`, this is one rank of a data-parallel run: each epoch's order comes from a
/// [`DistributedSampler`] (seeded from tch's generator, so every rank draws the same seed), this rank
/// takes its shard in batches of `batch_size / world_size`, gradients are averaged over the ranks
/// after each backward pass, and batch-norm statistics are copied from rank 0 at the end. Only
/// rank 0 shows progress; the loss terms are those of this rank's batches.
pub fn train(
    train_set: &Split,
    opt: &mut tch::nn::Optimizer,
    schedule: &Schedule,
    parallel: Option<&DataParallel>,
    mut step: impl FnMut(&Tensor, &Tensor) -> (Tensor, Terms),
) -> Result<History, DdpError> {
    train_with(train_set, opt, schedule, parallel, |_, xs, ys| step(xs, ys))
}

/// Where a batch is in its epoch: what a step reading a teacher cache needs besides the tensors.
pub struct BatchAt<'a> {
    /// The epoch, from 0.
    pub epoch: usize,
    /// The epoch's whole sample order, split into batches of `batch_size`.
    pub order: &'a Tensor,
    /// The batch's index in the epoch.
    pub index: usize,
    /// The batch size the order is split by.
    pub batch_size: i64,
}

/// As [`train`], the step also told which samples of which epoch it trains on.
pub fn train_with(
    train_set: &Split,
    opt: &mut tch::nn::Optimizer,
    schedule: &Schedule,
    parallel: Option<&DataParallel>,
    mut step: impl FnMut(&BatchAt, &Tensor, &Tensor) -> (Tensor, Terms),
) -> Result<History, DdpError> {
    let start = Instant::now();
    let n = train_set.len();
    let (world, show) = parallel.map_or((1, true), |p| (p.group().world_size() as i64, p.group().is_main()));
    let sampler = match parallel {
        Some(p) => {
            let seed = Tensor::randint(i64::MAX, [1], (Kind::Int64, tch::Device::Cpu)).int64_value(&[0]) as u64;
            Some(DistributedSampler::for_group(n as usize, p.group())?.seed(seed))
        }
        None => None,
    };
    let batch_size = schedule.batch_size / world;
    let shard = sampler.as_ref().map_or(n, |s| s.samples_per_rank() as i64);
    let per_epoch = (shard + batch_size - 1) / batch_size;
    let total = schedule.epochs * per_epoch as usize;
    let mut history = History::default();
    let mut global = 0usize;
    for epoch in 0..schedule.epochs {
        let bar = if show { ProgressBar::new(per_epoch as u64) } else { ProgressBar::hidden() };
        let bar = bar.with_style(style()).with_prefix(format!("{} {}/{}", schedule.label, epoch + 1, schedule.epochs));
        let order = match &sampler {
            Some(s) => Tensor::from_slice(&s.indices(epoch as u64)).to_device(train_set.images.device()),
            None => Tensor::randperm(n, (Kind::Int64, train_set.images.device())),
        };
        let mut running: Vec<f64> = Vec::new();
        let mut count = 0usize;
        for (index, (xs, ys)) in batches(train_set, &order, batch_size).enumerate() {
            opt.set_lr((schedule.lr)(global, total));
            let at = BatchAt { epoch, order: &order, index, batch_size };
            let (loss, terms) = step(&at, &xs, &ys);
            match parallel {
                Some(p) => p.backward_step(opt, &loss)?,
                None => opt.backward_step(&loss),
            }
            if history.names.is_empty() {
                history.names = terms.iter().map(|(name, _)| *name).collect();
            }
            history.steps.push(terms.iter().map(|(_, v)| *v).collect());
            running.resize(terms.len(), 0.0);
            running.iter_mut().zip(&terms).for_each(|(r, (_, v))| *r += v);
            count += 1;
            global += 1;
            bar.inc(1);
            if count.is_multiple_of(10) || count as i64 == per_epoch {
                bar.set_message(format_terms(&history.names, &running, count));
            }
        }
        bar.finish();
        if show && bar.is_hidden() {
            // Not a terminal (a log file, CI): one line per epoch instead of the live bar.
            println!(
                "{} {}/{}: {} ({:.0} s)",
                schedule.label,
                epoch + 1,
                schedule.epochs,
                format_terms(&history.names, &running, count),
                start.elapsed().as_secs_f64()
            );
        }
    }
    if let Some(p) = parallel {
        p.sync_buffers()?;
    }
    history.elapsed = start.elapsed();
    Ok(history)
}

fn format_terms(names: &[&str], sums: &[f64], count: usize) -> String {
    names.iter().zip(sums).map(|(n, s)| format!("{n}={:.4}", s / count as f64)).collect::<Vec<_>>().join(" ")
}

/// SGD with the reference workflow's settings (no dampening, no Nesterov).
pub fn sgd(vs: &VarStore, lr: f64, momentum: f64, wd: f64) -> tch::nn::Optimizer {
    tch::nn::Sgd { momentum, dampening: 0.0, wd, nesterov: false }.build(vs, lr).expect("SGD builds")
}

/// Top-1 accuracy (percent) of `model` on `split`, in evaluation mode.
pub fn accuracy(model: &(impl ModuleT + ?Sized), split: &Split) -> f64 {
    let order = Tensor::arange(split.len(), (Kind::Int64, split.images.device()));
    let correct: i64 = tch::no_grad(|| {
        batches(split, &order, 1000)
            .map(|(xs, ys)| {
                model.forward_t(&xs, false).argmax(-1, false).eq_tensor(&ys).sum(Kind::Int64).int64_value(&[])
            })
            .sum()
    });
    100.0 * correct as f64 / split.len() as f64
}

#[cfg(test)]
mod tests {
    use super::one_cycle_lr;

    #[test]
    fn one_cycle_matches_pytorch_shape() {
        let total = 1000;
        assert!((one_cycle_lr(0, total, 0.1) - 0.004).abs() < 1e-12);
        assert!((one_cycle_lr(299, total, 0.1) - 0.1).abs() < 1e-12);
        assert!((one_cycle_lr(999, total, 0.1) - 0.004 / 1e4).abs() < 1e-12);
    }
}
