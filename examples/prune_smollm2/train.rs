//! The two fine-tunes (cross-entropy only; KD from the teacher cache, with hidden-state pairs if
//! the settings ask for them) and validation perplexity.

use std::error::Error;
use std::time::Instant;

use distill::adapter::LinearSelectionAdapter;
use distill::cache::TokenCache;
use distill::criterion::{Cosine, TopKKl};
use distill::text::data::{TokenBatch, TokenDataset, IGNORE_TARGET};
use distill::text::LlamaForCausalLM;
use distill::{Adapted, Distillation, Mapping};
use tch::nn::{OptimizerConfig, VarStore};
use tch::{Device, Kind, Reduction, Tensor};

use crate::args::{Kd, Settings};
use crate::cache::layer_path;
use crate::data::inputs;
use crate::report::progress;

/// What a fine-tune minimises.
pub enum Objective<'a> {
    /// Next-token cross-entropy.
    CrossEntropy,
    /// `top_k_kl · TopKKl` to the cached teacher + `ce · cross-entropy` + `hidden · ` the mean cosine
    /// distance of the `hidden` pairs.
    Distill { cache: &'a TokenCache, weights: Kd, temperature: f64, hidden: Option<HiddenPairs<'a>> },
}

/// The hidden-state pairs of a KD fine-tune: student layer outputs and the cached teacher layer
/// outputs they were kept from, the teacher's selected to the student's kept channels.
pub struct HiddenPairs<'a> {
    /// `(student layer, teacher layer)`.
    pub layers: &'a [(usize, usize)],
    /// The student's kept hidden channels of the teacher's (`text::prune::hidden_adapter`), shared
    /// by every pair, in a frozen `VarStore`: an exact selection, never trained.
    pub adapter: &'a LinearSelectionAdapter,
}

/// What a KD fine-tune's step runs: the distillation over the cache, and the cross-entropy's weight.
struct KdStep<'m> {
    distillation: Distillation<'m>,
    cache: &'m TokenCache,
    ce: f64,
}

impl Objective<'_> {
    /// The KD step of `student`: a distillation from the cache of the output pair (`TopKKl`, given
    /// the cache's token mask) and each hidden pair (`Cosine` on the valid tokens, the teacher's
    /// side through the selection), weighted so that the hidden pairs weigh `hidden` together;
    /// `None` for the cross-entropy fine-tune.
    fn kd_step<'m>(&'m self, student: &'m LlamaForCausalLM) -> Result<Option<KdStep<'m>>, Box<dyn Error>> {
        let Objective::Distill { cache, weights, temperature, hidden } = self else { return Ok(None) };
        let mut mapping = Mapping::new(student, *cache);
        mapping.add("", "", Adapted::new(TopKKl::new(*temperature) * weights.top_k_kl))?;
        if let Some(hidden) = hidden {
            let weight = weights.hidden / hidden.layers.len().max(1) as f64;
            for &(s, t) in hidden.layers {
                let pair = Adapted::new(Cosine * weight).teacher_adapter(hidden.adapter);
                mapping.add(layer_path(s), layer_path(t), pair)?;
            }
        }
        let distillation = Distillation::from_mapping(student, mapping)?;
        Ok(Some(KdStep { distillation, cache, ce: weights.ce }))
    }
}

/// A fine-tune's record: per-step losses, validation points, and its training time.
pub struct History {
    /// The total loss of each step.
    pub loss: Vec<f64>,
    /// The cross-entropy of each step (the loss itself for the CE-only run).
    pub ce: Vec<f64>,
    /// `(steps done, validation cross-entropy)`.
    pub validation: Vec<(usize, f64)>,
    /// Seconds spent in training steps (validation excluded).
    pub seconds: f64,
    /// Real (non-padding) tokens trained on.
    pub tokens: usize,
}

/// Summed cross-entropy of `logits` `[B, T, V]` to the batch's targets and the number of targets
/// (padding and document ends have none).
fn ce_sum(logits: &Tensor, batch: &TokenBatch) -> Result<(Tensor, i64), Box<dyn Error>> {
    let vocab = logits.size()[2];
    let targets = batch.targets.view([-1]);
    let sum =
        logits.view([-1, vocab]).f_cross_entropy_loss::<Tensor>(&targets, None, Reduction::Sum, IGNORE_TARGET, 0.0)?;
    Ok((sum, targets.ne(IGNORE_TARGET).sum(Kind::Int64).int64_value(&[])))
}

/// Mean next-token cross-entropy (nats) of `model` over `batches`, padding excluded: the log of the
/// validation perplexity.
pub fn validation_ce(model: &LlamaForCausalLM, batches: &[TokenBatch]) -> Result<f64, Box<dyn Error>> {
    let (mut sum, mut count) = (0.0, 0);
    for batch in batches {
        let logits = tch::no_grad(|| model.forward_inputs(&inputs(batch)))?;
        let (s, n) = ce_sum(&logits, batch)?;
        sum += s.double_value(&[]);
        count += n;
    }
    Ok(sum / count.max(1) as f64)
}

