//! The cache's JSON manifest: what was stored, for which teacher, in which shards.
//!
//! The manifest is a function of the writer's configuration and of the teacher (its weights' hash and
//! the per-sample shapes of its endpoints), never of which shards a process happened to write, so
//! writers of one configuration agree on it byte for byte. It is published once, by the first writer
//! ([`Manifest::publish`] never replaces one); every other writer, concurrent ones included, compares
//! its own with the one published and writes no shard unless they are the same.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::augment::Augment;
use super::files::{cache_error, cache_source};
use crate::atomic::publish_new;
use crate::checksum::crc_of_bytes;
use crate::error::Result;
use crate::point::Port;

/// The version of the cache layout this crate writes. Version 2 added top-k logits
/// ([`Encoding::TopK`]); version 3 added each shard's checksum and the hash of the manifest it
/// belongs to (in the shard's safetensors metadata), the inputs' identity, the teacher's mode and
/// the write batch size (in the manifest), and bf16 storage. Versions 1 and 2 still read, without
/// the checks that need what they do not record.
pub(crate) const FORMAT_VERSION: u32 = 3;

/// The oldest layout version this crate reads.
const OLDEST_READABLE: u32 = 1;

/// The manifest file's name inside a cache directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// The description of a teacher cache, stored as `manifest.json` beside its shards.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The layout version (this crate writes version 3 and reads 1 to 3).
    pub format: u32,
    /// The teacher weights' hash ([`TeacherHash`](super::TeacherHash) as text).
    pub teacher_hash: String,
    /// Number of samples; sample ids are `0..num_samples`.
    pub num_samples: usize,
    /// The shape of one input sample (without the batch dimension).
    pub input_shape: Vec<i64>,
    /// Augmentation views stored per sample; epoch `e` reads view `e % views`.
    pub views: usize,
    /// The augmentation each view's parameters were drawn for.
    pub augment: Augment,
    /// The seed the views' parameters were drawn from.
    pub seed: u64,
    /// The stored teacher endpoints, in the order of the shard tensors `endpoint.0`, `endpoint.1`, …
    pub endpoints: Vec<EndpointEntry>,
    /// The shards, in sample order.
    pub shards: Vec<ShardEntry>,
    /// The identity of the dataset given to [`CacheWriter::dataset`](super::CacheWriter::dataset),
    /// if one was. Whether or not there is one, each shard records the CRC-32 of the inputs it was
    /// computed from (layout version 3).
    #[serde(default)]
    pub inputs: Option<String>,
    /// Whether the teacher ran in evaluation or training mode (`None` before layout version 3).
    #[serde(default)]
    pub teacher_mode: Option<RunMode>,
    /// The batch size the teacher ran at while writing (`None` before layout version 3). The stored
    /// values can depend on it in the last bits (see [`CacheWriter::batch_size`](super::CacheWriter::batch_size)).
    #[serde(default)]
    pub write_batch_size: Option<usize>,
}

/// The mode a teacher ran in while a cache was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunMode {
    /// Evaluation mode (batch norm uses its running statistics).
    Eval,
    /// Training mode (batch norm uses each batch's statistics, dropout is active).
    Train,
}

impl RunMode {
    /// The mode for a `train` flag.
    pub(crate) fn from_train(train: bool) -> RunMode {
        if train {
            RunMode::Train
        } else {
            RunMode::Eval
        }
    }
}

/// One stored teacher endpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EndpointEntry {
    /// The endpoint's resolved path in the teacher (`""` for the teacher's own output).
    pub path: String,
    /// Whether the module's input or output was captured.
    pub port: Port,
    /// The shape of one sample's capture as the teacher gave it (without the batch dimension): for
    /// top-k logits the class count `[C]`, not the `k` classes stored.
    pub shape: Vec<i64>,
    /// How the values are stored.
    pub encoding: Encoding,
}

