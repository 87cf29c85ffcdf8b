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
    /// An argument cannot be used.
    #[error("{0}")]
    InvalidArgument(String),
    /// A tensor operation failed in libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}
