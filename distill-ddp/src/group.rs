//! A process group: this process's place among the ranks and the collectives between them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

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
/// within the timeout. Tensors of different sizes on different ranks are the one mistake no
/// collective can report: a rank sent more than its tensor holds aborts (Gloo's transport thread
/// throws where nothing catches it), one sent less keeps the rest of its tensor unchanged.
/// [`DataParallel`](crate::DataParallel) checks that every rank's buffers have the same sizes
/// before its first collective. `ProcessGroup` is `Send` but not `Sync`: one thread issues its
/// collectives.
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
    /// Joins the group described by `config`: connects to (or, on rank 0, starts) the TCPStore,
    /// checks that every rank was started with the same world size, and creates the backend, which
    /// connects every pair of ranks.
    ///
    /// The whole join is bounded by `config.rendezvous_timeout`: whatever holds things up — nothing
    /// listening at the address, a process that holds the port and never answers, a rank that never
    /// arrives, sockets that do not connect — this returns an error once that time has passed. (The
    /// join runs on a helper thread; one that libtorch keeps blocked is left behind and ends with
    /// the process.)
    ///
    /// # Errors
    /// [`DdpError::RendezvousTimeout`] naming what it was waiting for;
    /// [`DdpError::RankMismatch`] when another rank has another world size;
    /// [`DdpError::NoCudaDevice`] for the NCCL backend in a process without this rank's GPU;
    /// [`DdpError::Backend`] for what libtorch reports (e.g. rank 0's port in use).
    pub fn new(config: &DdpConfig) -> Result<Self, DdpError> {
        let started = Instant::now();
        if config.backend == Backend::Nccl && !ffi::has_nccl() {
            return Err(DdpError::NcclNotCompiled);
        }
        if config.backend == Backend::Nccl {
            let Some(device) = config.local_rank else {
                return Err(DdpError::NoLocalRank);
            };
            // Checked before any rendezvous: without its GPU, NCCL would fail only later, inside
            // libtorch, after the other ranks have started waiting.
            let available = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if device >= available {
                return Err(DdpError::NoCudaDevice { device, available });
            }
        }
        if config.gloo_threads == 0 {
            return Err(DdpError::NoGlooThreads);
        }
        let index = GROUPS.fetch_add(1, Ordering::Relaxed);
        let stage = Arc::new(Mutex::new(String::new()));
        let (sender, receiver) = mpsc::channel();
        let (joining, progress) = (config.clone(), Arc::clone(&stage));
        std::thread::Builder::new()
            .name("distill-ddp-join".into())
            .spawn(move || {
                // The receiver is gone when the join timed out; the group is then dropped here.
                let _ = sender.send(join(&joining, index, started, &progress));
            })
            .map_err(|e| DdpError::Backend { op: "rendezvous", message: format!("cannot start a thread: {e}") })?;
        let (group, store) = match receiver.recv_timeout(config.rendezvous_timeout.saturating_sub(started.elapsed())) {
            Ok(joined) => joined?,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(DdpError::RendezvousTimeout {
                    address: format!("{}:{}", config.master_addr, config.master_port),
                    timeout: config.rendezvous_timeout,
                    stage: stage.lock().map(|s| s.clone()).unwrap_or_default(),
                })
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(DdpError::Backend {
                    op: "rendezvous",
                    message: "the joining thread ended without a result".into(),
                })
            }
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
            return Err(DdpError::RankOutOfRange { what: "root rank", rank: root, world_size: self.world_size });
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
                return Err(DdpError::MixedKinds { first: first.kind(), other: other.kind() });
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
            return Err(DdpError::UndefinedTensor);
        }
        if tensor.device() != self.device() {
            return Err(DdpError::WrongDevice { backend: self.backend, expected: self.device(), got: tensor.device() });
        }
        if !tensor.is_contiguous() {
            return Err(DdpError::NotContiguous { shape: tensor.size() });
        }
        Ok(())
    }
}

