//! What goes wrong when a teacher cache or a token cache is written or read: a file that cannot be
//! read or written, a shard not complete, arguments that do not fit the cache (shard and id ranges,
//! batch shapes, encodings a stored value does not fit).

use super::text::named_or;

/// A teacher cache or token cache that cannot be read or written, or arguments that do not fit it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// A cache shard is missing or was not completely written.
    #[error(
        "shard {shard} of {shards} of the teacher cache `{dir}` is not complete: run the writer with shard {shard} \
         of {shards}"
    )]
    Incomplete {
        /// The cache directory.
        dir: String,
        /// The shard's index (from 0).
        shard: usize,
        /// How many shards the cache has.
        shards: usize,
    },
    /// A cache file could not be read or written, or is not what the manifest says.
    #[error("teacher cache `{path}`: {reason}")]
    File {
        /// The file or directory.
        path: String,
        /// What went wrong.
        reason: String,
        /// The error underneath, when there is one: the operating system's for a file that cannot be
        /// read or written, serde's for a manifest that is not valid JSON.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
    },
    /// A writer asked for zero shards.
    #[error("a cache needs at least one shard")]
    NoShards,
    /// A shard index past the last shard.
    #[error("shard {index} of {shards} does not exist (shards count from 0)")]
    ShardOutOfRange {
        /// The index given.
        index: usize,
        /// How many shards the cache has.
        shards: usize,
    },
    /// Fewer samples or sequences than shards.
    #[error("{count} {items} cannot fill {shards} shards")]
    TooFewToShard {
        /// How many samples or sequences there are.
        count: usize,
        /// `"samples"` or `"sequences"`.
        items: &'static str,
        /// How many shards were asked for.
        shards: usize,
    },
    /// A count the writer or reader needs at least one of.
    #[error("{what} must be at least 1")]
    ZeroCount {
        /// What is zero (`"the batch size"`, `"views and batch size"`).
        what: &'static str,
    },
    /// A token cache's sequence length or vocabulary below 1.
    #[error(
        "a token cache needs sequences of at least 1 token and a vocabulary of at least 1, got T = {seq_len} and \
         V = {vocab}"
    )]
    TokenSizes {
        /// The sequence length given.
        seq_len: i64,
        /// The vocabulary size given.
        vocab: i64,
    },
    /// A vocabulary too large for the 32-bit ids a token cache stores.
    #[error("a vocabulary of {vocab} tokens does not fit 32-bit ids")]
    VocabularyTooLarge {
        /// The vocabulary size given.
        vocab: i64,
    },
    /// A stored hidden state without a module path.
    #[error("a stored hidden state needs a module path (the teacher's own output is its distribution)")]
    HiddenWithoutPath,
    /// A stored hidden state of width below 1.
    #[error("the hidden state `{path}` has a width of {width}")]
    HiddenWidth {
        /// The module path.
        path: String,
        /// The width given.
        width: i64,
    },
    /// A hidden state stored twice.
    #[error("the hidden state `{path}` is stored twice")]
    HiddenTwice {
        /// The module path.
        path: String,
    },
    /// Sample ids that are not integers.
    #[error("sample ids must be integers, got a {kind:?} tensor (a float id would be truncated)")]
    IdKind {
        /// The ids' kind.
        kind: tch::Kind,
    },
    /// Sample ids that are not a 1-D tensor.
    #[error("sample ids must be a 1-D tensor [B], got the shape {shape:?}")]
    IdShape {
        /// The ids' shape.
        shape: Vec<i64>,
    },
    /// A sample id the teacher cache does not hold.
    #[error("sample id {id} is not in the teacher cache `{dir}` (ids 0..{count})")]
    SampleNotCached {
        /// The id.
        id: i64,
        /// The cache directory.
        dir: String,
        /// How many samples the cache holds.
        count: usize,
    },
    /// A sequence the token cache does not hold.
    #[error("sequence {id} is not in the token cache `{dir}` (sequences 0..{count})")]
    SequenceNotCached {
        /// The sequence's index.
        id: usize,
        /// The cache directory.
        dir: String,
        /// How many sequences the cache holds.
        count: usize,
    },
    /// A sequence another rank reads.
    #[error("sequence {id} of the token cache `{dir}` is not read by rank {rank} of {world}, which reads sequences {start}..{end}")]
    SequenceOnOtherRank {
        /// The sequence's index.
        id: usize,
        /// The cache directory.
        dir: String,
        /// This reader's rank.
        rank: usize,
        /// The number of ranks.
        world: usize,
        /// The first sequence this rank reads.
        start: usize,
        /// One past the last sequence this rank reads.
        end: usize,
    },
    /// A batch of no sequence.
    #[error("a batch needs at least one sequence")]
    EmptyBatch,
    /// A rank not below the world size.
    #[error("rank {rank} is out of range for a world of {world}")]
    RankOutOfRange {
        /// The rank given.
        rank: usize,
        /// The number of ranks.
        world: usize,
    },
    /// Shards that do not split evenly over the ranks.
    #[error(
        "the token cache `{dir}` has {shards} shards, which do not split evenly over {world} ranks: write it in a \
         multiple of {world} shards"
    )]
    UnevenShards {
        /// The cache directory.
        dir: String,
        /// How many shards it has.
        shards: usize,
        /// The number of ranks.
        world: usize,
    },
    /// A shard that was not mapped by this reader.
    #[error("shard {index} is not one this reader maps")]
    ShardNotMapped {
        /// The shard's index.
        index: usize,
    },
    /// Sequences pushed out of order into a token-cache shard.
    #[error("shard {shard} takes its sequences {start}..{end} in order: the next are {next}.., got {got:?}")]
    OutOfOrder {
        /// The shard's index.
        shard: usize,
        /// Its first sequence.
        start: usize,
        /// One past its last sequence.
        end: usize,
        /// The next sequence it takes.
        next: usize,
        /// The first (up to 8) sequences pushed.
        got: Vec<usize>,
    },
    /// A token-cache shard finished before all its sequences were pushed.
    #[error("shard {shard} holds sequences {start}..{end}; only {start}..{next} were pushed")]
    ShardUnfinished {
        /// The shard's index.
        shard: usize,
        /// Its first sequence.
        start: usize,
        /// One past its last sequence.
        end: usize,
        /// One past the last sequence pushed.
        next: usize,
    },
    /// Teacher logits pushed into a token cache with another shape than `[B, T, V]`.
    #[error("the teacher logits of {} sequences must be {expected:?} (batch, tokens, vocabulary), got {got:?}", expected.first().copied().unwrap_or_default())]
    LogitsShape {
        /// `[B, T, V]`.
        expected: Vec<i64>,
        /// The logits' shape.
        got: Vec<i64>,
    },
    /// A token mask pushed into a token cache with another shape than `[B, T]`.
    #[error("the token mask must be {expected:?}, got {got:?}")]
    MaskShape {
        /// `[B, T]`.
        expected: Vec<i64>,
        /// The mask's shape.
        got: Vec<i64>,
    },
    /// Another number of hidden states than the cache stores.
    #[error("the cache stores {} hidden states ({stored:?}), {given} were given", stored.len())]
    HiddenCount {
        /// The stored hidden states' paths.
        stored: Vec<String>,
        /// How many were given.
        given: usize,
    },
    /// A hidden state of another shape than the cache stores.
    #[error("the hidden state `{path}` of {} sequences must be {expected:?}, got {got:?}", expected.first().copied().unwrap_or_default())]
    HiddenShape {
        /// Its module path.
        path: String,
        /// `[B, T, width]`.
        expected: Vec<i64>,
        /// Its shape.
        got: Vec<i64>,
    },
    /// A pair on a stored hidden state whose tensors are not `[B, T, …]` over the batch's tokens.
    #[error("a pair on the stored hidden state `{path}` needs tensors [B, T, …] over the batch's {tokens:?} tokens, got {got:?}")]
    HiddenPairShape {
        /// The hidden state's module path.
        path: String,
        /// The batch's token mask shape `[B, T]`.
        tokens: Vec<i64>,
        /// The tensor's shape.
        got: Vec<i64>,
    },
    /// A sampled importance weight beyond f16's range.
    #[error(
        "an importance weight of {largest:e} does not fit f16 (largest 65504): store the sampled encoding's values \
         as bf16 or f32 (`TokenEncoding::sampled(…).with_values(Precision::Bf16)` or `Precision::F32`), or use a \
         proposal temperature of at least 1"
    )]
    WeightOverflowsF16 {
        /// The largest weight.
        largest: f64,
    },
    /// A teacher hidden state value beyond f16's range, for a hidden state a token cache stores as f16.
    #[error(
        "the teacher hidden state `{path}` gives {value:e}, which f16 storage cannot hold (its largest value is \
         65504; this would be stored as infinity): store it as bf16, which has f32's range with 8 significant bits \
         (`hidden_state(\"{path}\", width, Precision::Bf16)`), or as f32 (`Precision::F32`)"
    )]
    HiddenOverflowsF16 {
        /// The teacher module's path.
        path: String,
        /// The value.
        value: f64,
    },
    /// A value beyond bf16's range — a magnitude of (2 − 2⁻⁸)·2¹²⁷ ≈ 3.396·10³⁸ or more, the top of
    /// f32's — for values stored as bf16 ([`Precision::Bf16`](crate::cache::Precision::Bf16),
    /// [`Encoding::Bf16`](crate::cache::Encoding::Bf16)).
    #[error(
        "{what} gives {value:e}, which bf16 storage cannot hold (its largest value is about 3.3895e38; this would be \
         stored as infinity): store these values as f32 (`Precision::F32`, `Encoding::F32`)"
    )]
    ValueOverflowsBf16 {
        /// What gave the value: "the teacher endpoint `path`", "the teacher's own output", "the teacher
        /// hidden state `path`" or "an importance weight".
        what: String,
        /// The value.
        value: f64,
    },
    /// A teacher endpoint value beyond f16's range, for an endpoint stored as f16.
    #[error(
        "{} gives {value:e}, which f16 storage cannot hold (its largest value is 65504; this would be stored as \
         infinity): store it as f32 or bf16 (`endpoint_encoding(\"{path}\", Encoding::F32)` or `Encoding::Bf16`)",
        teacher_endpoint(path)
    )]
    ValueOverflowsF16 {
        /// The endpoint's path (empty for the teacher's own output).
        path: String,
        /// The value.
        value: f64,
    },
    /// An endpoint stored as top-k logits that does not give logits `[N, C]`.
    #[error("{} is stored as top-k logits, which needs logits [N, C]; it gave {shape:?}", endpoint_name(path))]
    TopKNeedsLogits {
        /// The endpoint's path (empty for the teacher's own output).
        path: String,
        /// The shape it gave.
        shape: Vec<i64>,
    },
    /// An endpoint whose capture could not be encoded as its encoding asks.
    #[error("{}: {source}", endpoint_name(path))]
    Encode {
        /// The endpoint's path (empty for the teacher's own output).
        path: String,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A teacher endpoint that gave no tensor.
    #[error("the teacher endpoint `{path}` gave no tensor to cache")]
    NoTensor {
        /// The endpoint's path.
        path: String,
    },
    /// A teacher endpoint that captures all calls, which a cache does not store.
    #[error("the teacher endpoint `{path}` captures all calls, which a teacher cache does not store")]
    AllCalls {
        /// The endpoint's path.
        path: String,
    },
    /// A cached endpoint asked to capture all calls.
    #[error("the cached endpoint `{path}` cannot capture all calls: a teacher cache stores one call")]
    CachedAllCalls {
        /// The endpoint's path.
        path: String,
    },
    /// A cached endpoint named by module, which a cache does not hold.
    #[error("a teacher cache holds no modules to refer to: name its endpoints by path (`\"features.1\"`)")]
    NoModules,
    /// A distillation of several teachers, whose endpoints a teacher cache does not store together.
    #[error(
        "a teacher cache stores one teacher's endpoints, and this distillation has {teachers} teachers: write one \
         cache per teacher, each from a distillation of that teacher alone"
    )]
    SeveralTeachers {
        /// How many teachers the distillation has.
        teachers: usize,
    },
    /// An `endpoint_encoding` for a path that is no teacher endpoint.
    #[error(
        "`endpoint_encoding` names `{path}`, which is not a teacher endpoint of the distillation{}; its teacher \
         endpoints: {}",
        suggestion.as_ref().map(|p| format!(" (did you mean `{p}`?)")).unwrap_or_default(),
        endpoint_list(endpoints)
    )]
    UnknownEncodedEndpoint {
        /// The path given.
        path: String,
        /// The closest endpoint path, if one is close.
        suggestion: Option<String>,
        /// The teacher endpoints' paths.
        endpoints: Vec<String>,
    },
    /// View parameters that do not fit the batch.
    #[error("view parameters of shape {shape:?} for a batch of {inputs} inputs")]
    ViewParams {
        /// Their shape.
        shape: Vec<i64>,
        /// The batch's inputs.
        inputs: i64,
    },
    /// A crop of inputs without two spatial dimensions.
    #[error("a crop needs inputs of at least 3 dimensions [N, …, H, W], got {shape:?}")]
    CropInput {
        /// The inputs' shape.
        shape: Vec<i64>,
    },
    /// A teacher cache's teacher asked to run.
    #[error(
        "a teacher cache does not run: call `forward_cached` (and `dry_run_cached`, to fit adapters and check the \
         pairs) with a batch from `TeacherCache::batch` or `TeacherCache::prefetch`"
    )]
    TeacherCacheDoesNotRun,
    /// A token cache's teacher asked to run.
    #[error(
        "a token cache does not run: call `forward_cached` (or `dry_run_cached`) with a batch from \
         `TokenCache::batch` or `TokenCache::prefetch`"
    )]
    TokenCacheDoesNotRun,
    /// A trainable TorchScript teacher hashed as a module.
    #[error(
        "a trainable TorchScript module's parameters are in its VarStore: hash it with `TeacherHash::of_var_store`"
    )]
    TrainableTorchScript,
    /// The background thread of a [`Prefetch`](crate::cache::Prefetch) panicked: the batches after
    /// the last one it gave were not gathered.
    #[error(
        "the prefetching thread panicked after {delivered} batches ({message}): the epoch's remaining batches were \
         not read"
    )]
    PrefetchPanicked {
        /// How many batches it gave before.
        delivered: usize,
        /// The panic's message, when it was text.
        message: String,
    },
}

