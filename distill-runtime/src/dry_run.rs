//! [`DryRun`]: what a distillation's pairs look like on a sample batch, before any training step.

use std::fmt;

use crate::error::{DistillError, Result};

/// The shapes of every pair on a sample batch, from the `dry_run` of a [`Distillation`](crate::Distillation)
/// (a `distill!` model's, a configuration's) or of a `DistillModel`. The dry run checks each pair with a criterion against it and fits
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

/// One pair's tensors on the sample batch: as captured, and as the criterion sees them after the
/// pair's adapters (a `distill!` model's or a config's; a `Mapping`'s payloads are the user's to
/// apply, so there both are the captured shapes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PairShapes {
    /// The pair's label (`distill!`) or `student path => teacher path` (`Mapping`).
    pub label: String,
    /// The student tensor's shape after the student-side adapter.
    pub student: Vec<i64>,
    /// The teacher tensor's shape after the teacher-side adapter.
    pub teacher: Vec<i64>,
    /// The student endpoint's shape as captured, before any adapter.
    pub student_raw: Vec<i64>,
    /// The teacher endpoint's shape as captured, before any adapter.
    pub teacher_raw: Vec<i64>,
}

impl fmt::Display for DryRun {
    /// One line per pair: `f0: student [8, 16, 14, 14], teacher [8, 16, 14, 14]`; a side whose
    /// adapter changes the shape shows both, `student [8, 6, 14, 14] → [8, 16, 14, 14]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, pair) in self.pairs.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(
                f,
                "{}: student {}, teacher {}",
                pair.label,
                Shapes(&pair.student_raw, &pair.student),
                Shapes(&pair.teacher_raw, &pair.teacher)
            )?;
        }
        Ok(())
    }
}

/// A side's shapes in the report: `raw → adapted` when the adapter changed it.
struct Shapes<'a>(&'a [i64], &'a [i64]);

impl fmt::Display for Shapes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shapes(raw, adapted) if raw == adapted => write!(f, "{adapted:?}"),
            Shapes(raw, adapted) => write!(f, "{raw:?} → {adapted:?}"),
        }
    }
}
