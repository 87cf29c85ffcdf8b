//! What the criteria check before computing: parameters, shapes, targets and tensor kinds, each with
//! a reason a user can act on.

use tch::{Kind, Tensor};

use super::Criterion;
use crate::error::{CriterionError, DistillError, Result};

/// Checks `criterion`'s parameters ([`Criterion::validate`]) and that it accepts a pair with these
/// shapes ([`Criterion::check_shapes`]); errors name `pair` (empty for a direct call).
///
/// # Errors
/// [`DistillError::InvalidCriterion`], then [`DistillError::ShapeMismatch`], with the criterion's
/// reason.
pub(crate) fn check_pair<C: Criterion + ?Sized>(
    criterion: &C,
    pair: &str,
    student: &[i64],
    teacher: &[i64],
) -> Result<()> {
    criterion.validate().map_err(|reason| DistillError::InvalidCriterion { pair: pair.to_owned(), reason })?;
    criterion.check_shapes(student, teacher).map_err(|reason| DistillError::ShapeMismatch {
        pair: pair.to_owned(),
        student: student.to_vec(),
        teacher: teacher.to_vec(),
        reason,
    })
}

/// Everything [`Criterion::f_loss_with_targets`] checks before computing: both tensors defined,
/// [`check_pair`], and the targets ([`Criterion::check_targets`]).
pub(super) fn check_call<C: Criterion + ?Sized>(
    criterion: &C,
    student: &Tensor,
    teacher: &Tensor,
    targets: Option<&Tensor>,
) -> Result<()> {
    let (s, t) = (shape(student, "student")?, shape(teacher, "teacher")?);
    check_pair(criterion, "", &s, &t)?;
    if let Some(targets) = targets {
        if !targets.defined() {
            return Err(DistillError::InvalidTargets {
                pair: String::new(),
                reason: "the targets are undefined".into(),
            });
        }
        criterion
            .check_targets(&s, targets)
            .map_err(|reason| DistillError::InvalidTargets { pair: String::new(), reason })?;
    }
    Ok(())
}

/// [`check_call`], plus what the catalogue's formulas need of the tensors: one floating-point kind
/// and one device for both.
pub(super) fn check_catalogue_call<C: Criterion + ?Sized>(
    criterion: &C,
    student: &Tensor,
    teacher: &Tensor,
    targets: Option<&Tensor>,
) -> Result<()> {
    check_call(criterion, student, teacher, targets)?;
    let (s, t) = (student.f_kind()?, teacher.f_kind()?);
    if s != t || !matches!(s, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
        return Err(
            CriterionError::KindMismatch { what: "the student and teacher tensors", first: s, second: t }.into()
        );
    }
    check_same_device(student, teacher)
}

/// [`check_call`], plus one device for both tensors: for criteria whose teacher tensor is an
/// encoding (ids, log-probabilities) rather than values of the student's kind.
pub(super) fn check_encoded_call<C: Criterion + ?Sized>(
    criterion: &C,
    student: &Tensor,
    teacher: &Tensor,
    targets: Option<&Tensor>,
) -> Result<()> {
    check_call(criterion, student, teacher, targets)?;
    check_same_device(student, teacher)
}

fn check_same_device(student: &Tensor, teacher: &Tensor) -> Result<()> {
    if student.device() != teacher.device() {
        return Err(CriterionError::DeviceMismatch {
            what: "the student and teacher tensors",
            first: student.device(),
            second: teacher.device(),
        }
        .into());
    }
    Ok(())
}

/// `err` with the pair's label filled in, for an error of a criterion called directly.
pub(crate) fn name_pair(err: DistillError, label: &str) -> DistillError {
    match err {
        DistillError::ShapeMismatch { pair, student, teacher, reason } if pair.is_empty() => {
            DistillError::ShapeMismatch { pair: label.to_owned(), student, teacher, reason }
        }
        DistillError::InvalidCriterion { pair, reason } if pair.is_empty() => {
            DistillError::InvalidCriterion { pair: label.to_owned(), reason }
        }
        DistillError::InvalidTargets { pair, reason } if pair.is_empty() => {
            DistillError::InvalidTargets { pair: label.to_owned(), reason }
        }
        DistillError::MissingStep { pair } if pair.is_empty() => DistillError::MissingStep { pair: label.to_owned() },
        other => other,
    }
}

fn shape(tensor: &Tensor, side: &str) -> Result<Vec<i64>> {
    if !tensor.defined() {
        return Err(CriterionError::Undefined { tensor: format!("the {side} tensor given to the criterion") }.into());
    }
    Ok(tensor.size())
}

/// Equal shapes.
pub(super) fn equal(student: &[i64], teacher: &[i64]) -> Result<(), String> {
    if student != teacher {
        return Err("it needs equal shapes".into());
    }
    Ok(())
}

/// Equal shapes with at least one element (the mean over nothing is NaN).
pub(super) fn equal_non_empty(student: &[i64], teacher: &[i64]) -> Result<(), String> {
    equal(student, teacher)?;
    if student.contains(&0) {
        return Err("the tensors are empty".into());
    }
    Ok(())
}

/// Equal, non-empty shapes with a class (or channel) dimension: `(N, C, …)`.
pub(super) fn equal_with_classes(student: &[i64], teacher: &[i64]) -> Result<(), String> {
    equal_non_empty(student, teacher)?;
    at_least(student, 2, "(N, C, …)")
}

/// At least `dims` dimensions, described by `layout` (e.g. `"(N, C, …)"`).
pub(super) fn at_least(shape: &[i64], dims: usize, layout: &str) -> Result<(), String> {
    if shape.len() < dims {
        return Err(format!("it needs tensors of at least {dims} dimensions {layout}, got {}", shape.len()));
    }
    Ok(())
}

/// The same batch size (first dimension), at least `min`, and no empty feature dimension.
pub(super) fn same_batch(student: &[i64], teacher: &[i64], min: i64) -> Result<(), String> {
    let (Some(&n), Some(&m)) = (student.first(), teacher.first()) else {
        return Err("it needs a batch dimension (N, …); a 0-d tensor has none".into());
    };
    if n != m {
        return Err(format!("it needs the same batch size on both sides, got {n} and {m}"));
    }
    if n < min {
        let what = if min == 1 { "sample" } else { "samples" };
        return Err(format!("it needs at least {min} {what} in the batch, got {n}"));
    }
    if student.contains(&0) || teacher.contains(&0) {
        return Err("the tensors are empty".into());
    }
    Ok(())
}

/// `Ok` when `value` is finite and at least (`strict`: above) `bound`; else why, naming the parameter.
pub(super) fn parameter(name: &str, value: f64, bound: f64, strict: bool) -> Result<(), String> {
    check_parameter(name, value, bound, strict).map_err(|error| error.to_string())
}

/// Exactly 2 dimensions, `(N, C)`.
pub(super) fn logits_2d(shape: &[i64]) -> Result<(), String> {
    if shape.len() != 2 {
        return Err(format!("it needs logits of 2 dimensions (N, C), got {}", shape.len()));
    }
    Ok(())
}

/// `Ok` when `value` is finite and above `bound` (or at it, when not `strict`).
pub(crate) fn check_parameter(name: &str, value: f64, bound: f64, strict: bool) -> Result<(), CriterionError> {
    let fits = value.is_finite() && if strict { value > bound } else { value >= bound };
    if fits {
        Ok(())
    } else {
        Err(CriterionError::Parameter { name: name.to_owned(), value, bound, strict })
    }
}
