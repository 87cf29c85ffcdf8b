//! Prunes SmolLM2-135M-Instruct to about half its non-embedding parameters (Minitron-style: width
//! and depth chosen by activation importance on fortunes) and distills it back from the unpruned
//! model with top-k KL (exact tail), then saves the student with its prune record.
//!
//! Run: `source scripts/libtorch.sh && source scripts/text.sh && cargo run --release --example
//! prune_smollm2 -- [steps] [output dir]` (default 40 steps, `target/prune_smollm2`). Needs
//! `DISTILL_SMOLLM2_GGUF` (set by scripts/text.sh) and Debian's `fortunes` in
//! /usr/share/games/fortunes.

use distill::criterion::{TopKKl, TopKTail};
use distill::nn::{OptimizerConfig, VarStore};
use distill::text::data::{fortune_files, read_documents, TokenBatch, TokenDataset, TokenDatasetConfig};
use distill::text::prune::{prune_llama, KeepCounts, LlamaImportance, ParameterCounts};
use distill::text::{self, GgufFile, LlamaForCausalLM, LlamaInputs, Tokenizer};
use distill::DistillError;
use tch::{Device, Tensor};

const FORTUNES: &str = "/usr/share/games/fortunes";
const TOP_K: i64 = 64;
/// Fortunes read: enough for calibration, a few hundred steps and validation, and quick to tokenize.
const DOCUMENTS: usize = 3000;

fn inputs(batch: &TokenBatch) -> LlamaInputs<'_> {
    LlamaInputs::new(&batch.input_ids)
        .attention_mask(&batch.attention_mask)
        .document_ids(&batch.document_ids)
        .position_ids(&batch.position_ids)
}

/// Top-k KL of `student` to the live `teacher` over the batch's real tokens.
fn kd_loss(student: &LlamaForCausalLM, teacher: &LlamaForCausalLM, batch: &TokenBatch) -> Result<Tensor, DistillError> {
    let teacher_logits = tch::no_grad(|| teacher.forward_inputs(&inputs(batch)))?;
    let top = TopKTail::f_encode(&teacher_logits, TOP_K, 1.0)?;
    TopKKl::new(1.0).f_loss_top_k(&student.forward_inputs(&inputs(batch))?, &top, Some(&batch.attention_mask))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    distill::tune_allocator();
    let mut args = std::env::args().skip(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(40);
    let out_dir = std::path::PathBuf::from(args.next().unwrap_or_else(|| "target/prune_smollm2".into()));
    let gguf = std::env::var("DISTILL_SMOLLM2_GGUF")
        .map_err(|_| "set DISTILL_SMOLLM2_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf (`source scripts/text.sh`)")?;
    let teacher = text::load_gguf(&gguf, Device::Cpu)?.model;
    let tokenizer = Tokenizer::from_gguf(&GgufFile::open(&gguf)?)?;
    let mut documents = read_documents(&fortune_files(FORTUNES)?, Some("%"))?;
    documents.truncate(DOCUMENTS);
    let config = TokenDatasetConfig { seq_len: 64, ..Default::default() };
    let data = TokenDataset::build(&documents, &tokenizer, &config)?;
    println!("{} fortunes → {} training sequences of 64 tokens", documents.len(), data.train().len());

    let calibration: Vec<TokenBatch> = (0..4)
        .map(|i| data.train().batch(&(i * 8..i * 8 + 8).collect::<Vec<_>>(), Device::Cpu))
        .collect::<Result<_, _>>()?;
    let importance = LlamaImportance::from_activations(&teacher, calibration.iter().map(inputs))?;
    let counts = KeepCounts { hidden: 512, intermediate: 1024, kv_heads: 2, layers: 25 };
    let kept = importance.keep(teacher.config(), &counts)?;
    let vs = VarStore::new(Device::Cpu);
    let student = prune_llama(vs.root(), &teacher, &kept)?;
    let (before, after) = (ParameterCounts::of(teacher.config()), ParameterCounts::of(student.model.config()));
    println!(
        "kept layers {:?}; non-embedding parameters {} → {} ({:.1}%)",
        kept.layers,
        before.non_embedding,
        after.non_embedding,
        100.0 * after.non_embedding as f64 / before.non_embedding as f64
    );

    let validation = data.validation().batch(&(0..8.min(data.validation().len())).collect::<Vec<_>>(), Device::Cpu)?;
    let evaluate = |model: &LlamaForCausalLM| -> Result<f64, DistillError> {
        Ok(tch::no_grad(|| kd_loss(model, &teacher, &validation))?.double_value(&[]))
    };
    println!("validation top-{TOP_K} KL before distillation: {:.4}", evaluate(&student.model)?);
    let mut adam = distill::nn::Adam::default().build(&vs, 1e-4)?;
    let order = data.train().epoch_batches(4, 0, 0)?;
    for (step, indices) in order.iter().take(steps).enumerate() {
        let batch = data.train().batch(indices, Device::Cpu)?;
        let loss = kd_loss(&student.model, &teacher, &batch)?;
        adam.backward_step(&loss);
        if step % 5 == 0 || step + 1 == steps {
            println!("step {step:3}: top-{TOP_K} KL {:.4}", loss.double_value(&[]));
        }
    }
    println!("validation top-{TOP_K} KL after {steps} steps: {:.4}", evaluate(&student.model)?);

    std::fs::create_dir_all(&out_dir)?;
    vs.save(out_dir.join("student.safetensors"))?;
    student.record.save(out_dir.join("student.prune.safetensors"))?;
    println!("saved the student and its prune record in {}", out_dir.display());
    Ok(())
}
