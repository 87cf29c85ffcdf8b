//! A process group: this process's place among the ranks and the collectives between them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tch::{Device, Tensor};

use crate::config::{Backend, DdpConfig, GlooDevice, StoreHost};
use crate::error::DdpError;
use crate::ffi;

/// Joins the group torchrun launched this process into (see [`DdpConfig::from_env`]), with the
/// default timeouts and Gloo.
///
/// ```no_run
/// let group = distill_ddp::init_from_env()?;
/// group.println_main(format_args!("{} ranks", group.world_size()));
/// # Ok::<(), distill_ddp::DdpError>(())
/// ```
pub fn init_from_env() -> Result<ProcessGroup, DdpError> {
    ProcessGroup::new(&DdpConfig::from_env()?)
}

/// Groups created by this process so far: each gets its own keys in the store, so that every rank
/// must create its groups in the same order (as with PyTorch's `new_group`).
static GROUPS: AtomicUsize = AtomicUsize::new(0);

/// This process's membership in a group of ranks, and the collectives between them.
///
/// Every collective must be called by every rank, in the same order, with tensors of the same
/// shapes and kinds. Each returns an error — never hangs — when a peer died, or did not take part
/// within the timeout. `ProcessGroup` is `Send` but not `Sync`: one thread issues its collectives.
pub struct ProcessGroup {
    // Declared first so that it drops before the store it talks through.
    group: ffi::Group,
    _store: ffi::Store,
    rank: usize,
    world_size: usize,
    local_rank: Option<usize>,
    backend: Backend,
    timeout: Duration,
}

impl std::fmt::Debug for ProcessGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessGroup")
            .field("rank", &self.rank)
            .field("world_size", &self.world_size)
            .field("local_rank", &self.local_rank)
            .field("backend", &self.backend)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ProcessGroup {
    /// Joins the group described by `config`: connects to (or, on rank 0, starts) the TCPStore and
    /// creates the backend, which connects every pair of ranks. Fails when the others do not
    /// arrive within `config.rendezvous_timeout`.
    pub fn new(config: &DdpConfig) -> Result<Self, DdpError> {
        if config.backend == Backend::Nccl && !ffi::has_nccl() {
            return Err(DdpError::InvalidArgument(
                "the NCCL backend is not compiled in: build distill-ddp with its `cuda` feature against a libtorch with CUDA"
                    .into(),
            ));
        }
        if config.backend == Backend::Nccl && config.local_rank.is_none() {
            return Err(DdpError::InvalidArgument(
                "the NCCL backend needs the local rank (LOCAL_RANK) to choose this rank's GPU".into(),
            ));
        }
        if config.gloo_threads == 0 {
            return Err(DdpError::InvalidArgument("Gloo needs at least one worker thread".into()));
        }
        let is_server = config.store_host == StoreHost::Rank0 && config.rank == 0;
        let base = ffi::Store::tcp(
            &config.master_addr,
            config.master_port,
            is_server,
            config.world_size,
            config.rendezvous_timeout,
        )?;
        let index = GROUPS.fetch_add(1, Ordering::Relaxed);
        let store = base.prefixed(&format!("{}group{index}/", config.store_prefix))?;
        let group = match config.backend {
            Backend::Gloo => {
                let devices = match &config.gloo_device {
                    GlooDevice::Interfaces(names) => ffi::GlooDevices::Interfaces(names),
                    GlooDevice::Hostname(host) => ffi::GlooDevices::Hostname(host),
                    GlooDevice::Auto if config.is_loopback() => ffi::GlooDevices::Hostname("127.0.0.1"),
                    GlooDevice::Auto => ffi::GlooDevices::Default,
                };
                ffi::Group::gloo(&store, config.rank, config.world_size, config.timeout, devices, config.gloo_threads)?
            }
            Backend::Nccl => ffi::Group::nccl(&store, config.rank, config.world_size, config.timeout)?,
        };
        Ok(Self {
            group,
            _store: store,
            rank: config.rank,
            world_size: config.world_size,
            local_rank: config.local_rank,
            backend: config.backend,
            timeout: config.timeout,
        })
    }

    /// This process's rank, in `0..world_size()`.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// The number of processes in the group.
    pub fn world_size(&self) -> usize {
        self.world_size
    }

    /// The rank on this machine, when the launcher gave one (`LOCAL_RANK`).
    pub fn local_rank(&self) -> Option<usize> {
        self.local_rank
    }

    /// Whether this is rank 0, the one that logs and writes checkpoints.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// The backend of the group.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The device this rank's tensors live on: the CPU for Gloo, the `LOCAL_RANK`-th GPU for NCCL.
    pub fn device(&self) -> Device {
        match self.backend {
            Backend::Gloo => Device::Cpu,
            Backend::Nccl => Device::Cuda(self.local_rank.unwrap_or(0)),
        }
    }

    /// How long a collective waits for the other ranks before failing.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the collective timeout for the following calls.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Overwrites `tensor` on every rank with its value on rank `root`.
    pub fn broadcast(&self, tensor: &Tensor, root: usize) -> Result<(), DdpError> {
        if root >= self.world_size {
            return Err(DdpError::InvalidArgument(format!(
                "root rank {root} is out of range for a world of {}",
                self.world_size
            )));
        }
        self.check_tensor(tensor)?;
        self.group.broadcast(tensor, root, self.timeout)
    }

    /// Sums each tensor across ranks, in place. Several tensors (all of one kind) go in one
    /// coalesced call; for many small tensors, flatten them into one first (as
    /// [`DataParallel`](crate::DataParallel) does).
    pub fn all_reduce_sum(&self, tensors: &[&Tensor]) -> Result<(), DdpError> {
        for tensor in tensors {
            self.check_tensor(tensor)?;
        }
        if let Some(first) = tensors.first() {
            if let Some(other) = tensors.iter().find(|t| t.kind() != first.kind()) {
                return Err(DdpError::InvalidArgument(format!(
                    "a coalesced all-reduce takes tensors of one kind, got {:?} and {:?}",
                    first.kind(),
                    other.kind()
                )));
            }
        }
        self.group.all_reduce_sum(tensors, self.timeout)
    }

    /// Returns once every rank has called it.
    pub fn barrier(&self) -> Result<(), DdpError> {
        self.group.barrier(self.timeout)
    }

    fn check_tensor(&self, tensor: &Tensor) -> Result<(), DdpError> {
        if !tensor.defined() {
            return Err(DdpError::InvalidArgument("a collective got an undefined tensor".into()));
        }
        if tensor.device() != self.device() {
            return Err(DdpError::InvalidArgument(format!(
                "the {:?} group takes tensors on {:?}, got one on {:?}",
                self.backend,
                self.device(),
                tensor.device()
            )));
        }
        if !tensor.is_contiguous() {
            return Err(DdpError::InvalidArgument(format!(
                "a collective takes contiguous tensors; call `.contiguous()` on the {:?} tensor first",
                tensor.size()
            )));
        }
        Ok(())
    }
}

/// Whether the NCCL backend is compiled in (the `cuda` feature against a libtorch with CUDA).
pub fn nccl_available() -> bool {
    ffi::has_nccl()
}
