//! [`TeacherEncoding`]: the form in which a criterion reads its teacher tensor, so that a teacher
//! cache can tell before anything runs whether it stores what a pair's criterion reads.

use std::fmt;

/// The form in which a criterion reads its teacher tensor
/// ([`Criterion::teacher_encoding`](super::Criterion::teacher_encoding)).
///
/// A live teacher gives every pair its tensor as it is; a teacher cache may store a distribution in
/// a reduced form, which only the criterion written for that form can read, and only at the
/// temperature it was encoded at. The caches compare what they store with this before a pair reads
/// it, and report a mismatch as an error instead of a loss over a tensor read the wrong way.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
#[non_exhaustive]
pub enum TeacherEncoding {
    /// The teacher tensor as the teacher gives it (every criterion but the three below).
    #[default]
    Plain,
    /// The packed top-k logits `[N, 2, k]` of [`TopKLogits`](super::TopKLogits) at `temperature`,
    /// read by [`TopKKlDiv`](super::TopKKlDiv).
    TopKLogits {
        /// The softmax temperature the log-probabilities must be encoded at.
        temperature: f64,
    },
    /// The packed top-k with its exact tail `[B, T, 2k + 1]` of [`TopKTail`](super::TopKTail) at
    /// `temperature`, read by [`TopKKl`](super::TopKKl).
    TopKTail {
        /// The softmax temperature the log-probabilities must be encoded at.
        temperature: f64,
    },
    /// The packed sampled encoding `[B, T, 3n]` of [`SampledLogits`](super::SampledLogits) at
    /// `temperature`, read by [`SampledKl`](super::SampledKl).
    Sampled {
        /// The softmax temperature of the teacher's distribution.
        temperature: f64,
    },
}

impl TeacherEncoding {
    /// The temperature of an encoded form; `None` for [`Plain`](Self::Plain).
    pub fn temperature(self) -> Option<f64> {
        match self {
            TeacherEncoding::Plain => None,
            TeacherEncoding::TopKLogits { temperature }
            | TeacherEncoding::TopKTail { temperature }
            | TeacherEncoding::Sampled { temperature } => Some(temperature),
        }
    }
}

impl fmt::Display for TeacherEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TeacherEncoding::Plain => f.write_str("the teacher's tensor as it is"),
            TeacherEncoding::TopKLogits { temperature } => write!(f, "top-k logits at temperature {temperature}"),
            TeacherEncoding::TopKTail { temperature } => {
                write!(f, "top-k with its tail at temperature {temperature}")
            }
            TeacherEncoding::Sampled { temperature } => {
                write!(f, "sampled tokens at temperature {temperature}")
            }
        }
    }
}
