//! How a token cache stores each token: the teacher's distribution as [`TokenEncoding`] says, with
//! token ids of [`IdWidth`].

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};

use crate::cache::manifest::Precision;
use crate::criterion::{check_parameter, CriterionError};

/// How each token's teacher distribution is stored.
///
/// In the manifest, `{"topk": {"k": 64, "temperature": 1.0, "values": "f16"}}` or
/// `{"sampled": {"n": 32, "temperature": 1.0, "proposal": 1.0, "seed": 7, "values": "f16"}}`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenEncoding {
    /// The `k` most probable tokens at `temperature` with their log-probabilities (stored as
    /// `values`) and the log of the mass of every other token, computed from the excluded logits
    /// and stored as f32 — [`TopKTail`](crate::criterion::TopKTail)'s encoding, read by
    /// [`TopKKl`](crate::criterion::TopKKl).
    #[serde(rename = "topk")]
    TopK {
        /// Tokens kept per position (1 ≤ k ≤ V).
        k: i64,
        /// The softmax temperature of the stored log-probabilities (finite, > 0).
        temperature: f64,
        /// How the log-probabilities are stored.
        values: Precision,
    },
    /// `n` tokens drawn per position from a proposal at `temperature · proposal`, with their
    /// log-probabilities and importance weights (both stored as `values`) —
    /// [`SampledLogits`](crate::criterion::SampledLogits)' encoding, read by
    /// [`SampledKl`](crate::criterion::SampledKl). Each sequence's draws are seeded by `seed` and
    /// its sequence id, so a cache does not depend on how its sequences were batched.
    Sampled {
        /// Tokens drawn per position (≥ 1).
        n: i64,
        /// The softmax temperature of the teacher's distribution (finite, > 0).
        temperature: f64,
        /// The proposal temperature τ (finite, > 0; 1 draws from the teacher's distribution).
        proposal: f64,
        /// Random seed of the draws.
        seed: u64,
        /// How the log-probabilities and weights are stored.
        values: Precision,
    },
}

impl TokenEncoding {
    /// The top `k` tokens at `temperature`, log-probabilities in f16: `4·k + 5` bytes per token
    /// when the vocabulary fits 16-bit ids.
    pub const fn top_k(k: i64, temperature: f64) -> Self {
        TokenEncoding::TopK { k, temperature, values: Precision::F16 }
    }

    /// `n` tokens drawn at `temperature` with proposal temperature `proposal` and seed `seed`,
    /// log-probabilities and weights in f16: `6·n + 1` bytes per token with 16-bit ids.
    pub const fn sampled(n: i64, temperature: f64, proposal: f64, seed: u64) -> Self {
        TokenEncoding::Sampled { n, temperature, proposal, seed, values: Precision::F16 }
    }

    /// This encoding with its values stored in `values`.
    pub const fn with_values(self, values: Precision) -> Self {
        match self {
            TokenEncoding::TopK { k, temperature, .. } => TokenEncoding::TopK { k, temperature, values },
            TokenEncoding::Sampled { n, temperature, proposal, seed, .. } => {
                TokenEncoding::Sampled { n, temperature, proposal, seed, values }
            }
        }
    }

    /// The teacher distribution's temperature, which the criterion reading the cache must use.
    pub fn temperature(self) -> f64 {
        match self {
            TokenEncoding::TopK { temperature, .. } | TokenEncoding::Sampled { temperature, .. } => temperature,
        }
    }

    /// Tokens stored per position: `k` or `n`.
    pub(crate) fn width(self) -> i64 {
        match self {
            TokenEncoding::TopK { k, .. } => k,
            TokenEncoding::Sampled { n, .. } => n,
        }
    }

    /// How the values are stored.
    pub(crate) fn values(self) -> Precision {
        match self {
            TokenEncoding::TopK { values, .. } | TokenEncoding::Sampled { values, .. } => values,
        }
    }

    /// Bytes stored per token with token ids of `ids`: for top-k, `k` ids, `k` log-probabilities,
    /// the f32 tail and the validity byte; for sampled, `n` ids, `n` log-probabilities, `n`
    /// weights and the validity byte.
    pub fn bytes_per_token(self, ids: IdWidth) -> usize {
        let width = self.width().max(0) as usize;
        let value = self.values().bytes();
        match self {
            TokenEncoding::TopK { .. } => width * (ids.bytes() + value) + 4 + 1,
            TokenEncoding::Sampled { .. } => width * (ids.bytes() + 2 * value) + 1,
        }
    }

    /// What makes the encoding unusable for a vocabulary of `vocab` tokens, if anything.
    pub(super) fn problem(self, vocab: i64) -> Option<CriterionError> {
        let positive = |name: &str, value: f64| check_parameter(name, value, 0.0, true).err();
        match self {
            TokenEncoding::TopK { k, temperature, .. } => {
                if k < 1 || k > vocab {
                    return Some(CriterionError::TopKOutOfRange { k, vocab });
                }
                positive("the top-k temperature", temperature)
            }
            TokenEncoding::Sampled { n, temperature, proposal, .. } => {
                if n < 1 {
                    return Some(CriterionError::CountBelowOne { what: "the sample count", got: n });
                }
                positive("the sampling temperature", temperature)
                    .or_else(|| positive("the proposal temperature", proposal))
            }
        }
    }
}

/// How token ids are stored: 16 bits when the vocabulary has at most 65 536 tokens, else 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdWidth {
    /// Unsigned 16-bit ids (vocabularies up to 65 536 tokens).
    U16,
    /// Signed 32-bit ids.
    I32,
}

impl IdWidth {
    /// The width for a vocabulary of `vocab` tokens.
    pub fn for_vocab(vocab: i64) -> IdWidth {
        if vocab <= 1 << 16 {
            IdWidth::U16
        } else {
            IdWidth::I32
        }
    }

    /// Bytes per id.
    pub(crate) fn bytes(self) -> usize {
        match self {
            IdWidth::U16 => 2,
            IdWidth::I32 => 4,
        }
    }

    pub(crate) fn dtype(self) -> Dtype {
        match self {
            IdWidth::U16 => Dtype::U16,
            IdWidth::I32 => Dtype::I32,
        }
    }
}
