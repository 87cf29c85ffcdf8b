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

use super::wide::computed_in;
use crate::error::{CriterionError, Result};

/// Elements of one block of rows (1 Mi: 4 MiB per f32 temporary, 21 rows at V = 49 152). Smaller
/// blocks keep the block's passes (log-softmax, exp, the tail's sum, the gradient) in a smaller
/// cache, but each block costs a few dozen operations and four parallel regions, whose fixed cost
/// grows on a machine whose cores are busy (benchmark (g) in BENCHMARKS.md).
const BLOCK_ELEMENTS: i64 = 1 << 20;

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
///
/// Everything per row (the teacher's probabilities, the weights, the values) is computed once for
/// all rows outside the loop; inside it, per block, only the vocabulary-sized passes and the
/// gathers they feed, so that few small operations run per block.
pub(super) fn row_loss(z: &Tensor, loss: &RowLoss<'_>, grad: Option<&Tensor>) -> Result<Tensor> {
    let (n, vocab) = match z.size()[..] {
        [n, v] => (n, v),
        ref other => return Err(CriterionError::LogitsShape { shape: other.to_vec(), expected: "(n, V)" }.into()),
    };
    let kind = z.f_kind()?;
    // Half-precision logits are computed on in f32, as autograd's softmax kernels accumulate.
    let ck = computed_in(kind);
    tch::no_grad(|| -> Result<Tensor> {
        let rows = Rows::new(z, loss, ck)?;
        let block = (BLOCK_ELEMENTS / vocab.max(1)).max(1);
        let mut start = 0;
        while start < n {
            let len = block.min(n - start);
            let active = &rows.active[start as usize..(start + len) as usize];
            if active.iter().any(|&a| a) {
                rows.block(z, loss, start, len, grad, active.iter().all(|&a| a))?;
            } else if let Some(grad) = grad {
                let _ = grad.f_narrow(0, start, len)?.f_zero_()?;
            }
            start += len;
        }
        rows.value(loss)
    })
}

/// The per-row quantities of a [`RowLoss`] (all `[n]` or `[n, k]`), and the per-row results the
/// block loop fills in.
struct Rows {
    ck: Kind,
    /// Whether each row counts (a weight ≠ 0), on the host for the block loop's decisions…
    active: Vec<bool>,
    /// …and as a bool tensor `[n]` on the logits' device, for masking a block's inactive rows.
    active_rows: Tensor,
    kd_w: Tensor,
    ce_w: Tensor,
    /// The softmax of the teacher term is shared with cross-entropy (`T = 1`, or no teacher).
    shared: bool,
    /// `w_kd/T · S + (w_ce where shared)`: the factor of `q` in the gradient (`S` the teacher's mass).
    base: Tensor,
    /// Cross-entropy: the labels `[n, 1]` and `−w_ce` `[n, 1]`.
    ce: Option<(Tensor, Tensor)>,
    /// Top-k: `p`, `log p`, `−w_kd/T·p` (`[n, k]`), `p_tail`, `log p_tail`, `w_kd/T·p_tail` (`[n]`).
    top: Option<[Tensor; 6]>,
    /// Filled per block: the student's log-probabilities at the kept ids `[n, k]`, its tail
    /// log-mass `[n]`, its log-probability of the label `[n]`, the forward KL per row `[n]`.
    log_q_k: Tensor,
    log_q_tail: Tensor,
    ce_log_q: Tensor,
    kl: Tensor,
}

