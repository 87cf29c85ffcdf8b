//! [`CachedBatch`]: the teacher's stored captures for one training batch.

use std::path::PathBuf;
use std::sync::Arc;

use tch::Tensor;

use super::manifest::{Encoding, Manifest};
use super::TeacherBatch;
use crate::cache::CacheError;
use crate::criterion::TeacherEncoding;
use crate::endpoint::{Endpoint, ResolvedEndpoint, Target};
use crate::error::{DistillError, Result};
use crate::point::{Port, Side};
use crate::side::{SideModel, SideResolver};
use crate::Captured;

/// The stored teacher captures of one batch of samples at one augmentation view, from
/// [`TeacherCache::batch`](super::TeacherCache::batch) or a [`Prefetch`](super::Prefetch).
///
/// As a side of a distillation it stands for the teacher: its forward returns the stored tensors
/// (as f32) for the endpoints asked for, and the stored teacher output if the cache has one (an
/// undefined tensor otherwise). Logits stored as top-k ([`Encoding::TopK`]) are returned as the
/// packed `[B, 2, k]` tensor of [`TopKLogits`](crate::criterion::TopKLogits): log-probabilities,
/// then class indices as floats.
#[derive(Debug)]
pub struct CachedBatch {
    dir: PathBuf,
    manifest: Arc<Manifest>,
    ids: Tensor,
    view: usize,
    tensors: Vec<Tensor>,
    params: Tensor,
}

impl CachedBatch {
    pub(crate) fn new(
        dir: PathBuf,
        manifest: Arc<Manifest>,
        ids: Tensor,
        view: usize,
        tensors: Vec<Tensor>,
        params: Tensor,
    ) -> Self {
        CachedBatch { dir, manifest, ids, view, tensors, params }
    }

    /// The sample ids, in batch order.
    pub fn ids(&self) -> &Tensor {
        &self.ids
    }

    /// The augmentation view read.
    pub fn view(&self) -> usize {
        self.view
    }

    /// Each sample's view parameters, `[B, VIEW_PARAMS]`.
    pub fn view_params(&self) -> &Tensor {
        &self.params
    }

    /// The stored capture of the teacher endpoint at `path` (its output), as f32 (top-k logits as
    /// the packed `[B, 2, k]` tensor), if stored.
    pub fn endpoint(&self, path: &str) -> Option<&Tensor> {
        self.manifest.endpoint(path, Port::Output).map(|(index, _)| &self.tensors[index])
    }

    /// The stored capture of the input of the teacher module at `path` (`""`: the input the teacher
    /// was given, i.e. the view), as f32, if stored.
    pub fn endpoint_input(&self, path: &str) -> Option<&Tensor> {
        self.manifest.endpoint(path, Port::Input).map(|(index, _)| &self.tensors[index])
    }

    /// `xs` (the batch's raw inputs, the samples in the order of [`ids`](Self::ids)) with each
    /// sample's stored view applied: what the teacher saw when the cache was written.
    ///
    /// # Errors
    /// [`DistillError::CacheMismatch`] when `xs` is not a batch of this batch's size with the
    /// cache's input shape.
    pub fn replay(&self, xs: &Tensor) -> Result<Tensor> {
        let expected = [vec![self.ids.size()[0]], self.manifest.input_shape.clone()].concat();
        if xs.size() != expected {
            return Err(DistillError::CacheMismatch {
                dir: self.dir.display().to_string(),
                what: "the input batch's shape (the batch's samples, then each sample's input shape)".to_owned(),
                cached: format!("{expected:?}"),
                expected: format!("{:?}", xs.size()),
            });
        }
        let params = self.params.f_to_device(xs.device())?;
        self.manifest.augment.apply(xs, &params)
    }
}

