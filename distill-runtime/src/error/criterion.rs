//! What goes wrong when a criterion, or one of its teacher encodings, is given arguments it cannot
//! take: a parameter outside its domain, a tensor of the wrong shape, kind or device, labels or a
//! token mask that do not fit the logits, a packed encoding that is not one.

use tch::{Device, Kind};

/// An argument a criterion or a teacher encoding cannot take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CriterionError {
    /// A real parameter (a temperature, a weight…) outside its domain.
    #[error("{name} must be finite and {} {bound}, got {value}", if *strict { ">" } else { "≥" })]
    Parameter {
        /// The parameter, as the message names it (`"KlDiv's temperature"`).
        name: String,
        /// The value given.
        value: f64,
        /// The bound it must exceed (or reach, when not `strict`).
        bound: f64,
        /// Whether the bound itself is outside the domain.
        strict: bool,
    },
    /// A real parameter that must be finite is not.
    #[error("{name} must be finite, got {value}")]
    NotFinite {
        /// The parameter, as the message names it.
        name: String,
        /// The value given.
        value: f64,
    },
    /// A power that is not a whole number, applied to a tensor holding negative values: their
    /// power has no real value (NaN).
    #[error(
        "{name} = {p} is not a whole number, and {tensor} holds negative values, whose power {p} is NaN: use a \
         whole-number power, or non-negative features (e.g. taken after a ReLU)"
    )]
    FractionalPowerOfNegative {
        /// The power, as the message names it (`"AttentionTransfer's p"`).
        name: &'static str,
        /// Its value.
        p: f64,
        /// The tensor with negative values (`"the student tensor"`).
        tensor: &'static str,
    },
    /// A count (of samples, of tokens per chunk, of top classes) below 1.
    #[error("{what} must be ≥ 1, got {got}")]
    CountBelowOne {
        /// The count, as the message names it (`"the sample count"`).
        what: &'static str,
        /// The count given.
        got: i64,
    },
    /// The `k` of a top-k encoding is not in `1..=vocab`.
    #[error("k must be in 1..={vocab} (the vocabulary), got {k}")]
    TopKOutOfRange {
        /// The `k` asked for, or kept by the teacher.
        k: i64,
        /// The number of classes (tokens of the vocabulary).
        vocab: i64,
    },
    /// Logits to encode in top-k form with fewer classes than the `k` to keep.
    #[error("cannot encode logits {shape:?} in top-k form: k = {k} is more than the {classes} classes")]
    TopKExceedsClasses {
        /// The logits' shape.
        shape: Vec<i64>,
        /// The `k` asked for.
        k: i64,
        /// The logits' classes.
        classes: i64,
    },
    /// A tensor handed to a criterion or an encoder is undefined.
    #[error("{tensor} is undefined")]
    Undefined {
        /// Which tensor (`"the token mask"`).
        tensor: String,
    },
    /// Logits that must be floating-point are not.
    #[error("{tensor} need a floating-point kind, got {kind:?}")]
    NotFloatingPoint {
        /// Which logits (`"the student logits"`).
        tensor: &'static str,
        /// Their kind.
        kind: Kind,
    },
    /// Logits without a last (vocabulary) dimension: a 0-d tensor.
    #[error("{tensor} need a vocabulary dimension")]
    NoVocabularyDimension {
        /// Which logits (`"the logits to encode"`).
        tensor: &'static str,
    },
    /// Logits of a shape the operation does not take.
    #[error("the logits {shape:?} need 2 dimensions {expected}")]
    LogitsShape {
        /// Their shape.
        shape: Vec<i64>,
        /// The dimensions the operation takes (`"(N, C)"`).
        expected: &'static str,
    },
    /// More classes than a floating-point kind holds as exact indices.
    #[error("{kind:?} holds class indices exactly only up to {limit} classes, got {classes}")]
    IndicesNotExact {
        /// The kind that would hold the indices.
        kind: Kind,
        /// How many classes it holds exactly.
        limit: i64,
        /// How many classes (or the largest token id plus one) there are.
        classes: i64,
    },
    /// A teacher encoding cannot be packed in the kind of its log-probabilities.
    #[error("a packed {encoding} needs f32 or f64 log-probabilities, got {kind:?}")]
    PackKind {
        /// Which encoding.
        encoding: Packed,
        /// The log-probabilities' kind.
        kind: Kind,
    },
    /// A packed teacher encoding that is not what its `f_pack`/`f_encode` writes.
    #[error("invalid packed {encoding}: {problem}")]
    InvalidPacked {
        /// Which encoding.
        encoding: Packed,
        /// What is wrong with it.
        problem: PackedProblem,
    },
    /// A teacher encoding whose shape does not fit the student's logits.
    #[error("the teacher's {encoding} {teacher:?} does not fit student logits {student:?}")]
    TeacherDoesNotFit {
        /// Which encoding.
        encoding: Packed,
        /// Shape of the encoding's token ids.
        teacher: Vec<i64>,
        /// Shape of the student's logits.
        student: Vec<i64>,
    },
    /// A top-k tail whose parts disagree: its log-probabilities are not of the shape of its ids
    /// (`[…, k]`), or its tail not of that shape without `k`.
    #[error(
        "a top-k tail needs log_probs of the shape of its ids [..., k] and a tail of that shape without k, got ids \
         {ids:?}, log_probs {log_probs:?} and tail {tail:?}"
    )]
    TopKTailParts {
        /// Shape of the token ids.
        ids: Vec<i64>,
        /// Shape of the log-probabilities.
        log_probs: Vec<i64>,
        /// Shape of the tail.
        tail: Vec<i64>,
    },
    /// Teacher logits of another shape than the student's.
    #[error("the teacher logits need {expected:?}, got {got:?}")]
    TeacherShape {
        /// The shape they need.
        expected: Vec<i64>,
        /// Their shape.
        got: Vec<i64>,
    },
    /// Labels that are not integers.
    #[error("labels need an integer kind, got {kind:?}")]
    LabelKind {
        /// Their kind.
        kind: Kind,
    },
    /// Labels of another shape than the tokens'.
    #[error("the labels need the token shape {expected:?}, got {got:?}")]
    LabelShape {
        /// The tokens' shape.
        expected: Vec<i64>,
        /// The labels' shape.
        got: Vec<i64>,
    },
    /// A label outside the vocabulary that is not the ignored label.
    #[error("a label is outside 0..{vocab} (and not {ignore_index})")]
    LabelOutOfRange {
        /// The vocabulary's size.
        vocab: i64,
        /// The label that marks a token to ignore.
        ignore_index: i64,
    },
    /// A token mask that is not 2-D `[B, T]`.
    #[error("the token mask needs the shape [B, T], got {shape:?}")]
    MaskNot2d {
        /// The mask's shape.
        shape: Vec<i64>,
    },
    /// A token mask of another shape than the tokens'.
    #[error("the token mask needs the shape of the tokens {tokens:?}, got {mask:?}")]
    MaskShape {
        /// The mask's shape.
        mask: Vec<i64>,
        /// The tokens' shape.
        tokens: Vec<i64>,
    },
    /// Two tensors that must share one floating-point kind do not.
    #[error("{what} need one floating-point kind, got {first:?} and {second:?}")]
    KindMismatch {
        /// The two tensors (`"the student and teacher tensors"`).
        what: &'static str,
        /// The first one's kind.
        first: Kind,
        /// The second one's kind.
        second: Kind,
    },
    /// Two tensors that must be on one device are not.
    #[error("{what} need one device, got {first:?} and {second:?}")]
    DeviceMismatch {
        /// The two tensors (`"the student and teacher tensors"`).
        what: &'static str,
        /// The first one's device.
        first: Device,
        /// The second one's device.
        second: Device,
    },
    /// The hidden states and the output weight of a chunked loss do not fit each other.
    #[error("a chunked loss needs hidden states [B, T, H] and a weight [V, H], got {hidden:?} and {weight:?}")]
    ChunkedShapes {
        /// The hidden states' shape.
        hidden: Vec<i64>,
        /// The weight's shape.
        weight: Vec<i64>,
    },
    /// A teacher's top-k ids outside the student's vocabulary: a teacher of another vocabulary.
    #[error(
        "the teacher's top-k ids run from {lowest} to {highest}, outside the student's vocabulary 0..{vocab}: the \
         student and the teacher need one vocabulary (one tokenizer)"
    )]
    TeacherIdsOutOfRange {
        /// The lowest id.
        lowest: i64,
        /// The highest id.
        highest: i64,
        /// The student's vocabulary (the last dimension of its logits).
        vocab: i64,
    },
    /// Logits to encode with NaN or +∞, or a token whose every logit is −∞: its distribution is
    /// undefined, and encoded it would read as a loss of 0.
    #[error(
        "{tokens} token(s) of the logits to encode have no distribution (a NaN or +inf logit, or every logit \
         -inf): the teacher's output is broken there"
    )]
    NoDistribution {
        /// How many tokens.
        tokens: i64,
    },
    /// The fused loss's gradient, multiplied by the logits, is not finite even with the
    /// non-finite logits left out, while the loss itself is finite.
    #[error("the loss's gradient times the logits overflows: the fused loss cannot carry it exactly")]
    GradientOverflow,
    /// The fused loss itself is not finite, so it has no gradient to carry: `+inf` where the
    /// student's logits rule out (at −inf) a token or the whole tail that the teacher gives mass,
    /// NaN where a counted token's logits hold NaN.
    #[error(
        "the loss is {value}: the student's logits rule out (-inf) a token or the whole tail that the teacher \
         gives mass, or hold NaN at a counted token, so the loss has no finite gradient to carry"
    )]
    LossNotFinite {
        /// The loss's value (`+inf` or NaN).
        value: f64,
    },
    /// A teacher encoding read at another temperature than the one it was encoded at: its
    /// log-probabilities are those of another distribution, and the loss would be wrong.
    #[error(
        "the teacher's {encoding} was encoded at temperature {encoded}, but the criterion reads it at temperature \
         {criterion}: encode the teacher at the criterion's temperature"
    )]
    TemperatureMismatch {
        /// Which encoding.
        encoding: Packed,
        /// The temperature it was encoded at.
        encoded: f64,
        /// The criterion's temperature.
        criterion: f64,
    },
    /// A loss computed in a wider kind than its inputs' whose finite value is past the largest
    /// number of their kind (65 504 for f16): returned in that kind it would read as infinite.
    #[error(
        "the loss is {value}, finite, but does not fit the inputs' kind {kind:?}: returned in it, it would read as \
         infinite; pass the inputs in f32 or f64"
    )]
    LossOutOfRange {
        /// The loss, as computed in the wider kind.
        value: f64,
        /// The inputs' kind.
        kind: Kind,
    },
}

