//! Importance from weight magnitudes: no calibration data, one pass over the parameters.

use tch::{Kind, Tensor};

use super::LlamaImportance;
use crate::error::Result;
use crate::text::LlamaForCausalLM;

impl LlamaImportance {
    /// Importances from `model`'s weights alone, the cheap alternative to
    /// [`from_activations`](Self::from_activations) (scores are L2 norms, summed):
    ///
    /// - an MLP channel: its `gate_proj` and `up_proj` rows and its `down_proj` column;
    /// - a key-value head: its `k_proj` and `v_proj` rows, and the `q_proj` rows and `o_proj`
    ///   columns of the query heads it serves;
    /// - a hidden channel: its embedding column and, in every layer, its `q/k/v/gate/up_proj`
    ///   columns and `o_proj`/`down_proj` rows;
    /// - a layer: the Frobenius norms of `o_proj` and `down_proj`, what it can add to the residual
    ///   stream (a weak proxy: weights do not show how much a layer turns its input).
    ///
    /// # Errors
    /// [`DistillError::Torch`](crate::DistillError::Torch) when a weight cannot be read.
    pub fn from_weights(model: &LlamaForCausalLM) -> Result<LlamaImportance> {
        tch::no_grad(|| {
            let config = model.config();
            let (kv_heads, d) = (config.num_key_value_heads, config.head_dim);
            let stack = &model.model;
            // Norms of the rows (dim 1 reduced) or columns (dim 0 reduced) of a weight, in f64.
            let norms = |w: &Tensor, reduce: i64| -> Result<Tensor> {
                Ok(w.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Double)?.f_norm_scalaropt_dim(
                    2,
                    [reduce],
                    false,
                )?)
            };
            // Per head, the norm of `head_dim` consecutive rows (or columns): `[heads]`.
            let head_norms = |w: &Tensor, rows: bool| -> Result<Tensor> {
                let w = w.f_to_device(tch::Device::Cpu)?.f_to_kind(Kind::Double)?;
                let w = if rows { w } else { w.f_transpose(0, 1)? };
                let heads = w.size()[0] / d;
                Ok(w.f_reshape([heads, -1])?.f_norm_scalaropt_dim(2, [1], false)?)
            };
            let mut hidden = norms(&stack.embed_tokens.ws, 0)?;
            let (mut intermediate, mut heads, mut layers) = (Vec::new(), Vec::new(), Vec::new());
            for layer in stack.layers.iter() {
                let (attn, mlp) = (&layer.self_attn, &layer.mlp);
                for w in [&attn.q_proj.ws, &attn.k_proj.ws, &attn.v_proj.ws, &mlp.gate_proj.ws, &mlp.up_proj.ws] {
                    hidden = hidden.f_add(&norms(w, 0)?)?;
                }
                for w in [&attn.o_proj.ws, &mlp.down_proj.ws] {
                    hidden = hidden.f_add(&norms(w, 1)?)?;
                }
                let inner = norms(&mlp.gate_proj.ws, 1)?
                    .f_add(&norms(&mlp.up_proj.ws, 1)?)?
                    .f_add(&norms(&mlp.down_proj.ws, 0)?)?;
                intermediate.push(Vec::<f64>::try_from(&inner)?);
                let query = head_norms(&attn.q_proj.ws, true)?.f_add(&head_norms(&attn.o_proj.ws, false)?)?;
                let per_kv = query.f_reshape([kv_heads, -1])?.f_sum_dim_intlist(1, false, Kind::Double)?;
                let per_kv =
                    per_kv.f_add(&head_norms(&attn.k_proj.ws, true)?)?.f_add(&head_norms(&attn.v_proj.ws, true)?)?;
                heads.push(Vec::<f64>::try_from(&per_kv)?);
                let written =
                    |w: &Tensor| -> Result<f64> { Ok(w.f_to_kind(Kind::Double)?.f_norm()?.double_value(&[])) };
                layers.push(written(&attn.o_proj.ws)? + written(&mlp.down_proj.ws)?);
            }
            Ok(LlamaImportance { hidden: Vec::<f64>::try_from(&hidden)?, intermediate, kv_heads: heads, layers })
        })
    }
}
