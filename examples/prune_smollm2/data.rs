//! The corpus (Debian's fortunes), its token sequences and the batches both fine-tunes read.

use std::error::Error;
use std::time::Instant;

use distill::text::data::{fortune_files, read_documents, TokenBatch, TokenDataset, TokenDatasetConfig};
use distill::text::{LlamaInputs, Tokenizer};
use tch::Device;

use crate::args::Settings;

/// Where Debian's `fortunes` package puts its files.
pub const FORTUNES: &str = "/usr/share/games/fortunes";

/// The model's inputs for `batch`: packed documents attend only within themselves.
pub fn inputs(batch: &TokenBatch) -> LlamaInputs<'_> {
    LlamaInputs::new(&batch.input_ids)
        .attention_mask(&batch.attention_mask)
        .document_ids(&batch.document_ids)
        .position_ids(&batch.position_ids)
}

/// Reads and tokenizes the fortunes, printing how many and how long it took.
pub fn load(settings: &Settings, tokenizer: &Tokenizer) -> Result<TokenDataset, Box<dyn Error>> {
    let started = Instant::now();
    let mut documents = read_documents(&fortune_files(FORTUNES)?, Some("%"))?;
    let available = documents.len();
    if settings.data.documents > 0 {
        documents.truncate(settings.data.documents);
    }
    let config = TokenDatasetConfig {
        seq_len: settings.data.seq_len,
        validation_fraction: settings.data.validation_fraction,
        ..Default::default()
    };
    let data = TokenDataset::build(&documents, tokenizer, &config)?;
    if data.train().is_empty() || data.validation().is_empty() {
        return Err("too few fortunes for a training and a validation split".into());
    }
    println!(
        "{} of {available} fortunes → {} training / {} validation sequences of {} tokens ({} / {} real tokens), tokenized in {:.1} s",
        documents.len(),
        data.train().len(),
        data.validation().len(),
        data.train().seq_len(),
        data.train().token_count(),
        data.validation().token_count(),
        started.elapsed().as_secs_f64()
    );
    Ok(data)
}

/// The validation batches: the first `validation_sequences` held-out sequences, in batches of the
/// training batch size.
pub fn validation(data: &TokenDataset, settings: &Settings) -> Result<Vec<TokenBatch>, Box<dyn Error>> {
    let count = settings.data.validation_sequences.min(data.validation().len());
    let indices: Vec<usize> = (0..count).collect();
    indices
        .chunks(settings.train.batch)
        .map(|chunk| data.validation().batch(chunk, Device::Cpu).map_err(Into::into))
        .collect()
}

/// The training order for `seed`: shuffled epochs, concatenated until `steps` batches (the same
/// list for both fine-tunes of a seed). Only full batches, so that every step sees as many sequences.
pub fn order(data: &TokenDataset, settings: &Settings, seed: u64) -> Result<Vec<Vec<usize>>, Box<dyn Error>> {
    let (steps, batch) = (settings.train.steps, settings.train.batch);
    if data.train().len() < batch {
        return Err(format!("{} training sequences do not fill one batch of {batch}", data.train().len()).into());
    }
    let mut order = Vec::with_capacity(steps);
    let mut epoch = 0;
    while order.len() < steps {
        let batches = data.train().epoch_batches(batch, seed, epoch)?;
        order.extend(batches.into_iter().filter(|b| b.len() == batch).take(steps - order.len()));
        epoch += 1;
    }
    Ok(order)
}
