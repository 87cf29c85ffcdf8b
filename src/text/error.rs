//! What goes wrong when a LLaMA-family model is configured, loaded, run or sampled from with
//! arguments it does not take.

use std::path::PathBuf;

use tch::Kind;

/// A LLaMA-family model's configuration, checkpoint, inputs or sampling settings that it cannot
/// take.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A count of the configuration (a size, a number of heads or layers) below 1.
    #[error("{what} must be at least 1, not {value}")]
    BelowOne {
        /// The field (`"hidden_size"`).
        what: &'static str,
        /// The value given.
        value: i64,
    },
    /// A real setting (`rms_norm_eps`, `rope_theta`, a temperature) that is not positive and finite.
    #[error("{what} must be positive and finite, not {value}")]
    NotPositive {
        /// The setting.
        what: &'static str,
        /// The value given.
        value: f64,
    },
    /// An odd head dimension, which rotary embeddings cannot split into pairs.
    #[error("head_dim must be even for rotary embeddings, not {head_dim}")]
    OddHeadDim {
        /// The head dimension.
        head_dim: i64,
    },
    /// Query heads that the key-value heads do not divide.
    #[error("num_attention_heads ({heads}) must be a multiple of num_key_value_heads ({kv_heads})")]
    HeadsNotMultiple {
        /// Query heads.
        heads: i64,
        /// Key-value heads.
        kv_heads: i64,
    },
    /// An activation other than SiLU.
    #[error("hidden_act `{activation}` is not supported (LLaMA-family models use `silu`)")]
    UnsupportedActivation {
        /// The activation named.
        activation: String,
    },
    /// A rotary embedding variant other than the default one.
    #[error("rotary embedding type `{kind}` is not supported (only the default one is)")]
    UnsupportedRope {
        /// The variant named.
        kind: String,
    },
    /// Sizes whose product, the element count of a weight or a projection's width, does not fit in
    /// `i64`.
    #[error("{what} overflows a 64-bit element count")]
    SizeOverflow {
        /// The product (`"num_attention_heads · head_dim"`).
        what: &'static str,
    },
    /// A `config.json` `model_type` that is not an architecture this crate builds.
    #[error("model_type `{model_type}` is not one this crate builds (`llama`, or `mistral` without a sliding window)")]
    ModelType {
        /// The type named.
        model_type: String,
    },
    /// A Mistral config whose attention is limited to a sliding window, which the decoder does not
    /// implement (it attends to every earlier token).
    #[error(
        "sliding-window attention ({window} tokens) is not supported; a Mistral model trained with full attention \
         says `\"sliding_window\": null`"
    )]
    SlidingWindow {
        /// The window, in tokens (transformers' default 4096 when the key is absent).
        window: i64,
    },
    /// More layers than the checkpoint has tensors (each layer has tensors of its own), refused
    /// before a variable is allocated.
    #[error("{layers} layers cannot be in a checkpoint of {tensors} tensors")]
    LayersPastTensors {
        /// The configured layer count.
        layers: i64,
        /// The tensors the checkpoint holds.
        tensors: usize,
    },
    /// A config text that is not a Hugging Face `config.json`.
    #[error("not a Hugging Face config.json: {0}")]
    NotHfConfig(#[source] serde_json::Error),
    /// A `config.json` that cannot be read.
    #[error("cannot read `{}`: {source}", path.display())]
    ReadConfig {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A `config.json` that does not describe a model this crate builds.
    #[error("`{}`: {source}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Box<ModelError>,
    },
    /// A GGUF file whose metadata does not describe a LLaMA-family model.
    #[error("GGUF file `{}`: {problem}", file.display())]
    GgufConfig {
        /// The file.
        file: PathBuf,
        /// What is wrong with its metadata.
        #[source]
        problem: Box<ModelError>,
    },
    /// A GGUF architecture other than `llama`.
    #[error("architecture `{arch}` is not a LLaMA-family one (`llama`)")]
    Architecture {
        /// The architecture named.
        arch: String,
    },
    /// Metadata a GGUF model needs, absent or not a number.
    #[error("no {what} metadata `{key}`")]
    MissingMetadata {
        /// `"integer"` or `"float"`.
        what: &'static str,
        /// The key.
        key: String,
    },
    /// No way to tell a GGUF model's vocabulary size.
    #[error("no vocabulary size (`llama.vocab_size`, tokens or token_embd.weight)")]
    NoVocabularySize,
    /// A directory without a checkpoint.
    #[error("`{}` holds neither `{single}` nor `{index}`", dir.display())]
    NoCheckpoint {
        /// The directory.
        dir: PathBuf,
        /// The single-file checkpoint's name.
        single: &'static str,
        /// The sharded checkpoint's index name.
        index: &'static str,
    },
    /// A sharded checkpoint's index that cannot be used.
    #[error("`{}`: {problem}", index.display())]
    Index {
        /// The index file.
        index: PathBuf,
        /// What is wrong with it.
        #[source]
        problem: IndexProblem,
    },
    /// `input_ids` that are not `[batch, tokens]`.
    #[error("input_ids must be [batch, tokens], not {shape:?}")]
    InputIdsShape {
        /// Their shape.
        shape: Vec<i64>,
    },
    /// Ids or masks that are not integers.
    #[error("{what} must be integers, not {kind:?}")]
    NotIntegers {
        /// The tensor (`"input_ids"`, `"attention_mask"`…).
        what: &'static str,
        /// Its kind.
        kind: Kind,
    },
    /// `input_ids` without a token: a batch of no sequence (`[0, T]`) or sequences of no token
    /// (`[B, 0]`). Both are refused, as transformers' forward fails on both, so that an empty batch
    /// never turns into an empty loss (a mean over nothing is NaN).
    #[error(
        "input_ids {shape:?} hold no token: a forward takes at least one sequence (batch ≥ 1) of at least one token"
    )]
    NoTokens {
        /// Their shape, `[0, T]` or `[B, 0]`.
        shape: Vec<i64>,
    },
    /// A token id outside the vocabulary.
    #[error("input_ids must be in 0..{vocab} (the vocabulary), found {found}")]
    TokenOutOfRange {
        /// The vocabulary size.
        vocab: i64,
        /// An id outside it.
        found: i64,
    },
    /// A mask or id tensor of another shape than `[batch, past + tokens]`.
    #[error("{what} must be {expected:?} (batch, {} tokens), not {got:?}", expected.get(1).copied().unwrap_or_default())]
    InputShape {
        /// The tensor (`"attention_mask"`…).
        what: &'static str,
        /// `[batch, past + tokens]`.
        expected: Vec<i64>,
        /// Its shape.
        got: Vec<i64>,
    },
    /// A [`KvCache`](super::KvCache) that does not fit the forward it is given to: filled by
    /// another model, for another batch size, or on another device or kind.
    #[error("the KvCache was filled {problem}")]
    CacheMismatch {
        /// How it differs (`"for batch size 2, not 1"`).
        problem: String,
    },
    /// Generation asked for without a prompt.
    #[error("generate needs a prompt of at least one token")]
    EmptyPrompt,
    /// A generation that would run the model at a position past its context
    /// (`max_position_embeddings`), where it was never trained: a prompt longer than the context, or
    /// more new tokens than fit after it (`generate` feeds the prompt and every generated token but
    /// the last, so a prompt of `P` tokens takes at most `context + 1 − P`).
    #[error("{}", context_message(*prompt, *new_tokens, *context))]
    ContextLength {
        /// Tokens in the prompt.
        prompt: usize,
        /// `max_new_tokens` as asked.
        new_tokens: usize,
        /// The model's `max_position_embeddings`.
        context: i64,
    },
    /// A nucleus-sampling `top_p` outside `(0, 1]`.
    #[error("top_p must be in (0, 1], not {top_p}")]
    TopP {
        /// The value given.
        top_p: f64,
    },
}

