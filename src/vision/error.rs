//! What goes wrong when a vision model is built with options it does not take.

/// A vision model's option outside what the architecture takes.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum VisionError {
    /// A count (classes, input channels, the rounding of widths) below 1.
    #[error("{what} must be at least 1, not {value}")]
    BelowOne {
        /// The option (`"num_classes"`).
        what: &'static str,
        /// The value given.
        value: i64,
    },
    /// A ResNet stage without a block.
    #[error("ResNet stage layer{stage} has no block")]
    EmptyStage {
        /// The stage, from 1 (`layer1`…`layer4`).
        stage: usize,
    },
    /// A MobileNetV2 width multiplier that is not a positive finite number.
    #[error("width_mult must be a positive number, not {value}")]
    WidthMultiplier {
        /// The value given.
        value: f64,
    },
    /// Options whose widths, or the element count of a weight they give, do not fit in `i64`: a
    /// `width_mult`, `round_nearest`, `in_channels` or `num_classes` far past any model that fits in
    /// memory.
    #[error(
        "the {what} of `{layer}` overflows a 64-bit count: the options (width_mult, round_nearest, in_channels, \
         num_classes) are far past any model that fits in memory"
    )]
    SizeOverflow {
        /// The module (`"features.3.conv.1.0"`).
        layer: String,
        /// `"width"` or `"weight's element count"`.
        what: &'static str,
    },
    /// A dropout probability outside `[0, 1]`.
    #[error("dropout must be in [0, 1], not {value}")]
    DropoutOutOfRange {
        /// The value given.
        value: f64,
    },
}

impl From<VisionError> for crate::DistillError {
    fn from(error: VisionError) -> Self {
        crate::DistillError::Vision(Box::new(error))
    }
}
