//! [`CacheWriter`]: runs the teacher side of a distillation over a dataset and stores its captures.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tch::{Device, Tensor};

use super::augment::Augment;
use super::files::{cache_error, shard_file, ShardLock};
use super::hash::TeacherHash;
use super::manifest::{
    Encoding, EndpointEntry, Manifest, Precision, RunMode, ShardEntry, StoredPort, FORMAT_VERSION, TOP_K_INDEX_KIND,
};
use super::mismatch::first_difference;
use crate::criterion::TopKLogits;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::Engine;
use crate::error::{DistillError, Result};
use crate::side::SideModel;

/// Writes a teacher cache: every teacher endpoint of a distillation (the pairs of a `Mapping`, or
/// of a `distill!` model, through its `engine()`), for every sample and augmentation view, in
/// safetensors shards with a JSON manifest.
///
/// Sample ids are `0..num_samples`; shard `i` of `n` holds ids `i·N/n .. (i+1)·N/n`. A writer
/// writes every shard, or only the one given by [`shard`](Self::shard), so that independent
/// processes can write disjoint shards of one cache. Each shard is written under a temporary name
/// unique to its writer, fsynced and renamed when complete, with a CRC-32 of its tensors and the
/// hash of its manifest in its metadata; a writer holds a lock on the shard while it writes it
/// (`<shard>.lock`, released by the system if the writer dies), so a second writer of the same
/// shard stops with an error instead of disturbing the first.
///
/// A rerun skips complete shards and writes the others, after checking that it would write the
/// same cache: the same teacher hash, inputs, teacher mode, views, encodings, shards and write
/// batch size as the manifest records — otherwise it stops with a
/// [`DistillError::CacheMismatch`] naming what differs, and writes nothing.
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
    /// teacher endpoints of `engine`.
    pub fn write<T: SideModel + ?Sized>(&self, engine: &Engine, teacher: &T, inputs: &Tensor) -> Result<WriteReport> {
        let num_samples = inputs.size().first().copied().unwrap_or(0).max(0) as usize;
        self.write_with(engine, teacher, num_samples, |ids| {
            let ids = Tensor::from_slice(ids).to_device(inputs.device());
            Ok(inputs.f_index_select(0, &ids)?)
        })
    }

    /// As [`write`](Self::write), with the inputs of the sample ids given loaded by `inputs` (a
    /// dataset on disk, a decoder…): `inputs(&[3, 4, 5])` returns the batch `[3, …]`.
    pub fn write_with<T, F>(&self, engine: &Engine, teacher: &T, num_samples: usize, inputs: F) -> Result<WriteReport>
    where
        T: SideModel + ?Sized,
        F: FnMut(&[i64]) -> Result<Tensor>,
    {
        self.write_identified(engine, teacher, num_samples, self.dataset.clone(), inputs)
    }

    fn write_identified<T, F>(
        &self,
        engine: &Engine,
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
            return Err(DistillError::InvalidArgument(format!(
                "a teacher cache stores one teacher's endpoints, and this distillation has {} teachers: write one \
                 cache per teacher, each from a distillation of that teacher alone",
                engine.teacher_count()
            )));
        }
        let endpoints = stored_endpoints(engine.teacher_endpoints())?;
        self.check_encoded_paths(&endpoints)?;
        let mode = RunMode::from_train(engine.mode().train);
        std::fs::create_dir_all(&self.dir).map_err(|e| cache_error(&self.dir, e))?;
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
            if path.exists() && existing.is_some() {
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
                report.manifest.store(&self.dir)?;
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
        let problem = if self.shards == 0 {
            Some("a cache needs at least one shard".to_owned())
        } else if let Some(index) = self.only.filter(|&i| i >= self.shards) {
            Some(format!("shard {index} of {} does not exist (shards count from 0)", self.shards))
        } else if num_samples < self.shards {
            Some(format!("{num_samples} samples cannot fill {} shards", self.shards))
        } else if self.views == 0 || self.batch_size == 0 {
            Some("views and batch size must be at least 1".to_owned())
        } else {
            let mut encodings = std::iter::once(&self.encoding).chain(self.encodings.iter().map(|(_, e)| e));
            encodings.find_map(|encoding| match *encoding {
                Encoding::TopK { k, temperature, .. } => TopKLogits::new(k, temperature).validate().err(),
                _ => None,
            })
        };
        problem.map_or(Ok(()), |p| Err(DistillError::InvalidArgument(p)))
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
                    port: StoredPort::from(e.port()),
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
        let suggestion = crate::suggest::closest(path, paths.clone()).map(|p| format!(" (did you mean `{p}`?)"));
        let list: Vec<String> = paths.map(|p| format!("`{p}`")).collect();
        Err(DistillError::InvalidArgument(format!(
            "`endpoint_encoding` names `{path}`, which is not a teacher endpoint of the distillation{}; its teacher \
             endpoints: {}",
            suggestion.unwrap_or_default(),
            if list.is_empty() { "none".to_owned() } else { list.join(", ") }
        )))
    }

    /// For a complete shard of a cache whose manifest does not identify its inputs: an error when
    /// the inputs the shard was written from are not those `inputs` loads now.
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

    /// The teacher's captures for samples `start..end`, every view, as `[len, views, …]` tensors.
    fn run_shard<T, F>(
        &self,
        engine: &Engine,
        teacher: &T,
        endpoints: &[&ResolvedEndpoint],
        start: usize,
        end: usize,
        inputs: &mut F,
    ) -> Result<ShardData>
    where
        T: SideModel + ?Sized,
        F: FnMut(&[i64]) -> Result<Tensor>,
    {
        let _no_grad = tch::no_grad_guard();
        let resolved: Vec<ResolvedEndpoint> = endpoints.iter().map(|e| (*e).clone()).collect();
        let mut batches: Vec<Vec<Tensor>> = (0..endpoints.len()).map(|_| Vec::new()).collect();
        let mut index_batches: Vec<Vec<Tensor>> = (0..endpoints.len()).map(|_| Vec::new()).collect();
        let mut shapes: Vec<Vec<i64>> = vec![Vec::new(); endpoints.len()];
        let mut params = Vec::new();
        let mut input_shape = Vec::new();
        let mut inputs_crc = InputsCrc::default();
        let mut first = start;
        while first < end {
            let last = (first + self.batch_size).min(end);
            let ids: Vec<i64> = (first as i64..last as i64).collect();
            let xs = inputs(&ids)?;
            inputs_crc.update(&xs)?;
            input_shape = xs.size().get(1..).unwrap_or_default().to_vec();
            let mut views: Vec<Vec<Tensor>> = (0..endpoints.len()).map(|_| Vec::new()).collect();
            let mut view_indices: Vec<Vec<Tensor>> = (0..endpoints.len()).map(|_| Vec::new()).collect();
            let mut view_params = Vec::with_capacity(self.views);
            for view in 0..self.views {
                let drawn = self.augment.draw_batch(self.seed, &ids, view);
                let xv = self.augment.apply(&xs, &drawn)?;
                let (output, captures) = teacher.run(&xv, engine.mode().train, &resolved)?;
                drop(output);
                for (j, (capture, endpoint)) in captures.into_iter().zip(endpoints).enumerate() {
                    let tensor = capture.into_tensor();
                    if !tensor.defined() {
                        return Err(DistillError::InvalidArgument(format!(
                            "the teacher endpoint `{}` gave no tensor to cache",
                            endpoint.path()
                        )));
                    }
                    let tensor = tensor.f_to_device(Device::Cpu)?;
                    shapes[j] = tensor.size().get(1..).unwrap_or_default().to_vec();
                    match self.encoding_of(endpoint.path()) {
                        Encoding::TopK { k, temperature, values } => {
                            let packed = encode_top_k(endpoint.path(), &tensor, TopKLogits::new(k, temperature))?;
                            let log_probabilities = packed.f_select(1, 0)?;
                            if values == Precision::F16 {
                                check_f16_range(endpoint.path(), &log_probabilities)?;
                            }
                            views[j].push(log_probabilities.f_to_kind(values.kind())?);
                            view_indices[j].push(packed.f_select(1, 1)?.f_to_kind(TOP_K_INDEX_KIND)?);
                        }
                        encoding => {
                            if encoding == Encoding::F16 {
                                check_f16_range(endpoint.path(), &tensor)?;
                            }
                            views[j].push(tensor.f_to_kind(encoding.kind())?)
                        }
                    }
                }
                view_params.push(drawn);
            }
            for (stored, per_view) in batches.iter_mut().zip(views) {
                stored.push(Tensor::f_stack(&per_view, 1)?);
            }
            for (stored, per_view) in index_batches.iter_mut().zip(view_indices) {
                if !per_view.is_empty() {
                    stored.push(Tensor::f_stack(&per_view, 1)?);
                }
            }
            params.push(Tensor::f_stack(&view_params, 1)?);
            first = last;
        }
        let captures = batches.iter().map(|b| Ok(Tensor::f_cat(b, 0)?.f_contiguous()?)).collect::<Result<_>>()?;
        let indices = index_batches
            .iter()
            .map(|b| if b.is_empty() { Ok(None) } else { Ok(Some(Tensor::f_cat(b, 0)?.f_contiguous()?)) })
            .collect::<Result<_>>()?;
        Ok(ShardData {
            input_shape,
            shapes,
            captures,
            indices,
            params: Tensor::f_cat(&params, 0)?,
            inputs_crc: inputs_crc.finish(),
        })
    }
}