/// How a cached endpoint's values are stored.
///
/// In the manifest, `"f32"`, `"f16"`, `"bf16"`, or
/// `{"topk": {"k": 5, "temperature": 4.0, "values": "f16"}}` (values `"f32"`, `"f16"` or `"bf16"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// 32-bit floats: reading gives back exactly what the teacher computed.
    #[default]
    F32,
    /// 16-bit floats (half the bytes). Read back as f32, each value rounded once to nearest: a
    /// relative error of at most 2⁻¹¹ for magnitudes in f16's normal range (2⁻¹⁴ ≈ 6.1·10⁻⁵ and
    /// up); below it an absolute error of at most 2⁻²⁵ ≈ 3·10⁻⁸ (half the spacing of f16's
    /// subnormals), so magnitudes up to 2⁻²⁵ are stored as zero.
    /// Values of magnitude 65520 or more round to infinity in f16: the writer refuses them, naming
    /// the endpoint; store such an endpoint as [`F32`](Self::F32) or [`Bf16`](Self::Bf16).
    F16,
    /// bfloat16 (half the bytes, f32's range, a relative error of at most 2⁻⁸ per value in f32's
    /// normal range, 1.2·10⁻³⁸ and up; see [`Precision::Bf16`]). Read back as f32.
    Bf16,
    /// Logits `[N, C]` reduced to their `k` most probable classes at `temperature`
    /// ([`TopKLogits`](crate::criterion::TopKLogits)): per sample, `k` log-probabilities stored as
    /// `values` and `k` class indices stored as 32-bit integers. Read back as the packed `[N, 2, k]`
    /// f32 tensor that [`TopKKlDiv`](crate::criterion::TopKKlDiv) at the same temperature reads; a
    /// pair whose criterion reads another temperature, or no top-k tensor, is a
    /// [`DistillError::CacheMismatch`](crate::DistillError).
    #[serde(rename = "topk")]
    TopK {
        /// Classes kept per sample (≥ 1, at most the class count).
        k: i64,
        /// The softmax temperature of the stored log-probabilities (finite and > 0).
        temperature: f64,
        /// How the log-probabilities are stored.
        values: Precision,
    },
}

/// The floating-point precision of stored values.
///
/// In a manifest, `"f32"`, `"f16"` or `"bf16"`. Values are rounded to nearest (ties to even).
/// Non-exhaustive: a storage format may gain a precision without breaking a `match`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Precision {
    /// 32-bit floats.
    #[default]
    F32,
    /// 16-bit floats (a relative error of at most 2⁻¹¹ per value of magnitude 2⁻¹⁴ or more; below
    /// it an absolute error of at most 2⁻²⁵, so magnitudes up to 2⁻²⁵ ≈ 3·10⁻⁸ become zero).
    /// Values of magnitude 65520 or more would round to infinity: the writers refuse them, naming
    /// what gave them; store those as [`F32`](Self::F32) or [`Bf16`](Self::Bf16).
    F16,
    /// bfloat16: 16 bits, f32's exponent range with 8 significant bits. A relative error of at most
    /// 2⁻⁸ ≈ 3.9·10⁻³ per value of magnitude 2⁻¹²⁶ ≈ 1.2·10⁻³⁸ or more (8× f16's); below it an
    /// absolute error of at most 2⁻¹³⁴ (half the spacing of its subnormals). Nothing a model
    /// computes in f32 overflows it but the top of f32's range: magnitudes of (2 − 2⁻⁸)·2¹²⁷ ≈
    /// 3.396·10³⁸ or more would round to infinity, and the writers refuse them.
    Bf16,
}

impl Precision {
    /// The tensor kind of the values.
    pub(crate) fn kind(self) -> tch::Kind {
        match self {
            Precision::F32 => tch::Kind::Float,
            Precision::F16 => tch::Kind::Half,
            Precision::Bf16 => tch::Kind::BFloat16,
        }
    }

    /// The safetensors dtype of the values.
    pub(crate) fn dtype(self) -> safetensors::tensor::Dtype {
        match self {
            Precision::F32 => safetensors::tensor::Dtype::F32,
            Precision::F16 => safetensors::tensor::Dtype::F16,
            Precision::Bf16 => safetensors::tensor::Dtype::BF16,
        }
    }

    /// Bytes per value.
    pub(crate) fn bytes(self) -> usize {
        match self {
            Precision::F32 => 4,
            Precision::F16 | Precision::Bf16 => 2,
        }
    }

    /// The magnitude from which a finite value rounds to infinity in this precision (`None` for
    /// f32, which stores every finite f32): halfway between the largest finite value and the next
    /// power of two, which round-to-nearest-even sends up — 65520 for f16 (its largest value is
    /// 65504 = (2 − 2⁻¹⁰)·2¹⁵), (2 − 2⁻⁸)·2¹²⁷ = 2¹²⁸ − 2¹¹⁹ for bf16 (its largest is
    /// (2 − 2⁻⁷)·2¹²⁷).
    pub(crate) fn overflow(self) -> Option<f64> {
        match self {
            Precision::F32 => None,
            Precision::F16 => Some(65520.0),
            Precision::Bf16 => Some(2f64.powi(128) - 2f64.powi(119)),
        }
    }
}

