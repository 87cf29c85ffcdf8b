//! Data-parallel training over a [`ProcessGroup`]: the same model on every rank, parameters from
//! rank 0 at the start, gradients averaged after each backward pass.

use tch::nn::{Optimizer, VarStore};
use tch::Tensor;

use crate::bucket::{plan, Bucket};
use crate::error::DdpError;
use crate::ffi;
use crate::group::ProcessGroup;

/// The default bucket size for gradient averaging: 25 MiB, as in PyTorch's DDP.
pub const DEFAULT_BUCKET_BYTES: usize = 25 << 20;

/// Keeps the variables of one or more `VarStore`s (a student and its adapters, say) identical
/// across the ranks of a group.
///
/// - Parameters are the variables that require a gradient; buffers (batch-norm running
///   statistics, frozen weights) are the others. Both are ordered by store, then by name.
/// - [`broadcast_parameters`](Self::broadcast_parameters) copies rank 0's parameters and buffers to
///   every rank (call it once, after building the model and its adapters);
///   [`average_gradients`](Self::average_gradients) replaces each gradient with its mean over the
///   ranks, in buckets: gradients are flattened into buffers of about `bucket_bytes`, one
///   all-reduce per buffer. A parameter without a gradient on a rank counts as zero there, and gets
///   the averaged gradient, so every rank's optimizer updates the same parameters; a parameter no
///   rank has a gradient for keeps none, so that the optimizer skips it (its weight decay and
///   momentum do not move it) as it would in one process. A sparse gradient (an embedding with
///   `sparse: true`) is averaged as a dense one and replaced by the dense mean.
/// - With losses that average over the batch, N ranks × batch b then take the same steps as one
///   process × batch N·b. Batch-norm statistics are the exception: each rank normalises with its
///   own batch and keeps its own running statistics; [`sync_buffers`](Self::sync_buffers) copies
///   rank 0's (what PyTorch's DDP does before every forward) — call it before evaluating or saving.
///
/// Building one checks that every rank has the same variables (names, shapes, kinds) and the same
/// bucket size, and fails on every rank when they differ, since averaging mismatched gradients
/// would be silently wrong (and buffers of different sizes are garbled or abort the process inside
/// Gloo); and that no parameter is empty, as a fitted adapter is before the distillation's `dry_run`
/// sizes it (build the distillation, run its `dry_run`, then build this).
pub struct DataParallel<'g> {
    group: &'g ProcessGroup,
    names: Vec<String>,
    params: Vec<Tensor>,
    buffers: Vec<Tensor>,
    grad_buckets: Vec<Bucket>,
    bucket_bytes: usize,
}

impl std::fmt::Debug for DataParallel<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("parameters", &self.params.len())
            .field("buffers", &self.buffers.len())
            .field("buckets", &self.grad_buckets.len())
            .field("bucket_bytes", &self.bucket_bytes)
            .finish_non_exhaustive()
    }
}

impl<'g> DataParallel<'g> {
    /// Collects the variables of `stores` (in that order) with [`DEFAULT_BUCKET_BYTES`] buckets,
    /// and checks that every rank has the same ones. A collective: every rank calls it.
    pub fn new(group: &'g ProcessGroup, stores: &[&VarStore]) -> Result<Self, DdpError> {
        Self::with_bucket_bytes(group, stores, DEFAULT_BUCKET_BYTES)
    }

