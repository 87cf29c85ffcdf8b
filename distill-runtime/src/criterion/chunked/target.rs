//! What [`ChunkedLoss`](super::ChunkedLoss) computes per chunk for each [`ChunkedTarget`]: the
//! per-token losses, the analytic gradient where there is one, and the checks of the target.

use tch::{Kind, Tensor};

use super::ChunkedTarget;
use crate::criterion::fused::{row_loss, RowLoss, RowTeacher};
use crate::criterion::mask::{TokenReduction, IGNORE_INDEX};
use crate::criterion::sequence::Divergence;
use crate::criterion::tail::{check_temperature, TopKTail};
use crate::criterion::token::TokenCriterion;
use crate::criterion::Criterion;
use crate::error::{CriterionError, DistillError, Packed, Result};

impl ChunkedTarget<'_> {
    pub(super) fn reduction(&self) -> TokenReduction {
        match self {
            ChunkedTarget::Logits { criterion, .. } => criterion.reduction,
            ChunkedTarget::TopK { criterion, .. } => criterion.reduction,
            ChunkedTarget::CrossEntropy { reduction, .. } => *reduction,
        }
    }

    /// The per-token losses `[n]` of the logits `z` `[n, V]` of the flattened tokens `rows`.
    pub(super) fn per_token(&self, z: &Tensor, rows: &Rows<'_>) -> Result<Tensor> {
        let vocab = z.size()[1];
        match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                let t = rows.pick(&teacher.f_reshape([-1, vocab])?)?;
                criterion.divergence.per_token(z, &t, criterion.temperature)
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                let k = teacher.k();
                let part = TopKTail {
                    ids: rows.pick(&teacher.ids.f_reshape([-1, k])?)?,
                    log_probs: rows.pick(&teacher.log_probs.f_reshape([-1, k])?)?,
                    tail: rows.pick(&teacher.tail.f_reshape([-1])?)?,
                    temperature: teacher.temperature,
                };
                criterion.f_per_token(z, &part)
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                // Any integer kind the label check accepts, as `gather` needs it: `i64`.
                let y = rows.pick(&labels.f_reshape([-1])?)?.f_to_kind(Kind::Int64)?;
                // Ignored labels gather class 0 (their weight is 0).
                let y = y.f_clamp_min(0)?.f_unsqueeze(1)?;
                Ok(z.f_logsumexp([1], false)?.f_sub(&z.f_gather(1, &y, false)?.f_squeeze_dim(1)?)?)
            }
        }
    }

    /// The weighted loss of the chunk's logits `z` `[n, V]` (tokens `start..start + n`, reduction
    /// weights `weights` `[n]`) with its gradient with respect to `z` written over `z`, for the
    /// targets with an analytic gradient (forward KL, top-k KL, cross-entropy); `None`, with `z`
    /// untouched, for the others (they take a local autograd pass).
    pub(super) fn analytic(&self, z: &Tensor, start: i64, n: i64, weights: &Tensor) -> Result<Option<Tensor>> {
        let vocab = z.size()[1];
        let value = match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                let forward = match criterion.divergence {
                    Divergence::ForwardKl => true,
                    Divergence::Jsd { beta } => beta == 0.0,
                    Divergence::SkewKl { alpha } => alpha == 0.0,
                    _ => false,
                };
                if !forward {
                    return Ok(None);
                }
                let t = teacher.f_reshape([-1, vocab])?.f_narrow(0, start, n)?;
                let loss = RowLoss {
                    teacher: RowTeacher::Logits(&t),
                    temperature: criterion.temperature,
                    kd_weights: weights.shallow_clone(),
                    ce: None,
                };
                row_loss(z, &loss, Some(z))?
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                let k = teacher.k();
                let ids = teacher.ids.f_reshape([-1, k])?.f_narrow(0, start, n)?;
                let log_probs = teacher.log_probs.f_reshape([-1, k])?.f_narrow(0, start, n)?;
                let tail = teacher.tail.f_reshape([-1])?.f_narrow(0, start, n)?;
                let loss = RowLoss {
                    teacher: RowTeacher::TopK { ids: &ids, log_probs: &log_probs, tail: &tail },
                    temperature: criterion.temperature,
                    kd_weights: weights.shallow_clone(),
                    ce: None,
                };
                row_loss(z, &loss, Some(z))?
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                let y = labels.f_reshape([-1])?.f_narrow(0, start, n)?.f_to_kind(Kind::Int64)?;
                let loss = RowLoss {
                    teacher: RowTeacher::None,
                    temperature: 1.0,
                    kd_weights: weights.f_zeros_like()?,
                    ce: Some((&y, weights.shallow_clone())),
                };
                row_loss(z, &loss, Some(z))?
            }
        };
        Ok(Some(value))
    }

    /// Checks the target against `B, T, V` and returns the valid tokens `[B, T]` it implies.
    pub(super) fn check(&self, b: i64, t: i64, vocab: i64, kind: Kind) -> Result<Option<Tensor>> {
        let invalid_criterion = |reason| DistillError::InvalidCriterion { pair: String::new(), reason };
        match self {
            ChunkedTarget::Logits { teacher, criterion } => {
                criterion.validate().map_err(invalid_criterion)?;
                if teacher.size() != [b, t, vocab] {
                    return Err(
                        CriterionError::TeacherShape { expected: vec![b, t, vocab], got: teacher.size() }.into()
                    );
                }
                let teacher_kind = teacher.f_kind()?;
                if teacher_kind != kind {
                    let what = "the hidden states and the teacher logits";
                    return Err(CriterionError::KindMismatch { what, first: kind, second: teacher_kind }.into());
                }
                Ok(None)
            }
            ChunkedTarget::TopK { teacher, criterion } => {
                criterion.validate().map_err(invalid_criterion)?;
                check_temperature(Packed::TopKTail, teacher.temperature, criterion.temperature)?;
                // The parts are read row by row: the same shapes, not only the same element counts
                // (a transposed `log_probs` would be read misaligned).
                teacher.check_parts()?;
                teacher.check_ids(vocab)?;
                let k = teacher.k();
                if teacher.ids.size() != [b, t, k] {
                    let (encoding, student) = (Packed::TopKTail, vec![b, t, vocab]);
                    return Err(
                        CriterionError::TeacherDoesNotFit { encoding, teacher: teacher.ids.size(), student }.into()
                    );
                }
                if k < 1 || k > vocab {
                    return Err(CriterionError::TopKOutOfRange { k, vocab }.into());
                }
                Ok(None)
            }
            ChunkedTarget::CrossEntropy { labels, .. } => {
                if labels.size() != [b, t] {
                    return Err(CriterionError::LabelShape { expected: vec![b, t], got: labels.size() }.into());
                }
                let valid = crate::criterion::mask::valid_labels(labels)?;
                if labels.numel() > 0 {
                    let out = labels.f_ge(vocab)?.f_logical_or(&labels.f_lt(0)?.f_logical_and(&valid)?)?;
                    if out.f_any()?.f_int64_value(&[])? != 0 {
                        return Err(CriterionError::LabelOutOfRange { vocab, ignore_index: IGNORE_INDEX }.into());
                    }
                }
                Ok(Some(valid))
            }
        }
    }
}

/// Which flattened tokens a computation reads: `start..start + n`, or the rows of an `i64` index.
pub(super) enum Rows<'a> {
    Range(i64, i64),
    Index(&'a Tensor),
}

impl Rows<'_> {
    /// These rows of `x` (`[B·T, …]`).
    pub(super) fn pick(&self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            Rows::Range(start, n) => x.f_narrow(0, *start, *n)?,
            Rows::Index(rows) => x.f_index_select(0, rows)?,
        })
    }
}