impl Rows {
    fn new(z: &Tensor, loss: &RowLoss<'_>, ck: Kind) -> Result<Rows> {
        let n = z.size()[0];
        let opts = (ck, z.device());
        let kd_w = loss.kd_weights.f_to_kind(ck)?;
        let ce_w = match &loss.ce {
            Some((_, w)) => w.f_to_kind(ck)?,
            None => Tensor::f_zeros([n], opts)?,
        };
        let active_rows = kd_w.f_ne(0.0)?.f_logical_or(&ce_w.f_ne(0.0)?)?.f_to_device(z.device())?;
        let active = Vec::<bool>::try_from(&active_rows)?;
        let t = loss.temperature;
        let has_teacher = !matches!(loss.teacher, RowTeacher::None);
        let shared = t == 1.0 || !has_teacher;
        let ckd = kd_w.f_div_scalar(t)?;
        let cs = if shared { ce_w.shallow_clone() } else { ce_w.f_zeros_like()? };
        let ce = match &loss.ce {
            Some((labels, _)) => Some((labels.f_clamp_min(0)?.f_unsqueeze(1)?, ce_w.f_neg()?.f_unsqueeze(1)?)),
            None => None,
        };
        let (mass, top, k) = match loss.teacher {
            RowTeacher::TopK { log_probs, tail, .. } => {
                let lp = log_probs.f_to_kind(ck)?;
                let lp_tail = tail.f_to_kind(ck)?;
                let p = lp.f_exp()?;
                let p_tail = lp_tail.f_exp()?;
                let mass = p.f_sum_dim_intlist(1, false, ck)?.f_add(&p_tail)?;
                let neg_kept = p.f_mul(&ckd.f_unsqueeze(1)?)?.f_neg()?;
                let tail_weight = p_tail.f_mul(&ckd)?;
                let k = lp.size()[1];
                (mass, Some([p, lp, neg_kept, p_tail, lp_tail, tail_weight]), k)
            }
            // The teacher's mass is computed per block for full logits (1 up to rounding).
            RowTeacher::Logits(_) | RowTeacher::None => (Tensor::f_zeros([n], opts)?, None, 1),
        };
        Ok(Rows {
            ck,
            active,
            active_rows,
            base: ckd.f_mul(&mass)?.f_add(&cs)?,
            kd_w,
            ce_w,
            shared,
            ce,
            top,
            log_q_k: Tensor::f_zeros([n, k], opts)?,
            log_q_tail: Tensor::f_zeros([n], opts)?,
            ce_log_q: Tensor::f_zeros([n], opts)?,
            kl: Tensor::f_zeros([n], opts)?,
        })
    }

