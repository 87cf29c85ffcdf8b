//! Token losses over a vocabulary with their gradient with respect to the logits computed
//! analytically, block by block of rows, instead of through autograd.
//!
//! Through autograd, a top-k KL with an exact tail keeps several `[N, V]` tensors for the backward
//! (the log-normaliser's input, a masked copy for the tail's log-sum-exp, and their gradients), and
//! so does cross-entropy next to it. Here one pass per block of rows computes the value and
//! `g = ∂L/∂z` into a single `[N, V]` buffer; the block's temporaries are a few rows of `V`, small
//! enough to stay in cache. [`carry_gradient`] then hands `g` to autograd through a surrogate whose
//! value is the computed loss exactly.
//!
//! Gradients, per token with weight `w` (the reduction's; 0 for a token that does not count),
//! student `x = z / T`, `q = softmax(x)`:
//!
//! - top-k KL with an exact tail (teacher buckets `p_k`, `k ∈ K`, and `p_tail`, total `S = Σ p`):
//!   `∂ℓ/∂z_j = w/T · (S·q_j − [j ∈ K]·p_j − [j ∉ K]·p_tail·q_j/q_tail)`, where the student's tail
//!   mass `q_tail` is the sum of its probabilities outside `K` (a sum of small positive numbers,
//!   never `1 − Σ_K q`);
//! - forward KL against full teacher logits (`p = softmax(t / T)`): `w/T · (S·q_j − p_j)`;
//! - cross-entropy at temperature 1 with label `y`: `w · (softmax(z)_j − [j = y])`, sharing the
//!   softmax with the KL when `T = 1`.

use tch::{Kind, Tensor};

use crate::error::{DistillError, Result};

/// Elements of one block of rows (1 Mi: 4 MiB in f32 with its temporaries at a quarter of that
/// each, so that a block's passes run from cache rather than memory).
const BLOCK_ELEMENTS: i64 = 1 << 18;

