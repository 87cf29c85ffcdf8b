//! Cross-entropy and top-k distillation of a language model in one pass over the vocabulary
//! ([`TokenKd`]): the usual `α·KD + β·CE` of a token-level KD step, with the gradient with respect to
//! the logits computed analytically for both terms at once.

use tch::{Kind, Tensor};

use super::mask::IGNORE_INDEX;
use super::tail::TopKTail;
use super::tail_kl::{fused_loss, TopKKl};
use crate::error::{CriterionError, Result};

/// A student's token loss against its labels and a teacher's top-k with an exact tail:
///
/// `L = kd_weight · KD + ce_weight · CE`
///
/// with `KD` the [`TopKKl`] loss (its temperature and reduction) and `CE` the cross-entropy of the
/// student's logits at temperature 1 on the labels, `logsumexp(z) − z[label]` per token, reduced
/// the same way. Both terms count the same tokens: those whose label is not −100 and, with a mask,
/// where the mask is non-zero. With [`TokenReduction::Token`](super::TokenReduction::Token), `CE`
/// is PyTorch's `cross_entropy(ignore_index = −100)`.
///
/// The loss and its gradient with respect to the logits come from one pass over them, block by
/// block of tokens: at `T = 1` the two terms share one softmax,
/// `∂L/∂z_j = w · (kd_weight·g_j + ce_weight·(q_j − [j = label]))` with `g` the top-k KL's gradient
/// ([`TopKKl`]'s [`f_loss_masked`](super::TokenCriterion::f_loss_masked)). No autograd graph over
/// `[B, T, V]` is kept: beside the logits, one `[B, T, V]` gradient buffer, where the two terms
/// through autograd hold several. The result has no second derivative.
///
/// ```
/// # extern crate distill_runtime as distill;
/// use distill::criterion::{TokenCriterion, TokenKd, TopKKl, TopKTail};
/// use tch::{Device, Kind, Tensor};
///
/// let s = Tensor::randn([2, 4, 30], (Kind::Double, Device::Cpu)).set_requires_grad(true);
/// let t = Tensor::randn([2, 4, 30], (Kind::Double, Device::Cpu));
/// let top = TopKTail::f_encode(&t, 5, 1.0)?;
/// let labels = Tensor::from_slice(&[3i64, 7, 1, -100, 0, 29, 4, -100]).reshape([2, 4]);
/// let fused = TokenKd::new(TopKKl::new(1.0), 0.5).f_loss(&s, &top, &labels, None)?;
/// // The same as the two terms computed apart.
/// let kd = TopKKl::new(1.0).f_per_token(&s, &top)?;
/// let valid = labels.ne(-100);
/// let kd = kd.masked_select(&valid).mean(Kind::Double);
/// let y = labels.clamp_min(0).unsqueeze(-1);
/// let ce = s.log_softmax(-1, Kind::Double).gather(-1, &y, false).squeeze_dim(-1).neg();
/// let ce = ce.masked_select(&valid).mean(Kind::Double);
/// let want = kd + ce * 0.5;
/// assert!((fused.double_value(&[]) - want.double_value(&[])).abs() < 1e-12);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenKd {
    /// The distillation term: its temperature (the teacher's encoding's) and the reduction of
    /// both terms.
    pub kd: TopKKl,
    /// The weight of the distillation term (finite).
    pub kd_weight: f64,
    /// The weight of the cross-entropy term (finite).
    pub ce_weight: f64,
}

impl TokenKd {
    /// `KD + ce_weight · CE` with the distillation term `kd`.
    pub const fn new(kd: TopKKl, ce_weight: f64) -> Self {
        TokenKd { kd, kd_weight: 1.0, ce_weight }
    }

    /// This loss with the distillation term weighted by `kd_weight`.
    pub const fn with_kd_weight(self, kd_weight: f64) -> Self {
        TokenKd { kd_weight, ..self }
    }

    /// The loss of student logits `[B, T, V]` against the teacher's top-k `teacher` (`[B, T, k]`)
    /// and the next-token `labels` (`[B, T]`, integer, −100 ignored), over the tokens whose label
    /// is not −100 and where `valid` (`[B, T]`, non-zero valid), when given, holds. With no such
    /// token — every token left out, or none at all (`B = 0` or `T = 0`) — the loss is 0 with a
    /// zero gradient ([`TokenReduction`](super::TokenReduction)).
    ///
    /// # Errors
    /// [`CriterionError`](super::CriterionError) as `TopKKl`'s
    /// [`f_loss_masked`](super::TokenCriterion::f_loss_masked), for weights that are not finite,
    /// labels of another shape or kind, or a label outside `0..V` that is not −100.
    pub fn f_loss(
        &self,
        student: &Tensor,
        teacher: &TopKTail,
        labels: &Tensor,
        valid: Option<&Tensor>,
    ) -> Result<Tensor> {
        for (name, weight) in [("KD", self.kd_weight), ("CE", self.ce_weight)] {
            if !weight.is_finite() {
                return Err(
                    CriterionError::NotFinite { name: format!("TokenKd's {name} weight"), value: weight }.into()
                );
            }
        }
        let shapes = self.kd.check_top_k(student, teacher)?;
        let labels = check_labels(labels, &shapes.0, shapes.1)?;
        fused_loss(&self.kd, self.kd_weight, student, teacher, shapes, Some((&labels, self.ce_weight)), valid)
    }

    /// The unchecked twin of [`f_loss`](Self::f_loss): panics with its error.
    pub fn loss(&self, student: &Tensor, teacher: &TopKTail, labels: &Tensor, valid: Option<&Tensor>) -> Tensor {
        self.f_loss(student, teacher, labels, valid).unwrap_or_else(|err| panic!("{err}"))
    }
}

/// `labels` checked against the token shape `lead` and a vocabulary of `vocab` tokens.
fn check_labels(labels: &Tensor, lead: &[i64], vocab: i64) -> Result<Tensor> {
    if !labels.defined() {
        return Err(CriterionError::Undefined { tensor: "TokenKd's labels tensor".into() }.into());
    }
    if labels.size() != lead {
        return Err(CriterionError::LabelShape { expected: lead.to_vec(), got: labels.size() }.into());
    }
    let kind = labels.f_kind()?;
    if !matches!(kind, Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8) {
        return Err(CriterionError::LabelKind { kind }.into());
    }
    let labels = labels.f_to_kind(Kind::Int64)?;
    if labels.numel() > 0 {
        let outside = labels.f_ge(vocab)?.f_logical_or(&labels.f_lt(0)?.f_logical_and(&labels.f_ne(IGNORE_INDEX)?)?)?;
        if outside.f_any()?.f_int64_value(&[])? != 0 {
            return Err(CriterionError::LabelOutOfRange { vocab, ignore_index: IGNORE_INDEX }.into());
        }
    }
    Ok(labels)
}
