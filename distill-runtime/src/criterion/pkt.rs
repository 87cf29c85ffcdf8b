//! [`Pkt`] (Passalis & Tefas 2018).

use tch::Tensor;

use super::check::same_batch;
use super::{catalogue_criterion, rows};

/// The reference's ε, added to norms and probabilities.
const EPS: f64 = 1e-7;

/// Probabilistic knowledge transfer, Passalis & Tefas, "Learning Deep Representations with
/// Probabilistic Knowledge Transfer" (ECCV 2018), with the cosine-similarity kernel of the authors' code
/// (as RepDistiller's `distiller_zoo/PKT.py`), on features flattened to `(N, -1)`:
///
/// - each row scaled to unit length, `x / (‖x‖₂ + ε)`;
/// - kernel `K = (x·xᵀ + 1) / 2` (cosine similarity mapped to [0, 1]), each row divided by its sum,
///   giving conditional probabilities `P` (student) and `Q` (teacher);
/// - loss `mean(Q · log((Q + ε) / (P + ε)))` over all `N²` entries (the KL divergence from `Q` to `P`,
///   averaged), with `ε = 1e-7`.
///
/// The reference also replaces NaNs after the row scaling by 0; NaNs can only come from NaN inputs,
/// which this criterion propagates instead. Only the batch sizes must agree (any feature widths).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pkt;

fn probabilities(x: &Tensor) -> Tensor {
    let x = rows(x);
    let x = &x / (x.square().sum_dim_intlist(1, true, None).sqrt() + EPS);
    let kernel = (x.mm(&x.tr()) + 1.0) / 2.0;
    &kernel / kernel.sum_dim_intlist(1, true, None)
}

impl Pkt {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        let p = probabilities(student);
        let q = probabilities(teacher);
        (&q * ((&q + EPS) / (p + EPS)).log()).mean(None)
    }
}

catalogue_criterion!(Pkt {
    /// The same (non-empty) batch size; any feature shapes.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        same_batch(student, teacher, 1)
    }
});
