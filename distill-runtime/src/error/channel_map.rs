//! What goes wrong when the channels a pruned layer kept are recovered from the weights, or are
//! given as a record: weights that cannot be compared, a mapping that the weights do not decide, a
//! kept-channel index that is not one of the layer's.

use tch::Kind;

/// Why a channel mapping between a layer and its pruned copy could not be found or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelMapError {
    /// A pruned student is wider than the teacher it was pruned from.
    #[error("cannot map {what}: the student has {student_size} but its teacher only {teacher_size}; a pruned copy is never wider than the layer it was pruned from")]
    StudentWider {
        /// What was compared (`"output channels"`, `"input channels"`, `"kernel size"`…).
        what: &'static str,
        /// Size on the teacher's side.
        teacher_size: i64,
        /// Size on the student's side.
        student_size: i64,
    },
    /// No selection of teacher channels reproduces the student weights.
    #[error(
        "no channel mapping: {what} {channel} of the student matches no unused teacher channel within tolerance \
         {tolerance:e}; a layer trained or changed after pruning no longer shows in its weights which channels it \
         kept: {}, or pass a looser tolerance (`conv2d_adapter(…).tolerance(…)`)",
        KEPT_CHANNELS_ADVICE
    )]
    NoChannelMapping {
        /// `"output channel"` or `"input channel"`.
        what: &'static str,
        /// Index on the student side that found no match.
        channel: i64,
        /// Absolute tolerance used for the comparison.
        tolerance: f64,
    },
    /// Several selections of teacher channels reproduce the student weights, and they compute different
    /// outputs: the weights cannot tell which channels the student kept.
    #[error(
        "ambiguous channel mapping: {what} {channel} of the student could have been taken from teacher channel \
         {first} or {second}, which compute different outputs (both fit within tolerance {tolerance:e}); the \
         weights cannot tell which was kept: {}{}",
        KEPT_CHANNELS_ADVICE,
        tighter_tolerance_advice(*tolerance)
    )]
    Ambiguous {
        /// `"output channel"` or `"input channel"`.
        what: &'static str,
        /// Index on the student side.
        channel: i64,
        /// A teacher channel it fits in one complete mapping.
        first: i64,
        /// Another teacher channel it fits in another complete mapping.
        second: i64,
        /// Absolute tolerance used for the comparison.
        tolerance: f64,
    },
    /// The channel-mapping search used up its work budget before deciding: many teacher channels are
    /// alike within the tolerance.
    #[error(
        "undecided channel mapping: the search stopped after {work} steps without deciding which teacher channels \
         the student kept (many channels are alike within tolerance {tolerance:e}): {}",
        KEPT_CHANNELS_ADVICE
    )]
    Undecided {
        /// Units of work spent.
        work: usize,
        /// Absolute tolerance used for the comparison.
        tolerance: f64,
    },
    /// A kept-channel index is not a channel of the layer being pruned.
    #[error("{what} index {index} is out of range: the layer has {channels}")]
    ChannelOutOfRange {
        /// Which indices (`"output channel"`, `"input channel"`…).
        what: &'static str,
        /// The index given.
        index: i64,
        /// How many such channels the layer has.
        channels: i64,
    },
    /// A kept-channel index was given twice.
    #[error("{what} index {index} is kept twice")]
    DuplicateChannel {
        /// Which indices (`"output channel"`, `"input channel"`…).
        what: &'static str,
        /// The repeated index.
        index: i64,
    },
    /// No channel of a kind was kept.
    #[error("cannot keep zero {what}s")]
    NoneKept {
        /// Which channels (`"output channel"`, `"input feature"`…).
        what: &'static str,
    },
    /// A weight to compare is undefined.
    #[error("the {role} weight is an undefined tensor")]
    UndefinedWeight {
        /// `"teacher"` or `"student"`.
        role: &'static str,
    },
    /// The weights of a conv2d mapping are not both 4-D.
    #[error(
        "conv2d weights must be 4-D [out, in, kh, kw]: the teacher is {teacher_shape:?}, the student {student_shape:?}"
    )]
    NotConv2d {
        /// The teacher weight's shape.
        teacher_shape: Vec<i64>,
        /// The student weight's shape.
        student_shape: Vec<i64>,
    },
    /// A conv given to a conv2d adapter does not have a 4-D weight.
    #[error("the {role} conv's weight must be 4-D [out, in, kh, kw], got {shape:?}")]
    ConvNot4d {
        /// `"teacher"` or `"student"`.
        role: &'static str,
        /// Its weight's shape (empty when undefined).
        shape: Vec<i64>,
    },
    /// The two weights are not laid out `[out, in, …]` with the same kernel size.
    #[error(
        "cannot map channels between weights of shapes {teacher_shape:?} (teacher) and {student_shape:?} (student): \
         both must be [out, in, …] with the same kernel size"
    )]
    IncompatibleShapes {
        /// The teacher weight's shape.
        teacher_shape: Vec<i64>,
        /// The student weight's shape.
        student_shape: Vec<i64>,
    },
    /// A weight has no elements.
    #[error("cannot map channels of empty weights: the teacher is {teacher_shape:?}, the student {student_shape:?}")]
    EmptyWeights {
        /// The teacher weight's shape.
        teacher_shape: Vec<i64>,
        /// The student weight's shape.
        student_shape: Vec<i64>,
    },
    /// The teacher has more output × input channels than the search indexes.
    #[error("cannot map the channels of a weight of shape {shape:?}: too many channels")]
    TooManyChannels {
        /// The teacher weight's shape.
        shape: Vec<i64>,
    },
    /// A bias is not one value per output channel.
    #[error("the {role} bias has shape {shape:?}, expected [{channels}] (one per output channel)")]
    BiasShape {
        /// `"teacher"` or `"student"`.
        role: &'static str,
        /// The bias's shape.
        shape: Vec<i64>,
        /// The layer's output channels.
        channels: i64,
    },
    /// Complex weights, which have no order to compare by.
    #[error("cannot map channels of {kind:?} weights")]
    ComplexWeights {
        /// The weights' kind.
        kind: Kind,
    },
    /// A tolerance outside its domain.
    #[error("invalid tolerance (atol {atol}, rtol {rtol}): atol must be finite and ≥ 0, rtol in [0, 1)")]
    InvalidTolerance {
        /// The absolute part given.
        atol: f64,
        /// The relative part given.
        rtol: f64,
    },
    /// A selection of channels that does not fit the adapter being built.
    #[error("a selection of channels {picked:?} cannot fill a side of {count} channels out of {width}")]
    SelectionDoesNotFit {
        /// The channels picked.
        picked: Vec<i64>,
        /// How many channels the side has.
        count: i64,
        /// How many channels they are picked from.
        width: i64,
    },
    /// The source shape of a pruning record is not `[out, in, …]` with positive sizes.
    #[error("a pruned layer's source weight must be [out, in, …] with positive sizes, got {shape:?}")]
    RecordSourceShape {
        /// The shape given.
        shape: Vec<i64>,
    },
    /// A pruning record used with another source layer than the one it was pruned from.
    #[error(
        "the pruned layer was pruned from a layer of weight shape {recorded:?}, but the source layer given has \
         weight shape {given:?}"
    )]
    RecordSourceMismatch {
        /// The source weight shape in the record.
        recorded: Vec<i64>,
        /// The source layer's weight shape.
        given: Vec<i64>,
    },
    /// A pruning record attached to, or used with, a layer of another shape than the pruned copy's.
    #[error(
        "the pruning record describes a pruned weight of shape {recorded:?}, but the layer's weight has shape \
         {given:?}"
    )]
    RecordPrunedMismatch {
        /// The pruned weight shape the record describes.
        recorded: Vec<i64>,
        /// The layer's weight shape.
        given: Vec<i64>,
    },
}

/// How to give the adapters the kept channels instead of matching weights.
const KEPT_CHANNELS_ADVICE: &str = "build the adapter from the pruning's record of the kept channels (a conv \
     returned by `prune_conv2d` carries it, `Conv::set_pruned_from` attaches a saved `PruneRecord` entry, \
     `Conv2DAdapter::from_kept` takes one)";

fn tighter_tolerance_advice(tolerance: f64) -> &'static str {
    if tolerance > 0.0 {
        "; if the two differ only slightly, a tighter tolerance (`conv2d_adapter(…).tolerance(…)`) may separate them"
    } else {
        ""
    }
}
