//! What is known about a module tree before any model exists: the [`Schema`] of a type.
//!
//! `#[derive(Distillable)]` implements [`StaticSchema`] from the field types, and every `distill::nn`
//! type, tch leaf and blanket container implements it too, so that `distill!` can check a string path
//! such as `"features.2.bn"` at compile time, down to the first part that only exists at run time
//! (the elements of a `Sequential`, a `dyn Layer`): that remainder is checked when the distillation
//! is built.

mod private;

pub use private::{Children, FieldSchema, Schema};

use crate::module::Distillable;

/// A [`Distillable`] module whose tree is (partly) known at compile time: what a field of a
/// `#[derive(Distillable)]` struct must be.
///
/// Derived by `#[derive(Distillable)]`, and implemented by every `distill::nn` layer and container,
/// by tch's layers, and by `Vec`, arrays, `Option` and `Box` of such modules. A hand-written
/// `Distillable` implements it in one line, `impl StaticSchema for MyModule {}`, which makes paths
/// into it checked at run time only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a distillable module",
    label = "not a distillable module",
    note = "a field that is not a module (a size, a flag, a config) is left out with `#[distill(skip)]`",
    note = "a module is a `distill::nn` layer, a `distill::nn::Tap<_>` around a tch module, or a type with \
            `#[derive(Distillable)]` on it: derive it on `{Self}`",
    note = "a hand-written `impl Distillable for {Self}` also needs `impl distill::StaticSchema for {Self} {{}}`"
)]
pub trait StaticSchema: Distillable {
    /// The schema; the default says nothing is known. Glue of the compile-time path check, written
    /// by `#[derive(Distillable)]`.
    #[doc(hidden)]
    const SCHEMA: Schema = Schema::OPAQUE;

    /// The module as a field of a derived type's tree. `#[derive(Distillable)]` reaches a field
    /// through this and [`SCHEMA`](Self::SCHEMA) only, both as `<FieldType as StaticSchema>::…`, so
    /// that a field that is not a module is one error at its type, naming the innermost type that
    /// is not one (`Block` for a field `nn::Seq<Block>`). Not meant to be called or overridden.
    #[doc(hidden)]
    fn __distill_field(&self) -> &dyn Distillable
    where
        Self: Sized,
    {
        self
    }
}

// ---- schemas of the runtime's types ------------------------------------------------------------

impl<T: StaticSchema + ?Sized> StaticSchema for Box<T> {
    const SCHEMA: Schema = T::SCHEMA;
}

/// The schema of `T` (a `None` is found empty at run time).
impl<T: StaticSchema> StaticSchema for Option<T> {
    const SCHEMA: Schema = T::SCHEMA;
}

/// Elements are recorded only if they record themselves.
impl<T: StaticSchema> StaticSchema for Vec<T> {
    const SCHEMA: Schema =
        Schema { records: false, children: Children::List { item: &T::SCHEMA, len: None, slots_record: false } };
}

/// Elements are recorded only if they record themselves; the length is checked.
impl<T: StaticSchema, const N: usize> StaticSchema for [T; N] {
    const SCHEMA: Schema =
        Schema { records: false, children: Children::List { item: &T::SCHEMA, len: Some(N), slots_record: false } };
}

/// Elements are recorded only if they record themselves.
impl<T: StaticSchema> StaticSchema for [T] {
    const SCHEMA: Schema =
        Schema { records: false, children: Children::List { item: &T::SCHEMA, len: None, slots_record: false } };
}

/// Known only at run time.
impl StaticSchema for dyn Distillable {}
