//! [`CacheWriter`]: runs the teacher side of a distillation over a dataset and stores its captures.

use std::path::{Path, PathBuf};

use tch::Tensor;

use super::augment::Augment;
use super::files::{cache_error, cache_source, is_whole, refuse_other_kind, shard_file, ShardLock};
use super::hash::TeacherHash;
use super::manifest::{Encoding, EndpointEntry, Manifest, RunMode, ShardEntry, FORMAT_VERSION};
use super::mismatch::first_difference;
use super::token::TOKEN_MANIFEST_FILE;

mod shard;

use crate::cache::CacheError;
use crate::criterion::TopKLogits;
use crate::distillation::Distillation;
use crate::endpoint::ResolvedEndpoint;
use crate::error::{DistillError, Result};
use crate::side::SideModel;
pub(crate) use shard::overflow;
use shard::{stored_endpoints, write_shard, InputsCrc};

/// Writes a teacher cache: every teacher endpoint of a [`Distillation`] (a `distill!` model's or a
/// `DistillModel`'s `distillation()`), for every sample and augmentation view, in safetensors shards
/// with a JSON manifest.
///
/// Sample ids are `0..num_samples`; shard `i` of `n` holds ids `i·N/n .. (i+1)·N/n`. A writer
/// writes every shard, or only the one given by [`shard`](Self::shard), so that independent
/// processes can write disjoint shards of one cache. Each shard is written under a temporary name
/// unique to its writer, fsynced and renamed when complete, with the CRC-32 of its inputs, the hash
/// of its manifest, and a CRC-32 of its tensors and of those two in its metadata; a writer holds a
/// lock on the shard while it writes it (`<shard>.lock`, released by the system if the writer dies),
/// so a second writer of the same shard stops with an error instead of disturbing the first.
///
/// A rerun skips complete shards and writes the others, after checking that it would write the
/// same cache: the same teacher hash, inputs, teacher mode, views, encodings, shards and write
/// batch size as the manifest records — otherwise it stops with a
/// [`DistillError::CacheMismatch`] naming what differs, and writes nothing. A shard damaged after
/// it was written so that its header no longer accounts for its length (truncated, cut short by a
/// copy) is written again; damage inside a whole shard is found by its checksum when it is read
/// (remove that shard and rerun). A skipped shard whose recorded inputs CRC differs from its inputs
/// is checked against its checksum, which covers that record, so that a damaged record is reported
/// as a damaged shard ([`DistillError::Corrupt`]), not as another dataset. A folder that holds a
/// token cache is refused: both kinds name their shards alike.
///
/// The manifest is published once, by the first writer, and never replaced: a writer that finds one
/// published — before it starts, or by a concurrent writer while its teacher ran — writes no shard
/// unless that manifest is its own, and otherwise stops with the same
/// [`DistillError::CacheMismatch`]. On a file system without hard links, the manifest is published
/// by a check for one and a rename: two writers publishing within microseconds of each other can
/// then both proceed, and the shards of the one whose manifest was replaced are refused as written
/// for another manifest when the cache is opened.
#[derive(Clone, Debug)]
pub struct CacheWriter {
    dir: PathBuf,
    teacher_hash: TeacherHash,
    shards: usize,
    only: Option<usize>,
    batch_size: usize,
    views: usize,
    augment: Augment,
    seed: u64,
    encoding: Encoding,
    encodings: Vec<(String, Encoding)>,
    dataset: Option<String>,
}

/// What a cache writer's `write` did: [`CacheWriter::write`] (with the image cache's [`Manifest`])
/// or [`TokenCacheWriter::write`](super::TokenCacheWriter::write) (a
/// [`TokenWriteReport`](super::TokenWriteReport), with a [`TokenManifest`](super::TokenManifest)).
#[derive(Clone, Debug)]
pub struct WriteReport<M = Manifest> {
    /// The shards written by this call.
    pub written: Vec<usize>,
    /// The shards that were complete already and were left as they are.
    pub skipped: Vec<usize>,
    /// The cache's manifest.
    pub manifest: M,
}

impl CacheWriter {
    /// A writer into `dir` (created if missing) for the teacher whose weights hash to
    /// `teacher_hash`: one shard, batches of 128, one view without augmentation, f32 values.
    pub fn new(dir: impl Into<PathBuf>, teacher_hash: TeacherHash) -> Self {
        CacheWriter {
            dir: dir.into(),
            teacher_hash,
            shards: 1,
            only: None,
            batch_size: 128,
            views: 1,
            augment: Augment::None,
            seed: 0,
            encoding: Encoding::F32,
            encodings: Vec::new(),
            dataset: None,
        }
    }

