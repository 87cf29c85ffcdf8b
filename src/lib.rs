//! # distill — knowledge distillation for Rust, on tch (libtorch)
//!
//! A student network learns from a teacher by matching the outputs of chosen modules.
//!
//! One type runs a distillation: [`Distillation`] — the student, its teachers (one teacher is a
//! list of one) and the pairs of endpoints, each with its criterion, weight or schedule and
//! adapters; the training step, the rescaling of the terms, each teacher's mode, the dry run and
//! the forward, from teachers that run or from a batch of a teacher [`cache`]. Its forward gives a
//! [`DistillationOutput`]: every pair after its adapters, and the weighted [`Losses`].
//!
//! Three ways declare one:
//!
//! - [`distill!`]: pairs of modules named once and checked by rustc, giving a typed model over a
//!   `Distillation` whose output has one field per pair;
//! - [`Mapping`]: pairs known at run time, by reference, slot or name (ENOT's API), made a
//!   `Distillation` by [`Distillation::from_mapping`] when the payloads are criteria (with their
//!   adapters: [`Adapted`]), or glued by [`distill()`] into a [`DistillModel`] whose payloads are
//!   the user's;
//! - [`config`]: a TOML file of pairs, adapters, criteria and weights, read by
//!   [`Config::distill`](config::Config::distill), every mistake located at its file, line and key.
//!
//! The rest of the crate:
//!
//! - [`Distillable`](derive@Distillable): `#[derive(Distillable)]` names a struct's or an enum's
//!   modules so that paths like `features.5.conv` exist;
//! - [`nn`]: tch's layers, made tappable, plus `Seq`, `Sequential` and `Tap` containers;
//! - [`adapter`]: adapters initialised from the pruning (`conv2d_adapter`…) and learned ones;
//! - [`prune`]: channel-sliced copies of layers, to derive a pruned student;
//! - [`schedule`]: a loss term's weight by training step (`Mse * Schedule::warmup(0.0, 1.0, 500)`),
//!   and the terms a distillation reports (rescaled to the logits term's magnitude with
//!   [`Distillation::set_rescale_to`]);
//! - [`vision`]: torchvision's ResNet-18/34/50 and MobileNetV2 with torchvision's parameter names,
//!   and the pruning of their residual blocks;
//! - [`text`]: language models — a LLaMA-family decoder with Hugging Face's parameter names, loaded
//!   from GGUF or a Hugging Face checkpoint, with padding and packed-document masks, a key/value
//!   cache and generation; the GGUF reader, the tokenizer, token datasets;
//! - [`Mapping::with_teachers`] and [`distill_teachers`]: several named teachers at run time;
//! - [`checkpoint`]: the student saved alone, and a run's student and adapters saved and restored;
//! - [`cache`]: the teacher cache — run the teacher once, train the student from its stored captures
//!   with augmentation views replayed;
//! - [`tune_allocator`]: the one call that makes libtorch fast in a Rust process.
#![warn(missing_docs)]

// Generated code names this crate `::distill`, also in its own tests and doctests.
extern crate self as distill;

// The runtime's root items, all of them: the facade and the runtime export one set.
pub use distill_runtime::{
    adapter, cache, checkpoint, checksum, config, criterion, device, distill, distill_teachers, distillation, dry_run,
    endpoint, error, jit, mapping, module, nn, prune, schedule, side, tune_allocator, Adapted, Captured, Child,
    ChildName, Criterion, DistillError, DistillModel, DistillOutput, Distillable, Distillation, DistillationOutput,
    Endpoint, IntoEndpoint, LiveTeacher, Losses, MappedPair, Mapping, NamedModule, Pair, Port, Recordable,
    ResolvedEndpoint, Result, SeveralTeachers, Side, SideModel, StaticSchema, TeacherMode, Weighted,
};
/// What a dry run reports: every pair's shapes on a sample batch, before any training step.
pub use distill_runtime::{DryRun, PairShapes};

/// Data-parallel training on libtorch's c10d (the engine behind PyTorch's DDP), launched by
/// torchrun: process groups, parameter broadcast, bucketed gradient averaging, a distributed
/// sampler. The `distill-ddp` crate, enabled by this crate's `ddp` feature.
#[cfg(feature = "ddp")]
pub use distill_ddp as ddp;

pub mod text;
pub mod vision;

/// Derives `Distillable` (and `StaticSchema`) for a struct or an enum of modules.
///
/// ```
/// use distill::prelude::*;
///
/// #[derive(Debug, Distillable)]
/// struct Block { conv: nn::Conv2D, bn: nn::BatchNorm }
///
/// #[derive(Debug, Distillable)]
/// struct Net {
///     features: nn::Seq<Block>,
///     #[distill(rename = "fc")]
///     classifier: nn::Linear,
///     #[distill(skip)]
///     width: i64,
/// }
/// ```
///
/// - Children are the fields, named by their names (tuple fields `0`, `1`, …), in declaration
///   order; for an enum, the fields of the active variant.
/// - `#[distill(skip)]` leaves out a field that is not a module; `#[distill(rename = "name")]`
///   changes a child's name in paths.
/// - Every other field must be a module: a `distill::nn` layer, a derived struct, `Tap<M>`, or a
///   `Vec`/array/`Option`/`Box` of those. This is checked at the field's type; for a container the
///   error names the element that is not one (`Block` in `nn::Seq<Block>`).
/// - Generic parameters get `FieldType: StaticSchema` bounds for the fields that use them.
/// - `#[distill(crate = "path")]` on the type names the `distill` crate when it is a dependency under
///   another name (`kd = { package = "distill", … }` → `#[distill(crate = "kd")]`), as serde's
///   `#[serde(crate = "…")]` does.
pub use distill_macros::Distillable;

