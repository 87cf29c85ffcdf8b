//! [`LlamaKept`]: which hidden channels, layers, MLP channels and key-value heads of a teacher a
//! pruned decoder keeps, checked against the teacher's shape and converted to and from a
//! [`PruneRecord`].

use super::DecoderPruneError;
use crate::error::Result;
use crate::prune::{KeptChannels, PruneRecord};
use crate::text::LlamaConfig;

/// Record key of the kept hidden channels (the residual stream's width).
pub const HIDDEN: &str = "hidden";
/// Record key of the kept decoder layers.
pub const LAYERS: &str = "layers";

/// Record key of student layer `layer`'s MLP (`model.layers.{layer}.mlp`).
pub fn mlp_key(layer: usize) -> String {
    format!("model.layers.{layer}.mlp")
}

/// Record key of student layer `layer`'s attention (`model.layers.{layer}.self_attn`).
pub fn attention_key(layer: usize) -> String {
    format!("model.layers.{layer}.self_attn")
}

/// What a pruned decoder keeps of its teacher, every index a teacher index. Layer `i` of the
/// student is teacher layer `layers[i]`, and keeps `intermediate[i]` of that layer's MLP channels
/// and `kv_heads[i]` of its key-value heads (with each kept key-value head, the query heads it
/// serves under grouped-query attention; `head_dim` is kept whole).
///
/// Counts are uniform across layers (every layer keeps as many MLP channels and heads), which is
/// what lets the student be a plain [`LlamaConfig`] — loadable, savable and built like any other
/// model — while each layer still chooses its own channels, as Minitron does.
///
/// Channels are kept in the order given (ascending when chosen by
/// [`LlamaImportance::keep`](super::LlamaImportance::keep)); layers must be strictly increasing,
/// since the decoder runs its layers in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LlamaKept {
    /// Kept hidden channels: every layer's input width, the embeddings, the norms, `lm_head`.
    pub hidden: Vec<i64>,
    /// The teacher layer of each student layer.
    pub layers: Vec<i64>,
    /// Per student layer, the kept MLP intermediate channels (gate/up rows, down columns).
    pub intermediate: Vec<Vec<i64>>,
    /// Per student layer, the kept key-value heads.
    pub kv_heads: Vec<Vec<i64>>,
}

impl LlamaKept {
    /// Everything of `teacher` kept, in order: pruning with it copies the teacher.
    pub fn all(teacher: &LlamaConfig) -> LlamaKept {
        let layers = teacher.num_hidden_layers as usize;
        LlamaKept {
            hidden: (0..teacher.hidden_size).collect(),
            layers: (0..teacher.num_hidden_layers).collect(),
            intermediate: vec![(0..teacher.intermediate_size).collect(); layers],
            kv_heads: vec![(0..teacher.num_key_value_heads).collect(); layers],
        }
    }

    /// Checks every index against `teacher`: lists non-empty, in range, without repeats; layers
    /// strictly increasing; one MLP and one head list per kept layer, all of the same length.
    ///
    /// # Errors
    /// [`DecoderPruneError`](super::DecoderPruneError) naming the first offending list.
    pub fn validate(&self, teacher: &LlamaConfig) -> Result<()> {
        check_list("hidden channel", HIDDEN, &self.hidden, teacher.hidden_size)?;
        check_list("layer", LAYERS, &self.layers, teacher.num_hidden_layers)?;
        if self.layers.windows(2).any(|pair| pair[0] >= pair[1]) {
            return Err(DecoderPruneError::LayerOrder { layers: self.layers.clone() }.into());
        }
        let n = self.layers.len();
        for (what, lists) in [("MLP channel", &self.intermediate), ("key-value head", &self.kv_heads)] {
            if lists.len() != n {
                return Err(DecoderPruneError::ListCount { layers: n, lists: lists.len(), what }.into());
            }
        }
        for (i, (inner, heads)) in self.intermediate.iter().zip(&self.kv_heads).enumerate() {
            check_list("MLP channel", &mlp_key(i), inner, teacher.intermediate_size)?;
            check_list("key-value head", &attention_key(i), heads, teacher.num_key_value_heads)?;
            for (what, list, first) in
                [("MLP channels", inner, &self.intermediate[0]), ("key-value heads", heads, &self.kv_heads[0])]
            {
                if list.len() != first.len() {
                    let (first, count) = (first.len(), list.len());
                    return Err(DecoderPruneError::UnevenWidths { what, first, layer: i, count }.into());
                }
            }
        }
        Ok(())
    }

