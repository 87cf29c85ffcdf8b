//! The teacher checked against transformers: the logits of the committed reference
//! (tests/data/text/smollm2_reference.safetensors, written by scripts/gen_text_reference.py from
//! transformers loading the same GGUF file), the vectors `tests/text_llama_gguf.rs` compares too.

use std::collections::HashMap;
use std::error::Error;

use distill::text::LlamaForCausalLM;
use tch::Tensor;

/// The parity bound of tests/text_llama_gguf.rs, relative to the largest reference logit: f32
/// rounding of K-term sums (√K·ε per op) over ~10 ops in each of 30 layers, ≈ 7e-5 for K ≤ 1536.
const RELATIVE: f64 = 1e-4;

const REFERENCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/text/smollm2_reference.safetensors");

/// Compares the teacher's logits with transformers' and prints (and returns) one line; a difference
/// above the bound is an error (the rest of the run would be about another model).
pub fn teacher(teacher: &LlamaForCausalLM) -> Result<String, Box<dyn Error>> {
    let reference: HashMap<String, Tensor> = Tensor::read_safetensors(REFERENCE)?.into_iter().collect();
    let get = |name: &str| reference.get(name).ok_or_else(|| format!("{REFERENCE} has no `{name}`"));
    let (ids, positions, expected) = (get("ids")?, get("logits.positions")?, get("logits")?);
    let logits = tch::no_grad(|| teacher.forward(ids))?;
    let actual = logits.get(0).index_select(0, positions);
    if actual.size() != expected.size() {
        return Err(format!("teacher logits {:?}, transformers' {:?}", actual.size(), expected.size()).into());
    }
    let scale = expected.abs().max().double_value(&[]);
    let error = (&actual - expected).abs().max().double_value(&[]) / scale;
    let line = format!(
        "teacher vs transformers: {} tokens, logits at {} positions × {} ids, max |Δ| / max |logit| = {error:.1e} (bound {RELATIVE:.0e})",
        ids.size()[1],
        positions.size()[0],
        expected.size()[1]
    );
    if error > RELATIVE {
        return Err(format!("{line}: the loaded teacher is not transformers' model").into());
    }
    let line = format!("{line} ✓");
    println!("{line}");
    Ok(line)
}