/// Linear warm-up to `lr` over the first `warmup` steps, then cosine decay towards a tenth of it,
/// which the schedule reaches at step `steps`: one past the last step run (0-based), so the last
/// step's rate is slightly above a tenth.
fn learning_rate(step: usize, settings: &Settings) -> f64 {
    let t = &settings.train;
    if step < t.warmup {
        return t.lr * (step + 1) as f64 / t.warmup as f64;
    }
    let progress = (step - t.warmup) as f64 / (t.steps - t.warmup).max(1) as f64;
    t.lr * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// One step's loss (with gradient) and its cross-entropy term: the cross-entropy alone, or the
/// distillation's loss from the cached batch plus `ce ·` the cross-entropy.
fn step_loss(
    student: &LlamaForCausalLM,
    batch: &TokenBatch,
    kd: Option<&KdStep>,
) -> Result<(Tensor, f64), Box<dyn Error>> {
    // The student's logits, and with a KD step the distillation's loss from the cached batch.
    let (logits, kd_loss) = match kd {
        None => (student.forward_inputs(&inputs(batch))?, None),
        Some(kd) => {
            let cached = kd.cache.batch(&batch.sequence_ids)?;
            // The student sees the batch's document boundaries, as the teacher did when the cache
            // was written: its forward takes more than the token ids.
            let forward = || student.forward_inputs(&inputs(batch));
            let out = kd.distillation.forward_cached_by(&batch.input_ids, &cached, true, forward)?;
            let loss = out.f_loss()?;
            (out.student_output, Some((loss, kd.ce)))
        }
    };
    let (sum, count) = ce_sum(&logits, batch)?;
    let ce = sum / count.max(1) as f64;
    let ce_value = ce.double_value(&[]);
    let loss = match kd_loss {
        None => ce,
        Some((loss, ce_weight)) if ce_weight > 0.0 => loss + ce * ce_weight,
        Some((loss, _)) => loss,
    };
    Ok((loss, ce_value))
}

/// Fine-tunes `student` (variables in `vs`) on the batches of `order`, evaluating every
/// `eval_every` steps and at the end.
#[allow(clippy::too_many_arguments)]
pub fn fine_tune(
    label: &str,
    student: &LlamaForCausalLM,
    vs: &VarStore,
    data: &TokenDataset,
    order: &[Vec<usize>],
    validation: &[TokenBatch],
    settings: &Settings,
    objective: &Objective,
) -> Result<History, Box<dyn Error>> {
    let t = &settings.train;
    let mut opt = tch::nn::AdamW { wd: t.weight_decay, ..Default::default() }.build(vs, t.lr)?;
    let mut history = History { loss: Vec::new(), ce: Vec::new(), validation: Vec::new(), seconds: 0.0, tokens: 0 };
    let kd = objective.kd_step(student)?;
    let bar = progress(order.len() as u64, label);
    for (step, indices) in order.iter().enumerate() {
        let started = Instant::now();
        let batch = data.train().batch(indices, Device::Cpu)?;
        opt.set_lr(learning_rate(step, settings));
        let (loss, ce) = step_loss(student, &batch, kd.as_ref())?;
        opt.backward_step(&loss);
        history.loss.push(loss.double_value(&[]));
        history.ce.push(ce);
        history.tokens += batch.attention_mask.sum(Kind::Int64).int64_value(&[]) as usize;
        history.seconds += started.elapsed().as_secs_f64();
        bar.set_message(format!("loss {:.3}, CE {ce:.3}", history.loss[step]));
        bar.inc(1);
        if (step + 1) % t.eval_every == 0 || step + 1 == order.len() {
            let ce = validation_ce(student, validation)?;
            bar.suspend(|| println!("{label}: step {}, validation perplexity {:.2}", step + 1, ce.exp()));
            history.validation.push((step + 1, ce));
        }
    }
    bar.finish_and_clear();
    let (_, last) = history.validation.last().copied().unwrap_or((0, f64::NAN));
    println!(
        "{label}: {} steps in {:.0} s ({:.0} tokens/s), validation perplexity {:.2}",
        order.len(),
        history.seconds,
        history.tokens as f64 / history.seconds,
        last.exp()
    );
    Ok(history)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_learning_rate_warms_up_then_decays_towards_a_tenth() {
        let mut settings = Settings::default();
        settings.train.steps = 110;
        settings.train.warmup = 10;
        settings.train.lr = 1.0;
        assert!((learning_rate(0, &settings) - 0.1).abs() < 1e-12);
        assert!((learning_rate(9, &settings) - 1.0).abs() < 1e-12);
        assert!((learning_rate(10, &settings) - 1.0).abs() < 1e-12);
        assert!((learning_rate(60, &settings) - 0.55).abs() < 1e-12);
        // The last step run is 109, at 99 % of the decay: above a tenth, which step 110 (never run)
        // would reach.
        let last = 0.1 + 0.45 * (1.0 + (std::f64::consts::PI * 0.99).cos());
        assert!((learning_rate(109, &settings) - last).abs() < 1e-12);
        assert!(last > 0.1 + 1e-5);
    }
}
