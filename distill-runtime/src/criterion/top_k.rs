//! The teacher's logits reduced to its `k` most probable classes ([`TopKLogits`]), the packed tensor
//! that holds them ([`split_top_k`]), and the KL divergence that reads it ([`TopKKlDiv`]).
//!
//! Storing all `C` logits of every sample is what makes an offline teacher cache large when `C` is
//! large; the top `k` log-probabilities and their class indices keep almost all of the soft-label
//! information at `k/C` of the size. The leftover probability mass is not dropped: [`TopKKlDiv`]
//! compares it, as one "other" bucket, with the student's mass on the remaining classes.

use tch::{Kind, Tensor};

use super::check::check_parameter;
use super::check::{check_encoded_call, logits_2d, parameter};
use super::wide::{computed_in, in_kind};
use super::Criterion;
use crate::error::{CriterionError, DistillError, Packed, PackedProblem, Result};

/// How the teacher's logits are reduced to top-k form: the `k` most probable classes at temperature
/// `temperature`.
///
/// [`f_encode`](Self::f_encode) turns logits `(N, C)` into the **packed** tensor `(N, 2, k)`:
///
/// - row 0 (`packed[:, 0, :]`): the teacher's log-probabilities at temperature `T`,
///   `log_softmax(z / T, dim = -1)`, at its `k` most probable classes, in descending order;
/// - row 1 (`packed[:, 1, :]`): those classes' indices, stored as floating-point numbers.
///
/// The packed tensor is `f64` for `f64` logits and `f32` otherwise (`f16`/`bf16` logits are encoded
/// in `f32`): an `f32` holds every class index exactly up to 2²⁴ classes, an `f16` only up to 2¹¹, so
/// a cache that wants to store the packed tensor in half precision must check the class count
/// ([`split_top_k`] does when it reads one). The probabilities are those at `T`, so the criterion that
/// reads the tensor, [`TopKKlDiv`], must use the same temperature
/// ([`Criterion::teacher_encoding`] says which one a criterion uses).
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{split_top_k, TopKLogits};
/// use tch::Tensor;
///
/// let logits = Tensor::from_slice(&[1.0f32, 3.0, 2.0, 0.0]).reshape([1, 4]);
/// let packed = TopKLogits::new(2, 1.0).f_encode(&logits)?;
/// assert_eq!(packed.size(), [1, 2, 2]);
/// let (log_probs, indices) = split_top_k(&packed, 4)?;
/// assert_eq!(Vec::<i64>::try_from(indices.reshape([-1]))?, [1, 2]); // the classes of 3.0 and 2.0
/// let p: Vec<f64> = Vec::try_from(log_probs.exp().reshape([-1]).to_kind(tch::Kind::Double))?;
/// assert!((p[0] - 0.6439).abs() < 1e-4 && (p[1] - 0.2369).abs() < 1e-4);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopKLogits {
    /// How many classes to keep per sample (≥ 1, at most the number of classes).
    pub k: i64,
    /// Softmax temperature `T` of the stored log-probabilities (finite and > 0).
    pub temperature: f64,
}

/// The largest class count whose indices an `f32` holds exactly (2²⁴).
const F32_EXACT_CLASSES: i64 = 1 << 24;

impl TopKLogits {
    /// The top `k` classes at temperature `temperature`.
    pub const fn new(k: i64, temperature: f64) -> Self {
        TopKLogits { k, temperature }
    }

    /// Checks the parameters: `k` ≥ 1 and a finite temperature > 0.
    ///
    /// # Errors
    /// [`CriterionError::CountBelowOne`] for `k` < 1, [`CriterionError::Parameter`] for the temperature.
    pub(crate) fn check(&self) -> std::result::Result<(), CriterionError> {
        if self.k < 1 {
            return Err(CriterionError::CountBelowOne { what: "the top-k count", got: self.k });
        }
        check_parameter("the top-k temperature", self.temperature, 0.0, true)
    }

