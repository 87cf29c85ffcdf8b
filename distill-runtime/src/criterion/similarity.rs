//! [`SimilarityPreserving`] (Tung & Mori 2019).

use tch::Tensor;

use super::{batch_size, normalize, rows, same_batch, Criterion};

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

impl Criterion for SimilarityPreserving {
    fn loss(&self, student: &Tensor, teacher: &Tensor) -> Tensor {
        let n = batch_size(student);
        (gram(teacher) - gram(student)).square().sum(None) / (n * n)
    }

    /// The same batch size; any feature shapes.
    fn accepts_shapes(&self, student: &[i64], teacher: &[i64]) -> bool {
        same_batch(student, teacher)
    }
}
