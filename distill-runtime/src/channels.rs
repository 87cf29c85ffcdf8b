//! Which channels of a source layer a channel-pruned layer holds: found from the weights
//! ([`ChannelMapping`]) or recorded by the pruning itself ([`KeptChannels`]).
//!
//! This module depends on nothing but the error type, so that both the layers (`nn`, which carry a
//! pruned conv's record) and the pruning and adapter modules (which write and read it) can use it.

use crate::error::ChannelMapError;
use crate::error::Result;

/// Which source channel each target channel was taken from.
///
/// For each target output channel `o` and input channel `i`:
/// `target[o][i] ≈ source[output[o]][input[i]]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ChannelMapping {
    /// For each target output channel, the index of the source output channel it was taken from.
    pub output: Vec<i64>,
    /// For each target input channel, the index of the source input channel it was taken from.
    pub input: Vec<i64>,
}

/// The record of one channel pruning: the shape of the source layer's weight and, for each channel of
/// the pruned copy, the source channel it was copied from.
///
/// `distill::prune::prune_conv2d` attaches one to the conv it returns (`Conv::pruned_from`), and the
/// selection adapters (`conv2d_adapter`, `inverted_conv2d_adapter`) build from it instead of
/// recovering the channels from the weights — which only works while the student's weights are still
/// the teacher's slices. A `PruneRecord` saves the records of a model's layers and attaches them to
/// a freshly built student.
///
/// Invariants (checked by [`KeptChannels::new`]): the source weight is `[out, in, …]` with every
/// size positive; `output` and `input` are non-empty, distinct, and within `0..out` and `0..in`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeptChannels {
    source_shape: Vec<i64>,
    output: Vec<i64>,
    input: Vec<i64>,
}

impl KeptChannels {
    /// The record of a copy of a layer whose weight has shape `source_shape` (`[out, in, …]`) that
    /// kept source output channels `output` and source input channels `input`, in the copy's order.
    ///
    /// # Errors
    /// [`ChannelMapError::RecordSourceShape`] when `source_shape` has fewer than 2 dimensions or a
    /// size below 1, [`ChannelMapError::NoneKept`] when a list is empty;
    /// [`ChannelMapError::ChannelOutOfRange`] and [`ChannelMapError::DuplicateChannel`] for a bad index.
    pub fn new(source_shape: &[i64], output: Vec<i64>, input: Vec<i64>) -> Result<KeptChannels> {
        if source_shape.len() < 2 || source_shape.iter().any(|&size| size < 1) {
            return Err(ChannelMapError::RecordSourceShape { shape: source_shape.to_vec() }.into());
        }
        check_indices(&output, source_shape[0], "output channel")?;
        check_indices(&input, source_shape[1], "input channel")?;
        Ok(KeptChannels { source_shape: source_shape.to_vec(), output, input })
    }

    /// The shape of the source layer's weight, `[out, in, …]`.
    pub fn source_shape(&self) -> &[i64] {
        &self.source_shape
    }

    /// For each output channel of the pruned copy, the source output channel it was copied from.
    pub fn output(&self) -> &[i64] {
        &self.output
    }

    /// For each input channel of the pruned copy, the source input channel it was copied from.
    pub fn input(&self) -> &[i64] {
        &self.input
    }

    /// The shape of the pruned copy's weight: the source's, with the kept channel counts.
    pub(crate) fn pruned_shape(&self) -> Vec<i64> {
        let mut shape = self.source_shape.clone();
        shape[0] = self.output.len() as i64;
        shape[1] = self.input.len() as i64;
        shape
    }

    /// The record as a channel mapping (source = the unpruned layer, target = the pruned copy).
    pub fn mapping(&self) -> ChannelMapping {
        ChannelMapping { output: self.output.clone(), input: self.input.clone() }
    }

    /// Checks that this record describes a copy of a layer whose weight has shape `source_shape`,
    /// and that `target_shape` is the copy's weight shape.
    ///
    /// # Errors
    /// [`ChannelMapError::RecordSourceMismatch`] or [`ChannelMapError::RecordPrunedMismatch`], naming both
    /// shapes.
    pub(crate) fn check_layers(&self, source_shape: &[i64], target_shape: &[i64]) -> Result<()> {
        if source_shape != self.source_shape {
            let (recorded, given) = (self.source_shape.clone(), source_shape.to_vec());
            return Err(ChannelMapError::RecordSourceMismatch { recorded, given }.into());
        }
        let pruned = self.pruned_shape();
        if target_shape != pruned {
            return Err(ChannelMapError::RecordPrunedMismatch { recorded: pruned, given: target_shape.to_vec() }.into());
        }
        Ok(())
    }
}

/// Checks kept indices against a size of `channels`: non-empty, in range, distinct.
pub(crate) fn check_indices(keep: &[i64], channels: i64, what: &'static str) -> Result<()> {
    if keep.is_empty() {
        return Err(ChannelMapError::NoneKept { what }.into());
    }
    // What is remembered grows with the kept indices, not with `channels`: a record read from a
    // file may claim any channel count, and a table of that many flags would abort the process.
    let mut seen = std::collections::HashSet::with_capacity(keep.len());
    for &index in keep {
        if !(0..channels).contains(&index) {
            return Err(ChannelMapError::ChannelOutOfRange { what, index, channels }.into());
        }
        if !seen.insert(index) {
            return Err(ChannelMapError::DuplicateChannel { what, index }.into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DistillError;

    #[test]
    fn records_are_checked() {
        let kept = KeptChannels::new(&[8, 4, 3, 3], vec![5, 1], vec![0, 2, 3]).unwrap();
        assert_eq!(kept.pruned_shape(), [2, 3, 3, 3]);
        assert_eq!(kept.mapping(), ChannelMapping { output: vec![5, 1], input: vec![0, 2, 3] });
        assert!(kept.check_layers(&[8, 4, 3, 3], &[2, 3, 3, 3]).is_ok());
        assert!(kept.check_layers(&[8, 5, 3, 3], &[2, 3, 3, 3]).is_err());
        assert!(kept.check_layers(&[8, 4, 3, 3], &[2, 4, 3, 3]).is_err());
        assert!(matches!(
            KeptChannels::new(&[8, 4], vec![8], vec![0]),
            Err(DistillError::ChannelMap(ChannelMapError::ChannelOutOfRange {
                what: "output channel",
                index: 8,
                channels: 8
            }))
        ));
        assert!(matches!(
            KeptChannels::new(&[8, 4], vec![1], vec![2, 2]),
            Err(DistillError::ChannelMap(ChannelMapError::DuplicateChannel { what: "input channel", index: 2 }))
        ));
        assert!(KeptChannels::new(&[8], vec![1], vec![0]).is_err());
        // A record may claim any channel count (a file is read into one): checking it takes memory
        // in proportion to the kept indices, not to the claim.
        let huge = 1i64 << 62;
        let kept = KeptChannels::new(&[huge, huge], vec![huge - 1, 0], vec![7]).unwrap();
        assert_eq!(kept.pruned_shape(), [2, 1]);
        assert!(matches!(
            KeptChannels::new(&[huge, 4], vec![3, huge - 1, 3], vec![0]),
            Err(DistillError::ChannelMap(ChannelMapError::DuplicateChannel { what: "output channel", index: 3 }))
        ));
        assert!(KeptChannels::new(&[8, 0], vec![1], vec![]).is_err());
    }
}
