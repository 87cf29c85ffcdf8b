//! The teacher's top-k cache over the training sequences, and the hidden states of the teacher
//! layers that hidden-state pairs read: written once into the output folder, reused by every later
//! run whose manifest matches (teacher file, tokenizer, sequences, encoding, hidden states).

use std::error::Error;
use std::path::Path;
use std::time::Instant;

use distill::cache::{TeacherHash, TokenCache, TokenCacheSpec, TokenCacheWriter};
use distill::text::data::TokenDataset;
use distill::text::LlamaForCausalLM;
use tch::nn::Module;
use tch::{Device, Tensor};

use crate::args::Settings;
use crate::data::inputs;
use crate::report::{progress, Phase};

/// Shards of the cache: a rerun after an interruption writes only the missing ones.
const SHARDS: usize = 4;

/// What the cache must be: the GGUF file's hash names both the weights and the tokenizer (the
/// tokenizer is read from the same file); the training sequences by their content hash.
fn spec(
    gguf: &Path,
    data: &TokenDataset,
    teacher: &LlamaForCausalLM,
    settings: &Settings,
) -> Result<TokenCacheSpec, Box<dyn Error>> {
    let hash = TeacherHash::of_file(gguf)?;
    Ok(TokenCacheSpec {
        teacher: hash.clone(),
        tokenizer: format!("the tokenizer of the GGUF file {hash}"),
        dataset: format!("fnv1a64:{}", data.train().content_hash()),
        num_sequences: data.train().len(),
        seq_len: data.train().seq_len() as i64,
        vocab: teacher.config().vocab_size,
        encoding: settings.encoding(),
    })
}

/// The cache path of teacher layer `layer`'s output: the endpoint a hidden-state pair reads.
pub fn layer_path(layer: usize) -> String {
    format!("model.layers.{layer}")
}

/// Opens the cache in `dir`, writing what is missing first; it also stores the outputs of the
/// teacher layers of `hidden_pairs` (`(student layer, teacher layer)`). Returns the cache, the
/// writing phase's timing when it wrote, and the line it printed.
pub fn open_or_write(
    dir: &Path,
    gguf: &Path,
    data: &TokenDataset,
    teacher: &LlamaForCausalLM,
    settings: &Settings,
    hidden_pairs: &[(usize, usize)],
) -> Result<(TokenCache, Option<Phase>, String), Box<dyn Error>> {
    let spec = spec(gguf, data, teacher, settings)?;
    let width = teacher.config().hidden_size;
    let layers: Vec<usize> = hidden_pairs.iter().map(|&(_, t)| t).collect();
    let writer = layers.iter().fold(TokenCacheWriter::new(dir, spec.clone()).shards(SHARDS), |writer, &t| {
        writer.hidden_state(layer_path(t), width, settings.cache.values)
    });
    let pending = writer.pending().map_err(|e| format!("{e} (delete {} to write it anew)", dir.display()))?;
    let phase =
        if pending.is_empty() { None } else { Some(write(&writer, &pending, data, teacher, settings, &layers)?) };
    let cache = TokenCache::open(dir)?;
    cache.check(&spec)?;
    cache.check_temperature(settings.cache.temperature)?;
    let bytes: u64 =
        cache.manifest().shards.iter().map(|s| std::fs::metadata(dir.join(&s.file)).map_or(0, |m| m.len())).sum();
    let what = format!(
        "{} sequences × {} tokens, top-{} {:?}{}, {} bytes per token, {:.1} MB in {}",
        spec.num_sequences,
        spec.seq_len,
        settings.cache.k,
        settings.cache.values,
        if layers.is_empty() { String::new() } else { format!(" + the outputs of teacher layers {layers:?}") },
        cache.manifest().bytes_per_token(),
        bytes as f64 / 1e6,
        dir.display()
    );
    let line = match &phase {
        None => format!("reusing the teacher cache: {what}"),
        Some(p) => {
            format!("wrote the teacher cache in {:.0} s ({:.0} tokens/s): {what}", p.seconds, p.tokens_per_second())
        }
    };
    println!("{line}");
    Ok((cache, phase, line))
}

fn write(
    writer: &TokenCacheWriter,
    pending: &[usize],
    data: &TokenDataset,
    teacher: &LlamaForCausalLM,
    settings: &Settings,
    layers: &[usize],
) -> Result<Phase, Box<dyn Error>> {
    let started = Instant::now();
    let sequences: usize =
        pending.iter().filter_map(|&i| writer.manifest().shards.get(i).map(|s| s.end - s.start)).sum();
    let bar = progress(sequences as u64, "teacher cache");
    let mut tokens = 0;
    for &index in pending {
        let Some(mut shard) = writer.open_shard(index)? else { continue };
        let range = shard.sequences();
        let ids: Vec<usize> = range.collect();
        for chunk in ids.chunks(settings.cache.batch) {
            let batch = data.train().batch(chunk, Device::Cpu)?;
            let mask = Some(batch.attention_mask.shallow_clone());
            if layers.is_empty() {
                let logits = tch::no_grad(|| teacher.forward_inputs(&inputs(&batch)))?;
                shard.push(chunk, (logits, mask))?;
            } else {
                let states = tch::no_grad(|| teacher.forward_hidden(&inputs(&batch)))?;
                let logits = tch::no_grad(|| teacher.lm_head.forward(&states.last));
                let hidden: Vec<Tensor> = layers.iter().map(|&t| states.layers[t].shallow_clone()).collect();
                shard.push(chunk, (logits, mask, hidden))?;
            }
            tokens += batch.attention_mask.sum(tch::Kind::Int64).int64_value(&[]) as usize;
            bar.inc(chunk.len() as u64);
        }
        shard.finish()?;
    }
    bar.finish_and_clear();
    Ok(Phase { name: "teacher cache (write)".into(), seconds: started.elapsed().as_secs_f64(), tokens })
}
