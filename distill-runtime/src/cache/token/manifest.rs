//! The token cache's manifest ([`TokenManifest`]), what a cache is for ([`TokenCacheSpec`]) and how
//! each token's teacher distribution is stored ([`TokenEncoding`]).

use std::path::Path;

use safetensors::tensor::Dtype;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::cache::files::{cache_error, cache_source};
use crate::cache::manifest::{check_coverage, Precision, ShardEntry, MANIFEST_FILE};
use crate::cache::CacheError;
use crate::cache::TeacherHash;
use crate::checksum::crc_of_bytes;
use crate::error::Result;

pub use super::encoding::{IdWidth, TokenEncoding};

/// The version of the token cache layout this crate writes.
pub(crate) const TOKEN_FORMAT_VERSION: u32 = 1;

/// The token cache manifest's file name inside a cache directory (an image teacher cache's is
/// `manifest.json`).
pub(crate) const TOKEN_MANIFEST_FILE: &str = "token-manifest.json";

/// What a token cache holds: which teacher, tokenizer and token dataset, how many sequences of
/// which length over which vocabulary, and how each token is encoded. The writer records it in the
/// manifest; a reader compares it with what it expects ([`TokenCache::check`](super::TokenCache::check)).
///
/// The three identities are the caller's: any text that changes when the thing changes. The
/// helpers give the usual ones — [`TeacherHash`] for the weights,
/// [`tokenizer_identity`](Self::tokenizer_identity) (the SHA-256 of a `tokenizer.json`) and
/// [`dataset_identity`](Self::dataset_identity) (the SHA-256 of the token ids, sequence by sequence).
#[derive(Clone, Debug, PartialEq)]
pub struct TokenCacheSpec {
    /// The teacher weights' hash.
    pub teacher: TeacherHash,
    /// The tokenizer's identity.
    pub tokenizer: String,
    /// The token dataset's identity.
    pub dataset: String,
    /// Sequences in the cache; sequence ids are `0..num_sequences`.
    pub num_sequences: usize,
    /// Tokens per sequence, `T`.
    pub seq_len: i64,
    /// The teacher's vocabulary, `V` (the last dimension of its logits).
    pub vocab: i64,
    /// How each token is stored.
    pub encoding: TokenEncoding,
}

impl TokenCacheSpec {
    /// The identity of a tokenizer from its `tokenizer.json` bytes: `sha256:<hex>`.
    pub fn tokenizer_identity(json: &[u8]) -> String {
        TeacherHash::from_digest(Sha256::digest(json).as_slice()).to_string()
    }

    /// The identity of the tokenizer file at `path` ([`tokenizer_identity`](Self::tokenizer_identity)
    /// of its bytes).
    ///
    /// # Errors
    /// [`DistillError::Io`](crate::DistillError::Io) when the file cannot be read.
    pub fn tokenizer_file_identity(path: impl AsRef<Path>) -> Result<String> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| crate::atomic::io_error("read", path, e))?;
        Ok(Self::tokenizer_identity(&bytes))
    }

    /// The identity of a token dataset from its sequences' token ids, in sequence-id order:
    /// `sha256:<hex>` of each sequence's length and ids (little-endian), so that the same ids cut
    /// into other sequences give another identity.
    pub fn dataset_identity<S: AsRef<[u32]>>(sequences: impl IntoIterator<Item = S>) -> String {
        let mut hasher = Sha256::new();
        for sequence in sequences {
            let ids = sequence.as_ref();
            hasher.update((ids.len() as u64).to_le_bytes());
            for id in ids {
                hasher.update(id.to_le_bytes());
            }
        }
        TeacherHash::from_digest(hasher.finalize().as_slice()).to_string()
    }

    /// Checks the sizes and the encoding.
    ///
    /// # Errors
    /// [`CacheError::TokenSizes`], [`CacheError::VocabularyTooLarge`] or a [`DistillError::Criterion`](crate::DistillError::Criterion)
    /// for the encoding, naming what is out of range.
    pub(crate) fn validate(&self) -> Result<()> {
        if self.seq_len < 1 || self.vocab < 1 {
            return Err(CacheError::TokenSizes { seq_len: self.seq_len, vocab: self.vocab }.into());
        }
        if self.vocab > i64::from(i32::MAX) {
            return Err(CacheError::VocabularyTooLarge { vocab: self.vocab }.into());
        }
        self.encoding.problem(self.vocab).map_or(Ok(()), |problem| Err(problem.into()))
    }
}

