//! The error type of data-parallel training.

/// What can go wrong when setting up or running data-parallel training. Its `Debug` reads as its
/// message, so that `fn main() -> Result<…>` prints a sentence (the launch hint of a missing
/// torchrun variable, say), not the variant's fields.
#[derive(thiserror::Error)]
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
    /// Memory ran out in libtorch's c10d or in the shim around it: a C++ allocation failed. The
    /// operation did not happen; freeing memory (a smaller batch or bucket) and retrying may work.
    #[error("{op} ran out of memory{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    OutOfMemory {
        /// The operation (`TCPStore`, `all_reduce`…).
        op: &'static str,
        /// libtorch's message when there was memory to copy it (it names the size asked for).
        message: Option<String>,
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
    /// A world of no rank.
    #[error("the world size must be at least 1")]
    EmptyWorld,
    /// A rank (or a collective's root rank) not below the world size.
    #[error("{what} {rank} is out of range for a world of {world_size}")]
    RankOutOfRange {
        /// `"rank"` or `"root rank"`.
        what: &'static str,
        /// The rank given.
        rank: usize,
        /// The number of ranks.
        world_size: usize,
    },
    /// An empty rendezvous address.
    #[error("the rendezvous address is empty")]
    EmptyAddress,
    /// A string handed to libtorch that holds a NUL byte.
    #[error("{what} `{value}` contains a NUL byte")]
    NulByte {
        /// What the string is (`"MASTER_ADDR"`).
        what: &'static str,
        /// The string.
        value: String,
    },
    /// A number too large for libtorch's C `int`.
    #[error("{what} {value} is too large")]
    TooLarge {
        /// What the number is.
        what: &'static str,
        /// The number.
        value: usize,
    },
    /// The NCCL backend asked for, and the shim was built without it.
    #[error(
        "the NCCL backend is not compiled in: build distill-ddp with its `cuda` feature against a libtorch with CUDA"
    )]
    NcclNotCompiled,
    /// The NCCL backend without the local rank that chooses the GPU.
    #[error("the NCCL backend needs the local rank (LOCAL_RANK) to choose this rank's GPU")]
    NoLocalRank,
    /// Gloo asked for with no worker thread.
    #[error("Gloo needs at least one worker thread")]
    NoGlooThreads,
    /// A collective given an undefined tensor.
    #[error("a collective got an undefined tensor")]
    UndefinedTensor,
    /// A collective given a tensor on another device than the group's.
    #[error("the {backend:?} group takes tensors on {expected:?}, got one on {got:?}")]
    WrongDevice {
        /// The group's backend.
        backend: crate::Backend,
        /// The group's device.
        expected: tch::Device,
        /// The tensor's device.
        got: tch::Device,
    },
    /// A collective given a non-contiguous tensor.
    #[error("a collective takes contiguous tensors; call `.contiguous()` on the {shape:?} tensor first")]
    NotContiguous {
        /// The tensor's shape.
        shape: Vec<i64>,
    },
    /// A coalesced all-reduce given tensors of several kinds.
    #[error("a coalesced all-reduce takes tensors of one kind, got {first:?} and {other:?}")]
    MixedKinds {
        /// The first tensor's kind.
        first: tch::Kind,
        /// Another tensor's kind.
        other: tch::Kind,
    },
    /// A gradient bucket size of zero bytes.
    #[error("the bucket size must be at least one byte")]
    EmptyBucket,
    /// A variable on another device than the group's.
    #[error("variable `{name}` is on {device:?}, but this rank's group works on {group:?}")]
    VariableDevice {
        /// The variable's name.
        name: String,
        /// Its device.
        device: tch::Device,
        /// The group's device.
        group: tch::Device,
    },
    /// A parameter with no elements: a fitted adapter not sized yet.
    #[error(
        "parameter `{name}` has no elements: a fitted adapter (`fitted_linear_adapter`, `fitted_conv1x1_adapter`) is \
         sized by the distillation's `dry_run`; run it on a sample batch before `DataParallel::new`, so that every \
         rank averages the adapter's final parameters"
    )]
    EmptyParameter {
        /// The parameter's name.
        name: String,
    },
    /// A tensor operation failed in libtorch.
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

impl std::fmt::Debug for DdpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::DdpError;

    #[test]
    fn debug_reads_as_the_message() {
        let error = DdpError::MissingEnv { var: "RANK" };
        assert_eq!(format!("{error:?}"), error.to_string());
        assert!(format!("{error:?}").contains("launch with torchrun"));
    }
}