/// The steps of joining a group, each with its own deadline: whatever time is left of the rendezvous
/// timeout. `stage` says what is being waited for, for the error when the time runs out.
fn join(
    config: &DdpConfig,
    index: usize,
    started: Instant,
    stage: &Mutex<String>,
) -> Result<(ffi::Group, ffi::Store), DdpError> {
    let left = || config.rendezvous_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));
    let enter = |what: String| {
        if let Ok(mut stage) = stage.lock() {
            *stage = what;
        }
    };
    let is_server = config.store_host == StoreHost::Rank0 && config.rank == 0;
    enter(if is_server {
        "starting the rendezvous store".to_owned()
    } else {
        "connecting to the rendezvous store: nothing answered there (is rank 0 running? does a process that \
         never answers hold the port?)"
            .to_owned()
    });
    // The store keeps this timeout for later waits too (NCCL exchanges its ids through it at the
    // first collective), so it gets the whole rendezvous timeout; the deadline of this join is
    // kept by the caller.
    let base = ffi::Store::tcp(
        &config.master_addr,
        config.master_port,
        is_server,
        config.world_size,
        config.rendezvous_timeout,
    )?;
    let store = base.prefixed(&format!("{}group{index}/", config.store_prefix))?;
    enter(format!(
        "waiting for the other ranks at the store ({} were expected; a rank that did not start or cannot reach \
         the address holds up the others)",
        config.world_size
    ));
    check_world_size(&store, config.rank, config.world_size, left)?;
    enter(format!("connecting the {:?} backend's ranks to each other", config.backend));
    let group = match config.backend {
        Backend::Gloo => {
            let devices = match &config.gloo_device {
                GlooDevice::Interfaces(names) => ffi::GlooDevices::Interfaces(names),
                GlooDevice::Hostname(host) => ffi::GlooDevices::Hostname(host),
                GlooDevice::Auto if config.is_loopback() => ffi::GlooDevices::Hostname("127.0.0.1"),
                GlooDevice::Auto => ffi::GlooDevices::Default,
            };
            // Gloo connects its sockets within its group timeout, given here as the time left of the
            // rendezvous; every collective passes its own timeout (`config.timeout`).
            ffi::Group::gloo(&store, config.rank, config.world_size, left(), devices, config.gloo_threads)?
        }
        Backend::Nccl => ffi::Group::nccl(&store, config.rank, config.world_size, config.timeout)?,
    };
    Ok((group, store))
}

/// Every rank publishes the world size it was started with; rank 0 reads everyone's, the others
/// rank 0's, so that a disagreement is named on both sides instead of ending in a timeout. A rank
/// other than 0 reads rank 0's before publishing its own: rank 0, which may host the store, then
/// cannot stop it before that rank has its answer.
fn check_world_size(
    store: &ffi::Store,
    rank: usize,
    world_size: usize,
    left: impl Fn() -> Duration,
) -> Result<(), DdpError> {
    let key = |rank: usize| format!("world_size/{rank}");
    let ours = world_size.to_string();
    let compare = |other: usize, theirs: Vec<u8>| {
        let theirs = String::from_utf8_lossy(&theirs).into_owned();
        if theirs == ours {
            Ok(())
        } else {
            Err(DdpError::RankMismatch(format!(
                "rank {other} was started with a world size of {theirs}, this rank ({rank}) with {world_size}: every \
                 rank must be given the same WORLD_SIZE"
            )))
        }
    };
    if rank == 0 {
        store.set(&key(0), ours.as_bytes())?;
        for other in 1..world_size {
            compare(other, store.get(&key(other), left())?)?;
        }
        Ok(())
    } else {
        let result = compare(0, store.get(&key(0), left())?);
        store.set(&key(rank), ours.as_bytes())?;
        result
    }
}

/// Whether the NCCL backend is compiled in (the `cuda` feature against a libtorch with CUDA).
pub fn nccl_available() -> bool {
    ffi::has_nccl()
}
