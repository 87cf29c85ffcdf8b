//! What `distill!` and `#[derive(Distillable)]` generate code against.
//!
//! Users meet [`Pair`] (one field per pair of a generated output) and the traits' error messages;
//! the rest is called by generated code. Each trait a mapped endpoint, an index or an adapter must
//! satisfy carries a `#[diagnostic::on_unimplemented]` message that says what to use instead, so a
//! mistake in a `distill!` block is a compile error at the user's token with advice.

use std::fmt;

use tch::nn::ModuleT;
use tch::Tensor;

use crate::adapter::checked::checked_forward;
use crate::criterion::{check_pair, name_pair, Criterion};
use crate::endpoint::{Endpoint, IntoEndpoint, ResolvedEndpoint};
use crate::engine::{Captured, Engine, TeacherMode};
use crate::error::{DistillError, Result, Side};
use crate::module::{Distillable, Recordable};
use crate::nn::{Seq, Sequential, Tap};
use crate::schema::{Schema, StaticSchema};

// ---- derive ------------------------------------------------------------------------------------

/// A type that can be a field of a `#[derive(Distillable)]` module: a [`Distillable`] module with a
/// [`StaticSchema`]. The derive checks every field against this trait, at the field's type.
#[diagnostic::on_unimplemented(
    message = "field type `{Self}` is not a distillable module",
    label = "not a module",
    note = "skip a field that is not a module (a size, a flag, a config) with `#[distill(skip)]`",
    note = "or make `{Self}` a module: `#[derive(Distillable)]` on it, a `distill::nn` layer, or `distill::nn::Tap<_>` \
            around a tch module (a hand-written `impl Distillable` also needs `impl distill::schema::StaticSchema for \
            {Self} {{}}`)"
)]
pub trait DistillField {
    /// The field as a module of the tree.
    fn as_module(&self) -> &dyn Distillable;
    /// The field type's schema.
    const FIELD_SCHEMA: Schema;
}

#[diagnostic::do_not_recommend]
impl<T: Distillable + StaticSchema> DistillField for T {
    fn as_module(&self) -> &dyn Distillable {
        self
    }
    const FIELD_SCHEMA: Schema = T::SCHEMA;
}

// ---- models ------------------------------------------------------------------------------------

/// A model that `distill!` can distill: it runs (`tch::nn::ModuleT`) and names its children
/// ([`Distillable`]). Generated code reaches both through this trait, at the span of the type in the
/// `distill!` header, so a model missing either is one error there.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be distilled: it must implement tch's `ModuleT` and `Distillable`",
    label = "not a distillable model",
    note = "derive `Distillable` with `#[derive(Distillable)]` and implement `tch::nn::ModuleT` (its forward)"
)]
pub trait Model {
    /// The model as a module tree.
    fn as_distillable(&self) -> &dyn Distillable;
    /// The model as a tch module.
    fn as_module_t(&self) -> &dyn ModuleT;
}

#[diagnostic::do_not_recommend]
impl<M: ModuleT + Distillable> Model for M {
    fn as_distillable(&self) -> &dyn Distillable {
        self
    }
    fn as_module_t(&self) -> &dyn ModuleT {
        self
    }
}

// ---- endpoints ---------------------------------------------------------------------------------

/// A container whose `[i]`, as the last segment of a `distill!` endpoint, is a distillation point:
/// `nn::Seq<T>` and `nn::Sequential` (which record each element's call), and `Vec`s and arrays of
/// modules that record themselves.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no elements that `[i]` could select as a distillation point",
    label = "cannot be indexed here",
    note = "`[i]` selects an element of a `distill::nn::Seq`, a `distill::nn::Sequential`, or a `Vec`/array of \
            `distill::nn` layers; name a field with `.field` instead"
)]
pub trait SlotIndex {
    /// The distillation point of element `index`, `None` when out of range.
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>>;
    /// The number of elements.
    fn slot_count(&self) -> usize;
}

/// An element type of a `Vec` or an array that can be a distillation point: it records itself.
#[diagnostic::on_unimplemented(
    message = "a `Vec` or an array of `{Self}` cannot record its elements' outputs",
    label = "elements of this type do not record themselves",
    note = "hold them in `distill::nn::Seq<{Self}>`, which records each element's call, or wrap each in \
            `distill::nn::Tap<{Self}>`"
)]
pub trait RecordedElement {
    /// The element as an endpoint.
    fn element_endpoint(&self) -> Endpoint<'static>;
}

#[diagnostic::do_not_recommend]
impl<T: Recordable + Distillable> RecordedElement for T {
    fn element_endpoint(&self) -> Endpoint<'static> {
        Endpoint::module(self)
    }
}

