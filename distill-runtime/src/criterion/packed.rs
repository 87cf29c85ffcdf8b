//! What the token criteria over a packed teacher encoding share as [`Criterion`]s: the teacher
//! tensor is the encoding packed into one tensor `[B, T, width]`, as a token cache stores it, and
//! the targets, when given, are token labels whose −100 marks the tokens left out.

use tch::Tensor;

use super::check::check_encoded_call;
use super::mask::valid_labels;
use super::token::TokenCriterion;
use super::Criterion;
use crate::error::Result;

/// A token-level teacher encoding with a packed form `[B, T, width]`.
pub(super) trait PackedTokens: Sized {
    /// The packed form, as the shape errors name it (`"a packed top-k tail [B, T, 2k + 1]"`).
    const FORM: &'static str;

    /// The encoding read back from `packed`, for a vocabulary of `vocab` tokens.
    fn f_unpack(packed: &Tensor, vocab: i64) -> Result<Self>;

    /// Why `width` is not the last dimension of a packed encoding for a vocabulary of `vocab`
    /// tokens, or `Ok`.
    fn check_width(width: i64, vocab: i64) -> std::result::Result<(), String>;
}

/// [`Criterion::f_loss_with_targets`] of a token criterion whose teacher is a packed encoding: the
/// call checked, the encoding unpacked, and the loss over the tokens whose label is not −100 (every
/// token without targets).
pub(super) fn f_packed_loss<C>(
    criterion: &C,
    student: &Tensor,
    teacher: &Tensor,
    targets: Option<&Tensor>,
) -> Result<Tensor>
where
    C: Criterion + TokenCriterion,
    C::Teacher: PackedTokens,
{
    check_encoded_call(criterion, student, teacher, targets)?;
    let vocab = student.size().last().copied().unwrap_or(0);
    let encoding = C::Teacher::f_unpack(teacher, vocab)?;
    let valid = targets.map(valid_labels).transpose()?;
    criterion.f_loss_masked(student, &encoding, valid.as_ref())
}

/// [`Criterion::check_shapes`] of a token criterion whose teacher is a packed encoding `P`: student
/// logits `[B, …, V]` and a packed teacher `[B, …, width]` over the same tokens, with `V ≥ 1`. The
/// token dimensions may be 0: no token is no valid token, a loss of 0
/// ([`TokenReduction`](super::TokenReduction)), as [`SequenceKd`](super::SequenceKd) gives.
pub(super) fn check_packed_shapes<P: PackedTokens>(
    student: &[i64],
    teacher: &[i64],
) -> std::result::Result<(), String> {
    let (Some((&vocab, s_lead)), Some((&width, t_lead))) = (student.split_last(), teacher.split_last()) else {
        return Err(format!("it needs logits [B, T, V] and {}", P::FORM));
    };
    if s_lead.is_empty() || s_lead != t_lead {
        return Err(format!(
            "it needs logits [B, T, V] and {} over the same tokens, got {student:?} and {teacher:?}",
            P::FORM
        ));
    }
    if vocab == 0 {
        return Err("the vocabulary (the last dimension) is empty: there is no distribution to compare".into());
    }
    P::check_width(width, vocab)
}

/// Implements [`Criterion`] for a token criterion `$ty` with a `temperature` whose teacher is the
/// packed encoding `$encoding` (a [`PackedTokens`]), read as [`TeacherEncoding`]`::$variant` at that
/// temperature: the loss by [`f_packed_loss`] (`loss` panics with its error), the temperature
/// finite and > 0, the shapes by [`check_packed_shapes`], the targets token labels.
///
/// [`TeacherEncoding`]: super::TeacherEncoding
macro_rules! packed_token_criterion {
    ($ty:ident => $encoding:ident, $variant:ident) => {
        impl $crate::criterion::Criterion for $ty {
            $crate::criterion::panicking_loss!();

            fn f_loss_with_targets(
                &self,
                student: &::tch::Tensor,
                teacher: &::tch::Tensor,
                targets: Option<&::tch::Tensor>,
            ) -> $crate::error::Result<::tch::Tensor> {
                $crate::criterion::packed::f_packed_loss(self, student, teacher, targets)
            }

            fn validate(&self) -> ::std::result::Result<(), String> {
                $crate::criterion::check::parameter(
                    concat!(stringify!($ty), "'s temperature"),
                    self.temperature,
                    0.0,
                    true,
                )
            }

            fn check_shapes(&self, student: &[i64], teacher: &[i64]) -> ::std::result::Result<(), String> {
                $crate::criterion::packed::check_packed_shapes::<$encoding>(student, teacher)
            }

            fn teacher_encoding(&self) -> $crate::criterion::TeacherEncoding {
                $crate::criterion::TeacherEncoding::$variant { temperature: self.temperature }
            }

            fn check_targets(&self, student: &[i64], targets: &::tch::Tensor) -> ::std::result::Result<(), String> {
                $crate::criterion::sequence::token_labels(student, targets)
            }
        }
    };
}
pub(super) use packed_token_criterion;