impl SideModel for CachedBatch {
    fn resolver(&self, side: Side) -> SideResolver<'_> {
        SideResolver::own(self, move |endpoint| resolve_stored(&self.manifest, &self.dir, side, endpoint))
    }

    fn run(&self, _xs: &Tensor, _train: bool, endpoints: &[ResolvedEndpoint]) -> Result<(Tensor, Vec<Captured>)> {
        let captures = endpoints
            .iter()
            .map(|endpoint| match self.manifest.endpoint(endpoint.path(), endpoint.port()) {
                Some((index, _)) => Ok(Captured::one(self.tensors[index].shallow_clone())),
                None => Err(missing_endpoint(&self.dir, &self.manifest, endpoint.path(), endpoint.port())),
            })
            .collect::<Result<Vec<_>>>()?;
        let output = match self.manifest.endpoint("", Port::Output) {
            Some((index, _)) => self.tensors[index].shallow_clone(),
            None => Tensor::new(),
        };
        Ok((output, captures))
    }

    fn check_encoding(&self, label: &str, endpoint: &ResolvedEndpoint, reads: TeacherEncoding) -> Result<()> {
        check_stored_encoding(&self.dir, &self.manifest, label, endpoint, reads)
    }
}

impl TeacherBatch for CachedBatch {
    /// `xs` with each sample's stored view applied ([`replay`](CachedBatch::replay)).
    fn student_input(&self, xs: &Tensor) -> Result<Tensor> {
        self.replay(xs)
    }
}

/// Checks that the criterion of the pair `label`, which reads its teacher tensor as `reads`, can
/// read the teacher endpoint `endpoint` as the image cache in `dir` stores it (see
/// [`SideModel::check_encoding`]): top-k logits stored at temperature `T` need a criterion reading
/// top-k logits at `T`, and a criterion reading an encoded form needs that form stored at its
/// temperature.
pub(crate) fn check_stored_encoding(
    dir: &std::path::Path,
    manifest: &Manifest,
    label: &str,
    endpoint: &ResolvedEndpoint,
    reads: TeacherEncoding,
) -> Result<()> {
    // An endpoint the cache does not store is reported, with the stored ones, when the batch runs.
    let Some((_, entry)) = manifest.endpoint(endpoint.path(), endpoint.port()) else { return Ok(()) };
    let (stored, cached) = match entry.encoding {
        Encoding::TopK { k, temperature, .. } => {
            (TeacherEncoding::TopKLogits { temperature }, format!("top {k} logits at temperature {temperature}"))
        }
        _ => (TeacherEncoding::Plain, "the teacher's tensor as it is".to_owned()),
    };
    if stored == reads {
        return Ok(());
    }
    let path = if endpoint.path().is_empty() {
        "the teacher's own output".to_owned()
    } else {
        format!("`{}`", endpoint.path())
    };
    Err(DistillError::CacheMismatch {
        dir: dir.display().to_string(),
        what: format!("the encoding of the teacher endpoint {path} read by the pair `{label}`"),
        cached,
        expected: format!("the criterion reads {reads}"),
    })
}

/// A path endpoint that the cache stores; other endpoints name modules a cache does not have.
pub(crate) fn resolve_stored(
    manifest: &Manifest,
    dir: &std::path::Path,
    side: Side,
    endpoint: &Endpoint<'_>,
) -> Result<ResolvedEndpoint> {
    let Target::Path(path) = &endpoint.target else {
        return Err(CacheError::NoModules.into());
    };
    if endpoint.all_calls {
        return Err(CacheError::CachedAllCalls { path: path.to_string() }.into());
    }
    let Some((index, _)) = manifest.endpoint(path, endpoint.port) else {
        return Err(missing_endpoint(dir, manifest, path, endpoint.port));
    };
    Ok(ResolvedEndpoint {
        side,
        path: path.to_string(),
        tap: None,
        container: None,
        output: Some(index),
        port: endpoint.port,
        all_calls: false,
    })
}

/// The error for a teacher endpoint that the cache did not store.
pub(crate) fn missing_endpoint(dir: &std::path::Path, manifest: &Manifest, path: &str, port: Port) -> DistillError {
    let shown = if path.is_empty() { "the teacher's own output".to_owned() } else { format!("`{path}`") };
    let same_port = manifest.endpoints.iter().filter(|e| e.port == port).map(|e| e.path.as_str());
    let suggestion =
        crate::suggest::closest(path, same_port).map(|p| format!("did you mean `{p}`? ")).unwrap_or_default();
    DistillError::CacheMismatch {
        dir: dir.display().to_string(),
        what: format!("the teacher endpoint {shown} ({port})"),
        cached: format!("not stored ({suggestion}stored: {})", super::mismatch::endpoint_list(&manifest.endpoints)),
        expected: "read by a pair".to_owned(),
    }
}