/// The description of a token cache, stored as `token-manifest.json` beside its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenManifest {
    /// The layout version (this crate writes version 1).
    pub format: u32,
    /// The teacher weights' hash ([`TeacherHash`] as text).
    pub teacher_hash: String,
    /// The tokenizer's identity.
    pub tokenizer: String,
    /// The token dataset's identity.
    pub dataset: String,
    /// Sequences in the cache; sequence ids are `0..num_sequences`.
    pub num_sequences: usize,
    /// Tokens per sequence, `T`.
    pub seq_len: i64,
    /// The teacher's vocabulary, `V`.
    pub vocab: i64,
    /// How each token is stored.
    pub encoding: TokenEncoding,
    /// How token ids are stored (follows from `vocab`).
    pub ids: IdWidth,
    /// The shards, in sequence order: shard `i` of `n` holds sequences `i·N/n .. (i+1)·N/n`.
    pub shards: Vec<ShardEntry>,
    /// Teacher hidden states stored beside the distribution, in shard-tensor order (none by
    /// default; see [`TokenCacheWriter::hidden_state`](super::TokenCacheWriter::hidden_state)).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hidden: Vec<StoredHidden>,
}

/// A teacher hidden state a token cache stores for every token: the tensor `[T, width]` per
/// sequence that the teacher module at `path` gives, in `values` precision; a pair reads it as the
/// teacher endpoint `path` (`teacher["model.layers.12"]` in `distill!`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredHidden {
    /// The teacher module's dotted path, the endpoint's name.
    pub path: String,
    /// The hidden size: the last dimension of the stored tensor.
    pub width: i64,
    /// How the values are stored.
    pub values: Precision,
}

impl TokenManifest {
    /// The manifest of a cache of `spec` in `shards` shards.
    pub(crate) fn new(spec: &TokenCacheSpec, shards: usize) -> TokenManifest {
        TokenManifest {
            format: TOKEN_FORMAT_VERSION,
            teacher_hash: spec.teacher.as_str().to_owned(),
            tokenizer: spec.tokenizer.clone(),
            dataset: spec.dataset.clone(),
            num_sequences: spec.num_sequences,
            seq_len: spec.seq_len,
            vocab: spec.vocab,
            encoding: spec.encoding,
            ids: IdWidth::for_vocab(spec.vocab),
            hidden: Vec::new(),
            shards: (0..shards)
                .map(|i| ShardEntry {
                    file: crate::cache::files::shard_file(i, shards),
                    start: i * spec.num_sequences / shards,
                    end: (i + 1) * spec.num_sequences / shards,
                })
                .collect(),
        }
    }

    /// Bytes stored per token: the distribution's, and each stored hidden state's.
    pub fn bytes_per_token(&self) -> usize {
        let hidden: usize = self.hidden.iter().map(|h| h.width.max(0) as usize * h.values.bytes()).sum();
        self.encoding.bytes_per_token(self.ids) + hidden
    }