/// An endpoint in a message: `the teacher endpoint `path``, or the teacher's own output.
fn endpoint_name(path: &str) -> String {
    named_or(path, "the teacher's own output", "the teacher endpoint `", "`")
}

impl CacheError {
    /// [`CacheError::ValueOverflowsBf16`] for the teacher endpoint at `path` (`""`: the teacher's own
    /// output).
    pub(crate) fn endpoint_overflows_bf16(path: &str, value: f64) -> CacheError {
        CacheError::ValueOverflowsBf16 { what: teacher_endpoint(path), value }
    }
}

/// A teacher endpoint by its path: "the teacher endpoint `path`", or "the teacher's own output".
fn teacher_endpoint(path: &str) -> String {
    named_or(path, "the teacher's own output", "the teacher endpoint `", "`")
}

fn endpoint_list(paths: &[String]) -> String {
    if paths.is_empty() {
        return "none".to_owned();
    }
    paths.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::CacheError;

    #[test]
    fn an_f16_overflow_names_the_endpoint_or_the_teachers_output() {
        let named = CacheError::ValueOverflowsF16 { path: "features.1".to_owned(), value: 7e4 }.to_string();
        assert!(named.starts_with("the teacher endpoint `features.1` gives 7e4,"), "{named}");
        let output = CacheError::ValueOverflowsF16 { path: String::new(), value: -7e4 }.to_string();
        assert!(output.starts_with("the teacher's own output gives -7e4,"), "{output}");
    }
}