/// The tensor kind top-k class indices are stored in.
pub(crate) const TOP_K_INDEX_KIND: tch::Kind = tch::Kind::Int;

impl Encoding {
    /// Top-k logits: the `k` most probable classes at `temperature`, log-probabilities stored in
    /// `values`.
    pub const fn top_k(k: i64, temperature: f64, values: Precision) -> Self {
        Encoding::TopK { k, temperature, values }
    }

    /// The precision values are stored in (for top-k, the log-probabilities'; the class indices
    /// are 32-bit integers).
    pub(crate) fn precision(self) -> Precision {
        match self {
            Encoding::F32 => Precision::F32,
            Encoding::F16 => Precision::F16,
            Encoding::Bf16 => Precision::Bf16,
            Encoding::TopK { values, .. } => values,
        }
    }

    /// The tensor kind values are stored in (for top-k, the log-probabilities' kind; the class
    /// indices are 32-bit integers).
    pub(crate) fn kind(self) -> tch::Kind {
        self.precision().kind()
    }

    /// Bytes stored for one sample whose capture has the per-sample `shape`: for top-k, `k`
    /// values and `k` 4-byte class indices whatever the class count.
    pub fn bytes_per_sample(self, shape: &[i64]) -> usize {
        match self {
            Encoding::F32 => 4 * shape.iter().product::<i64>().max(0) as usize,
            Encoding::F16 | Encoding::Bf16 => 2 * shape.iter().product::<i64>().max(0) as usize,
            Encoding::TopK { k, values, .. } => k.max(0) as usize * (values.bytes() + 4),
        }
    }

    /// The shape of one sample's stored values, for a capture of per-sample `shape`.
    pub(crate) fn stored_shape(self, shape: &[i64]) -> Vec<i64> {
        match self {
            Encoding::TopK { k, .. } => vec![k],
            _ => shape.to_vec(),
        }
    }
}

/// One shard: a safetensors file holding samples `start..end`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardEntry {
    /// The file name inside the cache directory.
    pub file: String,
    /// The first sample id.
    pub start: usize,
    /// One past the last sample id.
    pub end: usize,
}

impl Manifest {
    /// The entry of the endpoint at `path` capturing `port`, with its index.
    pub(crate) fn endpoint(&self, path: &str, port: Port) -> Option<(usize, &EndpointEntry)> {
        self.endpoints.iter().enumerate().find(|(_, e)| e.path == path && e.port == port)
    }

    /// Bytes stored per sample and view: every endpoint's values.
    pub fn bytes_per_sample_view(&self) -> usize {
        self.endpoints.iter().map(|e| e.encoding.bytes_per_sample(&e.shape)).sum()
    }

    /// Reads `dir/manifest.json` and checks it: a readable layout version, at least one view, at
    /// least one sample, shards that cover the samples `0..num_samples` exactly once, and endpoint
    /// shapes whose records fit in memory.
    ///
    /// # Errors
    /// [`CacheError::File`](crate::cache::CacheError::File) naming the manifest and what is wrong with it.
    pub(crate) fn load(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        if !path.exists() && dir.join(super::token::TOKEN_MANIFEST_FILE).exists() {
            return Err(cache_error(
                dir,
                format!(
                    "it holds a token cache (`{}`), not an image teacher cache: open it with `TokenCache::open`",
                    super::token::TOKEN_MANIFEST_FILE
                ),
            ));
        }
        let text = std::fs::read_to_string(&path).map_err(|e| cache_source(&path, "cannot read the manifest", e))?;
        let manifest: Manifest =
            serde_json::from_str(&text).map_err(|e| cache_source(&path, "the manifest cannot be read", e))?;
        if !(OLDEST_READABLE..=FORMAT_VERSION).contains(&manifest.format) {
            return Err(cache_error(
                &path,
                format!(
                    "layout version {} (this build reads versions {OLDEST_READABLE} to {FORMAT_VERSION})",
                    manifest.format
                ),
            ));
        }
        manifest.check().map_err(|reason| cache_error(&path, reason))?;
        Ok(manifest)
    }

