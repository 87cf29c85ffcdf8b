//! [`LlamaImportance`]: how much each hidden channel, MLP channel, key-value head and layer of a
//! decoder matters, from its activations on calibration data (Minitron) or from its weights.

use tch::{Kind, Tensor};

use super::DecoderPruneError;
use crate::__private::resolve;
use crate::capture::{arm, Recordings, TapId, TapRequest};
use crate::error::{DistillError, Result};
use crate::text::{LlamaForCausalLM, LlamaInputs};
use crate::{Port, Side};

/// Importance scores of a decoder's prunable parts; higher means more important.
///
/// [`from_activations`](Self::from_activations) follows NVIDIA's Minitron (Muralidharan et al.,
/// 2024), averaging over the calibration tokens:
///
/// - an MLP channel: the mean absolute value of its activation, the input of `down_proj`;
/// - a key-value head: the mean L2 norm of each of its query heads' attention output (the input of
///   `o_proj`, per head), summed over the query heads it serves;
/// - a hidden channel: the mean absolute value of every RMSNorm output (both norms of every layer
///   and the final norm), summed over the norms;
/// - a layer (block importance, as ShortGPT's): `1 − cos(input, output)` of the layer's hidden
///   states, averaged over tokens. A layer that barely turns the residual stream scores near 0.
///
/// [`from_weights`](Self::from_weights) is the cheap alternative that needs no data.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaImportance {
    /// Per hidden channel, `[hidden]`.
    pub hidden: Vec<f64>,
    /// Per layer, per MLP channel, `[layers][intermediate]`.
    pub intermediate: Vec<Vec<f64>>,
    /// Per layer, per key-value head, `[layers][kv_heads]`.
    pub kv_heads: Vec<Vec<f64>>,
    /// Per layer.
    pub layers: Vec<f64>,
}

/// The taps one layer's statistics are read from.
struct LayerTaps {
    layer: TapId,
    down_proj: TapId,
    o_proj: TapId,
    norms: [TapId; 2],
}

/// Running sums over the calibration tokens, in f64.
struct Sums {
    hidden: Tensor,
    intermediate: Vec<Tensor>,
    heads: Vec<Tensor>,
    layers: Vec<f64>,
    tokens: f64,
}

