//! The bytes a token cache stores for one batch: each token's teacher distribution in the cache's
//! encoding, and the stored hidden states, checked against what their precision can hold.

use tch::{Device, Kind, Tensor};

use super::manifest::{IdWidth, TokenEncoding, TokenManifest};
use crate::cache::manifest::Precision;
use crate::cache::writer::overflow;
use crate::cache::CacheError;
use crate::checksum::tensor_bytes;
use crate::criterion::{SampledLogits, TopKTail};
use crate::error::Result;
use crate::rng::SplitMix64;

/// The bytes of each shard tensor for one batch: ids, log-probabilities, tail or weights, validity.
pub(super) fn encode(manifest: &TokenManifest, ids: &[usize], logits: &Tensor, valid: &Tensor) -> Result<[Vec<u8>; 4]> {
    let cpu = Device::Cpu;
    let mask = valid.f_unsqueeze(-1)?;
    let values = manifest.encoding.values();
    // Padding positions are stored as a neutral distribution whatever the teacher gave there (NaN
    // included): only the valid tokens' logits are encoded, and checked to have a distribution.
    let logits = &logits.f_where_scalarother(&mask.f_to_device(logits.device())?, 0.0)?;
    let (top_ids, log_probs, third) = match manifest.encoding {
        TokenEncoding::TopK { k, temperature, .. } => {
            let top = TopKTail::f_encode(logits, k, temperature)?;
            // Invalid positions: a point mass on token 0.
            let neutral_ids = Tensor::f_arange(k, (Kind::Int64, cpu))?;
            let neutral_log_probs = Tensor::f_full([k], f64::NEG_INFINITY, (Kind::Float, cpu))?;
            let _ = neutral_log_probs.f_narrow(0, 0, 1)?.f_fill_(0.0)?;
            let ids = top.ids.f_to_device(cpu)?.f_where_self(&mask, &neutral_ids)?;
            let log_probs =
                top.log_probs.f_to_device(cpu)?.f_to_kind(Kind::Float)?.f_where_self(&mask, &neutral_log_probs)?;
            let tail =
                top.tail.f_to_device(cpu)?.f_to_kind(Kind::Float)?.f_where_scalarother(valid, f64::NEG_INFINITY)?;
            (ids, log_probs, tail)
        }
        TokenEncoding::Sampled { n, temperature, proposal, seed, .. } => {
            // One encoding per sequence, seeded by its id: the cache does not depend on batching.
            let mut parts = (Vec::new(), Vec::new(), Vec::new());
            for (row, &id) in ids.iter().enumerate() {
                let sequence_seed = SplitMix64::new(seed ^ (id as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)).next_u64();
                let sampled =
                    SampledLogits::f_encode(&logits.f_get(row as i64)?, n, temperature, proposal, sequence_seed)?;
                parts.0.push(sampled.ids.f_to_device(cpu)?);
                parts.1.push(sampled.log_probs.f_to_device(cpu)?.f_to_kind(Kind::Float)?);
                parts.2.push(sampled.weights.f_to_device(cpu)?.f_to_kind(Kind::Float)?);
            }
            let ids = Tensor::f_stack(&parts.0, 0)?.f_where_scalarother(&mask, 0)?;
            let log_probs = Tensor::f_stack(&parts.1, 0)?.f_where_scalarother(&mask, 0.0)?;
            let weights = Tensor::f_stack(&parts.2, 0)?.f_where_scalarother(&mask, 1.0 / n as f64)?;
            check_weights(&weights, values)?;
            (ids, log_probs, weights.f_to_kind(values.kind())?)
        }
    };
    let id_list = Vec::<i64>::try_from(top_ids.f_reshape([-1])?)?;
    let id_bytes: Vec<u8> = match manifest.ids {
        IdWidth::U16 => id_list.iter().flat_map(|&id| (id as u16).to_le_bytes()).collect(),
        IdWidth::I32 => id_list.iter().flat_map(|&id| (id as i32).to_le_bytes()).collect(),
    };
    Ok([
        id_bytes,
        tensor_bytes(&log_probs.f_to_kind(values.kind())?)?,
        tensor_bytes(&third)?,
        tensor_bytes(&valid.f_to_kind(Kind::Uint8)?)?,
    ])
}

/// The bytes of each stored hidden state for one batch (`valid`: `[B, T]` bool), zeros at padding.
pub(super) fn encode_hidden(manifest: &TokenManifest, hidden: &[Tensor], valid: &Tensor) -> Result<Vec<Vec<u8>>> {
    if hidden.len() != manifest.hidden.len() {
        let stored = manifest.hidden.iter().map(|h| h.path.clone()).collect();
        return Err(CacheError::HiddenCount { stored, given: hidden.len() }.into());
    }
    let (b, t) = (valid.size()[0], valid.size()[1]);
    let mask = valid.f_unsqueeze(-1)?;
    hidden
        .iter()
        .zip(&manifest.hidden)
        .map(|(tensor, stored)| {
            if tensor.size() != [b, t, stored.width] {
                let (path, expected) = (stored.path.clone(), vec![b, t, stored.width]);
                return Err(CacheError::HiddenShape { path, expected, got: tensor.size() }.into());
            }
            let values = tensor.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?.f_where_scalarother(&mask, 0.0)?;
            // A value past the precision's range would be stored as infinity, and every loss on it
            // is NaN.
            if let Some(value) = overflow(&values, stored.values)? {
                let path = stored.path.clone();
                return Err(match stored.values {
                    Precision::Bf16 => {
                        CacheError::ValueOverflowsBf16 { what: format!("the teacher hidden state `{path}`"), value }
                    }
                    _ => CacheError::HiddenOverflowsF16 { path, value },
                }
                .into());
            }
            tensor_bytes(&values.f_to_kind(stored.values.kind())?)
        })
        .collect()
}

/// An error when an importance weight would become infinite in `values`.
fn check_weights(weights: &Tensor, values: Precision) -> Result<()> {
    let Some(limit) = values.overflow() else { return Ok(()) };
    // Weights are ≥ 0: the largest is the one to round to infinity (an infinite one is refused too).
    let largest = if weights.numel() == 0 { 0.0 } else { weights.f_max()?.f_double_value(&[])? };
    if largest < limit {
        return Ok(());
    }
    Err(match values {
        Precision::Bf16 => CacheError::ValueOverflowsBf16 { what: "an importance weight".to_owned(), value: largest },
        _ => CacheError::WeightOverflowsF16 { largest },
    }
    .into())
}