impl<T> SlotIndex for Seq<T> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (index < self.len()).then(|| self.slot(index).into_endpoint())
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl SlotIndex for Sequential {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (index < self.len()).then(|| self.slot(index).into_endpoint())
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement> SlotIndex for [T] {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.get(index).map(RecordedElement::element_endpoint)
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement> SlotIndex for Vec<T> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.as_slice().slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        self.len()
    }
}

impl<T: RecordedElement, const N: usize> SlotIndex for [T; N] {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        self.as_slice().slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        N
    }
}

impl<C: SlotIndex + ?Sized> SlotIndex for Box<C> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (**self).slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        (**self).slot_count()
    }
}

impl<C: SlotIndex> SlotIndex for Tap<C> {
    fn slot_endpoint(&self, index: usize) -> Option<Endpoint<'static>> {
        (**self).slot_endpoint(index)
    }
    fn slot_count(&self) -> usize {
        (**self).slot_count()
    }
}

/// A container whose elements have a static type, so that a `distill!` endpoint can go on after
/// `[i]` (`features[0].conv`) or hand the element to an adapter.
#[diagnostic::on_unimplemented(
    message = "the elements of `{Self}` have no static type to continue the path with",
    label = "cannot go inside an element of this",
    note = "`[i]` followed by more segments (or under an adapter) needs a `distill::nn::Seq<T>`, a `Vec<T>` or an \
            array; to reach inside an element of a heterogeneous `distill::nn::Sequential`, use a string path such \
            as `\"layers.0.conv\"`"
)]
pub trait ChildAt {
    /// The element type.
    type Element: ?Sized;
    /// Element `index`, if in range.
    fn child_at(&self, index: usize) -> Option<&Self::Element>;
    /// The number of elements.
    fn child_count(&self) -> usize;
}

impl<T> ChildAt for Seq<T> {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T> ChildAt for [T] {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T> ChildAt for Vec<T> {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        self.len()
    }
}

impl<T, const N: usize> ChildAt for [T; N] {
    type Element = T;
    fn child_at(&self, index: usize) -> Option<&T> {
        self.get(index)
    }
    fn child_count(&self) -> usize {
        N
    }
}

impl<C: ChildAt + ?Sized> ChildAt for Box<C> {
    type Element = C::Element;
    fn child_at(&self, index: usize) -> Option<&C::Element> {
        (**self).child_at(index)
    }
    fn child_count(&self) -> usize {
        (**self).child_count()
    }
}

impl<C: ChildAt> ChildAt for Tap<C> {
    type Element = C::Element;
    fn child_at(&self, index: usize) -> Option<&C::Element> {
        (**self).child_at(index)
    }
    fn child_count(&self) -> usize {
        (**self).child_count()
    }
}

/// The endpoint of a module given by reference: it must record itself.
pub fn module<M: Recordable + Distillable + ?Sized>(module: &M) -> Endpoint<'static> {
    Endpoint::module(module)
}

/// The endpoint `container[index]`; an index out of range is `IndexOutOfRange` naming `container`
/// (its path as written in `distill!`).
pub fn slot<C: SlotIndex + ?Sized>(
    container: &C,
    index: usize,
    side: Side,
    path: &'static str,
) -> Result<Endpoint<'static>> {
    container.slot_endpoint(index).ok_or_else(|| DistillError::IndexOutOfRange {
        side,
        container: path.to_owned(),
        index,
        len: container.slot_count(),
    })
}

/// `container[index]` as a typed reference; out of range is `IndexOutOfRange`, never a panic.
pub fn child<'a, C: ChildAt + ?Sized>(
    container: &'a C,
    index: usize,
    side: Side,
    path: &'static str,
) -> Result<&'a C::Element> {
    container.child_at(index).ok_or_else(|| DistillError::IndexOutOfRange {
        side,
        container: path.to_owned(),
        index,
        len: container.child_count(),
    })
}

// ---- adapters and criteria ---------------------------------------------------------------------

/// What an adapter constructor returns: `Result<A, E>` with `A` a tch module and `E` convertible
/// into [`DistillError`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not what an adapter constructor returns",
    label = "not `Result<impl tch::nn::ModuleT, DistillError>`",
    note = "an adapter is `fn(path, &TeacherModule, &StudentModule) -> Result<A, DistillError>` with \
            `A: tch::nn::Module` (or `ModuleT`), like `conv2d_adapter`"
)]
pub trait IntoAdapter<'m> {
    /// The adapter, boxed, or the constructor's error.
    fn into_adapter(self) -> Result<Box<dyn ModuleT + 'm>>;
}

