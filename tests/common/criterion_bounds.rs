//! The magnitude of what each criterion sums, for the error bounds of the criterion parity tests.
//!
//! For a computation whose rounding errors are relative to its operands, `|computed − exact| ≤
//! depth · u · M`, where `M` is the computation evaluated with every cancelling difference `a − b`
//! replaced by `|a| + |b|` and every sum by a sum of absolute values (Higham, *Accuracy and
//! Stability of Numerical Algorithms*, §3). Each function below writes that `M` for one criterion's
//! formula, in f64 from the f64 inputs, divided by the loss's own normaliser; a derivation line says
//! where each term comes from. `M` never depends on the loss being large: PKT's or SP's loss on
//! nearly equal inputs is tiny while `M` stays of the order of the probabilities it sums.

use tch::{Kind, Tensor};

/// `(N, rest)` view, as the relational criteria flatten their features.
fn rows(x: &Tensor) -> Tensor {
    x.reshape([x.size()[0], -1])
}

fn total(t: &Tensor) -> f64 {
    t.sum(Kind::Double).double_value(&[])
}

fn mean(t: &Tensor) -> f64 {
    t.mean(Kind::Double).double_value(&[])
}

/// `d² + 2|d|·m + u·m²` for `d = a − b` rounded by at most `u·m`, `m = |a| + |b|`: squaring
/// doubles the rounding relative to `|d|`, and when `d` is itself rounding (`a = b` analytically)
/// the square of that rounding remains (taken at f32's `u`, the coarser of the two).
fn squared_difference(a: &Tensor, abs_a: &Tensor, b: &Tensor, abs_b: &Tensor) -> Tensor {
    let d = a - b;
    let m = abs_a + abs_b;
    d.square() + d.abs() * &m * 2.0 + m.square() * super::bounds::U_F32
}

/// Mean of the squared difference's magnitude: `d = s − t` is rounded relative to `|s| + |t|` (the
/// f32 inputs and the subtraction).
pub fn mse(s: &Tensor, t: &Tensor) -> f64 {
    mean(&squared_difference(s, &s.abs(), t, &t.abs()))
}

/// Mean of `|s| + |t|`, which bounds `|d|` and the rounding of `d`.
pub fn l1(s: &Tensor, t: &Tensor) -> f64 {
    mean(&(s.abs() + t.abs()))
}

/// Mean of `f(d) + f′(d)(|s| + |t|)` with `f′ = min(|d| / β, 1)`: the term and its sensitivity to
/// the rounding of `d`.
pub fn smooth_l1(s: &Tensor, t: &Tensor, beta: f64) -> f64 {
    let d = (s - t).abs();
    let (value, slope) = if beta > 0.0 {
        let quadratic = d.lt(beta);
        ((d.square() * (0.5 / beta)).where_self(&quadratic, &(&d - 0.5 * beta)), (&d / beta).clamp_max(1.0))
    } else {
        (d.shallow_clone(), d.ones_like())
    };
    mean(&(value + slope * (s.abs() + t.abs())))
}

/// 3 per row: `1 − cos`, with the dot product's Σ|sᵢtᵢ| ≤ ‖s‖‖t‖ (Cauchy–Schwarz) and `|cos| ≤ 1`.
pub fn cosine() -> f64 {
    3.0
}

/// `T² / N · Σ_positions Σ_c (p_c + q_c) · (|s_c/T| + |t_c/T| + |lse_s| + |lse_t| + 1)`: the
/// log-probabilities `x/T − lse` are rounded relative to `|x/T| + |lse|`, the probabilities
/// relative to themselves (the `+ 1`), and each is weighted by the probability that multiplies it.
/// Classes along dimension 1, `N` the batch (KL's `batchmean`, soft cross-entropy's mean).
pub fn softmax_pair(s: &Tensor, t: &Tensor, temperature: f64) -> f64 {
    let (zs, zt) = (s / temperature, t / temperature);
    let (lse_s, lse_t) = (zs.logsumexp([1], true), zt.logsumexp([1], true));
    let weight = zs.softmax(1, Kind::Double) + zt.softmax(1, Kind::Double);
    let logs = zs.abs() + zt.abs() + lse_s.abs() + lse_t.abs() + 1.0;
    temperature * temperature * total(&(weight * logs)) / s.size()[0] as f64
}