    /// The packed top-k tensor `(N, 2, k)` of `logits` `(N, C)` (see the type's documentation),
    /// detached from the autograd graph: it is data to store, not part of a loss.
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) for invalid parameters (`k` < 1, a temperature that
    /// is not finite and > 0), logits that are not 2-D and floating-point, `k` greater than the class
    /// count, or more classes than the packed kind holds exactly (2²⁴ for `f32`).
    pub fn f_encode(&self, logits: &Tensor) -> Result<Tensor> {
        self.check()?;
        if !logits.defined() {
            return Err(CriterionError::Undefined { tensor: "the logits to encode in top-k form".into() }.into());
        }
        let shape = logits.size();
        if shape.len() != 2 {
            return Err(CriterionError::LogitsShape { shape, expected: "(N, C)" }.into());
        }
        let classes = shape[1];
        if self.k > classes {
            return Err(CriterionError::TopKExceedsClasses { shape, k: self.k, classes }.into());
        }
        let kind = match logits.f_kind()? {
            Kind::Double => Kind::Double,
            Kind::Float | Kind::Half | Kind::BFloat16 => Kind::Float,
            other => {
                return Err(CriterionError::NotFloatingPoint { tensor: "the logits to encode", kind: other }.into())
            }
        };
        if kind == Kind::Float && classes > F32_EXACT_CLASSES {
            let limit = F32_EXACT_CLASSES;
            return Err(CriterionError::IndicesNotExact { kind, limit, classes }.into());
        }
        let (k, t) = (self.k, self.temperature);
        let packed = tch::no_grad(|| -> Result<Tensor> {
            let log_probs = (logits.f_to_kind(kind)? / t).f_log_softmax(-1, None)?;
            let (values, indices) = log_probs.f_topk(k, -1, true, true)?;
            Ok(Tensor::f_stack(&[values, indices.f_to_kind(kind)?], 1)?)
        })?;
        Ok(packed.detach())
    }
}

/// The largest class count whose indices `kind` holds exactly, for the floating-point kinds.
fn exact_classes(kind: Kind) -> Option<i64> {
    match kind {
        Kind::BFloat16 => Some(1 << 8),
        Kind::Half => Some(1 << 11),
        Kind::Float => Some(F32_EXACT_CLASSES),
        Kind::Double => Some(1 << 53),
        _ => None,
    }
}

/// How far above 1 the stored top-k probabilities of one sample may sum (their rounding) before the
/// tensor is taken for something other than log-probabilities.
fn mass_tolerance(kind: Kind) -> f64 {
    match kind {
        Kind::BFloat16 => 5e-2,
        Kind::Half => 1e-2,
        _ => 1e-3,
    }
}

/// Splits a packed top-k tensor `(N, 2, k)` ([`TopKLogits::f_encode`]) of a teacher with `classes`
/// classes into its log-probabilities `(N, k)` (the packed kind) and class indices `(N, k)` (`i64`).
///
/// Both are views into or copies of `packed`; nothing is detached.
///
/// # Errors
/// [`CriterionError::InvalidPacked`](super::CriterionError::InvalidPacked) unless `packed` is a
/// floating-point `(N, 2, k)` tensor with
/// `1 ≤ k ≤ classes` whose kind holds every class index exactly (2¹¹ classes for `f16`, 2⁸ for `bf16`,
/// 2²⁴ for `f32`), whose indices are whole numbers in `0..classes`, distinct within a sample, and whose
/// log-probabilities are not NaN or +∞ and sum (as probabilities) to at most 1, up to rounding.
pub fn split_top_k(packed: &Tensor, classes: i64) -> Result<(Tensor, Tensor)> {
    let invalid =
        |problem: PackedProblem| DistillError::from(CriterionError::InvalidPacked { encoding: Packed::TopK, problem });
    if !packed.defined() {
        return Err(invalid(PackedProblem::Undefined));
    }
    let shape = packed.size();
    if check_packed_shape(&shape).is_err() {
        let expected = "(N, 2, k) with k ≥ 1 of `TopKLogits::f_encode`";
        return Err(invalid(PackedProblem::Shape { expected, got: shape }));
    }
    let k = shape[2];
    if k > classes {
        return Err(invalid(PackedProblem::TooManyClasses { k, classes }));
    }
    let kind = packed.f_kind()?;
    let Some(limit) = exact_classes(kind) else {
        return Err(invalid(PackedProblem::Kind { expected: "a floating-point kind", kind }));
    };
    if classes > limit {
        return Err(invalid(PackedProblem::IndicesNotExact { kind, limit, classes }));
    }
    let (log_probs, float_indices) = (packed.f_select(1, 0)?, packed.f_select(1, 1)?);
    if shape[0] == 0 {
        return Ok((log_probs, float_indices.f_to_kind(Kind::Int64)?));
    }

    let check = |condition: Tensor| -> Result<bool> { Ok(condition.f_any()?.f_int64_value(&[])? != 0) };
    if check(log_probs.f_isnan()?)? || check(log_probs.f_isposinf()?)? {
        return Err(invalid(PackedProblem::NotFinite));
    }
    let mass =
        log_probs.f_to_kind(Kind::Double)?.f_exp()?.f_sum_dim_intlist(1, false, None)?.f_max()?.f_double_value(&[])?;
    if mass > 1.0 + mass_tolerance(kind) {
        return Err(invalid(PackedProblem::MassAboveOne { mass }));
    }
    let wide = float_indices.f_to_kind(Kind::Double)?;
    if check(wide.f_isfinite()?.f_logical_not()?)? || check(wide.f_frac()?.f_ne(0.0)?)? {
        return Err(invalid(PackedProblem::FractionalIds { ids: "class indices" }));
    }
    let (lowest, highest) = (wide.f_min()?.f_double_value(&[])?, wide.f_max()?.f_double_value(&[])?);
    if lowest < 0.0 || highest >= classes as f64 {
        let (ids, limit) = ("class indices", classes);
        return Err(invalid(PackedProblem::IdsOutOfRange { ids, lowest, highest, limit }));
    }
    let indices = float_indices.f_to_kind(Kind::Int64)?;
    if k > 1 {
        let (sorted, _) = indices.f_sort(1, false)?;
        let repeated = sorted.f_narrow(1, 1, k - 1)?.f_eq_tensor(&sorted.f_narrow(1, 0, k - 1)?)?;
        if check(repeated)? {
            return Err(invalid(PackedProblem::RepeatedIndex));
        }
    }
    Ok((log_probs, indices))
}