/// Declares a typed distillation between a student and a teacher model, checked by rustc.
///
/// ```text
/// distill! {
///     /// docs and attributes go to the generated struct
///     pub struct Name for StudentType => TeacherType {
///         /// docs go to the output field
///         label: student.path => teacher.path with CRITERION [, OPTION]* ;
///         …
///     }
/// }
/// ```
///
/// **Endpoints.** `student`/`teacher` followed by `.field`, `.0` and `[index]` segments
/// (`student.features[0].conv`); the bare `student`/`teacher` for the model's own output; a string
/// path `"features.0.conv"` (checked at compile time against the type's [`StaticSchema`] as far as
/// it is static — the inside of a `Sequential` is checked by `new()`); or an adapter constructor
/// wrapping the side it applies to, `conv2d_adapter(teacher.features[0].conv)` or, around a string
/// path or a named output, `fitted_conv1x1_adapter(teacher["layer3"])`. A constructor is any
/// `fn(path, &TeacherModule, &StudentModule) -> Result<impl Adapter, DistillError>` (a tch module
/// of one's own goes in `ModuleAdapter(…)`); it is called
/// with `path / "label"` and both endpoint modules (so both sides of an adapted pair are typed).
///
/// A final `[i]` selects the container's *slot* (`nn::Seq`, `nn::Sequential`, or a `Vec`/array of
/// self-recording layers); an inner `[i]` goes into the element (`Seq<T>`, `Vec<T>`, arrays). An
/// index out of range is a `DistillError::Path(PathError::IndexOutOfRange)` from `new()`, never a
/// panic.
///
/// **Labels** name the output's fields. When omitted, the label is the student path with `_` for `.`
/// (`student.features[5].conv` → `features_5_conv`, `"a.b"` → `a_b`, a leading digit gets `_`), and
/// `output` for the bare root (`input` with the `input` option). Labels must differ; a keyword is
/// written raw (`r#type:`), and names starting with `__distill` are the generated code's.
///
/// **Criterion**: any expression of a type implementing [`Criterion`] (`Mse`, `KlDiv::new(4.0) * 2.0`),
/// or a closure `|s, t| …` (its parameter types are inferred).
///
/// **Options** after the criterion: `input` captures the module's input instead of its output;
/// `all_calls` captures every call of a module that runs several times (concatenated along dim 0, so a
/// mean-reduced criterion averages over calls). Either applies to both sides, or to one:
/// `input(student)`, `all_calls(teacher)`.
///
/// **Several teachers** are named, each with its type: `for Student => (big: BigNet, wide: WideNet)`.
/// A pair's teacher side then starts with its teacher's name instead of `teacher` (`big.features[1]`,
/// `conv2d_adapter(wide.conv)`, `big["features.2.bn"]` for a string path, the bare `wide` for its
/// output) and is checked against that teacher's type. `new(path, &student, &big, &wide)` takes the
/// teachers in declaration order; each teacher has its own mode (`big_grad(bool)`, `big_train(bool)`,
/// `big_mode()`; `teacher_grad`/`teacher_train` set every teacher) and accessor (`big()`); the output
/// has `big_output`, `wide_output` instead of `teacher_output`. One forward runs each teacher once.
/// Every declared teacher needs a pair (one without would never run); `student`, `teacher`, `path` and
/// the generated methods' names are not teacher names.
///
/// **Renamed dependency**: `#[distill(crate = "kd")]` among the attributes before `struct` names the
/// `distill` crate when the dependency has another name.
///
/// **Generated items** (for `Name`): `Name<'m>` with `new(path, &student, &teacher)`, `teacher_grad(bool)`,
/// `teacher_train(bool)`, `teacher_mode()`, `distillation()` (the [`Distillation`] it wraps: its resolved
/// endpoints, teachers and modes), `set_step(step)` and `step()` (the training step at which scheduled weights are
/// read), `rescale_to(label)` and `rescaled_to()` (other terms rescaled to one term's magnitude), `forward_t(&xs,
/// train)`, `forward_t_with(&student_xs, &teacher_xs, train)`, `forward_cached(&xs, &batch, train)` (the teacher
/// side read from a batch of a teacher cache, a [`cache::CachedBatch`] or a [`cache::CachedTokens`]),
/// `forward_cached_by(&xs, &batch, train, || …)` (the same, with the student run by the caller's closure, for a
/// student whose forward takes more than a tensor), `dry_run` and `dry_run_cached` (`forward_t`, `forward_t_with`
/// and `dry_run` only when every teacher is a [`LiveTeacher`]) and `LABELS`; `NameOutput<'d>` with one [`Pair`]
/// field per label, `student_output`, `teacher_output`, `loss()` and `f_loss()`, `losses()` and `f_losses()` (their
/// fallible twins), `pairs()` and `with_targets(&ys)`; `NameLosses` with one weighted scalar per label, `total()`,
/// `iter()`, `unweighted()`, `terms()` (weighted and unweighted values, weights, rescaling factors) and `Display`
/// (`f0=0.1234 f1=0.0400 (raw 0.4000, weight 0.1000)`).
///
/// **Schedules**: `with Mse * Schedule::warmup(0.0, 1.0, 500)` weights a term by the training step
/// ([`schedule::Schedule`]: constant, linear, cosine, step changes, products). The model reads the
/// step set by `set_step(step)` before each forward; a forward of a model with a scheduled pair and
/// no step is `DistillError::MissingStep`, never step 0.
///
/// ```
/// use distill::prelude::*;
/// use tch::{nn::VarStore, Device, Kind, Tensor};
///
/// #[derive(Debug, Distillable)]
/// struct Net { body: nn::Seq<nn::Linear>, head: nn::Linear }
///
/// impl nn::ModuleT for Net {
///     fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
///         self.head.forward_t(&self.body.forward_t(xs, train), train)
///     }
/// }
///
/// fn net(p: nn::Path) -> Net {
///     let body = (0..2).map(|i| nn::linear(&p / "body" / i, 4, 4, Default::default())).collect();
///     Net { body, head: nn::linear(&p / "head", 4, 2, Default::default()) }
/// }
///
/// distill! {
///     /// Self-distillation of a tiny MLP.
///     struct Kd for Net => Net {
///         hidden: student.body[1] => teacher.body[1] with |s, t| (s - t).square().mean(Kind::Float);
///         "head" => "head" with |s, t| (s - t).abs().mean(Kind::Float);
///         student => teacher with |s, t| (s - t).square().mean(Kind::Float);
///     }
/// }
///
/// # fn main() -> Result<(), DistillError> {
/// let vs = VarStore::new(Device::Cpu);
/// let (student, teacher) = (net(vs.root() / "s"), net(vs.root() / "t"));
/// let kd = Kd::new(vs.root() / "kd", &student, &teacher)?;
/// let out = kd.forward_t(&Tensor::randn([3, 4], (Kind::Float, Device::Cpu)), true)?;
/// assert_eq!(out.hidden.student.size(), [3, 4]);
/// let _total = out.loss();
/// println!("{}", out.losses()); // hidden=… head=… output=…
/// # Ok(()) }
/// ```
pub use distill_macros::distill;

