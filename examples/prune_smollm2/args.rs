//! The run's settings: one struct whose `Default` is the example's default run, the same run as
//! `lm.toml` beside this file (a test below holds them equal), and the command-line flags that
//! override a few of its fields.

use std::path::PathBuf;

use clap::Parser;
use distill::cache::{Precision, TokenEncoding};
use distill::text::prune::KeepCounts;
use serde::Deserialize;

/// Prune SmolLM2-135M-Instruct to about half its non-embedding parameters and fine-tune it back
/// on fortunes twice (cross-entropy only, and KD from the teacher's top-k cache).
#[derive(Parser, Debug)]
#[command(about)]
pub struct Args {
    /// Output folder: the teacher cache, results.md, loss_curves.png, the students.
    #[arg(long, default_value = "target/prune_smollm2")]
    pub out: PathBuf,
    /// The run declared in a TOML file (`examples/prune_smollm2/lm.toml` is the default run).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Repeat the two fine-tunes for N seeds (batch order), reporting mean ± sd.
    #[arg(long, default_value_t = 1)]
    pub seeds: u64,
    /// Override the settings' training steps (each fine-tune).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Override the settings' number of fortunes read (0: all of them).
    #[arg(long)]
    pub documents: Option<usize>,
    /// Intra-op threads for libtorch.
    #[arg(long, default_value_t = 2)]
    pub threads: i32,
}

/// Everything that decides the numbers of a run.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The pruned shape.
    pub prune: Shape,
    /// The corpus and its sequences.
    pub data: Data,
    /// The teacher's top-k cache.
    pub cache: Cache,
    /// Both fine-tunes.
    pub train: Train,
    /// The distillation loss of the KD fine-tune.
    pub kd: Kd,
}

/// The student's shape (Minitron-style: width and depth by activation importance).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Shape {
    /// Hidden channels kept (SmolLM2: 576).
    pub hidden: i64,
    /// MLP channels kept per layer (SmolLM2: 1536).
    pub intermediate: i64,
    /// Key-value groups kept (SmolLM2: 3, of 3 query heads each).
    pub kv_heads: i64,
    /// Layers kept (SmolLM2: 30).
    pub layers: i64,
    /// Training batches whose activations rank the channels, heads and layers.
    pub calibration_batches: usize,
}

/// The corpus: Debian's fortunes, one document per fortune.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Data {
    /// Fortunes read, in file order (0: all).
    pub documents: usize,
    /// Tokens per sequence (documents packed, with document boundaries).
    pub seq_len: usize,
    /// Share of the fortunes held out for validation.
    pub validation_fraction: f64,
    /// Validation sequences evaluated (the first ones of the held-out split).
    pub validation_sequences: usize,
}

/// How the teacher's distribution over the vocabulary is stored per token.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cache {
    /// Tokens kept per position (the rest as one tail mass).
    pub k: i64,
    /// Softmax temperature of the stored log-probabilities.
    pub temperature: f64,
    /// "f16", "bf16" or "f32".
    pub values: Precision,
    /// Sequences per teacher forward while writing.
    pub batch: usize,
}

/// The fine-tunes (the same for both).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Train {
    /// Optimiser steps.
    pub steps: usize,
    /// Sequences per step.
    pub batch: usize,
    /// Peak AdamW learning rate (linear warm-up, then cosine decay towards a tenth, reached one
    /// step after the last).
    pub lr: f64,
    /// Warm-up steps.
    pub warmup: usize,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Validation perplexity every this many steps (and at the end).
    pub eval_every: usize,
}

/// The KD fine-tune's loss: `top_k_kl · TopKKl(cache) + ce · cross-entropy`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kd {
    /// Weight of the top-k KL to the cached teacher distribution.
    pub top_k_kl: f64,
    /// Weight of the next-token cross-entropy.
    pub ce: f64,
    /// Weight of the hidden-state pairs: the mean cosine distance between each matched student
    /// layer's output and its teacher layer's, the teacher's read from the cache and selected to the
    /// student's kept hidden channels (`text::prune::hidden_adapter`). 0: no hidden states are stored
    /// or matched.
    pub hidden: f64,
    /// Student layers matched when `hidden` > 0, evenly spaced, the last one included; each with the
    /// teacher layer it was kept from.
    pub hidden_layers: usize,
}