/// The packed shape `(N, 2, k)`, `k ≥ 1`.
fn check_packed_shape(shape: &[i64]) -> std::result::Result<(), String> {
    if shape.len() != 3 || shape[1] != 2 || shape[2] < 1 {
        return Err(format!("it needs the shape (N, 2, k) with k ≥ 1 of `TopKLogits::f_encode`, got {shape:?}"));
    }
    Ok(())
}

/// Hinton KD against a teacher stored in top-k form: the KL divergence over `k + 1` buckets, the
/// teacher's `k` most probable classes and one "other" bucket holding the rest of the probability
/// mass,
///
/// `T²/N · Σ_samples Σ_buckets p · (log p − log q)`
///
/// with, per sample, the packed teacher tensor ([`TopKLogits::f_encode`] at the same temperature):
///
/// - `p_i = exp(values_i)` at the `k` stored classes, `p_other = max(1 − Σ p_i, 0)`;
/// - `q = softmax(s / T)` of the student's logits `s` `(N, C)` at the stored classes, and `q_other`
///   the student's mass on every other class, computed in log space (a log-sum-exp over those
///   classes), so that it stays exact when it is tiny;
/// - a bucket with `p = 0` contributes 0; with `k = C` there is no other bucket.
///
/// With `k = C` this equals [`KlDiv`](super::KlDiv) at the same temperature on the full logits (up to
/// float rounding). Gradients flow to the student only: the stored teacher is data. The teacher's
/// packed tensor may be of another floating-point kind than the student's logits (it is read in the
/// student's kind, in f32 for f16/bf16 logits); both must be on one device. Half-precision logits
/// are computed on in f32, as the `T²` factor multiplies the loss's rounding by `T²`, and the loss
/// is returned in their kind
/// ([`LossOutOfRange`](super::CriterionError::LossOutOfRange) when it does not fit it).
///
/// Shapes: student `(N, C)`, teacher `(N, 2, k)` with `1 ≤ k ≤ C`, `N ≥ 1`. The packed tensor's
/// content is checked when the loss is computed ([`split_top_k`]). A temperature that is not finite
/// and > 0 is invalid ([`Criterion::validate`]).
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{Criterion, KlDiv, TopKKlDiv, TopKLogits};
/// use tch::{Device, Kind, Tensor};
///
/// let student = Tensor::randn([8, 10], (Kind::Double, Device::Cpu));
/// let teacher = Tensor::randn([8, 10], (Kind::Double, Device::Cpu));
/// let top3 = TopKLogits::new(3, 4.0).f_encode(&teacher)?; // (8, 2, 3)
/// let loss = TopKKlDiv::new(4.0).f_loss(&student, &top3)?;
/// assert!(loss.double_value(&[]) > 0.0);
/// // Keeping every class gives Hinton's KD exactly.
/// let all = TopKLogits::new(10, 4.0).f_encode(&teacher)?;
/// let full = KlDiv::new(4.0).loss(&student, &teacher).double_value(&[]);
/// assert!((TopKKlDiv::new(4.0).f_loss(&student, &all)?.double_value(&[]) - full).abs() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TopKKlDiv {
    /// Softmax temperature `T` (> 0); the packed teacher must be encoded at the same one.
    pub temperature: f64,
}

