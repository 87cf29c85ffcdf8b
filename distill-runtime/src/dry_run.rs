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

/// What would make a student tensor of shape `student` and a teacher tensor of shape `teacher`
/// comparable, as advice for a message; `None` when the shapes differ in more than a width.
pub(crate) fn adapter_hint(student: &[i64], teacher: &[i64]) -> Option<String> {
    if student.len() != teacher.len() || student.is_empty() {
        return None;
    }
    let differing: Vec<usize> = (0..student.len()).filter(|&d| student[d] != teacher[d]).collect();
    let [dim] = differing[..] else {
        return None;
    };
    let (s, t) = (student[dim], teacher[dim]);
    if student.len() == 4 && dim == 1 {
        let pruned = if s < t {
            " — or, when the student is a pruned copy of the teacher, `conv2d_adapter(teacher.…)`, which selects \
             the kept channels"
        } else {
            ""
        };
        Some(format!(
            "they differ in channels ({s} vs {t}): put an adapter on one side, e.g. \
             `fitted_conv1x1_adapter(teacher.…)` in `distill!` or `conv1x1_adapter(path, {t}, {s})` on the teacher \
             tensor in a `Mapping`{pruned}"
        ))
    } else if dim == student.len() - 1 {
        Some(format!(
            "they differ in the last dimension ({s} vs {t}): put an adapter on one side, e.g. \
             `fitted_linear_adapter(teacher.…)` in `distill!` or `linear_adapter(path, {t}, {s})` on the teacher \
             tensor in a `Mapping`"
        ))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::adapter_hint;

    #[test]
    fn hints_name_the_adapter_that_fits_the_differing_dimension() {
        let linear = adapter_hint(&[8, 16, 32], &[8, 16, 64]).unwrap();
        assert!(
            linear.contains("fitted_linear_adapter") && linear.contains("linear_adapter(path, 64, 32)"),
            "{linear}"
        );
        let conv = adapter_hint(&[8, 16, 7, 7], &[8, 64, 7, 7]).unwrap();
        assert!(conv.contains("fitted_conv1x1_adapter") && conv.contains("conv2d_adapter"), "{conv}");
        let wider = adapter_hint(&[8, 64, 7, 7], &[8, 16, 7, 7]).unwrap();
        assert!(!wider.contains("conv2d_adapter(teacher"), "{wider}");
        assert_eq!(adapter_hint(&[8, 16, 7, 7], &[8, 16, 14, 14]), None);
        assert_eq!(adapter_hint(&[8, 10], &[8, 10, 1]), None);
    }
}