/// What is wrong with a sharded checkpoint's index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexProblem {
    /// It cannot be read.
    #[error("cannot be read: {0}")]
    Unreadable(#[source] std::io::Error),
    /// It is not JSON.
    #[error("not JSON: {0}")]
    NotJson(#[source] serde_json::Error),
    /// It has no `weight_map`.
    #[error("has no `weight_map` object")]
    NoWeightMap,
    /// A tensor's shard is not a string.
    #[error("the shard of `{key}` is not a file name")]
    ShardNotString {
        /// The tensor.
        key: String,
    },
    /// A shard outside the index's folder.
    #[error("the shard `{shard}` of `{key}` is not a file name in the index's folder")]
    ShardOutsideFolder {
        /// The shard named.
        shard: String,
        /// The tensor.
        key: String,
    },
    /// A tensor in a shard the index does not list it in.
    #[error("`{key}` is in shard `{shard}`, but the index does not list it there")]
    NotListed {
        /// The tensor.
        key: String,
        /// The shard that holds it.
        shard: String,
    },
    /// A tensor two shards hold.
    #[error("`{key}` is in two shards")]
    InTwoShards {
        /// The tensor.
        key: String,
    },
}

/// The message of [`ModelError::ContextLength`], with what to ask for instead.
fn context_message(prompt: usize, new_tokens: usize, context: i64) -> String {
    let (p, c) = (prompt as u128, u128::try_from(context).unwrap_or(0));
    if p > c {
        return format!(
            "a prompt of {prompt} tokens is longer than the model's context of {context} (max_position_embeddings): \
             shorten it to at most {context} tokens"
        );
    }
    format!(
        "{new_tokens} new tokens after a prompt of {prompt} would run the model at {} positions, past its context of \
         {context} (max_position_embeddings): ask for at most {} new tokens, or for `usize::MAX` to stop at the end \
         of the context",
        (p + new_tokens as u128).saturating_sub(1),
        c + 1 - p
    )
}

impl From<ModelError> for crate::DistillError {
    fn from(error: ModelError) -> Self {
        crate::DistillError::Text(Box::new(error))
    }
}