    /// Identifies the dataset the writer reads (e.g. `"cifar10-train@v2"`, a hash of its files),
    /// recorded in the manifest: a rerun with another identity refuses to add to the cache.
    ///
    /// Whether or not it is given, each shard records the CRC-32 of the inputs it was computed from.
    /// Without an identity, a rerun that skips a complete shard loads that shard's inputs again (no
    /// teacher run) and refuses to go on if they differ; with one, it trusts the identity and loads
    /// nothing for complete shards.
    pub fn dataset(mut self, identity: impl Into<String>) -> Self {
        self.dataset = Some(identity.into());
        self
    }

    /// Splits the cache into `count` shards.
    pub fn shards(mut self, count: usize) -> Self {
        self.shards = count;
        self
    }

    /// Writes only shard `index` (from 0) of the [`shards`](Self::shards).
    pub fn shard(mut self, index: usize) -> Self {
        self.only = Some(index);
        self
    }

    /// The teacher's batch size while writing (default 128), recorded in the manifest.
    ///
    /// The stored values can differ in their last bits with the batch size: libtorch picks its
    /// kernels (and so its order of summation) by the shapes it is given, as a live teacher does
    /// for the training batch size. Differences of about 1e-6 relative are expected; a cache is
    /// written at one batch size (a rerun with another refuses to add to it).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Stores `count` views per sample, each with parameters of `augment` drawn from the
    /// [`seed`](Self::seed), the sample id and the view.
    pub fn views(mut self, count: usize, augment: Augment) -> Self {
        self.views = count;
        self.augment = augment;
        self
    }

    /// The seed of the views' parameters (default 0).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// How every endpoint's values are stored unless [`endpoint_encoding`](Self::endpoint_encoding)
    /// says otherwise (default f32).
    pub fn encoding(mut self, encoding: Encoding) -> Self {
        self.encoding = encoding;
        self
    }

    /// How the values of the teacher endpoint at `path` are stored. [`Encoding::TopK`] needs the
    /// endpoint to be logits `[N, C]` (checked when the teacher runs). A `path` that is not a
    /// teacher endpoint of the distillation is an error when writing.
    pub fn endpoint_encoding(mut self, path: impl Into<String>, encoding: Encoding) -> Self {
        self.encodings.push((path.into(), encoding));
        self
    }

    /// Runs `teacher` over `inputs` (`[N, …]`, sample ids `0..N`) and stores the captures of the
    /// teacher endpoints of `distillation`, with its teacher's mode.
    pub fn write<T: SideModel + ?Sized>(
        &self,
        distillation: &Distillation<'_>,
        teacher: &T,
        inputs: &Tensor,
    ) -> Result<WriteReport> {
        let num_samples = inputs.size().first().copied().unwrap_or(0).max(0) as usize;
        self.write_with(distillation, teacher, num_samples, |ids| {
            let ids = Tensor::from_slice(ids).to_device(inputs.device());
            Ok(inputs.f_index_select(0, &ids)?)
        })
    }

    /// As [`write`](Self::write), with the inputs of the sample ids given loaded by `inputs` (a
    /// dataset on disk, a decoder…): `inputs(&[3, 4, 5])` returns the batch `[3, …]`.
    pub fn write_with<T, F>(
        &self,
        distillation: &Distillation<'_>,
        teacher: &T,
        num_samples: usize,
        inputs: F,
    ) -> Result<WriteReport>
    where
        T: SideModel + ?Sized,
        F: FnMut(&[i64]) -> Result<Tensor>,
    {
        self.write_identified(distillation.engine(), teacher, num_samples, self.dataset.clone(), inputs)
    }