/// A teacher encoding stored as one tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Packed {
    /// `TopKLogits`: `(N, 2, k)` log-probabilities and class indices.
    TopK,
    /// `TopKTail`: `[…, 2k + 1]` log-probabilities, token ids and the tail.
    TopKTail,
    /// `SampledLogits`: `[…, 3n]` log-probabilities, token ids and weights.
    Sampled,
}

impl std::fmt::Display for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Packed::TopK => "top-k tensor",
            Packed::TopKTail => "top-k tail",
            Packed::Sampled => "sampled encoding",
        })
    }
}

/// What is wrong with a packed teacher encoding.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PackedProblem {
    /// The tensor is undefined.
    #[error("it is undefined")]
    Undefined,
    /// Its shape is not the encoding's.
    #[error("it needs the shape {expected}, got {got:?}")]
    Shape {
        /// The encoding's shape.
        expected: &'static str,
        /// The tensor's shape.
        got: Vec<i64>,
    },
    /// It keeps more classes per sample than there are.
    #[error("it keeps k = {k} classes per sample, more than the {classes} classes")]
    TooManyClasses {
        /// Classes kept per sample.
        k: i64,
        /// Classes in all.
        classes: i64,
    },
    /// Its kind is not one the encoding is stored in.
    #[error("it needs {expected}, got {kind:?}")]
    Kind {
        /// The kinds accepted (`"f32 or f64"`).
        expected: &'static str,
        /// Its kind.
        kind: Kind,
    },
    /// Its kind does not hold every class index exactly.
    #[error("{kind:?} holds class indices exactly only up to {limit} classes, got {classes}")]
    IndicesNotExact {
        /// Its kind.
        kind: Kind,
        /// How many classes the kind holds exactly.
        limit: i64,
        /// How many classes there are.
        classes: i64,
    },
    /// Its log-probabilities hold NaN or +∞.
    #[error("its log-probabilities hold NaN or +inf")]
    NotFinite,
    /// Its log-probabilities are not all ≤ 0.
    #[error("its log-probabilities are not all ≤ 0")]
    PositiveLogProbability,
    /// Its probabilities sum to more than 1 in a sample: logits stored where log-probabilities belong.
    #[error("its probabilities sum to {mass} in a sample, more than 1: row 0 must hold log-probabilities, not logits")]
    MassAboveOne {
        /// The largest sum over a sample.
        mass: f64,
    },
    /// Its importance weights are not all finite and ≥ 0.
    #[error("its weights are not all finite and ≥ 0")]
    InvalidWeights,
    /// Its class indices or token ids are not all whole numbers.
    #[error("its {ids} are not all whole numbers")]
    FractionalIds {
        /// `"class indices"` or `"token ids"`.
        ids: &'static str,
    },
    /// Its class indices or token ids fall outside the vocabulary.
    #[error("its {ids} run from {lowest} to {highest}, outside 0..{limit}")]
    IdsOutOfRange {
        /// `"class indices"` or `"token ids"`.
        ids: &'static str,
        /// The smallest one.
        lowest: f64,
        /// The largest one.
        highest: f64,
        /// The number of classes.
        limit: i64,
    },
    /// A sample holds one class index twice.
    #[error("a sample holds the same class index twice")]
    RepeatedIndex,
}