    /// Rows `start..start + len`: their log-probabilities where the value needs them, and, with
    /// `grad`, their gradient written into it.
    fn block(
        &self,
        z: &Tensor,
        loss: &RowLoss<'_>,
        start: i64,
        len: i64,
        grad: Option<&Tensor>,
        all_active: bool,
    ) -> Result<()> {
        let vocab = z.size()[1];
        let ck = self.ck;
        let rows = |t: &Tensor| t.f_narrow(0, start, len);
        let t = loss.temperature;
        let zb = rows(z)?.f_to_kind(ck)?;
        let x =
            if t == 1.0 || matches!(loss.teacher, RowTeacher::None) { zb.shallow_clone() } else { zb.f_div_scalar(t)? };
        // Cross-entropy at T = 1 beside a teacher term at T ≠ 1: its own softmax, taken before
        // anything is written (the gradient buffer may be `z` itself).
        let separate_ce = match &self.ce {
            Some((y, neg_w)) if !self.shared => {
                let mut b = zb.f_log_softmax(1, ck)?;
                rows(&self.ce_log_q)?.f_copy_(&b.f_gather(1, &rows(y)?, false)?.f_squeeze_dim(1)?)?;
                let _ = b.f_exp_()?.f_mul_(&rows(neg_w)?.f_neg()?)?;
                Some(b)
            }
            _ => None,
        };
        // `a` holds log q, then q; `out` receives the gradient.
        let mut a = x.f_log_softmax(1, ck)?;
        if let (Some((y, _)), true) = (&self.ce, self.shared) {
            rows(&self.ce_log_q)?.f_copy_(&a.f_gather(1, &rows(y)?, false)?.f_squeeze_dim(1)?)?;
        }
        let direct = grad.filter(|g| g.kind() == ck);
        let mut out = match direct {
            Some(g) => rows(g)?,
            None => Tensor::f_empty([len, vocab], (ck, z.device()))?,
        };
        let base = rows(&self.base)?.f_unsqueeze(1)?;
        match (&loss.teacher, &self.top) {
            (RowTeacher::TopK { ids, .. }, Some([_, _, neg_kept, _, _, tail_weight])) => {
                let ids = rows(ids)?;
                let log_q_k = a.f_gather(1, &ids, false)?;
                rows(&self.log_q_k)?.f_copy_(&log_q_k)?;
                let _ = a.f_exp_()?;
                if ids.size()[1] < vocab {
                    self.tail(&mut a, &x, &ids, &base, &rows(tail_weight)?, &mut out, start, len)?;
                } else {
                    let _ = a.f_mul_out(&out, &base)?;
                }
                // The kept ids: w/T·(S·q_k − p_k) + w_ce·q_k (shared), over what the tail step left.
                let vals = rows(neg_kept)?.f_addcmul(&log_q_k.f_exp()?, &base)?;
                let _ = out.f_scatter_(1, &ids, &vals)?;
            }
            (RowTeacher::Logits(teacher), _) => {
                let tb = rows(teacher)?.f_to_kind(ck)?;
                let tb = if t == 1.0 { tb } else { tb.f_div_scalar(t)? };
                let lp = tb.f_log_softmax(1, ck)?;
                let mut p = lp.f_exp()?;
                let terms = p.f_mul(&lp.f_sub(&a)?)?.f_where_scalarother(&p.f_gt(0.0)?, 0.0)?;
                rows(&self.kl)?.f_copy_(&terms.f_sum_dim_intlist(1, false, ck)?)?;
                let kd_w = rows(&self.kd_w)?.f_div_scalar(t)?.f_unsqueeze(1)?;
                let factor = kd_w.f_mul(&p.f_sum_dim_intlist(1, true, ck)?)?.f_add(&base)?;
                let _ = a.f_exp_()?.f_mul_out(&out, &factor)?;
                let _ = p.f_mul_(&kd_w)?;
                let _ = out.f_sub_(&p)?;
            }
            _ => {
                let _ = a.f_exp_()?.f_mul_out(&out, &base)?;
            }
        }
        if let Some((y, neg_w)) = &self.ce {
            if let Some(b) = &separate_ce {
                let _ = out.f_add_(b)?;
            }
            let _ = out.f_scatter_add_(1, &rows(y)?, &rows(neg_w)?)?;
        }
        if !all_active {
            // The mask comes from the weights, on the logits' device (a host tensor would not mask a
            // CUDA block).
            let inactive = rows(&self.active_rows)?.f_logical_not()?.f_unsqueeze(1)?;
            let _ = out.f_masked_fill_(&inactive, 0.0)?;
        }
        if let (Some(g), None) = (grad, direct) {
            rows(g)?.f_copy_(&out)?;
        }
        Ok(())
    }

    /// The tail step of a top-k block: `a` holds `q` on entry; writes
    /// `out = q·(base − w/T·p_tail/q_tail)` (its kept entries are overwritten afterwards) and the
    /// student's tail log-mass of the rows.
    #[allow(clippy::too_many_arguments)]
    fn tail(
        &self,
        a: &mut Tensor,
        x: &Tensor,
        ids: &Tensor,
        base: &Tensor,
        tail_weight: &Tensor,
        out: &mut Tensor,
        start: i64,
        len: i64,
    ) -> Result<()> {
        let vocab = a.size()[1];
        // The student's tail mass from the excluded entries themselves: the kept ids zeroed, the
        // rest summed (small positive numbers, no cancellation).
        let _ = a.f_scatter_value_(1, ids, 0.0)?;
        let q_tail = a.f_sum_dim_intlist(1, false, self.ck)?;
        // Below this the sum may be made of subnormal (or flushed) probabilities and lose its
        // relative precision: such blocks take the tail from a log-sum-exp of the excluded logits.
        let (tiny, eps) = match self.ck {
            Kind::Double => (f64::MIN_POSITIVE, f64::EPSILON),
            _ => (f64::from(f32::MIN_POSITIVE), f64::from(f32::EPSILON)),
        };
        let threshold = vocab as f64 * tiny / eps;
        let mut log_q_tail = self.log_q_tail.f_narrow(0, start, len)?;
        let underflow =
            q_tail.f_lt(threshold)?.f_logical_and(&tail_weight.f_ne(0.0)?)?.f_any()?.f_int64_value(&[])? != 0;
        if underflow {
            let tail_lse = x.f_scatter_value(1, ids, f64::NEG_INFINITY)?.f_logsumexp([1], false)?;
            log_q_tail.f_copy_(&tail_lse.f_sub(&x.f_logsumexp([1], false)?)?)?;
            // e^{x_j} / Σ_tail e^{x}: a tail token's share of the student's tail, from the logits.
            let mut share = x.f_sub(&tail_lse.f_unsqueeze(1)?)?.f_exp_()?;
            let _ = share.f_mul_(&tail_weight.f_unsqueeze(1)?)?;
            let _ = a.f_mul_out(out, base)?;
            let _ = out.f_sub_(&share)?;
        } else {
            log_q_tail.f_copy_(&q_tail.f_log()?)?;
            // A row without teacher tail has a zero tail weight: 0 / q_tail = 0 even for q_tail = 0.
            let ratio = tail_weight.f_div(&q_tail.f_clamp_min(tiny)?)?;
            let _ = a.f_mul_out(out, &base.f_sub(&ratio.f_unsqueeze(1)?)?)?;
        }
        Ok(())
    }