    fn write_identified<T, F>(
        &self,
        engine: &crate::engine::Engine,
        teacher: &T,
        num_samples: usize,
        identity: Option<String>,
        mut inputs: F,
    ) -> Result<WriteReport>
    where
        T: SideModel + ?Sized,
        F: FnMut(&[i64]) -> Result<Tensor>,
    {
        self.validate(num_samples)?;
        if engine.teacher_count() > 1 {
            return Err(CacheError::SeveralTeachers { teachers: engine.teacher_count() }.into());
        }
        let endpoints = stored_endpoints(engine.teacher_endpoints())?;
        self.check_encoded_paths(&endpoints)?;
        let mode = RunMode::from_train(engine.mode().train);
        std::fs::create_dir_all(&self.dir).map_err(|e| cache_source(&self.dir, "cannot create the directory", e))?;
        refuse_other_kind(&self.dir, TOKEN_MANIFEST_FILE, "a token cache", "an image teacher cache")?;
        let existing = if self.dir.join(super::manifest::MANIFEST_FILE).exists() {
            Some(Manifest::load(&self.dir)?)
        } else {
            None
        };
        let selected: Vec<usize> = match self.only {
            Some(index) => vec![index],
            None => (0..self.shards).collect(),
        };
        let mut report = WriteReport {
            written: Vec::new(),
            skipped: Vec::new(),
            manifest: self.manifest(num_samples, &[], &endpoints, identity.clone(), mode),
        };
        if let Some(existing) = &existing {
            // Before the teacher runs: everything but what only a run tells (the shapes) must agree.
            let mut ours = report.manifest.clone();
            for (entry, cached) in ours.endpoints.iter_mut().zip(&existing.endpoints) {
                entry.shape.clone_from(&cached.shape);
            }
            ours.input_shape.clone_from(&existing.input_shape);
            self.agree_with(Some(existing), &ours)?;
        }
        let mut manifest_stored = false;
        for shard in selected {
            let (start, end) = self.range(shard, num_samples);
            let path = self.dir.join(shard_file(shard, self.shards));
            let lock = ShardLock::acquire(&path, shard)?;
            // A shard that is there and whole is done; one damaged since it was written (not whole)
            // is written again, under the lock, replacing it atomically.
            if path.exists() && existing.is_some() && is_whole(&path)? {
                if identity.is_none() {
                    self.check_skipped_inputs(&path, shard, start, end, &mut inputs)?;
                }
                report.skipped.push(shard);
                continue;
            }
            lock.remove_stale_temporaries(&path)?;
            let data = self.run_shard(engine, teacher, &endpoints, start, end, &mut inputs)?;
            if !manifest_stored {
                let shapes = data.shapes.clone();
                report.manifest = self.manifest(num_samples, &data.input_shape, &endpoints, identity.clone(), mode);
                for (entry, shape) in report.manifest.endpoints.iter_mut().zip(shapes) {
                    entry.shape = shape;
                }
                self.agree_with(existing.as_ref(), &report.manifest)?;
                if !report.manifest.publish(&self.dir)? {
                    // A manifest is there: the one read above, or one a concurrent writer published
                    // since. Either way it stands, and no shard is written unless it is this one.
                    let published = Manifest::load(&self.dir)?;
                    self.agree_with(Some(&published), &report.manifest)?;
                }
                manifest_stored = true;
            }
            write_shard(&path, data, &report.manifest.identity()?)?;
            report.written.push(shard);
        }
        if !manifest_stored {
            // Every selected shard was complete: the cache's manifest stands, if it agrees with this
            // writer's configuration (shapes aside, which only a teacher run would tell).
            let existing = existing.ok_or_else(|| cache_error(&self.dir, "no manifest"))?;
            let mut ours = report.manifest.clone();
            for (entry, cached) in ours.endpoints.iter_mut().zip(&existing.endpoints) {
                entry.shape.clone_from(&cached.shape);
            }
            ours.input_shape.clone_from(&existing.input_shape);
            self.agree_with(Some(&existing), &ours)?;
            report.manifest = existing;
        }
        Ok(report)
    }

    fn validate(&self, num_samples: usize) -> Result<()> {
        let shards = self.shards;
        let problem = if shards == 0 {
            Some(CacheError::NoShards.into())
        } else if let Some(index) = self.only.filter(|&i| i >= shards) {
            Some(CacheError::ShardOutOfRange { index, shards }.into())
        } else if num_samples < shards {
            Some(CacheError::TooFewToShard { count: num_samples, items: "samples", shards }.into())
        } else if self.views == 0 || self.batch_size == 0 {
            Some(CacheError::ZeroCount { what: "views and batch size" }.into())
        } else {
            let mut encodings = std::iter::once(&self.encoding).chain(self.encodings.iter().map(|(_, e)| e));
            encodings.find_map(|encoding| match *encoding {
                Encoding::TopK { k, temperature, .. } => TopKLogits::new(k, temperature).check().err().map(Into::into),
                _ => None,
            })
        };
        problem.map_or(Ok(()), |problem: DistillError| Err(problem))
    }