/// The teacher side of a row loss.
pub(super) enum RowTeacher<'a> {
    /// No distillation term (cross-entropy alone).
    None,
    /// A top-k with an exact tail, flattened to rows: ids `[n, k]` (`i64`), log-probabilities
    /// `[n, k]`, tail log-mass `[n]`.
    TopK { ids: &'a Tensor, log_probs: &'a Tensor, tail: &'a Tensor },
    /// Full teacher logits `[n, V]`, compared by the forward KL.
    Logits(&'a Tensor),
}

/// One row loss: the teacher term at `temperature` weighted per row by `kd_weights` (`[n]`), plus
/// cross-entropy at temperature 1 against `labels` (`[n]`, `i64`; a row whose weight is 0 may hold
/// any label) weighted per row by the second tensor.
pub(super) struct RowLoss<'a> {
    pub teacher: RowTeacher<'a>,
    pub temperature: f64,
    pub kd_weights: Tensor,
    pub ce: Option<(&'a Tensor, Tensor)>,
}

/// `Σ_rows (w_kd·ℓ_kd + w_ce·ℓ_ce)` of the logits `z` `[n, V]` as an f64 scalar; with `grad`
/// (`[n, V]`, the kind of `z`; it may be `z` itself: each block of rows is read before it is
/// written) the gradient with respect to `z` is written into it. Rows whose weights are both 0
/// contribute nothing and get a zero gradient, whatever their logits (NaN included).
pub(super) fn row_loss(z: &Tensor, loss: &RowLoss<'_>, grad: Option<&Tensor>) -> Result<Tensor> {
    let (n, vocab) = match z.size()[..] {
        [n, v] => (n, v),
        ref other => return Err(DistillError::InvalidArgument(format!("row loss over logits {other:?}, not [n, V]"))),
    };
    let kind = z.f_kind()?;
    // Half-precision logits are computed on in f32, as autograd's softmax kernels accumulate.
    let ck = if matches!(kind, Kind::Half | Kind::BFloat16) { Kind::Float } else { kind };
    let block = (BLOCK_ELEMENTS / vocab.max(1)).max(1);
    tch::no_grad(|| -> Result<Tensor> {
        let mut total = Tensor::f_zeros([], (Kind::Double, z.device()))?;
        let mut start = 0;
        while start < n {
            let len = block.min(n - start);
            let (value, g) = block_loss(z, loss, start, len, ck, grad.is_some())?;
            total = total.f_add(&value)?;
            if let (Some(grad), Some(g)) = (grad, g) {
                grad.f_narrow(0, start, len)?.f_copy_(&g)?;
            }
            start += len;
        }
        Ok(total)
    })
}

/// The value (f64 scalar) of rows `start..start + len` and, with `want_grad`, their gradient
/// `[len, V]` in the compute kind `ck`.
fn block_loss(
    z: &Tensor,
    loss: &RowLoss<'_>,
    start: i64,
    len: i64,
    ck: Kind,
    want_grad: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let vocab = z.size()[1];
    let rows = |t: &Tensor| t.f_narrow(0, start, len);
    let zb = rows(z)?.f_to_kind(ck)?;
    let t = loss.temperature;
    let kd_w = rows(&loss.kd_weights)?.f_to_kind(ck)?;
    let ce = match &loss.ce {
        Some((labels, w)) => Some((rows(labels)?.f_clamp_min(0)?.f_unsqueeze(1)?, rows(w)?.f_to_kind(ck)?)),
        None => None,
    };
    let zero_row = Tensor::f_zeros([len], (ck, z.device()))?;
    let ce_w = ce.as_ref().map_or_else(|| zero_row.shallow_clone(), |(_, w)| w.shallow_clone());
    let active = kd_w.f_ne(0.0)?.f_logical_or(&ce_w.f_ne(0.0)?)?;
    if active.f_any()?.f_int64_value(&[])? == 0 {
        let g = if want_grad { Some(Tensor::f_zeros([len, vocab], (ck, z.device()))?) } else { None };
        return Ok((Tensor::f_zeros([], (Kind::Double, z.device()))?, g));
    }
    let has_teacher = !matches!(loss.teacher, RowTeacher::None);
    // Cross-entropy shares the teacher term's softmax when both are at temperature 1.
    let shared = t == 1.0 || !has_teacher;
    let x = if t == 1.0 || !has_teacher { zb.shallow_clone() } else { zb.f_div_scalar(t)? };
    // `a` holds log q, then q, then the gradient, in place.
    let mut a = x.f_log_softmax(1, ck)?;
    let mut ce_log_q = match (&ce, shared) {
        (Some((y, _)), true) => Some(a.f_gather(1, y, false)?.f_squeeze_dim(1)?),
        _ => None,
    };
    // Per-row factor of the teacher term's gradient (w/T), and the share of q that cross-entropy
    // adds when the softmax is shared.
    let ckd = kd_w.f_div_scalar(t)?;
    let cs = if shared { ce_w.shallow_clone() } else { zero_row.shallow_clone() };
    let kd_value = match loss.teacher {
        RowTeacher::None => {
            let _ = a.f_exp_()?.f_mul_(&cs.f_unsqueeze(1)?)?;
            zero_row.shallow_clone()
        }
        RowTeacher::Logits(teacher) => {
            let tb = rows(teacher)?.f_to_kind(ck)?;
            let tb = if t == 1.0 { tb } else { tb.f_div_scalar(t)? };
            let lp = tb.f_log_softmax(1, ck)?;
            let mut p = lp.f_exp()?;
            let terms = p.f_mul(&lp.f_sub(&a)?)?.f_where_scalarother(&p.f_gt(0.0)?, 0.0)?;
            let value = terms.f_sum_dim_intlist(1, false, ck)?;
            let mass = p.f_sum_dim_intlist(1, false, ck)?;
            let _ = a.f_exp_()?.f_mul_(&ckd.f_mul(&mass)?.f_add(&cs)?.f_unsqueeze(1)?)?;
            let _ = p.f_mul_(&ckd.f_unsqueeze(1)?)?;
            let _ = a.f_sub_(&p)?;
            value
        }
        RowTeacher::TopK { ids, log_probs, tail } => {
            let ids = rows(ids)?;
            let lp = rows(log_probs)?.f_to_kind(ck)?;
            let lp_tail = rows(tail)?.f_to_kind(ck)?;
            top_k_block(&mut a, &x, &ids, &lp, &lp_tail, &ckd, &cs, ck)?
        }
    };
    let mut ce_value = zero_row.shallow_clone();
    if let Some((y, w)) = &ce {
        if !shared {
            let mut b = zb.f_log_softmax(1, ck)?;
            ce_log_q = Some(b.f_gather(1, y, false)?.f_squeeze_dim(1)?);
            let _ = b.f_exp_()?.f_mul_(&w.f_unsqueeze(1)?)?;
            let _ = a.f_add_(&b)?;
        }
        let _ = a.f_scatter_add_(1, y, &w.f_neg()?.f_unsqueeze(1)?)?;
        if let Some(log_q) = &ce_log_q {
            ce_value = log_q.f_neg()?;
        }
    }
    // Rows that do not count: no value, a zero gradient (their logits may be NaN or ±inf).
    let value = kd_w
        .f_mul(&kd_value)?
        .f_where_scalarother(&kd_w.f_ne(0.0)?, 0.0)?
        .f_add(&ce_w.f_mul(&ce_value)?.f_where_scalarother(&ce_w.f_ne(0.0)?, 0.0)?)?
        .f_sum(Kind::Double)?;
    if !want_grad {
        return Ok((value, None));
    }
    if active.f_all()?.f_int64_value(&[])? == 0 {
        let _ = a.f_masked_fill_(&active.f_logical_not()?.f_unsqueeze(1)?, 0.0)?;
    }
    Ok((value, Some(a)))
}

/// The top-k term of one block: `a` holds `log q` on entry and the term's gradient (plus `cs·q`)
/// on return; returns the per-row KL over the `k + 1` buckets.
#[allow(clippy::too_many_arguments)]
fn top_k_block(
    a: &mut Tensor,
    x: &Tensor,
    ids: &Tensor,
    lp: &Tensor,
    lp_tail: &Tensor,
    ckd: &Tensor,
    cs: &Tensor,
    ck: Kind,
) -> Result<Tensor> {
    let vocab = a.size()[1];
    let k = ids.size()[1];
    let log_q_k = a.f_gather(1, ids, false)?;
    let p = lp.f_exp()?;
    let p_tail = lp_tail.f_exp()?;
    let mass = p.f_sum_dim_intlist(1, false, ck)?.f_add(&p_tail)?;
    // `p (log p − log q)`, 0 where p = 0 (log p = −inf there).
    let kept =
        p.f_mul(&lp.f_sub(&log_q_k)?)?.f_where_scalarother(&p.f_gt(0.0)?, 0.0)?.f_sum_dim_intlist(1, false, ck)?;
    let _ = a.f_exp_()?;
    let q_k = log_q_k.f_exp()?;
    // The kept ids' gradient: w/T·(S·q_k − p_k) + cs·q_k, written over whatever the tail step left.
    let kept_grad = |a: &mut Tensor| -> Result<()> {
        let vals = q_k
            .f_mul(&mass.f_unsqueeze(1)?)?
            .f_sub(&p)?
            .f_mul(&ckd.f_unsqueeze(1)?)?
            .f_add(&q_k.f_mul(&cs.f_unsqueeze(1)?)?)?;
        let _ = a.f_scatter_(1, ids, &vals)?;
        Ok(())
    };
    if k == vocab {
        kept_grad(a)?;
        return Ok(kept);
    }
    let tail_present = p_tail.f_gt(0.0)?;
    // The student's tail mass from the excluded entries themselves: the kept ids zeroed, the rest
    // summed (small positive numbers, no cancellation).
    let _ = a.f_scatter_value_(1, ids, 0.0)?;
    let q_tail = a.f_sum_dim_intlist(1, false, ck)?;
    // Below this the sum may be made of subnormal (or flushed) probabilities and lose its relative
    // precision: such blocks take the tail from a log-sum-exp of the excluded logits instead.
    let (tiny, eps) = match ck {
        Kind::Double => (f64::MIN_POSITIVE, f64::EPSILON),
        _ => (f64::from(f32::MIN_POSITIVE), f64::from(f32::EPSILON)),
    };
    let threshold = vocab as f64 * tiny / eps;
    let underflow = q_tail.f_lt(threshold)?.f_logical_and(&tail_present)?.f_any()?.f_int64_value(&[])? != 0;
    let log_q_tail = if underflow {
        let tail_lse = x.f_scatter_value(1, ids, f64::NEG_INFINITY)?.f_logsumexp([1], false)?;
        let lse = x.f_logsumexp([1], false)?;
        // e^{x_j} / Σ_{tail} e^{x}, the tail tokens' share of the student's tail, from the logits.
        let mut share = x.f_sub(&tail_lse.f_unsqueeze(1)?)?.f_exp_()?;
        let _ = share.f_mul_(&ckd.f_mul(&p_tail)?.f_unsqueeze(1)?)?;
        let _ = a.f_mul_(&ckd.f_mul(&mass)?.f_add(cs)?.f_unsqueeze(1)?)?.f_sub_(&share)?;
        tail_lse.f_sub(&lse)?
    } else {
        let ratio = p_tail.f_div(&q_tail)?.f_where_scalarother(&tail_present, 0.0)?;
        let factor = ckd.f_mul(&mass.f_sub(&ratio)?)?.f_add(cs)?;
        let _ = a.f_mul_(&factor.f_unsqueeze(1)?)?;
        q_tail.f_log()?
    };
    kept_grad(a)?;
    let tail_term = p_tail.f_mul(&lp_tail.f_sub(&log_q_tail)?)?.f_where_scalarother(&tail_present, 0.0)?;
    Ok(kept.f_add(&tail_term)?)
}

/// The loss `value` (a scalar without gradient) as a tensor whose gradient with respect to `z` is
/// `grad` (`[…]`, the shape of `z`, without gradient): `S − detach(S) + value` with
/// `S = ⟨z, grad⟩`, which is `value` exactly (`S − S = 0` for a finite `S`). Positions where `z`
/// is not finite and `grad` is 0 (masked tokens) would make `S` NaN; they are left out of `S`
/// then, which changes neither its gradient elsewhere nor the value. The surrogate has no second
/// derivative. Without a gradient on `z`, `value` itself.
///
/// # Errors
/// [`DistillError::InvalidArgument`] when `S` is not finite even without those positions (a
/// gradient or logit so large that the surrogate cannot carry it exactly).
pub(super) fn carry_gradient(z: &Tensor, grad: &Tensor, value: &Tensor) -> Result<Tensor> {
    if !z.requires_grad() {
        return Ok(value.shallow_clone());
    }
    let dot = |z: &Tensor| -> Result<Tensor> {
        Ok(match z.f_kind()? {
            Kind::Float | Kind::Double => z.f_reshape([-1])?.f_dot(&grad.f_reshape([-1])?)?,
            kind => z.f_mul(grad)?.f_sum(kind)?,
        })
    };
    let finite = |s: &Tensor| -> Result<bool> { Ok(s.f_isfinite()?.f_int64_value(&[])? != 0) };
    let mut s = dot(z)?;
    if !finite(&s)? {
        let safe = z.f_where_scalarother(&z.f_isfinite()?, 0.0)?;
        s = dot(&safe)?;
        if !finite(&s)? {
            return Err(DistillError::InvalidArgument(
                "the loss's gradient times the logits overflows: the fused loss cannot carry it exactly".into(),
            ));
        }
    }
    Ok(s.f_sub(&s.f_detach()?)?.f_add(value)?)
}