/// What a `distill!` output holds for each pair: a [`Pair`].
///
/// For a declaration `distill! { pub struct Kd for Student => Teacher { f0: …; kd: …; } }` the macro
/// generates `Kd<'m>` (built by `Kd::new(path, &student, &teacher)`, run by `forward_t`), `KdOutput<'d>`
/// with one `Pair` field per label (`out.f0.student`, `out.kd.loss()`), and `KdLosses` with one scalar
/// per label.
pub mod dsl {
    pub use distill_runtime::dsl::Pair;
    /// The traits a `distill!` block or a derive needs of the user's types, named in compile errors.
    #[doc(hidden)]
    pub use distill_runtime::dsl::{ChildAt, IntoAdapter, Model, PathSchema, RecordedElement, SlotIndex};
}

/// Everything a distillation script needs: `use distill::prelude::*;`.
///
/// Besides distill's own items it brings tch's traits that every training script calls: `Module` and
/// `ModuleT` (`forward_t`, `apply`) and `OptimizerConfig` (`Sgd { … }.build(&vs, lr)`). `nn` is
/// `distill::nn`, which mirrors `tch::nn`.
pub mod prelude {
    pub use crate::adapter::{
        conv1x1_adapter, conv2d_adapter, fitted_conv1x1_adapter, fitted_linear_adapter, inverted_conv2d_adapter,
        learned_conv2d_adapter, learned_inverted_conv2d_adapter, learned_inverted_linear_adapter,
        learned_linear_adapter, linear_adapter, linear_selection_adapter, Adapter, Tolerance,
    };
    pub use crate::criterion::*;
    pub use crate::nn;
    pub use crate::schedule::Schedule;
    pub use crate::{
        distill, distill_teachers, tune_allocator, Adapted, DistillError, Distillable, Distillation, Endpoint, Mapping,
        Pair, Recordable, SideModel, StaticSchema, TeacherMode,
    };
    pub use tch::nn::{Module, ModuleT, OptimizerConfig};
}

/// Items used by generated code. Not public API: may change in any release.
#[doc(hidden)]
pub use distill_runtime::__private;
// The capture glue of the text and vision layers.
use distill_runtime::__private::capture;