/// One shard's tensors before they are written.
struct ShardData {
    input_shape: Vec<i64>,
    /// The per-sample shape of each endpoint's capture, as the teacher gave it.
    shapes: Vec<Vec<i64>>,
    /// One `[len, views, …]` tensor per stored endpoint (for top-k logits, `[len, views, k]`
    /// log-probabilities).
    captures: Vec<Tensor>,
    /// For each top-k endpoint, its `[len, views, k]` class indices.
    indices: Vec<Option<Tensor>>,
    /// `[len, views, VIEW_PARAMS]`.
    params: Tensor,
    /// The CRC-32 of the shard's inputs.
    inputs_crc: String,
}

/// The shard metadata key of the CRC-32 of the inputs a shard was written from.
pub(crate) const INPUTS_KEY: &str = "distill.inputs";

/// The shard metadata key of the identity of the manifest a shard was written for.
pub(crate) const MANIFEST_KEY: &str = "distill.manifest";

/// The CRC-32 of a shard's input batches, independent of how they are split into batches: the
/// bytes of the samples in id order, then the per-sample shape.
#[derive(Default)]
struct InputsCrc {
    crc: crc32fast::Hasher,
    sample_shape: Vec<i64>,
}

impl InputsCrc {
    fn update(&mut self, xs: &Tensor) -> Result<()> {
        self.crc.update(&crate::checksum::tensor_bytes(xs)?);
        self.sample_shape = xs.size().get(1..).unwrap_or_default().to_vec();
        Ok(())
    }