    /// [`new`](Self::new) with gradient buckets of about `bucket_bytes` each (the same on every rank).
    pub fn with_bucket_bytes(
        group: &'g ProcessGroup,
        stores: &[&VarStore],
        bucket_bytes: usize,
    ) -> Result<Self, DdpError> {
        if bucket_bytes == 0 {
            return Err(DdpError::EmptyBucket);
        }
        let mut names = Vec::new();
        let mut params = Vec::new();
        let mut buffer_names = Vec::new();
        let mut buffers = Vec::new();
        for (i, vs) in stores.iter().enumerate() {
            let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
            variables.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, tensor) in variables {
                if tensor.device() != group.device() {
                    return Err(DdpError::VariableDevice { name, device: tensor.device(), group: group.device() });
                }
                let (list, tensors) =
                    if tensor.requires_grad() { (&mut names, &mut params) } else { (&mut buffer_names, &mut buffers) };
                list.push(format!("{i}/{name}"));
                tensors.push(tensor);
            }
        }
        check_same_everywhere(group, &names, &params, &buffer_names, &buffers, bucket_bytes)?;
        // After the collective check, so that every rank (having the same variables) fails alike.
        if let Some(name) = names.iter().zip(&params).find_map(|(name, param)| (param.numel() == 0).then_some(name)) {
            return Err(DdpError::EmptyParameter { name: name.clone() });
        }
        let grad_buckets = plan(&params, bucket_bytes, true)?;
        Ok(Self { group, names, params, buffers, grad_buckets, bucket_bytes })
    }

    /// The process group.
    pub fn group(&self) -> &'g ProcessGroup {
        self.group
    }

    /// The names of the averaged parameters, `<store index>/<variable name>`, in bucket order.
    pub fn parameter_names(&self) -> &[String] {
        &self.names
    }

    /// How many all-reduces one [`average_gradients`](Self::average_gradients) makes.
    pub fn bucket_count(&self) -> usize {
        self.grad_buckets.len()
    }

    /// The bucket size this was built with.
    pub fn bucket_bytes(&self) -> usize {
        self.bucket_bytes
    }

    /// Copies rank 0's parameters and buffers to every rank. A collective.
    pub fn broadcast_parameters(&self) -> Result<(), DdpError> {
        broadcast_all(self.group, &self.params, self.bucket_bytes)?;
        self.sync_buffers()
    }

    /// Copies rank 0's buffers (batch-norm running statistics, frozen variables) to every rank.
    /// A collective.
    pub fn sync_buffers(&self) -> Result<(), DdpError> {
        broadcast_all(self.group, &self.buffers, self.bucket_bytes)
    }

    /// Replaces every parameter's gradient with its mean over the ranks: a missing gradient counts
    /// as zero and is created, unless no rank has one (the parameter then keeps none); a sparse
    /// gradient is replaced by its dense mean. Call it after `backward`, before the optimizer step.
    /// A collective.
    pub fn average_gradients(&self) -> Result<(), DdpError> {
        let world = self.group.world_size() as f64;
        tch::no_grad(|| {
            for bucket in &self.grad_buckets {
                bucket.gather(|i| {
                    let grad = self.params[i].grad();
                    match (grad.defined(), grad.is_sparse()) {
                        (false, _) => Ok(None),
                        (true, false) => Ok(Some(grad)),
                        (true, true) => Ok(Some(grad.f_to_dense(None, false)?)),
                    }
                })?;
                self.group.all_reduce_sum(&[&bucket.flat])?;
                if world > 1.0 {
                    let _ = bucket.values()?.f_div_scalar_(world)?;
                }
                // Read (a device-to-host copy) only when this rank lacks a gradient: a rank that has
                // one knows that some rank had it.
                let lacking = bucket.slots.iter().any(|slot| !self.params[slot.index].grad().defined());
                let had_any = if lacking { bucket.flags()? } else { None };
                for (k, slot) in bucket.slots.iter().enumerate() {
                    let param = &self.params[slot.index];
                    let mean = bucket.view(slot, param)?;
                    let mut grad = param.grad();
                    let no_rank_had_one = had_any.as_ref().and_then(|flags| flags.get(k)) == Some(&false);
                    if grad.defined() && !grad.is_sparse() {
                        grad.f_copy_(&mean)?;
                    } else if !no_rank_had_one {
                        // A tensor of its own: the bucket's buffer is overwritten at the next call.
                        let mut own = mean.f_empty_like()?;
                        own.f_copy_(&mean)?;
                        ffi::set_grad(param, &own)?;
                    }
                }
            }
            Ok(())
        })
    }

    /// One data-parallel optimizer step: zeroes the gradients, runs `loss.backward()`, averages
    /// the gradients over the ranks and steps `opt`.
    pub fn backward_step(&self, opt: &mut Optimizer, loss: &Tensor) -> Result<(), DdpError> {
        opt.zero_grad();
        loss.f_backward()?;
        self.average_gradients()?;
        opt.step();
        Ok(())
    }
}

/// Broadcasts `tensors` from rank 0, bucketed, copying the result back into each.
fn broadcast_all(group: &ProcessGroup, tensors: &[Tensor], bucket_bytes: usize) -> Result<(), DdpError> {
    if group.world_size() == 1 {
        return Ok(());
    }
    tch::no_grad(|| {
        for bucket in plan(tensors, bucket_bytes, false)? {
            bucket.gather(|i| Ok(Some(tensors[i].shallow_clone())))?;
            group.broadcast(&bucket.flat, 0)?;
            for slot in &bucket.slots {
                let target = &tensors[slot.index];
                target.shallow_clone().f_copy_(&bucket.view(slot, target)?)?;
            }
        }
        Ok(())
    })
}

/// Fails on every rank unless all ranks have the same parameter and buffer lists and bucket size
/// (which decides the sizes of the buffers the collectives exchange).
fn check_same_everywhere(
    group: &ProcessGroup,
    names: &[String],
    params: &[Tensor],
    buffer_names: &[String],
    buffers: &[Tensor],
    bucket_bytes: usize,
) -> Result<(), DdpError> {
    let mut hash = Fnv::default();
    hash.write(&(bucket_bytes as u64).to_le_bytes());
    for (list, tensors) in [(names, params), (buffer_names, buffers)] {
        hash.write(&list.len().to_le_bytes());
        for (name, tensor) in list.iter().zip(tensors) {
            hash.write(name.as_bytes());
            hash.write(&[0]);
            for d in tensor.size() {
                hash.write(&d.to_le_bytes());
            }
            hash.write(format!("{:?}", tensor.kind()).as_bytes());
        }
    }
    let local = hash.0 as i64;
    let shared = Tensor::from_slice(&[local]).to_device(group.device());
    group.broadcast(&shared, 0)?;
    let differs = Tensor::from_slice(&[i64::from(shared.int64_value(&[0]) != local)]).to_device(group.device());
    group.all_reduce_sum(&[&differs])?;
    match differs.int64_value(&[0]) {
        0 => Ok(()),
        n => Err(DdpError::RankMismatch(format!(
            "{n} rank(s) have other parameters or buffers (names, shapes or kinds) or another bucket size than rank \
             0; this rank has {} parameters and {} buffers, in buckets of {bucket_bytes} bytes",
            params.len(),
            buffers.len()
        ))),
    }
}

/// FNV-1a: a stable 64-bit hash, the same in every process (unlike std's randomly keyed one).
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
}