    /// What makes the manifest unusable, if anything.
    fn check(&self) -> std::result::Result<(), String> {
        if self.views == 0 {
            return Err("it stores 0 views per sample; a cache holds at least one".to_owned());
        }
        check_coverage(&self.shards, self.num_samples, "samples")?;
        if let Some(e) = self.endpoints.iter().find(|e| e.shape.iter().any(|&d| d < 0)) {
            return Err(format!("the endpoint `{}` has the shape {:?}", e.path, e.shape));
        }
        if let Some(e) = self.endpoints.iter().find(|e| e.encoding.stored_shape(&e.shape).iter().any(|&d| d < 0)) {
            return Err(format!("the endpoint `{}` is stored as {:?}", e.path, e.encoding));
        }
        // Every offset a read computes is within a shard of `num_samples · views` records: one whose
        // size does not fit a `usize` describes no file that can exist, and would overflow them.
        for e in &self.endpoints {
            let stored = e.encoding.stored_shape(&e.shape);
            let total = record_bytes(e.encoding.kind(), &stored)
                .and_then(|record| record.checked_mul(self.views))
                .and_then(|bytes| bytes.checked_mul(self.num_samples));
            if total.is_none() {
                return Err(format!(
                    "the endpoint `{}` is stored as {stored:?} per sample, for {} samples of {} views: more bytes than \
                     this machine can address",
                    e.path, self.num_samples, self.views
                ));
            }
        }
        Ok(())
    }

    /// The manifest's identity, recorded in every shard written for it (layout version 3): a
    /// CRC-32 of its bytes, so that a manifest edited after its shards were written is detected.
    pub(crate) fn identity(&self) -> Result<String> {
        Ok(crc_of_bytes(&[&self.to_bytes()?]))
    }

    /// The manifest's bytes: pretty JSON, fields in declaration order, so equal manifests are equal
    /// files.
    pub(crate) fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| cache_source(Path::new(MANIFEST_FILE), "cannot serialise the manifest", e))?;
        bytes.push(b'\n');
        Ok(bytes)
    }

    /// Writes `dir/manifest.json` if there is none yet ([`publish_new`]: complete or absent, never
    /// replaced): `false` when there was one, left as it is.
    pub(crate) fn publish(&self, dir: &Path) -> Result<bool> {
        publish_new(&dir.join(MANIFEST_FILE), &self.to_bytes()?)
    }
}

/// The bytes of one record of `kind` and `shape`, or `None` for a negative dimension or a size that
/// does not fit a `usize`.
pub(crate) fn record_bytes(kind: tch::Kind, shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(kind.elt_size_in_bytes(), |bytes, &d| bytes.checked_mul(usize::try_from(d).ok()?))
}

/// What is wrong with `shards` as a cover of `0..count` (`items`: "samples", "sequences"): at least
/// one id (no writer writes an empty cache, and a reader of one would have no shard to split between
/// ranks), every id in exactly one shard, no shard empty, no file named twice.
pub(crate) fn check_coverage(shards: &[ShardEntry], count: usize, items: &str) -> std::result::Result<(), String> {
    if count == 0 {
        return Err(format!(
            "it holds 0 {items}; a cache holds at least one (its writer refuses fewer {items} than shards)"
        ));
    }
    if shards.is_empty() {
        return Err(format!("it lists no shard for its {count} {items}"));
    }
    let mut files: Vec<&str> = shards.iter().map(|s| s.file.as_str()).collect();
    files.sort_unstable();
    if let Some(twice) = files.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("two shard entries name the file `{}`", twice[0]));
    }
    let mut sorted: Vec<&ShardEntry> = shards.iter().collect();
    sorted.sort_by_key(|s| (s.start, s.end));
    let mut next = 0;
    for shard in sorted {
        if shard.start >= shard.end {
            return Err(format!(
                "the shard `{}` holds no {} ({}..{})",
                shard.file,
                &items[..items.len() - 1],
                shard.start,
                shard.end
            ));
        }
        if shard.start > next {
            return Err(format!("{items} {next}..{} are in no shard", shard.start.min(count)));
        }
        if shard.start < next {
            return Err(format!(
                "{items} {}..{} are in two shards (one of them `{}`)",
                shard.start,
                next.min(shard.end),
                shard.file
            ));
        }
        next = shard.end;
    }
    if next != count {
        return Err(if next < count {
            format!("{items} {next}..{count} are in no shard")
        } else {
            format!("its shards hold {items} up to {next}, past its {count} {items}")
        });
    }
    Ok(())
}