    fn finish(mut self) -> String {
        for dim in &self.sample_shape {
            self.crc.update(&dim.to_le_bytes());
        }
        format!("crc32:{:08x}", self.crc.finalize())
    }
}

/// The largest magnitude an f16 stores without rounding to infinity is just below 65520 (65504
/// is the largest finite f16; round-to-nearest sends everything from 65520 up to infinity).
const F16_OVERFLOW: f64 = 65520.0;

/// An error naming the endpoint when a finite value of `values` would become infinite in f16.
fn check_f16_range(path: &str, values: &Tensor) -> Result<()> {
    let finite = values.f_isfinite()?;
    let magnitudes = values.f_abs()?.f_where_scalarother(&finite, 0.0)?;
    let largest = if magnitudes.numel() == 0 { 0.0 } else { magnitudes.f_max()?.f_double_value(&[])? };
    if largest < F16_OVERFLOW {
        return Ok(());
    }
    let shown = if path.is_empty() { "the teacher's own output".to_owned() } else { format!("`{path}`") };
    let signed = values.f_abs()?.f_where_scalarother(&finite, 0.0)?.f_argmax(None, false)?.f_int64_value(&[])?;
    let value = values.f_reshape([-1])?.f_double_value(&[signed])?;
    Err(DistillError::InvalidArgument(format!(
        "the teacher endpoint {shown} gives {value:e}, which f16 storage cannot hold (its largest value is 65504; \
         this would be stored as infinity): store it as f32 or bf16 (`endpoint_encoding(\"{path}\", \
         Encoding::F32)` or `Encoding::Bf16`)"
    )))
}

/// The distinct teacher endpoints (several pairs may read one), in first-use order.
fn stored_endpoints(endpoints: &[ResolvedEndpoint]) -> Result<Vec<&ResolvedEndpoint>> {
    let mut stored: Vec<&ResolvedEndpoint> = Vec::new();
    for endpoint in endpoints {
        if endpoint.all_calls() {
            return Err(DistillError::InvalidArgument(format!(
                "the teacher endpoint `{}` captures all calls, which a teacher cache does not store",
                endpoint.path()
            )));
        }
        if !stored.iter().any(|e| e.path() == endpoint.path() && e.port() == endpoint.port()) {
            stored.push(endpoint);
        }
    }
    Ok(stored)
}

/// Writes the shard atomically, with its checksum, its inputs' CRC-32 and the identity of its
/// manifest in its metadata.
fn write_shard(path: &Path, data: ShardData, manifest: &str) -> Result<()> {
    let mut named: Vec<(String, Tensor)> = vec![("views".to_owned(), data.params)];
    named.extend(data.captures.into_iter().enumerate().map(|(i, t)| (format!("endpoint.{i}"), t)));
    named.extend(
        data.indices.into_iter().enumerate().filter_map(|(i, t)| t.map(|t| (format!("endpoint.{i}.indices"), t))),
    );
    let metadata =
        BTreeMap::from([(INPUTS_KEY.to_owned(), data.inputs_crc), (MANIFEST_KEY.to_owned(), manifest.to_owned())]);
    crate::checksum::write(path, &named, metadata)
}

/// The packed top-k form of the capture of `path`, which must be logits `[N, C]`.
fn encode_top_k(path: &str, logits: &Tensor, top_k: TopKLogits) -> Result<Tensor> {
    let shape = logits.size();
    let shown =
        if path.is_empty() { "the teacher's own output".to_owned() } else { format!("the teacher endpoint `{path}`") };
    if shape.len() != 2 {
        return Err(DistillError::InvalidArgument(format!(
            "{shown} is stored as top-k logits, which needs logits [N, C]; it gave {shape:?}"
        )));
    }
    top_k.f_encode(logits).map_err(|e| DistillError::InvalidArgument(format!("{shown}: {e}")))
}