impl<'m, A: ModuleT + 'm, E: Into<DistillError>> IntoAdapter<'m> for std::result::Result<A, E> {
    fn into_adapter(self) -> Result<Box<dyn ModuleT + 'm>> {
        match self {
            Ok(adapter) => Ok(Box::new(adapter)),
            Err(error) => Err(error.into()),
        }
    }
}

/// Boxes an adapter constructor's result.
pub fn adapter<'m, R: IntoAdapter<'m>>(result: R) -> Result<Box<dyn ModuleT + 'm>> {
    result.into_adapter()
}

/// Boxes a criterion.
pub fn criterion<'m, C: Criterion + 'm>(criterion: C) -> Box<dyn Criterion + 'm> {
    Box::new(criterion)
}

/// Boxes a closure criterion; the `Fn` bound lets `|s, t| …` infer its parameter types.
pub fn closure_criterion<'m, F>(criterion: F) -> Box<dyn Criterion + 'm>
where
    F: Fn(&Tensor, &Tensor) -> Tensor + 'm,
{
    Box::new(criterion)
}

// ---- the generated model's core ----------------------------------------------------------------

/// One pair of a generated distillation, as `new()` built it.
pub struct PairSpec<'m> {
    /// The pair's label (its field name in the output).
    pub label: &'static str,
    /// The student endpoint, resolved.
    pub student: ResolvedEndpoint,
    /// The teacher endpoint, resolved.
    pub teacher: ResolvedEndpoint,
    /// The loss.
    pub criterion: Box<dyn Criterion + 'm>,
    /// Applied to the student tensor (`inverted_conv2d_adapter(student.x)`).
    pub student_adapter: Option<Box<dyn ModuleT + 'm>>,
    /// Applied to the teacher tensor (`conv2d_adapter(teacher.x)`).
    pub teacher_adapter: Option<Box<dyn ModuleT + 'm>>,
}

impl fmt::Debug for PairSpec<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PairSpec")
            .field("label", &self.label)
            .field("student", &self.student.path)
            .field("teacher", &self.teacher.path)
            .field("student_adapter", &self.student_adapter)
            .field("teacher_adapter", &self.teacher_adapter)
            .finish_non_exhaustive()
    }
}

/// The state of a generated distillation: its pairs, the capture engine and the teacher's mode.
#[derive(Debug)]
pub struct Core<'m> {
    pairs: Vec<PairSpec<'m>>,
    engine: Engine,
    mode: TeacherMode,
}

/// What one forward of a [`Core`] gives: both outputs and the pairs in declaration order.
#[derive(Debug)]
pub struct Forward<'d> {
    /// The student's output.
    pub student_output: Tensor,
    /// The teacher's output, on the student's device.
    pub teacher_output: Tensor,
    /// One per pair, in declaration order.
    pub pairs: Vec<Pair<'d>>,
}

impl<'m> Core<'m> {
    /// A core over `pairs` (already resolved), the teacher running as `TeacherMode::default()`.
    pub fn new(pairs: Vec<PairSpec<'m>>) -> Self {
        let (student, teacher) = pairs.iter().map(|pair| (pair.student.clone(), pair.teacher.clone())).unzip();
        Core { engine: Engine::new(student, teacher), pairs, mode: TeacherMode::default() }
    }

    /// The pairs.
    pub fn pairs(&self) -> &[PairSpec<'m>] {
        &self.pairs
    }

    /// The capture engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How the teacher runs.
    pub fn mode(&self) -> TeacherMode {
        self.mode
    }

    /// Sets how the teacher runs.
    pub fn set_mode(&mut self, mode: TeacherMode) {
        self.mode = mode;
    }

    /// Runs the engine, applies the adapters (with the student's `train` flag) and checks each pair's
    /// criterion: its parameters and the pair's shapes.
    pub fn forward(
        &self,
        student: &dyn ModuleT,
        teacher: &dyn ModuleT,
        student_xs: &Tensor,
        teacher_xs: &Tensor,
        train: bool,
    ) -> Result<Forward<'_>> {
        let captures = self.engine.run(student, teacher, student_xs, teacher_xs, train, self.mode)?;
        let pairs = self
            .pairs
            .iter()
            .zip(captures.student.into_iter().zip(captures.teacher))
            .map(|(spec, (s, t))| {
                let student = adapt(join_calls(s)?, spec.student_adapter.as_deref(), train, spec.label, Side::Student)?;
                let teacher = adapt(join_calls(t)?, spec.teacher_adapter.as_deref(), train, spec.label, Side::Teacher)?;
                check_pair(&*spec.criterion, spec.label, &student.size(), &teacher.size())?;
                Ok(Pair { student, teacher, label: spec.label, criterion: &*spec.criterion, targets: None })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Forward { student_output: captures.student_output, teacher_output: captures.teacher_output, pairs })
    }
}

