//! Building the pruned decoder: a model of the student's shape whose every weight is the kept slice
//! of the teacher's.

use std::borrow::Borrow;

use tch::nn::Path;
use tch::Tensor;

use super::LlamaKept;
use crate::error::Result;
use crate::nn::Linear;
use crate::prune::PruneRecord;
use crate::text::{LlamaAttention, LlamaForCausalLM, LlamaMlp};

/// A pruned decoder and the record of what it kept.
#[derive(Debug)]
pub struct PrunedLlama {
    /// The student, its variables under the path it was built on.
    pub model: LlamaForCausalLM,
    /// What it kept of the teacher, by module path; save it beside the student's checkpoint.
    pub record: PruneRecord,
}

/// The decoder `teacher` pruned to `kept`, built under `path` (the variables of a
/// `LlamaForCausalLM` of [`LlamaKept::student_config`], Hugging Face's names) and set to the kept
/// slices of the teacher's weights, with the record of the pruning.
///
/// Each kept channel keeps its weights in every layer that reads or writes it: the embeddings,
/// every RMSNorm weight, `lm_head` (or the tied embedding) and the `q/k/v/gate/up_proj` input
/// columns and `o_proj`/`down_proj` output rows for the hidden channels; `gate/up_proj` rows and
/// `down_proj` columns for the MLP channels; for a key-value head, its `k/v_proj` rows and its query
/// heads' `q_proj` rows and `o_proj` columns. Biases follow their rows. With everything kept
/// ([`LlamaKept::all`]) the student computes exactly what the teacher computes. The student uses
/// the teacher's attention kernel.
///
/// # Errors
/// [`DecoderPruneError`](super::DecoderPruneError) when `kept` does not fit
/// the teacher ([`LlamaKept::validate`]); [`DistillError::Torch`](crate::DistillError::Torch) when a
/// weight cannot be copied.
pub fn prune_llama<'a, P: Borrow<Path<'a>>>(
    path: P,
    teacher: &LlamaForCausalLM,
    kept: &LlamaKept,
) -> Result<PrunedLlama> {
    let source = teacher.config();
    let config = kept.student_config(source)?;
    let record = kept.to_record(source)?;
    let path = path.borrow();
    let device = path.device();
    let mut model = LlamaForCausalLM::new(path, &config)?;
    model.model.attention_implementation = teacher.model.attention_implementation;
    let index = |list: &[i64]| Tensor::from_slice(list).f_to_device(device);
    let hidden = index(&kept.hidden)?;
    let (from, to) = (&teacher.model, &model.model);
    copy(&to.embed_tokens.ws, &slice(&from.embed_tokens.ws, None, Some(&hidden))?)?;
    copy(&to.norm.weight, &slice(&from.norm.weight, Some(&hidden), None)?)?;
    if !config.tie_word_embeddings {
        copy(&model.lm_head.ws, &slice(&teacher.lm_head.ws, None, Some(&hidden))?)?;
    }
    for (i, &t) in kept.layers.iter().enumerate() {
        let (src, dst) = (&from.layers[t as usize], &to.layers[i]);
        for (s, d) in [
            (&src.input_layernorm, &dst.input_layernorm),
            (&src.post_attention_layernorm, &dst.post_attention_layernorm),
        ] {
            copy(&d.weight, &slice(&s.weight, Some(&hidden), None)?)?;
        }
        let inner = index(&kept.intermediate[i])?;
        copy_mlp(&src.mlp, &dst.mlp, &inner, &hidden)?;
        let groups = source.num_key_value_groups();
        let (kv_rows, q_rows) = head_rows(&kept.kv_heads[i], groups, source.head_dim);
        copy_attention(&src.self_attn, &dst.self_attn, &index(&kv_rows)?, &index(&q_rows)?, &hidden)?;
    }
    Ok(PrunedLlama { model, record })
}

/// The rows of `k/v_proj` (`kv_rows`) and of `q_proj` (`q_rows`) that the kept key-value heads own:
/// key-value head `h` is rows `h·d …`, and serves query heads `h·groups …` (as the attention
/// repeats key-value heads), each `d` rows.
fn head_rows(kv_heads: &[i64], groups: i64, d: i64) -> (Vec<i64>, Vec<i64>) {
    let kv_rows = kv_heads.iter().flat_map(|&h| h * d..(h + 1) * d).collect();
    let q_rows = kv_heads.iter().flat_map(|&h| h * groups * d..(h + 1) * groups * d).collect();
    (kv_rows, q_rows)
}

fn copy_mlp(src: &LlamaMlp, dst: &LlamaMlp, inner: &Tensor, hidden: &Tensor) -> Result<()> {
    copy_linear(&src.gate_proj, &dst.gate_proj, inner, hidden)?;
    copy_linear(&src.up_proj, &dst.up_proj, inner, hidden)?;
    copy_linear(&src.down_proj, &dst.down_proj, hidden, inner)
}

fn copy_attention(src: &LlamaAttention, dst: &LlamaAttention, kv: &Tensor, q: &Tensor, hidden: &Tensor) -> Result<()> {
    copy_linear(&src.q_proj, &dst.q_proj, q, hidden)?;
    copy_linear(&src.k_proj, &dst.k_proj, kv, hidden)?;
    copy_linear(&src.v_proj, &dst.v_proj, kv, hidden)?;
    copy_linear(&src.o_proj, &dst.o_proj, hidden, q)
}

/// `dst.weight = src.weight[rows][:, cols]`, `dst.bias = src.bias[rows]`.
fn copy_linear(src: &Linear, dst: &Linear, rows: &Tensor, cols: &Tensor) -> Result<()> {
    copy(&dst.ws, &slice(&src.ws, Some(rows), Some(cols))?)?;
    if let (Some(d), Some(s)) = (&dst.bs, &src.bs) {
        copy(d, &slice(s, Some(rows), None)?)?;
    }
    Ok(())
}

/// `tensor` with dimension 0 narrowed to `rows` and dimension 1 to `cols`, each if given.
fn slice(tensor: &Tensor, rows: Option<&Tensor>, cols: Option<&Tensor>) -> Result<Tensor> {
    let mut out = tensor.shallow_clone();
    for (dim, index) in [(0, rows), (1, cols)] {
        if let Some(index) = index {
            out = out.f_index_select(dim, &index.f_to_device(out.device())?)?;
        }
    }
    Ok(out)
}

/// Copies `src` into the variable `dst` without recording it for autograd.
fn copy(dst: &Tensor, src: &Tensor) -> Result<()> {
    let mut dst = dst.shallow_clone();
    tch::no_grad(|| dst.f_copy_(src))?;
    Ok(())
}