/// DKD: its target and non-target terms are each a KL of (re-normalised) softmaxes of the same
/// logits, weighted by α and β; the non-target softmax's normaliser is at most the full one.
pub fn dkd(s: &Tensor, t: &Tensor, alpha: f64, beta: f64, temperature: f64) -> f64 {
    (alpha.abs() + beta.abs()) * softmax_pair(s, t, temperature)
}

/// Top-k KL over the packed teacher `(N, 2, k)`: as [`softmax_pair`] over the stored classes, plus
/// the rest bucket, whose teacher mass `1 − Σ p_k` cancels (rounded relative to 1) and whose
/// student mass is a log-sum-exp of the other classes.
pub fn top_k_kl(s: &Tensor, packed: &Tensor, temperature: f64) -> f64 {
    let (n, classes) = (s.size()[0], s.size()[1]);
    let log_p = packed.select(1, 0);
    let indices = packed.select(1, 1).to_kind(Kind::Int64);
    let k = indices.size()[1];
    let z = s / temperature;
    let lse = z.logsumexp([1], true);
    let p = log_p.exp();
    let q = (z.gather(1, &indices, false) - &lse).exp();
    let stored = (&p + &q) * (z.gather(1, &indices, false).abs() + log_p.abs() + lse.abs() + 1.0);
    let mut m = total(&stored);
    if k < classes {
        let p_other = (-p.sum_dim_intlist(1, false, Kind::Double) + 1.0).clamp_min(super::bounds::U_F32);
        let log_q_other = z.scatter_value(1, &indices, f64::NEG_INFINITY).logsumexp([1], false) - lse.squeeze_dim(1);
        let q_other = log_q_other.exp();
        // The rest bucket's terms, and its mass's absolute rounding (≤ k u against 1) times |log|.
        let other = (&p_other + &q_other + 1.0) * (p_other.log().abs() + log_q_other.abs() + 1.0);
        m += total(&other);
    }
    temperature * temperature * m / n as f64
}

/// `mean_c |f|^p / ‖mean_c f^p‖` per sample: the attention map evaluated on magnitudes (equal to
/// the map for even `p`; for `p = 1` the channel mean cancels).
fn attention_abs(f: &Tensor, p: f64) -> (Tensor, Tensor) {
    let n = f.size()[0];
    let signed = f.pow_tensor_scalar(p).mean_dim(1, false, Kind::Double).reshape([n, -1]);
    let magnitude = f.abs().pow_tensor_scalar(p).mean_dim(1, false, Kind::Double).reshape([n, -1]);
    let norm = signed.square().sum_dim_intlist(1, true, Kind::Double).sqrt().clamp_min(1e-12);
    (&signed / &norm, magnitude / norm)
}

/// Mean of the squared difference's magnitude over the normalised attention maps `a` (entries ≤ 1), with
/// `|a|` the maps of magnitudes (see `attention_abs`).
pub fn attention_transfer(s: &Tensor, t: &Tensor, p: f64) -> f64 {
    let ((a_s, abs_s), (a_t, abs_t)) = (attention_abs(s, p), attention_abs(t, p));
    mean(&squared_difference(&a_s, &abs_s, &a_t, &abs_t))
}

/// The row-normalised Gram matrix and its magnitude `|F||F|ᵀ / ‖row of FFᵀ‖`.
fn gram_abs(x: &Tensor) -> (Tensor, Tensor) {
    let f = rows(x);
    let gram = f.mm(&f.tr());
    let magnitude = f.abs().mm(&f.abs().tr());
    let norm = gram.square().sum_dim_intlist(1, true, Kind::Double).sqrt().clamp_min(1e-12);
    (&gram / &norm, magnitude / norm)
}

