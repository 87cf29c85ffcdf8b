//! [`Rkd`] (Park et al. 2019).

use tch::{Kind, Reduction, Tensor};

use super::check::{parameter, same_batch};
use super::{catalogue_criterion, normalize, rows};

/// The reference's floor on squared distances, before the square root.
const SQUARED_DISTANCE_FLOOR: f64 = 1e-12;

/// Relational KD, Park et al., "Relational Knowledge Distillation" (CVPR 2019), as the authors' code
/// and RepDistiller's `distiller_zoo/RKD.py`, on features flattened to `(N, -1)`:
///
/// - **distance**: `d_ij = ‖f_i − f_j‖₂` computed as `sqrt(max(‖f_i‖² + ‖f_j‖² − 2 f_i·f_j, 1e-12))` with
///   the diagonal set to 0, divided by its mean over the `N(N−1)` off-diagonal entries;
///   loss `F.smooth_l1_loss(d_s, d_t)` (β = 1, mean);
/// - **angle**: `e_ij = F.normalize(f_j − f_i)`, `a_ijk = e_ij · e_ik`; loss `F.smooth_l1_loss(a_s, a_t)`
///   over all `N³` entries;
///
/// and the loss is `distance_weight · distance + angle_weight · angle`. When one weight is 0, that
/// term is not computed (RKD-D or RKD-A alone); when both are, the distance term is computed and
/// multiplied by 0, so that the loss is a zero (for finite features) still connected to the
/// student. The angle term holds `N² × D` differences, as the reference does.
///
/// Only the batch sizes must agree (any feature widths), and the batch needs at least 2 samples: with
/// one, the mean distance is 0/0 (NaN in the reference too), so
/// [`Criterion::check_shapes`](super::Criterion::check_shapes) rejects it. Weights must be finite and ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rkd {
    /// Weight of the distance term (paper: 25).
    pub distance_weight: f64,
    /// Weight of the angle term (paper: 50).
    pub angle_weight: f64,
}

impl Rkd {
    /// RKD with these weights of the distance and the angle term.
    pub const fn new(distance_weight: f64, angle_weight: f64) -> Self {
        Rkd { distance_weight, angle_weight }
    }
}

/// `distance_weight = 25`, `angle_weight = 50`, as the paper and RepDistiller.
impl Default for Rkd {
    fn default() -> Self {
        Rkd::new(25.0, 50.0)
    }
}

/// Pairwise Euclidean distances of the rows of `e` (`n` of them) with a zero diagonal (`diagonal`: the
/// boolean identity), divided by their off-diagonal mean.
fn normalized_distances(e: &Tensor, n: i64, diagonal: &Tensor) -> Tensor {
    let square = e.square().sum_dim_intlist(1, false, None);
    let squared = (square.unsqueeze(1) + square.unsqueeze(0) - e.mm(&e.tr()) * 2.0).clamp_min(SQUARED_DISTANCE_FLOOR);
    let d = squared.sqrt().masked_fill(diagonal, 0.0);
    // Off-diagonal entries are ≥ sqrt(floor) > 0 and the diagonal is 0, so this is the reference's
    // `d[d > 0].mean()` without its data-dependent (host-synchronising) indexing.
    let mean = d.sum(None) / (n * (n - 1)) as f64;
    d / mean
}

/// Cosines of the angles at each sample `i` between the directions to `j` and to `k`, flattened.
fn angles(e: &Tensor) -> Tensor {
    let directions = normalize(&(e.unsqueeze(0) - e.unsqueeze(1)), 2);
    directions.bmm(&directions.transpose(1, 2)).reshape([-1])
}

impl Rkd {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        let (s, t) = (rows(student), rows(teacher));
        let distance = || {
            let n = s.size().first().copied().unwrap_or(1);
            let diagonal = Tensor::eye(n, (Kind::Bool, s.device()));
            let (d_s, d_t) = (normalized_distances(&s, n, &diagonal), normalized_distances(&t, n, &diagonal));
            d_s.smooth_l1_loss(&d_t, Reduction::Mean, 1.0) * self.distance_weight
        };
        let angle = || angles(&s).smooth_l1_loss(&angles(&t), Reduction::Mean, 1.0) * self.angle_weight;
        match (self.distance_weight != 0.0, self.angle_weight != 0.0) {
            (true, true) => distance() + angle(),
            (false, true) => angle(),
            // Both weights 0: still a (zero) loss connected to the student.
            (_, false) => distance(),
        }
    }
}

catalogue_criterion!(Rkd {
    /// Both weights finite and ≥ 0.
    fn validate(&self) -> Result<(), String> {
        parameter("Rkd's distance_weight", self.distance_weight, 0.0, false)?;
        parameter("Rkd's angle_weight", self.angle_weight, 0.0, false)
    }

    /// The same batch size, at least 2 (distances between samples); any feature shapes.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        same_batch(student, teacher, 2)
    }
});
