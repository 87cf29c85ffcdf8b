//! What a distillation of a pruned decoder needs from its record: the hidden-state selection
//! adapter and the map from student layers to teacher layers.

use std::borrow::Borrow;

use tch::nn::Path;

use super::kept::{HIDDEN, LAYERS};
use super::DecoderPruneError;
use crate::adapter::LinearSelectionAdapter;
use crate::error::{DistillError, Result};
use crate::prune::{KeptChannels, PruneRecord};

/// The adapter under `path` that maps the teacher's hidden states `[B, T, hidden]` (a layer's
/// output, an RMSNorm's, the final norm's) to the student's kept hidden channels, from the
/// record's `hidden` entry: before training, exactly `index_select(-1, kept)` of its input (see
/// [`LinearSelectionAdapter`]).
///
/// # Errors
/// [`DecoderPruneError::MissingEntry`](super::DecoderPruneError::MissingEntry) when the record has no `hidden` entry.
pub fn hidden_adapter<'a, P: Borrow<Path<'a>>>(path: P, record: &PruneRecord) -> Result<LinearSelectionAdapter> {
    LinearSelectionAdapter::from_kept(path, entry(record, HIDDEN)?)
}

/// For each student layer `i`, the pair `(i, teacher layer)` it was kept from (student layer `i` ↔
/// teacher layer `kept[i]`), from the record's `layers` entry: the pairs to match hidden states
/// of, `model.layers.{i}` with `model.layers.{kept[i]}`.
///
/// # Errors
/// [`DecoderPruneError::MissingEntry`](super::DecoderPruneError::MissingEntry) when the record has no `layers` entry.
pub fn layer_map(record: &PruneRecord) -> Result<Vec<(usize, usize)>> {
    Ok(entry(record, LAYERS)?.output().iter().enumerate().map(|(i, &t)| (i, t as usize)).collect())
}

fn entry<'r>(record: &'r PruneRecord, key: &str) -> Result<&'r KeptChannels> {
    record.get(key).ok_or_else(|| {
        let known = record.iter().map(|(path, _)| path.to_owned()).collect();
        DistillError::from(DecoderPruneError::MissingEntry { key: key.to_owned(), known })
    })
}