/// The squared difference's magnitude over the normalised Gram matrices, summed, over `N²`.
pub fn similarity_preserving(s: &Tensor, t: &Tensor) -> f64 {
    let ((g_s, abs_s), (g_t, abs_t)) = (gram_abs(s), gram_abs(t));
    let n = s.size()[0] as f64;
    total(&squared_difference(&g_s, &abs_s, &g_t, &abs_t)) / (n * n)
}

/// PKT's conditional probabilities and their magnitudes: cosine kernel `(x̂x̂ᵀ + 1)/2` over its row
/// sums, with `(|x̂||x̂|ᵀ + 1)/2` for the dot products' Σ|terms|.
fn pkt_probabilities(x: &Tensor) -> (Tensor, Tensor) {
    let f = rows(x);
    let unit = &f / (f.square().sum_dim_intlist(1, true, Kind::Double).sqrt() + 1e-7);
    let kernel = (unit.mm(&unit.tr()) + 1.0) / 2.0;
    let magnitude = (unit.abs().mm(&unit.abs().tr()) + 1.0) / 2.0;
    let sums = kernel.sum_dim_intlist(1, true, Kind::Double);
    (&kernel / &sums, magnitude / sums)
}

/// Mean over the `N × N` entries of `|Q|·|log r| + |Q| + Q·|P|/P + Q·(|log Q| + |log P|)` with
/// `r = (Q + ε)/(P + ε)`: the teacher probability's rounding times the log ratio, the log ratio's
/// rounding through P and Q (relative), and the two logarithms' own (relative to their size).
pub fn pkt(s: &Tensor, t: &Tensor) -> f64 {
    const EPS: f64 = 1e-7;
    let ((p, abs_p), (q, abs_q)) = (pkt_probabilities(s), pkt_probabilities(t));
    let (log_p, log_q) = ((&p + EPS).log(), (&q + EPS).log());
    let ratio = (&log_q - &log_p).abs();
    let terms = &abs_q * &ratio + &abs_q + &q * abs_p / (&p + EPS) + &q * (log_q.abs() + log_p.abs());
    mean(&terms)
}

/// Normalised pairwise distances and the magnitude of their rounding: `‖eᵢ‖² + ‖eⱼ‖² − 2eᵢ·eⱼ`
/// is rounded relative to `E = ‖eᵢ‖² + ‖eⱼ‖² + 2Σ|eᵢeⱼ|`, the square root halves that relative to
/// `d²` (`E / 2d`), and the division by the mean distance adds the mean's own (relative to it).
fn distances_abs(x: &Tensor) -> (Tensor, Tensor) {
    let e = rows(x);
    let n = e.size()[0];
    let square = e.square().sum_dim_intlist(1, false, Kind::Double);
    let sum_sq = square.unsqueeze(1) + square.unsqueeze(0);
    let squared = (&sum_sq - e.mm(&e.tr()) * 2.0).clamp_min(1e-12);
    let spread = sum_sq + e.abs().mm(&e.abs().tr()) * 2.0;
    let off = Tensor::eye(n, (Kind::Bool, e.device())).logical_not();
    let zero = squared.zeros_like();
    let d = squared.sqrt().where_self(&off, &zero);
    let err = (spread / (squared.sqrt() * 2.0)).where_self(&off, &zero);
    let pairs = (n * (n - 1)) as f64;
    let mean_d = total(&d) / pairs;
    let mean_err = total(&err) / pairs;
    (&d / mean_d, (err + &d * (mean_err / mean_d)) / mean_d)
}

