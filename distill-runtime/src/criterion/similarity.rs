//! [`SimilarityPreserving`] (Tung & Mori 2019).

use tch::Tensor;

use super::check::same_batch;
use super::{batch_size, catalogue_criterion, normalize, rows};

/// Similarity-preserving KD, Tung & Mori, "Similarity-Preserving Knowledge Distillation" (ICCV 2019),
/// as RepDistiller's `distiller_zoo/SP.py` (verified there by the paper's author):
///
/// with `f` the features flattened to `(N, -1)`, `G = F.normalize(f · fᵀ)` (the `N × N` Gram matrix with
/// L2-normalised rows), the loss is `‖G_s − G_t‖²_F / N²`.
///
/// Only the batch sizes must agree: student and teacher features may have any widths and shapes.
/// The paper weights it by γ = 3000 (`SimilarityPreserving * 3000.0`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct SimilarityPreserving;

fn gram(x: &Tensor) -> Tensor {
    let f = rows(x);
    normalize(&f.mm(&f.tr()), 1)
}

impl SimilarityPreserving {
    fn compute(&self, student: &Tensor, teacher: &Tensor, _: Option<&Tensor>) -> Tensor {
        let n = batch_size(student);
        (gram(teacher) - gram(student)).square().sum(None) / (n * n)
    }
}

catalogue_criterion!(SimilarityPreserving {
    /// The same (non-empty) batch size; any feature shapes.
    fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> Result<(), String> {
        same_batch(student, teacher, 1)
    }
});
