//! Pooling layers over `(N, C, H, W)` inputs.

use tch::nn::Module;
use tch::Tensor;

use super::leaf::tappable_leaf;
use crate::nn::capture::{record, TapId};

/// 2-D max pooling, as `torch.nn.MaxPool2d(kernel_size, stride)` (stride defaults to the kernel).
#[derive(Debug)]
pub struct MaxPool2D {
    /// Window size.
    pub kernel_size: [i64; 2],
    /// Step between windows.
    pub stride: [i64; 2],
    /// Implicit negative-infinity padding on both sides.
    pub padding: [i64; 2],
    /// Spacing between window elements.
    pub dilation: [i64; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    tap: TapId,
}

tappable_leaf!(MaxPool2D);

impl Module for MaxPool2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| {
            xs.max_pool2d(self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        })
    }
}

/// Square max pooling with stride equal to the kernel size.
pub fn max_pool2d(kernel_size: i64) -> MaxPool2D {
    MaxPool2D {
        kernel_size: [kernel_size; 2],
        stride: [kernel_size; 2],
        padding: [0; 2],
        dilation: [1; 2],
        ceil_mode: false,
        tap: TapId::fresh(),
    }
}

/// 2-D average pooling, as `torch.nn.AvgPool2d(kernel_size, stride)` (stride defaults to the kernel).
#[derive(Debug)]
pub struct AvgPool2D {
    /// Window size.
    pub kernel_size: [i64; 2],
    /// Step between windows.
    pub stride: [i64; 2],
    /// Implicit zero padding on both sides.
    pub padding: [i64; 2],
    /// Round the output size up instead of down.
    pub ceil_mode: bool,
    /// Count padded zeros in the average.
    pub count_include_pad: bool,
    tap: TapId,
}

tappable_leaf!(AvgPool2D);

impl Module for AvgPool2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| {
            xs.avg_pool2d(self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad, None)
        })
    }
}

/// Square average pooling with stride equal to the kernel size.
pub fn avg_pool2d(kernel_size: i64) -> AvgPool2D {
    AvgPool2D {
        kernel_size: [kernel_size; 2],
        stride: [kernel_size; 2],
        padding: [0; 2],
        ceil_mode: false,
        count_include_pad: true,
        tap: TapId::fresh(),
    }
}

/// Adaptive average pooling to a fixed output size, as `torch.nn.AdaptiveAvgPool2d`; `[1, 1]` is
/// global average pooling.
#[derive(Debug)]
pub struct AdaptiveAvgPool2D {
    /// Output height and width.
    pub output_size: [i64; 2],
    tap: TapId,
}

tappable_leaf!(AdaptiveAvgPool2D);

impl Module for AdaptiveAvgPool2D {
    fn forward(&self, xs: &Tensor) -> Tensor {
        record(self.tap, xs, |xs| xs.adaptive_avg_pool2d(self.output_size))
    }
}

/// Adaptive average pooling to `output_size` (height, width).
pub fn adaptive_avg_pool2d(output_size: [i64; 2]) -> AdaptiveAvgPool2D {
    AdaptiveAvgPool2D { output_size, tap: TapId::fresh() }
}