    /// `Σ_rows (w_kd·ℓ_kd + w_ce·ℓ_ce)` in f64 from the per-row results.
    fn value(&self, loss: &RowLoss<'_>) -> Result<Tensor> {
        let kd = match (&loss.teacher, &self.top) {
            (RowTeacher::TopK { .. }, Some([p, lp, _, p_tail, lp_tail, _])) => {
                // `p (log p − log q)` per bucket, 0 where p = 0 (log p = −inf there).
                let kept = p.f_mul(&lp.f_sub(&self.log_q_k)?)?.f_where_scalarother(&p.f_gt(0.0)?, 0.0)?;
                let tail =
                    p_tail.f_mul(&lp_tail.f_sub(&self.log_q_tail)?)?.f_where_scalarother(&p_tail.f_gt(0.0)?, 0.0)?;
                kept.f_sum_dim_intlist(1, false, self.ck)?.f_add(&tail)?
            }
            (RowTeacher::Logits(_), _) => self.kl.shallow_clone(),
            _ => self.kl.f_zeros_like()?,
        };
        let ce = self.ce_log_q.f_neg()?;
        let weighted =
            |w: &Tensor, l: &Tensor| -> Result<Tensor> { Ok(w.f_mul(l)?.f_where_scalarother(&w.f_ne(0.0)?, 0.0)?) };
        Ok(weighted(&self.kd_w, &kd)?.f_add(&weighted(&self.ce_w, &ce)?)?.f_sum(Kind::Double)?)
    }
}

/// The loss `value` (a scalar without gradient) as a tensor whose gradient with respect to `z` is
/// `grad` (`[…]`, the shape of `z`, without gradient): `S − detach(S) + value` with
/// `S = ⟨z, grad⟩`, which is `value` exactly (`S − S = 0` for a finite `S`). Positions where `z`
/// is not finite and `grad` is 0 (masked tokens) would make `S` NaN; they are left out of `S`
/// then, which changes neither its gradient elsewhere nor the value. The surrogate has no second
/// derivative. Without a gradient on `z`, `value` itself.
///
/// # Errors
/// When `S` is not finite even without those positions: [`CriterionError::LossNotFinite`] if the
/// loss itself is not (`+inf` where the student rules out what the teacher gives mass, NaN), whose
/// gradient is then not finite either; otherwise [`CriterionError::GradientOverflow`] (a gradient
/// or logit so large that the surrogate cannot carry it exactly).
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
            // Name the cause: an infinite or NaN loss leaves NaN in its gradient, which is not an
            // overflow of a finite loss's gradient.
            let loss = value.f_double_value(&[])?;
            if !loss.is_finite() {
                return Err(CriterionError::LossNotFinite { value: loss }.into());
            }
            return Err(CriterionError::GradientOverflow.into());
        }
    }
    Ok(s.f_sub(&s.f_detach()?)?.f_add(value)?)
}