/// Angles `(eⱼ − eᵢ)ˆ · (eₖ − eᵢ)ˆ` and their magnitude `1 + ρᵢⱼ + ρᵢₖ`, where `ρᵢⱼ =
/// ‖|eᵢ| + |eⱼ|‖ / ‖eⱼ − eᵢ‖` is the relative rounding of a difference direction (0 on the
/// diagonal, whose zero direction is exact).
fn angles_abs(x: &Tensor) -> (Tensor, Tensor) {
    let e = rows(x);
    let diff = e.unsqueeze(0) - e.unsqueeze(1);
    let length = diff.square().sum_dim_intlist(2, true, Kind::Double).sqrt();
    let spread = (e.abs().unsqueeze(0) + e.abs().unsqueeze(1)).square().sum_dim_intlist(2, true, Kind::Double).sqrt();
    let nonzero = length.gt(0.0);
    let unit = (&diff / length.clamp_min(1e-12)).where_self(&nonzero, &diff.zeros_like());
    let rho = (spread / length.clamp_min(1e-12)).where_self(&nonzero, &length.zeros_like()).squeeze_dim(2);
    let angles = unit.bmm(&unit.transpose(1, 2));
    let magnitude = rho.unsqueeze(2) + rho.unsqueeze(1) + 1.0;
    (angles, magnitude)
}

/// Smooth-L1 (β = 1) of `a − b`, with its slope `min(|a − b|, 1)` times the operands' rounding.
fn huber_abs(a: &Tensor, abs_a: &Tensor, b: &Tensor, abs_b: &Tensor) -> f64 {
    let d = (a - b).abs();
    let value = (d.square() * 0.5).where_self(&d.lt(1.0), &(&d - 0.5));
    mean(&(value + d.clamp_max(1.0) * (abs_a + abs_b)))
}

/// RKD: `w_d` × the distance term's magnitude + `w_a` × the angle term's.
pub fn rkd(s: &Tensor, t: &Tensor, distance_weight: f64, angle_weight: f64) -> f64 {
    let ((d_s, abs_ds), (d_t, abs_dt)) = (distances_abs(s), distances_abs(t));
    let ((a_s, abs_as), (a_t, abs_at)) = (angles_abs(s), angles_abs(t));
    distance_weight.abs() * huber_abs(&d_s, &abs_ds, &d_t, &abs_dt)
        + angle_weight.abs() * huber_abs(&a_s, &abs_as, &a_t, &abs_at)
}

/// One DIST relation (Pearson correlation along dimension 1, averaged): `1 − mean(ρ)` with each
/// `ρ` rounded relative to `3 + ‖εₐ‖/‖ã‖ + ‖ε_b‖/‖b̃‖`, where `ã = a − mean(a)` cancels and is
/// rounded by `εₐ = a·(|x/τ| + |lse| + 1) + mean(a)` (the softmax's rounding, then the centring's).
fn relation_abs(a: &Tensor, err_a: &Tensor, b: &Tensor, err_b: &Tensor) -> f64 {
    let centred = |x: &Tensor, err: &Tensor| {
        let c = x - x.mean_dim(1, true, Kind::Double);
        let e = err + x.mean_dim(1, true, Kind::Double);
        let norm = c.square().sum_dim_intlist(1, false, Kind::Double).sqrt().clamp_min(1e-12);
        e.square().sum_dim_intlist(1, false, Kind::Double).sqrt() / norm
    };
    1.0 + mean(&(centred(a, err_a) + centred(b, err_b) + 3.0))
}

/// DIST: `τ²(β · inter + γ · intra)`, the relations over the rows and over the columns of the
/// softmaxes.
pub fn dist(s: &Tensor, t: &Tensor, beta: f64, gamma: f64, tau: f64) -> f64 {
    let softmax_abs = |x: &Tensor| {
        let z = x / tau;
        let y = z.softmax(1, Kind::Double);
        let err = &y * (z.abs() + z.logsumexp([1], true).abs() + 1.0);
        (y, err)
    };
    let ((y_s, e_s), (y_t, e_t)) = (softmax_abs(s), softmax_abs(t));
    let inter = relation_abs(&y_s, &e_s, &y_t, &e_t);
    let intra = relation_abs(&y_s.tr(), &e_s.tr(), &y_t.tr(), &e_t.tr());
    tau * tau * (beta.abs() * inter + gamma.abs() * intra)
}
