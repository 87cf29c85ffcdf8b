//! [`Dist`] (Huang et al. 2022).

use tch::Tensor;

use super::catalogue_criterion;
use super::check::{equal_non_empty, logits_2d, parameter};

/// The official code's ε in the denominator of the Pearson correlation.
const PEARSON_EPS: f64 = 1e-8;

/// DIST, Huang et al., "Knowledge Distillation from A Stronger Teacher" (NeurIPS 2022), as the official
/// code (`hunto/DIST_KD`, `image_classification_sota/lib/models/losses/dist_kd.py`), on logits `(N, C)`:
///
/// with `y = softmax(z/τ, dim=1)` and the Pearson correlation of rows
/// `ρ(a, b) = Σ (a − ā)(b − b̄) / (‖a − ā‖₂ · ‖b − b̄‖₂ + 1e-8)` (means and norms along each row),
///
/// - inter-class relation: `1 − mean_i ρ(y_s[i, :], y_t[i, :])` (each sample's class distribution);
/// - intra-class relation: `1 − mean_c ρ(y_s[:, c], y_t[:, c])` (each class over the batch);
///
/// and the loss is `τ² · (β · inter + γ · intra)`. β and γ must be finite and ≥ 0, τ finite and > 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dist {
    /// Weight of the inter-class relation (official default: 1).
    pub beta: f64,
    /// Weight of the intra-class relation (official default: 1).
    pub gamma: f64,
    /// Softmax temperature (official default: 1).
    pub tau: f64,
}

impl Dist {
    /// DIST with these weights of the inter- and intra-class terms and temperature `tau`.
    pub const fn new(beta: f64, gamma: f64, tau: f64) -> Self {
        Dist { beta, gamma, tau }
    }
}

/// `β = γ = τ = 1`, as the official code.
impl Default for Dist {
    fn default() -> Self {
        Dist::new(1.0, 1.0, 1.0)
    }
}

/// `1 − mean over rows of the Pearson correlation of a[i, :] and b[i, :]`.
fn relation(a: &Tensor, b: &Tensor) -> Tensor {
    let a = a - a.mean_dim(1, true, None);
    let b = b - b.mean_dim(1, true, None);
    let norms = a.norm_scalaropt_dim(2, [1], false) * b.norm_scalaropt_dim(2, [1], false) + PEARSON_EPS;
    let pearson = (a * b).sum_dim_intlist(1, false, None) / norms;
    1.0 - pearson.mean(None)
}

impl Dist {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        let y_s = (student / self.tau).softmax(1, None);
        let y_t = (teacher / self.tau).softmax(1, None);
        let inter = relation(&y_s, &y_t);
        let intra = relation(&y_s.tr(), &y_t.tr());
        (inter * self.beta + intra * self.gamma) * (self.tau * self.tau)
    }
}

catalogue_criterion!(Dist {
    /// β and γ finite and ≥ 0, τ finite and > 0.
    fn validate(&self) -> Result<(), String> {
        parameter("Dist's beta", self.beta, 0.0, false)?;
        parameter("Dist's gamma", self.gamma, 0.0, false)?;
        parameter("Dist's tau", self.tau, 0.0, true)
    }

    /// Equal, non-empty 2-D shapes (logits `(N, C)`).
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        equal_non_empty(student, teacher)?;
        logits_2d(student)
    }
});
