//! The error type of every fallible operation in the runtime.

pub use crate::point::{Port, Side};
mod adapter;
mod cache;
mod capture;
mod channel_map;
mod checkpoint;
mod checksum;
mod config;
mod criterion;
mod jit;
mod path;
mod prune;
mod setup;
mod text;

pub use adapter::AdapterError;
pub use cache::CacheError;
pub use capture::CaptureError;
pub use channel_map::ChannelMapError;
pub use checkpoint::{CheckpointError, CheckpointProblem, StateDictProblems};
pub use checksum::ChecksumError;
pub use config::ConfigError;
pub use criterion::{CriterionError, Packed, PackedProblem};
pub use jit::JitError;
pub use path::PathError;
pub use prune::{PruneError, RecordProblem};
pub use setup::SetupError;

pub(crate) use text::{did_you_mean, libtorch_message, named_or};

/// Everything that can go wrong when a distillation is set up or run.
///
/// Each variant names the side, the module path and — where they matter — the shapes, the call count
/// or a suggestion, so that the message alone tells what to fix.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum DistillError {
    /// A module path or a module given by reference does not name a module of the model, or names one
    /// that cannot record its output.
    #[error(transparent)]
    Path(#[from] PathError),
    /// A mapped module's output or input could not be captured as asked during the forward pass.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// A pair's criterion cannot compare the two tensors' shapes (e.g. different shapes for an
    /// element-wise loss, a 2-D tensor for attention transfer, a batch of one for RKD). When the shapes
    /// differ in one width, the message names the adapters that would fit.
    #[error(
        "{}the criterion cannot compare the student's shape {student:?} with the teacher's {teacher:?}: {reason}{}",
        pair_prefix(pair),
        crate::adapter_hint::adapter_hint(student, teacher).map(|hint| format!("; {hint}")).unwrap_or_default()
    )]
    ShapeMismatch {
        /// Label of the pair (empty when the criterion was called directly, through `f_loss`).
        pair: String,
        /// Shape of the student tensor (after its adapter).
        student: Vec<i64>,
        /// Shape of the teacher tensor (after its adapter).
        teacher: Vec<i64>,
        /// What the criterion needs, from `Criterion::check_shapes`.
        reason: String,
    },
    /// A criterion's parameters are outside its domain (a temperature ≤ 0, a negative β, a NaN…).
    #[error("{}invalid criterion: {reason}", pair_prefix(pair))]
    InvalidCriterion {
        /// Label of the pair (empty when the criterion was called directly).
        pair: String,
        /// What is wrong, from `Criterion::validate`.
        reason: String,
    },
    /// The targets handed to a criterion that uses labels do not fit the pair (wrong count, not class
    /// indices, a class out of range).
    #[error("{}invalid targets: {reason}", pair_prefix(pair))]
    InvalidTargets {
        /// Label of the pair (empty when the criterion was called directly).
        pair: String,
        /// What is wrong, from `Criterion::check_targets`.
        reason: String,
    },
    /// A criterion whose weight follows a schedule was asked for its loss without a training step.
    #[error(
        "{}the weight follows a schedule, and no training step was given: call `set_step(step)` on the distillation \
         before the forward, or compute the loss with `loss_at(step, …)`",
        pair_prefix(pair)
    )]
    MissingStep {
        /// Label of the pair (empty when the criterion was called directly).
        pair: String,
    },
    /// A pair's adapter could not take the tensor captured for it (e.g. a selection adapter, which
    /// takes a conv's output channels, given the conv's input).
    #[error("pair `{pair}`: the {side}'s adapter cannot take the captured tensor: {source}")]
    AdapterInput {
        /// Label of the pair.
        pair: String,
        /// The side whose adapter failed.
        side: Side,
        /// The adapter's error.
        #[source]
        source: Box<DistillError>,
    },
    /// A `Mapping` was used with other models than the ones it was built for.
    #[error("the mapping was built for other student and teacher models than the ones given to `distill`")]
    ModelMismatch,
    /// The channels a pruned layer kept could not be found from the weights, or a record of them
    /// does not fit the layers it is used with.
    #[error(transparent)]
    ChannelMap(#[from] ChannelMapError),
    /// A teacher cache or a token cache was written or read with arguments that do not fit it.
    #[error(transparent)]
    Cache(#[from] CacheError),
    /// A checksummed safetensors file (a checkpoint, a cache shard) cannot be written as asked.
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    /// A layer cannot be pruned as asked, or a prune record cannot be used.
    #[error(transparent)]
    Prune(#[from] PruneError),
    /// An adapter cannot be built with the widths given, or cannot take its input.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
    /// A distillation's teachers or pair labels do not fit what is asked of them.
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// An argument is outside what an operation accepts.
    #[error("{0}")]
    InvalidArgument(String),
    /// A criterion or a teacher encoding was given an argument it cannot take.
    #[error(transparent)]
    Criterion(#[from] CriterionError),
    /// A problem with one of several teachers: its endpoints, or its forward.
    #[error("teacher `{teacher}`: {source}")]
    InTeacher {
        /// The teacher's name.
        teacher: String,
        /// What went wrong with it.
        source: Box<DistillError>,
    },
    /// A teacher name that the distillation does not have.
    #[error("no teacher `{name}`{}; the teachers are {}", did_you_mean(suggestion), quoted_list(teachers))]
    UnknownTeacher {
        /// The name as given.
        name: String,
        /// The closest teacher name, if one is close.
        suggestion: Option<String>,
        /// Every teacher's name, in declaration order.
        teachers: Vec<String>,
    },
    /// A dry run found pairs that do not fit; each problem names its pair.
    #[error("the dry run found {} problem(s):\n{}", problems.len(), bullet_list(problems))]
    DryRun {
        /// One error per pair that does not fit.
        problems: Vec<DistillError>,
    },
    /// A TorchScript module could not be loaded or run, or has no output of a name asked for.
    #[error(transparent)]
    Jit(#[from] JitError),
    /// A configuration file is not valid TOML, has a key or a value the configuration does not know,
    /// or names something its models do not have.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A checkpoint cannot be written or restored exactly (a variable whose owner is unknown, a
    /// variable missing from the file or not in the models, a shape that differs), or a `state_dict`
    /// file does not fit the model it is loaded into.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// A teacher cache does not match the distillation reading it, or a writer's configuration does
    /// not match the cache already in its directory.
    #[error("the teacher cache `{dir}` does not match: {what} is {cached} in the cache, {expected} here")]
    CacheMismatch {
        /// The cache directory.
        dir: String,
        /// What differs (`the teacher weights' hash`, `endpoint `features.1``, …).
        what: String,
        /// Its value in the cache's manifest.
        cached: String,
        /// Its value in the distillation or the writer.
        expected: String,
    },
    /// A CUDA device was asked for that this process does not have: no GPU, no driver, a libtorch
    /// without CUDA, or `CUDA_VISIBLE_DEVICES` hides it.
    #[error(
        "no CUDA device is available as cuda:{device}: this process sees {available} CUDA device(s) (check \
         `nvidia-smi` and CUDA_VISIBLE_DEVICES, or use Device::Cpu)"
    )]
    NoCudaDevice {
        /// The index asked for.
        device: usize,
        /// How many CUDA devices this process sees.
        available: usize,
    },
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done (`"read"`, `"write"`, `"sync"`…).
        action: &'static str,
        /// The file.
        path: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A file written by this library does not hold what it was written with: its checksum does
    /// not match (damaged on disk, or changed by hand), or it is not the file format it should be.
    #[error("`{file}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        file: String,
        /// What does not match.
        reason: String,
    },
    /// A language model of `distill::text` could not be configured, loaded, run, pruned or fed: a
    /// GGUF file, a tokenizer, a token dataset, a config or inputs it does not take. The boxed error
    /// is `distill::text`'s (`GgufError`, `TokenizerError`, `DataError`, `ModelError`,
    /// `DecoderPruneError`), to downcast.
    #[error(transparent)]
    Text(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// A vision model of `distill::vision` was built with an option it does not take. The boxed
    /// error is `distill::vision::VisionError`, to downcast.
    #[error(transparent)]
    Vision(Box<dyn std::error::Error + Send + Sync + 'static>),
    /// An error raised by libtorch. Its message is libtorch's without the C++ backtrace that
    /// libtorch appends (`Exception raised from …`, `frame #0: …`); the full text is in the error
    /// itself (`{:#?}`, or the `TchError`).
    #[error("{}", libtorch_message(&.0.to_string()))]
    Torch(tch::TchError),
}

impl From<tch::TchError> for DistillError {
    fn from(error: tch::TchError) -> Self {
        DistillError::Torch(error)
    }
}

/// `Debug` reads as the message, followed by its chain of causes, as `anyhow`'s errors do.
///
/// `fn main() -> Result<(), Box<dyn Error>>` prints a returned error with `Debug`; a derived `Debug`
/// would turn each careful message into nested struct syntax. The variant's fields are public, so
/// code that needs the structure matches on it.
impl std::fmt::Debug for DistillError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let message = self.to_string();
        f.write_str(&message)?;
        // `{:#?}`: libtorch's full text, C++ backtrace included, which the message leaves out.
        if let (true, DistillError::Torch(error)) = (f.alternate(), self) {
            write!(f, "\n\nlibtorch's full message:\n{error}")?;
        }
        // Most wrapping variants already quote their cause in the message: list only what it leaves out.
        let mut causes = Vec::new();
        let mut cause = std::error::Error::source(self);
        while let Some(error) = cause {
            // A libtorch error underneath (a TorchScript module's) is quoted without its C++ backtrace.
            let text = libtorch_message(&error.to_string());
            if !message.contains(&text) {
                causes.push(text);
            }
            cause = error.source();
        }
        if !causes.is_empty() {
            f.write_str("\n\nCaused by:")?;
            for text in causes {
                write!(f, "\n    {text}")?;
            }
        }
        Ok(())
    }
}

/// `pair `label`: ` before a message about a pair, nothing for a criterion called directly.
fn pair_prefix(pair: &str) -> String {
    named_or(pair, "", "pair `", "`: ")
}

fn quoted_list(names: &[String]) -> String {
    names.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
}

fn bullet_list(problems: &[DistillError]) -> String {
    problems.iter().map(|problem| format!("- {problem}")).collect::<Vec<_>>().join("\n")
}

/// Result of the runtime's fallible operations.
pub type Result<T, E = DistillError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::libtorch_message;

    #[test]
    fn libtorch_messages_lose_their_cpp_backtrace_only() {
        let text = "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)\nException raised from meta at \
                    aten/src/ATen/native/LinearAlgebra.cpp:191 (most recent call first):\nframe #0: \
                    c10::Error::Error(c10::SourceLocation, std::string) + 0x96 (0x7f in libc10.so)\nframe #1: …";
        assert_eq!(libtorch_message(text), "mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)");
        // A TorchScript error keeps its (Python-level) traceback, which names the failing line.
        let script = "The following operation failed in the TorchScript interpreter.\nTraceback of TorchScript \
                      (most recent call last):\n  File \"code/__torch__.py\", line 9\nRuntimeError: boom\n";
        assert_eq!(libtorch_message(script), script.trim_end());
        assert_eq!(libtorch_message("one line"), "one line");
    }
}
