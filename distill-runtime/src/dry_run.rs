//! [`DryRun`]: what a distillation's pairs look like on a sample batch, before any training step.

use std::fmt;

use crate::error::{DistillError, Result};

/// The shapes of every pair on a sample batch, from the `dry_run` of a `distill!` model or of a
/// `DistillModel`. A `distill!` model's dry run also checks each pair against its criterion and fits
/// its fitted adapters; every problem is reported at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DryRun {
    /// One per pair, in declaration (insertion) order.
    pub pairs: Vec<PairShapes>,
}

impl DryRun {
    /// The report of every pair, or [`DistillError::DryRun`] listing every pair that does not fit.
    pub(crate) fn from_pairs(pairs: impl IntoIterator<Item = Result<PairShapes>>) -> Result<DryRun> {
        let (shapes, problems): (Vec<_>, Vec<_>) = pairs.into_iter().partition(Result::is_ok);
        if problems.is_empty() {
            Ok(DryRun { pairs: shapes.into_iter().filter_map(Result::ok).collect() })
        } else {
            Err(DistillError::DryRun { problems: problems.into_iter().filter_map(Result::err).collect() })
        }
    }
}

/// One pair's tensors on the sample batch (after its adapters, in a `distill!` model).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairShapes {
    /// The pair's label (`distill!`) or `student path => teacher path` (`Mapping`).
    pub label: String,
    /// The student tensor's shape.
    pub student: Vec<i64>,
    /// The teacher tensor's shape.
    pub teacher: Vec<i64>,
}

impl fmt::Display for DryRun {
    /// One line per pair: `f0: student [8, 16, 14, 14], teacher [8, 16, 14, 14]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.pairs.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}: student {:?}, teacher {:?}", pair.label, pair.student, pair.teacher)?;
        }
        Ok(())
    }
}
