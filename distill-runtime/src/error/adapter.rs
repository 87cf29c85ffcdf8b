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
    /// A fitted adapter sized to an empty width.
    #[error("`{constructor}` cannot map {input} to {output} features")]
    FittedEmpty {
        /// The fitted adapter's constructor.
        constructor: &'static str,
        /// The input width met.
        input: i64,
        /// The output width met.
        output: i64,
    },
    /// A fitted adapter met other widths than those it was fitted to.
    #[error(
        "`{constructor}` was fitted to {fitted_input} → {fitted_output} features and now meets {input} → {output}"
    )]
    Refitted {
        /// The fitted adapter's constructor.
        constructor: &'static str,
        /// The input width it was fitted to.
        fitted_input: i64,
        /// The output width it was fitted to.
        fitted_output: i64,
        /// The input width met now.
        input: i64,
        /// The output width met now.
        output: i64,
    },
    /// A fitted adapter run before a dry run sized it.
    #[error(
        "`{constructor}` is not fitted yet: run the distillation's `dry_run` on a sample batch first (`dry_run_cached` \
         with a cached batch, for a distillation over a teacher cache)"
    )]
    NotFitted {
        /// The fitted adapter's constructor.
        constructor: &'static str,
    },
    /// A fitted adapter given a tensor of another width than it was fitted to.
    #[error("`{constructor}` was fitted to {features} input features and got a tensor of shape {got:?}")]
    FittedInput {
        /// The fitted adapter's constructor.
        constructor: &'static str,
        /// The input width it was fitted to.
        features: i64,
        /// The tensor's shape.
        got: Vec<i64>,
    },
    /// A pair whose tensors have no axis the fitted adapter maps.
    #[error("`{constructor}` maps {maps}, and the pair's tensors are {input:?} and {other:?}")]
    FittedShapes {
        /// The fitted adapter's constructor.
        constructor: &'static str,
        /// What it maps, in words.
        maps: &'static str,
        /// The shape of the tensor it takes.
        input: Vec<i64>,
        /// The shape of the other side's tensor.
        other: Vec<i64>,
    },
    /// A layer adapter named in a configuration for a side that is a TorchScript model, which has
    /// no layers to read.
    #[error(
        "`{constructor}` needs the {side}'s `distill::nn::{wanted}` layer, and the {side} is a TorchScript model: \
         use a width-given or fitted adapter"
    )]
    NoLayers {
        /// The adapter's constructor.
        constructor: String,
        /// The side it reads.
        side: crate::point::Side,
        /// The layer type it needs.
        wanted: &'static str,
    },
    /// A layer adapter named in a configuration for a module of another type.
    #[error("`{constructor}` needs a `distill::nn::{wanted}` at the {side}'s `{path}`, which is a `{found}`")]
    WrongLayer {
        /// The adapter's constructor.
        constructor: String,
        /// The side it reads.
        side: crate::point::Side,
        /// The layer type it needs.
        wanted: &'static str,
        /// The module's path (`(model itself)` for the root).
        path: String,
        /// The module's type.
        found: &'static str,
    },
}
