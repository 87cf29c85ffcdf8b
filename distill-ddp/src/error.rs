//! The error type of data-parallel training.

/// What can go wrong when setting up or running data-parallel training.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DdpError {
    /// A variable the launcher (torchrun) sets is missing.
    #[error("the environment variable `{var}` is not set; launch with torchrun (e.g. `torchrun --no-python --nproc-per-node 2 PROGRAM`) or set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT")]
    MissingEnv {
        /// The variable's name.
        var: &'static str,
    },
    /// A launcher variable holds a value that cannot be used.
    #[error("the environment variable `{var}` is `{value}`: {reason}")]
    InvalidEnv {
        /// The variable's name.
        var: &'static str,
        /// Its value.
        value: String,
        /// Why it cannot be used.
        reason: String,
    },
    /// libtorch's c10d reported an error (a C++ exception): a peer that died or timed out, a
    /// rendezvous that failed, a tensor a collective cannot take.
    #[error("{op} failed: {message}")]
    Backend {
        /// The operation (`TCPStore`, `ProcessGroupGloo`, `all_reduce`, `broadcast`, `barrier`…).
        op: &'static str,
        /// libtorch's message.
        message: String,
    },
    /// The ranks disagree on something they must share (the parameters to average, a checkpoint
    /// that only rank 0 could write).
    #[error("the ranks disagree: {0}")]
    RankMismatch(String),
    /// The NCCL backend needs a CUDA device for this rank (its local rank's), and this process has
    /// none, or fewer: no GPU, no driver, or `CUDA_VISIBLE_DEVICES` hides it.
    #[error(
        "no CUDA device is available for this rank: it needs cuda:{device}, and this process sees {available} CUDA \
         device(s) (check `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use the Gloo backend on the CPU)"
    )]
    NoCudaDevice {
        /// The device index the rank needs (its local rank).
        device: usize,
        /// How many CUDA devices this process sees.
        available: usize,
    },
    /// Joining the group did not finish within the rendezvous timeout: the store did not answer
    /// (nothing listens at the address, or a process that never answers holds the port), or not
    /// every rank arrived.
    #[error("joining the group at {address} did not finish within the rendezvous timeout of {timeout:?}: {stage}")]
    RendezvousTimeout {
        /// `MASTER_ADDR:MASTER_PORT`.
        address: String,
        /// The configured rendezvous timeout.
        timeout: std::time::Duration,
        /// What it was waiting for when the time ran out.
        stage: String,
    },
    /// An argument cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A tensor operation failed in libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