impl LlamaImportance {
    /// The Minitron importances of `model` over the calibration `batches` (each run once, without
    /// gradients; a batch's `attention_mask`, if any, leaves its padding out of the means).
    ///
    /// # Errors
    /// [`DecoderPruneError::NoCalibrationToken`](super::DecoderPruneError::NoCalibrationToken) when there is no batch or no valid token, or a batch does
    /// not fit the model (as [`LlamaForCausalLM::forward_inputs`]).
    pub fn from_activations<'b>(
        model: &LlamaForCausalLM,
        batches: impl IntoIterator<Item = LlamaInputs<'b>>,
    ) -> Result<LlamaImportance> {
        let config = model.config();
        let n = config.num_hidden_layers as usize;
        let tap = |path: String| -> Result<TapId> {
            resolve(model, Side::Teacher, &path)?
                .tap
                .ok_or_else(|| DistillError::from(DecoderPruneError::NotRecorded { path: path.clone() }))
        };
        let taps = (0..n)
            .map(|i| {
                let at = |part: &str| tap(format!("model.layers.{i}{part}"));
                Ok(LayerTaps {
                    layer: at("")?,
                    down_proj: at(".mlp.down_proj")?,
                    o_proj: at(".self_attn.o_proj")?,
                    norms: [at(".input_layernorm")?, at(".post_attention_layernorm")?],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let final_norm = tap("model.norm".into())?;
        let zeros = |size: i64| Tensor::zeros([size], (Kind::Double, tch::Device::Cpu));
        let mut sums = Sums {
            hidden: zeros(config.hidden_size),
            intermediate: (0..n).map(|_| zeros(config.intermediate_size)).collect(),
            heads: (0..n).map(|_| zeros(config.num_attention_heads)).collect(),
            layers: vec![0.0; n],
            tokens: 0.0,
        };
        let mut batches_seen = 0;
        for inputs in batches {
            batches_seen += 1;
            let mut requests = vec![TapRequest { tap: final_norm, port: Port::Output }];
            for t in &taps {
                let input = |tap| TapRequest { tap, port: Port::Input };
                let output = |tap| TapRequest { tap, port: Port::Output };
                requests.extend([input(t.layer), output(t.layer), input(t.down_proj), input(t.o_proj)]);
                requests.extend(t.norms.map(output));
            }
            let guard = arm(requests);
            tch::no_grad(|| model.forward_hidden(&inputs))?;
            let mut recordings = guard.finish();
            tch::no_grad(|| sums.add(&mut recordings, &taps, final_norm, &inputs, config.head_dim))?;
        }
        if batches_seen == 0 || sums.tokens <= 0.0 {
            return Err(DecoderPruneError::NoCalibrationToken.into());
        }
        sums.finish(config.num_key_value_heads)
    }
}

impl Sums {
    /// Adds one batch's recorded activations.
    fn add(
        &mut self,
        recordings: &mut Recordings,
        taps: &[LayerTaps],
        final_norm: TapId,
        inputs: &LlamaInputs,
        head_dim: i64,
    ) -> Result<()> {
        let ids = inputs.input_ids;
        // 1 for each token that counts, 0 for padding: `[B, T, 1]`, f64 on the CPU.
        let weights = match inputs.attention_mask {
            Some(mask) => mask.f_ne(0)?,
            None => ids.f_ones_like()?,
        }
        .f_to_kind(Kind::Double)?
        .f_to_device(tch::Device::Cpu)?
        .f_unsqueeze(-1)?;
        let mut take = |tap, port| -> Result<Tensor> {
            let mut calls = recordings.take(TapRequest { tap, port });
            match (calls.pop(), calls.is_empty()) {
                (Some(call), true) => Ok(call.tensor.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Double)?),
                _ => Err(DecoderPruneError::NotCalledOnce.into()),
            }
        };
        // Σ over tokens of w · x, per channel of the last dimension.
        let token_sum = |xs: &Tensor| -> Result<Tensor> {
            let last = xs.size()[xs.dim() - 1];
            Ok(xs.f_mul(&weights)?.f_reshape([-1, last])?.f_sum_dim_intlist(0, false, Kind::Double)?)
        };
        for (i, t) in taps.iter().enumerate() {
            let down_in = take(t.down_proj, Port::Input)?;
            self.intermediate[i] = self.intermediate[i].f_add(&token_sum(&down_in.f_abs()?)?)?;
            let o_in = take(t.o_proj, Port::Input)?;
            let size = o_in.size();
            let per_head = o_in.f_reshape([size[0], size[1], -1, head_dim])?.f_norm_scalaropt_dim(2, [-1], false)?;
            self.heads[i] = self.heads[i].f_add(&token_sum(&per_head)?)?;
            for tap in t.norms {
                self.hidden = self.hidden.f_add(&token_sum(&take(tap, Port::Output)?.f_abs()?)?)?;
            }
            let (input, output) = (take(t.layer, Port::Input)?, take(t.layer, Port::Output)?);
            let dot = input.f_mul(&output)?.f_sum_dim_intlist(-1, true, Kind::Double)?;
            let norms =
                input.f_norm_scalaropt_dim(2, [-1], true)?.f_mul(&output.f_norm_scalaropt_dim(2, [-1], true)?)?;
            // A zero hidden state has no direction; it counts as unturned rather than as NaN.
            let cosine = dot.f_div(&norms.f_clamp_min(f64::MIN_POSITIVE)?)?;
            let turned = cosine.f_neg()?.f_add_scalar(1.0)?;
            self.layers[i] += token_sum(&turned)?.double_value(&[0]);
        }
        self.hidden = self.hidden.f_add(&token_sum(&take(final_norm, Port::Output)?.f_abs()?)?)?;
        self.tokens += weights.f_sum(Kind::Double)?.double_value(&[]);
        Ok(())
    }

    /// The means over the tokens, query heads summed into their key-value heads.
    fn finish(self, kv_heads: i64) -> Result<LlamaImportance> {
        let tokens = self.tokens;
        let mean = |sum: &Tensor| -> Result<Vec<f64>> { Ok(Vec::<f64>::try_from(&sum.f_div_scalar(tokens)?)?) };
        Ok(LlamaImportance {
            hidden: mean(&self.hidden)?,
            intermediate: self.intermediate.iter().map(mean).collect::<Result<_>>()?,
            // Query head h serves key-value head h / groups: a row-major [kv_heads, groups] view.
            kv_heads: self
                .heads
                .iter()
                .map(|heads| mean(&heads.f_reshape([kv_heads, -1])?.f_sum_dim_intlist(1, false, Kind::Double)?))
                .collect::<Result<_>>()?,
            layers: self.layers.iter().map(|sum| sum / tokens).collect(),
        })
    }
}