impl TopKKlDiv {
    /// Top-k KD at temperature `temperature`.
    pub const fn new(temperature: f64) -> Self {
        TopKKlDiv { temperature }
    }

    fn compute(&self, student: &Tensor, packed: &Tensor) -> Result<Tensor> {
        let (n, classes) = (student.size()[0], student.size()[1]);
        let (values, indices) = split_top_k(packed, classes)?;
        let student_kind = student.f_kind()?;
        // Half-precision logits are computed on in f32. In f16 each `log p − log q` carries a
        // rounding of 2⁻¹¹·|log p| (1e-3 at |log p| ≈ 2) while at a large T the true difference is
        // about that small (it shrinks as 1/T), and the T² factor multiplies the rounding by T²
        // (9e4 at T = 300): in f16 the loss would be off by several times its value, in bf16 negative.
        let kind = computed_in(student_kind);
        let student = student.f_to_kind(kind)?;
        let values = values.f_to_kind(kind)?.f_detach()?;
        let t = self.temperature;
        let z = student.f_div_scalar(t)?;
        let log_normaliser = z.f_logsumexp([1], true)?;
        let log_q = z.f_gather(1, &indices, false)?.f_sub(&log_normaliser)?;
        let p = values.f_exp()?;
        // p · (log p − log q), 0 where p = 0 (where log p = −inf would make it NaN).
        let top = p.f_mul(&values.f_sub(&log_q)?)?.f_where_scalarother(&p.f_gt(0.0)?, 0.0)?;
        let mut total = top.f_sum(kind)?;
        if indices.size()[1] < classes {
            let log_q_other = z
                .f_scatter_value(1, &indices, f64::NEG_INFINITY)?
                .f_logsumexp([1], false)?
                .f_sub(&log_normaliser.f_squeeze_dim(1)?)?;
            let p_other = p.f_sum_dim_intlist(1, false, kind)?.f_neg()?.f_add_scalar(1.0)?.f_clamp_min(0.0)?;
            let other =
                p_other.f_mul(&p_other.f_log()?.f_sub(&log_q_other)?)?.f_where_scalarother(&p_other.f_gt(0.0)?, 0.0)?;
            total = total.f_add(&other.f_sum(kind)?)?;
        }
        in_kind(&total.f_mul_scalar(t * t / n as f64)?, student_kind)
    }
}

/// `T = 4`, as [`KlDiv`](super::KlDiv).
impl Default for TopKKlDiv {
    fn default() -> Self {
        TopKKlDiv::new(4.0)
    }
}

impl Criterion for TopKKlDiv {
    super::panicking_loss!();

    fn f_loss_with_targets(&self, student: &Tensor, teacher: &Tensor, targets: Option<&Tensor>) -> Result<Tensor> {
        check_encoded_call(self, student, teacher, targets)?;
        let kind = student.f_kind()?;
        if !matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double) {
            return Err(CriterionError::NotFloatingPoint { tensor: "the student logits", kind }.into());
        }
        self.compute(student, teacher)
    }

    /// The temperature finite and > 0.
    fn validate(&self) -> std::result::Result<(), String> {
        parameter("TopKKlDiv's temperature", self.temperature, 0.0, true)
    }

    /// Student logits `(N, C)` with `N ≥ 1`, a packed teacher `(N, 2, k)` with `1 ≤ k ≤ C`.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> std::result::Result<(), String> {
        logits_2d(student)?;
        check_packed_shape(teacher).map_err(|reason| format!("the teacher is a packed top-k tensor: {reason}"))?;
        let (n, classes, k) = (student[0], student[1], teacher[2]);
        if n != teacher[0] {
            return Err(format!("it needs the same batch size on both sides, got {n} and {}", teacher[0]));
        }
        if n == 0 || classes == 0 {
            return Err("the tensors are empty".into());
        }
        if k > classes {
            return Err(format!("the teacher holds its top {k} classes, more than the student's {classes}"));
        }
        Ok(())
    }

    fn teacher_encoding(&self) -> super::TeacherEncoding {
        super::TeacherEncoding::TopKLogits { temperature: self.temperature }
    }
}