impl Default for Settings {
    /// The default run, chosen by measurement on 2 cores (README, "Language models").
    fn default() -> Self {
        Settings {
            prune: Shape { hidden: 512, intermediate: 1024, kv_heads: 2, layers: 25, calibration_batches: 2 },
            data: Data { documents: 300, seq_len: 128, validation_fraction: 0.15, validation_sequences: 12 },
            cache: Cache { k: 64, temperature: 1.0, values: Precision::F16, batch: 8 },
            train: Train { steps: 48, batch: 4, lr: 3e-4, warmup: 3, weight_decay: 0.0, eval_every: 8 },
            kd: Kd { top_k_kl: 1.0, ce: 1.0, hidden: 1.0, hidden_layers: 4 },
        }
    }
}

impl Settings {
    /// The settings of `args`: its `--config` file or the defaults, then its overrides.
    pub fn of(args: &Args) -> Result<Settings, Box<dyn std::error::Error>> {
        let mut settings = match &args.config {
            None => Settings::default(),
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
                toml::from_str(&text).map_err(|e| format!("{}: {e}", file.display()))?
            }
        };
        if let Some(steps) = args.steps {
            settings.train.steps = steps;
        }
        if let Some(documents) = args.documents {
            settings.data.documents = documents;
        }
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), String> {
        let t = &self.train;
        if t.steps == 0 || t.batch == 0 || t.eval_every == 0 || self.cache.batch == 0 {
            return Err("steps, batch sizes and eval_every must be at least 1".into());
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("the learning rate must be positive, got {}", t.lr));
        }
        let kd = &self.kd;
        if kd.top_k_kl < 0.0 || kd.ce < 0.0 || kd.hidden < 0.0 || kd.top_k_kl + kd.ce + kd.hidden == 0.0 {
            return Err("the KD weights must be ≥ 0 and not all 0".into());
        }
        if kd.hidden > 0.0 && !(1..=self.prune.layers as usize).contains(&kd.hidden_layers) {
            return Err(format!("hidden_layers must be between 1 and the {} student layers", self.prune.layers));
        }
        Ok(())
    }

    /// The pruned shape as the pruning API takes it.
    pub fn keep_counts(&self) -> KeepCounts {
        let p = &self.prune;
        KeepCounts { hidden: p.hidden, intermediate: p.intermediate, kv_heads: p.kv_heads, layers: p.layers }
    }

    /// The hidden-state pairs of a student kept from the teacher's layers `kept_layers` (its layer
    /// `i` is the teacher's `kept_layers[i]`): `(student layer, teacher layer)`, evenly spaced, the last
    /// layer included; none when `kd.hidden` is 0.
    pub fn hidden_pairs(&self, kept_layers: &[i64]) -> Vec<(usize, usize)> {
        let (layers, n) = (kept_layers.len(), self.kd.hidden_layers.min(kept_layers.len()));
        if self.kd.hidden == 0.0 || n == 0 {
            return Vec::new();
        }
        (1..=n).map(|j| j * layers / n - 1).map(|i| (i, kept_layers[i] as usize)).collect()
    }

    /// The cache's per-token encoding.
    pub fn encoding(&self) -> TokenEncoding {
        TokenEncoding::top_k(self.cache.k, self.cache.temperature).with_values(self.cache.values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_toml_is_the_default_run() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/prune_smollm2/lm.toml");
        let parsed: Settings = toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(parsed, Settings::default());
    }

    #[test]
    fn hidden_pairs_are_evenly_spaced_and_end_at_the_last_layer() {
        let mut settings = Settings::default();
        let kept: Vec<i64> = (0..30).filter(|l| ![13, 14, 15, 17, 25].contains(l)).collect();
        settings.kd.hidden = 0.0;
        assert!(settings.hidden_pairs(&kept).is_empty());
        settings.kd.hidden = 1.0;
        settings.kd.hidden_layers = 4;
        assert_eq!(settings.hidden_pairs(&kept), [(5, 5), (11, 11), (17, 21), (24, 29)]);
        settings.kd.hidden_layers = 1;
        assert_eq!(settings.hidden_pairs(&kept), [(24, 29)]);
    }

    #[test]
    fn an_unknown_key_is_an_error() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/prune_smollm2/lm.toml"))
            .unwrap()
            .replace("[kd]", "[kd]\nhiden = 1.0");
        let error = toml::from_str::<Settings>(&text).unwrap_err().to_string();
        assert!(error.contains("hiden"), "{error}");
    }
}
