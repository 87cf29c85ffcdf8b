//! What goes wrong when an adapter is built or given a tensor it cannot take.

/// An adapter that cannot be built with the widths given, or an input it cannot take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdapterError {
    /// A learned adapter asked for with no input or no output channel.
    #[error("an adapter needs at least one input and one output channel, got {input} → {output}")]
    EmptyWidth {
        /// Input channels (features) asked for.
        input: i64,
        /// Output channels (features) asked for.
        output: i64,
    },
    /// A selection adapter asked for with no teacher feature to select from.
    #[error("a selection adapter needs at least one teacher feature, got {features}")]
    NoTeacherFeatures {
        /// The teacher feature count given.
        features: i64,
    },
    /// An input whose channel dimension is not the adapter's.
    #[error("the adapter expects an input of shape [N, {channels}, H, W], got {got:?}")]
    InputChannels {
        /// The channels the adapter takes.
        channels: i64,
        /// The input's shape.
        got: Vec<i64>,
    },
    /// An input whose last (feature) dimension is not the adapter's.
    #[error("the {adapter} expects an input of shape [.., {features}], got {got:?}")]
    InputFeatures {
        /// `"adapter"` or `"selection adapter"`.
        adapter: &'static str,
        /// The features the adapter takes.
        features: i64,
        /// The input's shape.
        got: Vec<i64>,
    },
    /// A layer to build an adapter for has an undefined weight.
    #[error("the {role} layer has an undefined weight")]
    UndefinedWeight {
        /// `"teacher"` or `"student"`.
        role: &'static str,
    },
    /// A layer to build an adapter for has a weight without output channels.
    #[error("the {role} layer's weight {shape:?} has no output channels")]
    NoOutputChannels {
        /// `"teacher"` or `"student"`.
        role: &'static str,
        /// Its weight's shape.
        shape: Vec<i64>,
    },
}