    /// Reads `dir/token-manifest.json` and checks it: a readable layout version, sizes and encoding
    /// in range, id width matching the vocabulary, at least one sequence, and shards that cover the
    /// sequences exactly once.
    ///
    /// # Errors
    /// [`CacheError::File`](crate::cache::CacheError::File) naming the manifest and what is wrong with it (or, for a directory
    /// holding an image teacher cache, saying so).
    pub(crate) fn load(dir: &Path) -> Result<TokenManifest> {
        let path = dir.join(TOKEN_MANIFEST_FILE);
        if !path.exists() && dir.join(MANIFEST_FILE).exists() {
            return Err(cache_error(
                dir,
                format!(
                    "it holds an image teacher cache (`{MANIFEST_FILE}`), not a token cache: open it with \
                     `TeacherCache::open`"
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| cache_source(&path, "cannot read the manifest", e))?;
        let manifest: TokenManifest =
            serde_json::from_str(&text).map_err(|e| cache_source(&path, "the manifest cannot be read", e))?;
        if manifest.format != TOKEN_FORMAT_VERSION {
            return Err(cache_error(
                &path,
                format!(
                    "layout version {} (this build reads token caches of version {TOKEN_FORMAT_VERSION})",
                    manifest.format
                ),
            ));
        }
        manifest.check().map_err(|reason| cache_error(&path, reason))?;
        Ok(manifest)
    }

    fn check(&self) -> std::result::Result<(), String> {
        if self.seq_len < 1 || self.vocab < 1 {
            return Err(format!("it has sequences of {} tokens over a vocabulary of {}", self.seq_len, self.vocab));
        }
        if let Some(problem) = self.encoding.problem(self.vocab) {
            return Err(problem.to_string());
        }
        if self.ids != IdWidth::for_vocab(self.vocab) {
            return Err(format!("it stores {:?} ids for a vocabulary of {} tokens", self.ids, self.vocab));
        }
        if let Some(problem) = hidden_problem(&self.hidden) {
            return Err(problem.to_string());
        }
        check_coverage(&self.shards, self.num_sequences, "sequences")
    }

    /// `(what, in the cache, expected)` for the first field where the cache differs from `spec`.
    pub(crate) fn difference(&self, spec: &TokenCacheSpec) -> Option<(String, String, String)> {
        let differ = |what: &str, a: String, b: String| (a != b).then(|| (what.to_owned(), a, b));
        differ("the teacher weights' hash", self.teacher_hash.clone(), spec.teacher.to_string())
            .or_else(|| differ("the tokenizer (its identity)", self.tokenizer.clone(), spec.tokenizer.clone()))
            .or_else(|| differ("the token dataset (its identity)", self.dataset.clone(), spec.dataset.clone()))
            .or_else(|| {
                differ("the number of sequences", self.num_sequences.to_string(), spec.num_sequences.to_string())
            })
            .or_else(|| differ("the sequence length", self.seq_len.to_string(), spec.seq_len.to_string()))
            .or_else(|| differ("the vocabulary size", self.vocab.to_string(), spec.vocab.to_string()))
            .or_else(|| differ("the encoding", format!("{:?}", self.encoding), format!("{:?}", spec.encoding)))
    }

    /// The manifest's identity, recorded in every shard written for it: a CRC-32 of its bytes.
    pub(crate) fn identity(&self) -> Result<String> {
        Ok(crc_of_bytes(&[&self.to_bytes()?]))
    }

    /// The manifest's bytes: pretty JSON, fields in declaration order.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| cache_source(Path::new(TOKEN_MANIFEST_FILE), "cannot serialise the manifest", e))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes the manifest into `dir` if there is none yet (complete or absent, never replaced):
    /// `false` when there was one, left as it is.
    pub(crate) fn publish(&self, dir: &Path) -> Result<bool> {
        crate::atomic::publish_new(&dir.join(TOKEN_MANIFEST_FILE), &self.to_bytes()?)
    }
}

/// The names of a token shard's tensors, in the order the writer declares them.
pub(crate) const IDS: &str = "ids";
pub(crate) const LOG_PROBS: &str = "log_probs";
pub(crate) const TAIL: &str = "tail";
pub(crate) const WEIGHTS: &str = "weights";
pub(crate) const VALID: &str = "valid";

/// A shard's tensors `(name, dtype, shape)` for `len` sequences of `manifest`.
pub(crate) fn shard_tensors(manifest: &TokenManifest, len: usize) -> Vec<(String, Dtype, Vec<usize>)> {
    let t = manifest.seq_len as usize;
    let width = manifest.encoding.width() as usize;
    let values = manifest.encoding.values().dtype();
    let third = match manifest.encoding {
        TokenEncoding::TopK { .. } => (TAIL.to_owned(), Dtype::F32, vec![len, t]),
        TokenEncoding::Sampled { .. } => (WEIGHTS.to_owned(), values, vec![len, t, width]),
    };
    let mut tensors = vec![
        (IDS.to_owned(), manifest.ids.dtype(), vec![len, t, width]),
        (LOG_PROBS.to_owned(), values, vec![len, t, width]),
        third,
        (VALID.to_owned(), Dtype::U8, vec![len, t]),
    ];
    for (index, hidden) in manifest.hidden.iter().enumerate() {
        tensors.push((hidden_tensor(index), hidden.values.dtype(), vec![len, t, hidden.width as usize]));
    }
    tensors
}

/// What is wrong with a list of stored hidden states: a width below 1, an empty or repeated path.
pub(crate) fn hidden_problem(hidden: &[StoredHidden]) -> Option<CacheError> {
    hidden.iter().enumerate().find_map(|(index, h)| {
        if h.path.is_empty() {
            Some(CacheError::HiddenWithoutPath)
        } else if h.width < 1 {
            Some(CacheError::HiddenWidth { path: h.path.clone(), width: h.width })
        } else if hidden[..index].iter().any(|other| other.path == h.path) {
            Some(CacheError::HiddenTwice { path: h.path.clone() })
        } else {
            None
        }
    })
}

/// The shard tensor of the `index`-th stored hidden state.
pub(crate) fn hidden_tensor(index: usize) -> String {
    format!("hidden.{index}")
}