/// One call as is; several (an `all_calls` endpoint) concatenated along the batch dimension, so
/// that a mean-reduced criterion averages over the calls.
fn join_calls(captured: Captured) -> Result<Tensor> {
    let mut calls = captured.into_calls();
    if calls.len() == 1 {
        if let Some(tensor) = calls.pop() {
            return Ok(tensor);
        }
    }
    Ok(Tensor::f_cat(&calls, 0)?)
}

/// `tensor` through the pair's adapter, if it has one; an input the adapter cannot take is an error
/// naming the pair and side (for the adapters of `distill::adapter`).
fn adapt(tensor: Tensor, adapter: Option<&(dyn ModuleT + '_)>, train: bool, pair: &str, side: Side) -> Result<Tensor> {
    let Some(adapter) = adapter else { return Ok(tensor) };
    checked_forward(|| adapter.forward_t(&tensor, train)).map_err(|source| DistillError::AdapterInput {
        pair: pair.to_owned(),
        side,
        source: Box::new(source),
    })
}

/// Turns the pairs of a [`Forward`] into an array of the generated output's arity.
pub fn into_array<'d, const N: usize>(pairs: Vec<Pair<'d>>) -> Result<[Pair<'d>; N]> {
    let len = pairs.len();
    pairs.try_into().map_err(|_| DistillError::InvalidArgument(format!("expected {N} pairs, the engine gave {len}")))
}

// ---- what users see ----------------------------------------------------------------------------

/// One pair of a `distill!` output: the student's and the teacher's tensor after adapters, and the
/// pair's criterion.
pub struct Pair<'d> {
    /// The student's tensor, after its adapter if it has one.
    pub student: Tensor,
    /// The teacher's tensor, after its adapter if it has one (on the student's device).
    pub teacher: Tensor,
    label: &'static str,
    criterion: &'d (dyn Criterion + 'd),
    targets: Option<Tensor>,
}

impl<'d> Pair<'d> {
    /// The pair's label, as declared (or derived from its path) in `distill!`.
    pub fn label(&self) -> &'static str {
        self.label
    }

    /// The pair's criterion.
    pub fn criterion(&self) -> &'d (dyn Criterion + 'd) {
        self.criterion
    }

    /// The targets given with [`set_targets`](Self::set_targets), if any.
    pub fn targets(&self) -> Option<&Tensor> {
        self.targets.as_ref()
    }

    /// Gives the batch's targets (class indices) to criteria that use them (`loss_with_targets`).
    pub fn set_targets(&mut self, targets: &Tensor) {
        self.targets = Some(targets.shallow_clone());
    }

    /// The pair's (weighted) loss: the criterion on `student` and `teacher`, with the targets if set.
    ///
    /// Unchecked in the tch style: it panics where the criterion cannot compute (targets that do not
    /// fit, for a criterion that uses them); [`f_loss`](Self::f_loss) is the fallible twin.
    pub fn loss(&self) -> Tensor {
        self.criterion.loss_with_targets(&self.student, &self.teacher, self.targets.as_ref())
    }

    /// The pair's loss, or an error naming the pair when its criterion cannot compute it: the checked
    /// twin of [`loss`](Self::loss) (`Criterion::f_loss_with_targets`).
    pub fn f_loss(&self) -> Result<Tensor> {
        self.criterion
            .f_loss_with_targets(&self.student, &self.teacher, self.targets.as_ref())
            .map_err(|err| name_pair(err, self.label))
    }
}

impl fmt::Debug for Pair<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pair")
            .field("label", &self.label)
            .field("student", &self.student.size())
            .field("teacher", &self.teacher.size())
            .field("targets", &self.targets.as_ref().map(Tensor::size))
            .finish()
    }
}

/// Writes named scalar losses as `f0=0.1234 f1=0.4000` (a non-scalar as its shape).
pub fn write_losses(f: &mut fmt::Formatter<'_>, losses: &[(&str, &Tensor)]) -> fmt::Result {
    for (i, (name, loss)) in losses.iter().enumerate() {
        if i > 0 {
            f.write_str(" ")?;
        }
        match loss.f_double_value(&[]) {
            Ok(value) => write!(f, "{name}={value:.4}")?,
            Err(_) => write!(f, "{name}={:?}", loss.size())?,
        }
    }
    Ok(())
}

/// The sum of `losses` (the first one alone if there is one; a scalar zero if there are none).
pub fn total(losses: &[&Tensor]) -> Tensor {
    let mut iter = losses.iter();
    match iter.next() {
        Some(first) => iter.fold(first.shallow_clone(), |sum, loss| sum + *loss),
        None => Tensor::from(0.0f32),
    }
}