    /// Sample ids `start..end` of shard `index`.
    fn range(&self, index: usize, num_samples: usize) -> (usize, usize) {
        (index * num_samples / self.shards, (index + 1) * num_samples / self.shards)
    }

    fn manifest(
        &self,
        num_samples: usize,
        input_shape: &[i64],
        endpoints: &[&ResolvedEndpoint],
        inputs: Option<String>,
        mode: RunMode,
    ) -> Manifest {
        Manifest {
            inputs,
            teacher_mode: Some(mode),
            write_batch_size: Some(self.batch_size),
            format: FORMAT_VERSION,
            teacher_hash: self.teacher_hash.as_str().to_owned(),
            num_samples,
            input_shape: input_shape.to_vec(),
            views: self.views,
            augment: self.augment,
            seed: self.seed,
            endpoints: endpoints
                .iter()
                .map(|e| EndpointEntry {
                    path: e.path().to_owned(),
                    port: e.port(),
                    shape: Vec::new(),
                    encoding: self.encoding_of(e.path()),
                })
                .collect(),
            shards: (0..self.shards)
                .map(|i| {
                    let (start, end) = self.range(i, num_samples);
                    ShardEntry { file: shard_file(i, self.shards), start, end }
                })
                .collect(),
        }
    }

    /// An error for an [`endpoint_encoding`](Self::endpoint_encoding) path that no stored endpoint
    /// has.
    fn check_encoded_paths(&self, endpoints: &[&ResolvedEndpoint]) -> Result<()> {
        let Some((path, _)) = self.encodings.iter().find(|(p, _)| !endpoints.iter().any(|e| e.path() == p)) else {
            return Ok(());
        };
        let paths = endpoints.iter().map(|e| e.path());
        let suggestion = crate::suggest::closest(path, paths.clone()).map(str::to_owned);
        let endpoints = paths.map(str::to_owned).collect();
        Err(CacheError::UnknownEncodedEndpoint { path: path.clone(), suggestion, endpoints }.into())
    }

    /// For a complete shard of a cache whose manifest does not identify its inputs: an error when
    /// the inputs the shard was written from are not those `inputs` loads now — a
    /// [`DistillError::CacheMismatch`], or a [`DistillError::Corrupt`] naming the shard when it fails
    /// its checksum (its recorded CRC of the inputs was damaged, not the dataset changed).
    fn check_skipped_inputs<F>(&self, path: &Path, shard: usize, start: usize, end: usize, inputs: &mut F) -> Result<()>
    where
        F: FnMut(&[i64]) -> Result<Tensor>,
    {
        let recorded = crate::checksum::read_metadata(path)?.remove(INPUTS_KEY);
        let Some(recorded) = recorded else { return Ok(()) }; // a shard of an older layout
        let mut crc = InputsCrc::default();
        let mut first = start;
        while first < end {
            let last = (first + self.batch_size).min(end);
            let ids: Vec<i64> = (first as i64..last as i64).collect();
            crc.update(&inputs(&ids)?)?;
            first = last;
        }
        let now = crc.finish();
        if now == recorded {
            return Ok(());
        }
        // Before the dataset is blamed: a shard whose recorded CRC was damaged fails its checksum,
        // which covers its metadata, and is named as the damaged file.
        crate::checksum::verify(path)?;
        Err(DistillError::CacheMismatch {
            dir: self.dir.display().to_string(),
            what: format!("the inputs of shard {shard} (samples {start}..{end}, CRC-32 of their bytes)"),
            cached: recorded,
            expected: now,
        })
    }

    fn encoding_of(&self, path: &str) -> Encoding {
        self.encodings.iter().rev().find(|(p, _)| p == path).map_or(self.encoding, |(_, e)| *e)
    }

    /// An error naming the first difference between the cache in the directory and this writer's.
    fn agree_with(&self, existing: Option<&Manifest>, ours: &Manifest) -> Result<()> {
        match existing.and_then(|cached| first_difference(cached, ours)) {
            Some((what, cached, expected)) => {
                Err(DistillError::CacheMismatch { dir: self.dir.display().to_string(), what, cached, expected })
            }
            None => Ok(()),
        }
    }
}

/// The shard metadata key of the CRC-32 of the inputs a shard was written from.
pub(crate) const INPUTS_KEY: &str = "distill.inputs";

/// The shard metadata key of the identity of the manifest a shard was written for.
pub(crate) const MANIFEST_KEY: &str = "distill.manifest";
