//! What goes wrong when a decoder is pruned: counts or kept lists that do not fit the teacher, a
//! record that is not a decoder's, calibration data that measures nothing.

/// Counts, kept lists, records or calibration data that do not fit the decoder being pruned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DecoderPruneError {
    /// A count to keep outside `1..=size`.
    #[error("cannot keep {count} {what} of a teacher that has {size}: keep between 1 and {size}")]
    KeepCount {
        /// What is kept (`"hidden channels"`).
        what: &'static str,
        /// The count asked for.
        count: i64,
        /// The teacher's size.
        size: i64,
    },
    /// Importances computed for a model of another shape than the teacher.
    #[error(
        "these importances were computed for another model shape than the teacher's ({layers} layers, hidden \
         {hidden}, MLP {intermediate}, {kv_heads} key-value heads)"
    )]
    ImportanceShape {
        /// The teacher's layers.
        layers: i64,
        /// Its hidden size.
        hidden: i64,
        /// Its MLP width.
        intermediate: i64,
        /// Its key-value heads.
        kv_heads: i64,
    },
    /// Kept layers not in increasing order.
    #[error("the kept layers must be strictly increasing (the decoder runs them in order), got {layers:?}")]
    LayerOrder {
        /// The kept layers.
        layers: Vec<i64>,
    },
    /// Another number of per-layer lists than kept layers.
    #[error("{layers} layers are kept but {lists} lists of kept {what}s are given")]
    ListCount {
        /// The kept layers.
        layers: usize,
        /// The lists given.
        lists: usize,
        /// What the lists keep (`"MLP channel"`).
        what: &'static str,
    },
    /// Layers that keep different widths of one kind.
    #[error(
        "every layer must keep as many {what} (the pruned model has one width per kind): layer 0 keeps {first}, \
         layer {layer} keeps {count}"
    )]
    UnevenWidths {
        /// What is kept (`"MLP channels"`).
        what: &'static str,
        /// What layer 0 keeps.
        first: usize,
        /// The layer that differs.
        layer: usize,
        /// What it keeps.
        count: usize,
    },
    /// A kept list with no entry.
    #[error("`{key}` keeps zero {what}s: a model needs at least one")]
    NoneKept {
        /// The record key.
        key: String,
        /// What the list keeps.
        what: &'static str,
    },
    /// A kept index outside the teacher.
    #[error("`{key}` keeps {what} {index}, but the teacher has {size} (0..{size})")]
    OutOfRange {
        /// The record key.
        key: String,
        /// What the list keeps.
        what: &'static str,
        /// The index.
        index: i64,
        /// The teacher's size.
        size: i64,
    },
    /// A kept index given twice.
    #[error("`{key}` keeps {what} {index} twice")]
    Duplicate {
        /// The record key.
        key: String,
        /// What the list keeps.
        what: &'static str,
        /// The index.
        index: i64,
    },
    /// A record entry a decoder's record has, missing.
    #[error("the prune record has no `{key}` entry (it records {known:?}): it is not the record of a pruned decoder")]
    MissingEntry {
        /// The entry.
        key: String,
        /// The entries it records.
        known: Vec<String>,
    },
    /// Record entries a decoder's record does not have.
    #[error(
        "the prune record of a {layers}-layer decoder holds other entries than `{}`, `{}` and each kept layer's \
         `mlp` and `self_attn`: {known:?}",
        super::HIDDEN,
        super::LAYERS
    )]
    UnexpectedEntries {
        /// The kept layers.
        layers: usize,
        /// The entries it records.
        known: Vec<String>,
    },
    /// A record entry made for a teacher of another shape.
    #[error("the prune record's `{key}` was made for a teacher of shape {recorded:?} there, but this teacher's is {shape:?}")]
    EntryShape {
        /// The entry.
        key: String,
        /// The shape it records.
        recorded: Vec<i64>,
        /// This teacher's.
        shape: Vec<i64>,
    },
    /// A layer entry whose input channels are not the kept hidden channels.
    #[error("the prune record's `{key}` keeps other hidden channels than its `{}`", super::HIDDEN)]
    HiddenDisagrees {
        /// The entry.
        key: String,
    },
    /// A decoder module that records nothing, so cannot be measured.
    #[error("`{path}` of the decoder records nothing: it cannot be measured")]
    NotRecorded {
        /// The module path.
        path: String,
    },
    /// Calibration data without a valid token.
    #[error("the calibration data holds no token: importances need at least one")]
    NoCalibrationToken,
    /// A decoder module called other than once in a calibration forward.
    #[error("a decoder module was not called exactly once in a calibration forward")]
    NotCalledOnce,
}

impl From<DecoderPruneError> for crate::DistillError {
    fn from(error: DecoderPruneError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}
