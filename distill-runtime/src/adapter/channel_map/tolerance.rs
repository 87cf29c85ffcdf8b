//! When two weights count as equal.

use super::ChannelMapError;
use crate::error::Result;

/// The default absolute tolerance: a pruned copy is normally bit-exact; this also accepts copies that
/// went through another device or a float32 round trip of float64 weights.
const DEFAULT_ATOL: f64 = 1e-6;
/// The default relative tolerance (see [`DEFAULT_ATOL`]).
const DEFAULT_RTOL: f64 = 1e-5;

/// How close two weights must be to count as equal: `|t − s| ≤ atol + rtol · |s|`, element by element
/// (`torch.allclose`'s rule, with `s` the teacher value). Exactly equal values always match, infinities
/// included; NaN never does.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance, in `[0, 1)`.
    pub rtol: f64,
}

impl Default for Tolerance {
    /// `atol = 1e-6`, `rtol = 1e-5`: a pruned copy is normally bit-exact; this also accepts copies that
    /// went through another device or a float32 round trip of float64 weights.
    fn default() -> Self {
        Tolerance { atol: DEFAULT_ATOL, rtol: DEFAULT_RTOL }
    }
}

impl Tolerance {
    /// Bit-exact comparison (`atol = rtol = 0`).
    pub const EXACT: Tolerance = Tolerance { atol: 0.0, rtol: 0.0 };

    /// A tolerance with the given absolute and relative parts: `atol` finite and ≥ 0, `rtol` in
    /// `[0, 1)`, checked where the tolerance is used (another is a
    /// [`ChannelMapError::InvalidTolerance`] from the selection adapters' `build` and the mapping
    /// finders).
    pub fn new(atol: f64, rtol: f64) -> Tolerance {
        Tolerance { atol, rtol }
    }

    /// Checks that `atol` is finite and ≥ 0 and `rtol` is in `[0, 1)`: what every use of a tolerance
    /// (the selection adapters' `build`, the mapping finders) checks before comparing any weight.
    ///
    /// # Errors
    /// [`ChannelMapError::InvalidTolerance`] otherwise.
    pub(crate) fn validate(&self) -> Result<()> {
        if !(self.atol.is_finite() && self.atol >= 0.0 && self.rtol.is_finite() && (0.0..1.0).contains(&self.rtol)) {
            return Err(ChannelMapError::InvalidTolerance { atol: self.atol, rtol: self.rtol }.into());
        }
        Ok(())
    }

    #[inline]
    pub(super) fn close(&self, student: f64, teacher: f64) -> bool {
        student == teacher || (student - teacher).abs() <= self.atol + self.rtol * teacher.abs()
    }
}
