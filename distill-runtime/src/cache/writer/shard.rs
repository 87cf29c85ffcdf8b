//! One shard of a teacher cache: running the teacher over its samples and views
//! ([`CacheWriter::run_shard`]), encoding what it captured, and writing the file.

use std::collections::BTreeMap;
use std::path::Path;

use tch::{Device, Tensor};

use super::{CacheWriter, INPUTS_KEY, MANIFEST_KEY};
use crate::cache::manifest::{Encoding, Precision, TOP_K_INDEX_KIND};
use crate::cache::CacheError;
use crate::criterion::TopKLogits;
use crate::endpoint::ResolvedEndpoint;
use crate::engine::Engine;
use crate::error::Result;
use crate::side::SideModel;

impl CacheWriter {
    /// The teacher's captures for samples `start..end`, every view, as `[len, views, …]` tensors.
    pub(super) fn run_shard<T, F>(
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
                        return Err(CacheError::NoTensor { path: endpoint.path().to_owned() }.into());
                    }
                    let tensor = tensor.f_to_device(Device::Cpu)?;
                    shapes[j] = tensor.size().get(1..).unwrap_or_default().to_vec();
                    match self.encoding_of(endpoint.path()) {
                        Encoding::TopK { k, temperature, values } => {
                            let packed = encode_top_k(endpoint.path(), &tensor, TopKLogits::new(k, temperature))?;
                            let log_probabilities = packed.f_select(1, 0)?;
                            check_range(endpoint.path(), &log_probabilities, values)?;
                            views[j].push(log_probabilities.f_to_kind(values.kind())?);
                            view_indices[j].push(packed.f_select(1, 1)?.f_to_kind(TOP_K_INDEX_KIND)?);
                        }
                        encoding => {
                            check_range(endpoint.path(), &tensor, encoding.precision())?;
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
pub(super) struct ShardData {
    pub(super) input_shape: Vec<i64>,
    /// The per-sample shape of each endpoint's capture, as the teacher gave it.
    pub(super) shapes: Vec<Vec<i64>>,
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

/// The CRC-32 of a shard's input batches, independent of how they are split into batches: the
/// bytes of the samples in id order, then the per-sample shape.
#[derive(Default)]
pub(super) struct InputsCrc {
    crc: crc32fast::Hasher,
    sample_shape: Vec<i64>,
}

impl InputsCrc {
    pub(super) fn update(&mut self, xs: &Tensor) -> Result<()> {
        self.crc.update(&crate::checksum::tensor_bytes(xs)?);
        self.sample_shape = xs.size().get(1..).unwrap_or_default().to_vec();
        Ok(())
    }

    pub(super) fn finish(mut self) -> String {
        for dim in &self.sample_shape {
            self.crc.update(&dim.to_le_bytes());
        }
        format!("crc32:{:08x}", self.crc.finalize())
    }
}

/// An error naming the endpoint when a finite value of `values` would become infinite in
/// `precision`.
pub(super) fn check_range(path: &str, values: &Tensor, precision: Precision) -> Result<()> {
    let Some(value) = overflow(values, precision)? else { return Ok(()) };
    Err(match precision {
        Precision::Bf16 => CacheError::endpoint_overflows_bf16(path, value),
        _ => CacheError::ValueOverflowsF16 { path: path.to_owned(), value },
    }
    .into())
}

/// The finite value of `values` with the largest magnitude, with its sign, when `precision` would
/// store it as infinity ([`Precision::overflow`]); `None` when every finite value fits (infinities
/// and NaN are stored as they are).
pub(crate) fn overflow(values: &Tensor, precision: Precision) -> Result<Option<f64>> {
    let Some(limit) = precision.overflow() else { return Ok(None) };
    if values.numel() == 0 {
        return Ok(None);
    }
    // In f64: an f32 maximum of 3.4·10³⁸ compares with the bf16 limit exactly.
    let magnitudes = values.f_abs()?.f_where_scalarother(&values.f_isfinite()?, 0.0)?;
    if magnitudes.f_max()?.f_double_value(&[])? < limit {
        return Ok(None);
    }
    let at = magnitudes.f_argmax(None, false)?.f_int64_value(&[])?;
    Ok(Some(values.f_reshape([-1])?.f_double_value(&[at])?))
}

/// The distinct teacher endpoints (several pairs may read one), in first-use order.
pub(super) fn stored_endpoints(endpoints: &[ResolvedEndpoint]) -> Result<Vec<&ResolvedEndpoint>> {
    let mut stored: Vec<&ResolvedEndpoint> = Vec::new();
    for endpoint in endpoints {
        if endpoint.all_calls() {
            return Err(CacheError::AllCalls { path: endpoint.path().to_owned() }.into());
        }
        if !stored.iter().any(|e| e.path() == endpoint.path() && e.port() == endpoint.port()) {
            stored.push(endpoint);
        }
    }
    Ok(stored)
}

/// Writes the shard atomically, with its checksum, its inputs' CRC-32 and the identity of its
/// manifest in its metadata.
pub(super) fn write_shard(path: &Path, data: ShardData, manifest: &str) -> Result<()> {
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
pub(super) fn encode_top_k(path: &str, logits: &Tensor, top_k: TopKLogits) -> Result<Tensor> {
    let shape = logits.size();
    if shape.len() != 2 {
        return Err(CacheError::TopKNeedsLogits { path: path.to_owned(), shape }.into());
    }
    top_k.f_encode(logits).map_err(|e| CacheError::Encode { path: path.to_owned(), source: Box::new(e) }.into())
}