    /// The student's configuration: `teacher`'s with the kept widths and depth (`head_dim`, the
    /// vocabulary, norms and rotary embedding unchanged; query heads = kept key-value heads × the
    /// teacher's query heads per key-value head).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn student_config(&self, teacher: &LlamaConfig) -> Result<LlamaConfig> {
        self.validate(teacher)?;
        let kv_heads = self.kv_heads[0].len() as i64;
        let config = LlamaConfig {
            hidden_size: self.hidden.len() as i64,
            intermediate_size: self.intermediate[0].len() as i64,
            num_hidden_layers: self.layers.len() as i64,
            num_attention_heads: kv_heads * teacher.num_key_value_groups(),
            num_key_value_heads: kv_heads,
            ..teacher.clone()
        };
        config.validate()?;
        Ok(config)
    }

    /// The record of this pruning, by module path (see the [module documentation](super) for the
    /// layout).
    ///
    /// # Errors
    /// As [`validate`](Self::validate).
    pub fn to_record(&self, teacher: &LlamaConfig) -> Result<PruneRecord> {
        self.validate(teacher)?;
        let (h, l) = (teacher.hidden_size, teacher.num_hidden_layers);
        let mut record = PruneRecord::new();
        record.insert(HIDDEN, KeptChannels::new(&[h, h], self.hidden.clone(), self.hidden.clone())?)?;
        record.insert(LAYERS, KeptChannels::new(&[l, l], self.layers.clone(), self.layers.clone())?)?;
        for (i, (inner, heads)) in self.intermediate.iter().zip(&self.kv_heads).enumerate() {
            let mlp = KeptChannels::new(&[teacher.intermediate_size, h], inner.clone(), self.hidden.clone())?;
            let attention = KeptChannels::new(&[teacher.num_key_value_heads, h], heads.clone(), self.hidden.clone())?;
            record.insert(mlp_key(i), mlp)?;
            record.insert(attention_key(i), attention)?;
        }
        Ok(record)
    }

    /// The pruning a record written by [`to_record`](Self::to_record) describes, checked against the
    /// `teacher` it was pruned from.
    ///
    /// # Errors
    /// [`DecoderPruneError`](super::DecoderPruneError) when an entry is missing or unexpected, was recorded for a
    /// teacher of another shape, or disagrees with the kept hidden channels; as
    /// [`validate`](Self::validate).
    pub fn from_record(record: &PruneRecord, teacher: &LlamaConfig) -> Result<LlamaKept> {
        let (h, l) = (teacher.hidden_size, teacher.num_hidden_layers);
        let hidden = entry(record, HIDDEN, &[h, h])?.output().to_vec();
        let layers = entry(record, LAYERS, &[l, l])?.output().to_vec();
        let (mut intermediate, mut kv_heads) = (Vec::new(), Vec::new());
        for i in 0..layers.len() {
            let mlp = entry(record, &mlp_key(i), &[teacher.intermediate_size, h])?;
            let attention = entry(record, &attention_key(i), &[teacher.num_key_value_heads, h])?;
            for (key, kept) in [(mlp_key(i), mlp), (attention_key(i), attention)] {
                if kept.input() != hidden.as_slice() {
                    return Err(DecoderPruneError::HiddenDisagrees { key: key.to_string() }.into());
                }
            }
            intermediate.push(mlp.output().to_vec());
            kv_heads.push(attention.output().to_vec());
        }
        if record.len() != 2 + 2 * layers.len() {
            let known = record.iter().map(|(path, _)| path.to_owned()).collect();
            return Err(DecoderPruneError::UnexpectedEntries { layers: layers.len(), known }.into());
        }
        let kept = LlamaKept { hidden, layers, intermediate, kv_heads };
        kept.validate(teacher)?;
        Ok(kept)
    }
}

/// The record of `key`, checked to come from a teacher whose shape there is `shape`.
fn entry<'r>(record: &'r PruneRecord, key: &str, shape: &[i64]) -> Result<&'r KeptChannels> {
    let Some(kept) = record.get(key) else {
        let known = record.iter().map(|(path, _)| path.to_owned()).collect();
        return Err(DecoderPruneError::MissingEntry { key: key.to_owned(), known }.into());
    };
    if kept.source_shape() != shape {
        let (key, recorded, shape) = (key.to_owned(), kept.source_shape().to_vec(), shape.to_vec());
        return Err(DecoderPruneError::EntryShape { key, recorded, shape }.into());
    }
    Ok(kept)
}

/// Checks one list of kept indices out of `size`: non-empty, in range, no repeats.
fn check_list(what: &'static str, key: &str, list: &[i64], size: i64) -> Result<()> {
    if list.is_empty() {
        return Err(DecoderPruneError::NoneKept { key: key.to_owned(), what }.into());
    }
    let mut seen = vec![false; size.max(0) as usize];
    for &index in list {
        let Some(slot) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i)) else {
            return Err(DecoderPruneError::OutOfRange { key: key.to_owned(), what, index, size }.into());
        };
        if std::mem::replace(slot, true) {
            return Err(DecoderPruneError::Duplicate { key: key.to_owned(), what, index }.into());
        }
    }
    Ok(())
}
