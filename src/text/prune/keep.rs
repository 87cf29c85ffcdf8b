//! [`KeepCounts`]: the target shape of a pruning, and the choice of the most important indices.

use super::DecoderPruneError;
use super::{LlamaImportance, LlamaKept};
use crate::error::Result;
use crate::text::LlamaConfig;

/// How many of each a pruned decoder keeps: its target shape. Every layer keeps the same counts
/// (see [`LlamaKept`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeepCounts {
    /// Hidden channels (the student's `hidden_size`).
    pub hidden: i64,
    /// MLP channels per layer (the student's `intermediate_size`).
    pub intermediate: i64,
    /// Key-value heads per layer; each keeps its query heads, so the student has
    /// `kv_heads × num_key_value_groups` query heads.
    pub kv_heads: i64,
    /// Decoder layers.
    pub layers: i64,
}

impl KeepCounts {
    /// Everything of `config`: its own shape.
    pub fn all(config: &LlamaConfig) -> KeepCounts {
        KeepCounts {
            hidden: config.hidden_size,
            intermediate: config.intermediate_size,
            kv_heads: config.num_key_value_heads,
            layers: config.num_hidden_layers,
        }
    }

    /// Checks each count against `teacher`: at least 1, at most what the teacher has.
    ///
    /// # Errors
    /// [`DecoderPruneError::KeepCount`](super::DecoderPruneError::KeepCount) naming the first count out of range.
    pub fn validate(&self, teacher: &LlamaConfig) -> Result<()> {
        for (what, count, size) in [
            ("hidden channels", self.hidden, teacher.hidden_size),
            ("MLP channels per layer", self.intermediate, teacher.intermediate_size),
            ("key-value heads per layer", self.kv_heads, teacher.num_key_value_heads),
            ("layers", self.layers, teacher.num_hidden_layers),
        ] {
            if !(1..=size).contains(&count) {
                return Err(DecoderPruneError::KeepCount { what, count, size }.into());
            }
        }
        Ok(())
    }
}

impl LlamaImportance {
    /// The most important indices for the target shape `counts` of `teacher`: the `counts.layers`
    /// layers of highest block importance, and in each of them (and in the hidden channels) the
    /// channels and key-value heads of highest importance. Every list is returned ascending; equal
    /// scores keep the lower index, NaN scores rank last.
    ///
    /// # Errors
    /// [`DecoderPruneError`](super::DecoderPruneError) when a count is out of range ([`KeepCounts::validate`]) or
    /// these importances were computed for a model of another shape than `teacher`.
    pub fn keep(&self, teacher: &LlamaConfig, counts: &KeepCounts) -> Result<LlamaKept> {
        counts.validate(teacher)?;
        self.check_shape(teacher)?;
        let layers = top(&self.layers, counts.layers);
        let pick = |scores: &[Vec<f64>], count| layers.iter().map(|&l| top(&scores[l as usize], count)).collect();
        let kept = LlamaKept {
            hidden: top(&self.hidden, counts.hidden),
            intermediate: pick(&self.intermediate, counts.intermediate),
            kv_heads: pick(&self.kv_heads, counts.kv_heads),
            layers,
        };
        kept.validate(teacher)?;
        Ok(kept)
    }

    /// Checks that every score list has `teacher`'s sizes.
    pub(super) fn check_shape(&self, teacher: &LlamaConfig) -> Result<()> {
        let layers = teacher.num_hidden_layers as usize;
        let fits =
            |lists: &[Vec<f64>], size: i64| lists.len() == layers && lists.iter().all(|l| l.len() == size as usize);
        let ok = self.hidden.len() == teacher.hidden_size as usize
            && self.layers.len() == layers
            && fits(&self.intermediate, teacher.intermediate_size)
            && fits(&self.kv_heads, teacher.num_key_value_heads);
        if !ok {
            return Err(DecoderPruneError::ImportanceShape {
                layers: teacher.num_hidden_layers,
                hidden: teacher.hidden_size,
                intermediate: teacher.intermediate_size,
                kv_heads: teacher.num_key_value_heads,
            }
            .into());
        }
        Ok(())
    }
}

/// The indices of the `count` largest scores, ascending (ties: lower index; NaN last).
fn top(scores: &[f64], count: i64) -> Vec<i64> {
    let mut order: Vec<i64> = (0..scores.len() as i64).collect();
    order.sort_by(|&x, &y| {
        let (sx, sy) = (scores[x as usize], scores[y as usize]);
        sx.is_nan().cmp(&sy.is_nan()).then(sy.total_cmp(&sx))
    });
    let mut kept = order[..count as usize].to_vec();
    kept.sort_unstable();
    kept
}
