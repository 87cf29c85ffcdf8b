//! The module tree: [`Distillable`] names a module's children so that paths like `features.5.conv`
//! can be listed, resolved and checked; [`Recordable`] marks modules that record their own output.

mod private;

use std::fmt;

pub use self::private::{resolve, Resolved};
pub use crate::error::PathError;
use crate::point::TapId;
use crate::suggest::closest;

/// A module whose children can be visited by name — what makes `features.5.conv` a path.
///
/// Implemented by every `distill::nn` layer and container, by blanket impls for `Vec<T>`, `[T; N]`,
/// `Option<T>` and `Box<T>`, as a leaf by tch's own layers, and by `#[derive(Distillable)]` for user
/// structs.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a distillable module",
    label = "does not implement `Distillable`",
    note = "derive it with `#[derive(Distillable)]`, use a `distill::nn` layer, or skip a non-module field with `#[distill(skip)]`"
)]
pub trait Distillable {
    /// Calls `visit` once for each direct child, in declaration order.
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>));

    /// The tap that records this module's own output, for modules that record themselves
    /// (`distill::nn` layers, `Tap<M>`). Containers give their children's slots taps instead.
    /// Capture glue, overridden by the recording layers only.
    #[doc(hidden)]
    fn own_tap(&self) -> Option<TapId> {
        None
    }

    /// The Rust type of the module, for listings and error messages.
    fn module_type(&self) -> &'static str {
        std::any::type_name::<Self>()
    }

    /// The module as [`Any`](std::any::Any), so that code holding a `&dyn Distillable` found by path
    /// can reach the concrete layer: a configuration file's adapter constructors need the convs of
    /// both endpoints, a checkpoint needs the variables of each layer. `Some(self)` for the layers
    /// of `distill::nn`, the adapters and tch's own layers; `None` (the default) for other modules,
    /// whose children are reached through [`visit_children`](Self::visit_children) instead.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }

    /// Every module of the tree below (and including) `self`, depth first, in declaration order.
    fn named_modules(&self) -> Vec<NamedModule>
    where
        Self: Sized,
    {
        named_modules(self)
    }
}

/// A module that records its own output when armed: a capture point that can be given by reference
/// (`mapping.add(&student.fc, &teacher.fc, …)`).
///
/// Implemented by the layers of `distill::nn`, by `nn::Tap<M>` (which makes any tch module one), by
/// the adapters and by the facade's own layers; a module of one's own becomes one by being wrapped
/// in `nn::Tap<_>`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot record its own output",
    label = "not a capture point",
    note = "wrap it in `distill::nn::Tap<_>`, or select it from its container: `seq.slot(i)`, or `[i]` on a `distill::nn::Seq` in `distill!`"
)]
pub trait Recordable {
    /// The tap that records this module. Capture glue: a module of one's own becomes a capture
    /// point by being wrapped in `distill::nn::Tap<_>`.
    #[doc(hidden)]
    fn tap_id(&self) -> TapId;
}

impl<T: Recordable + ?Sized> Recordable for &T {
    fn tap_id(&self) -> TapId {
        (**self).tap_id()
    }
}

impl<T: Recordable + ?Sized> Recordable for Box<T> {
    fn tap_id(&self) -> TapId {
        (**self).tap_id()
    }
}

/// The name of a child within its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildName {
    /// A named field (or a tuple field, `"0"`).
    Field(&'static str),
    /// A position in a list-like container.
    Index(usize),
}

impl fmt::Display for ChildName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChildName::Field(name) => f.write_str(name),
            ChildName::Index(index) => write!(f, "{index}"),
        }
    }
}

impl ChildName {
    /// Whether the path segment `segment` names this child. An index is written one way only:
    /// decimal digits without sign or leading zeros (`1`, not `+1` or `01`).
    fn matches(&self, segment: &str) -> bool {
        match self {
            ChildName::Field(name) => *name == segment,
            ChildName::Index(index) => parse_index(segment) == Some(*index),
        }
    }
}

/// The index a path segment writes, in its one canonical form (`0`, `7`, `12`; not `+1`, `01`).
pub(crate) fn parse_index(segment: &str) -> Option<usize> {
    let canonical = segment.bytes().all(|b| b.is_ascii_digit()) && (segment == "0" || !segment.starts_with('0'));
    if canonical {
        segment.parse().ok()
    } else {
        None
    }
}

/// One child handed to a [`Distillable::visit_children`] visitor.
#[derive(Clone, Copy)]
pub struct Child<'a> {
    /// Its name in the parent.
    pub name: ChildName,
    /// The tap that records it: its own for a field, its slot's for a container element.
    pub tap: Option<TapId>,
    /// The child itself.
    pub module: &'a dyn Distillable,
}

impl<'a> Child<'a> {
    /// A named field; recorded by the field's own tap, if it has one.
    pub fn field(name: &'static str, module: &'a dyn Distillable) -> Child<'a> {
        Child { name: ChildName::Field(name), tap: module.own_tap(), module }
    }

    /// An element of a list-like container, recorded by the given slot tap (or its own).
    pub fn indexed(index: usize, tap: Option<TapId>, module: &'a dyn Distillable) -> Child<'a> {
        Child { name: ChildName::Index(index), tap: tap.or_else(|| module.own_tap()), module }
    }
}

impl fmt::Debug for Child<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("name", &self.name)
            .field("tap", &self.tap)
            .field("type", &self.module.module_type())
            .finish()
    }
}

/// An entry of [`Distillable::named_modules`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamedModule {
    /// Dotted path from the root (`""` is the root itself).
    pub path: String,
    /// Rust type of the module.
    pub type_name: &'static str,
    /// The tap that records it, if it can be a distillation endpoint.
    pub tap: Option<TapId>,
}

/// Lists `root` and every module below it, depth first.
pub fn named_modules(root: &dyn Distillable) -> Vec<NamedModule> {
    let mut out = vec![NamedModule { path: String::new(), type_name: root.module_type(), tap: root.own_tap() }];
    walk(root, "", &mut out);
    out
}

fn walk(module: &dyn Distillable, prefix: &str, out: &mut Vec<NamedModule>) {
    module.visit_children(&mut |child| {
        let path = join(prefix, child.name);
        out.push(NamedModule { path: path.clone(), type_name: child.module.module_type(), tap: child.tap });
        walk(child.module, &path, out);
    });
}

/// `prefix.name`, or `name` under the root.
pub(crate) fn join(prefix: &str, name: ChildName) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// The existing path `path` most likely means: the same path with its indices written plainly
/// (`features.01` → `features.1`), or else the closest one, if close enough to be a likely typo.
fn suggest(root: &dyn Distillable, path: &str) -> Option<String> {
    let modules = named_modules(root);
    let paths = || modules.iter().map(|m| m.path.as_str()).filter(|p| !p.is_empty());
    let plain = plain_indices(path);
    if paths().any(|existing| existing == plain) {
        return Some(plain);
    }
    closest(path, paths()).map(str::to_owned)
}

/// `path` with every segment that reads as a number written as a plain index: no sign, no leading
/// zeros (`+1` and `01` become `1`).
fn plain_indices(path: &str) -> String {
    let plain = |segment: &str| {
        let digits = segment.strip_prefix('+').unwrap_or(segment);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return segment.to_owned();
        }
        let trimmed = digits.trim_start_matches('0');
        if trimmed.is_empty() { "0" } else { trimmed }.to_owned()
    };
    path.split('.').map(plain).collect::<Vec<_>>().join(".")
}

// ---- blanket impls -------------------------------------------------------------------------------

impl<T: Distillable + ?Sized> Distillable for Box<T> {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        (**self).visit_children(visit)
    }
    fn own_tap(&self) -> Option<TapId> {
        (**self).own_tap()
    }
    fn module_type(&self) -> &'static str {
        (**self).module_type()
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        (**self).as_any()
    }
}

/// `None` has no children; `Some(m)` is `m`.
impl<T: Distillable> Distillable for Option<T> {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        if let Some(module) = self {
            module.visit_children(visit)
        }
    }
    fn own_tap(&self) -> Option<TapId> {
        self.as_ref().and_then(Distillable::own_tap)
    }
    fn module_type(&self) -> &'static str {
        self.as_ref().map_or(std::any::type_name::<Self>(), Distillable::module_type)
    }
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        self.as_ref().and_then(Distillable::as_any)
    }
}

/// Elements are children `0`, `1`, …; each is recorded only if it records itself (a plain `Vec` cannot
/// record its elements' outputs — `distill::nn::Seq` can).
impl<T: Distillable> Distillable for Vec<T> {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        self.as_slice().visit_children(visit)
    }
}

/// Elements are children `0`, `1`, …, as for `Vec<T>`.
impl<T: Distillable, const N: usize> Distillable for [T; N] {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        self.as_slice().visit_children(visit)
    }
}

/// Elements are children `0`, `1`, …, as for `Vec<T>`.
impl<T: Distillable> Distillable for [T] {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        for (index, item) in self.iter().enumerate() {
            visit(Child::indexed(index, None, item));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_index;

    #[test]
    fn plain_indices_drop_signs_and_leading_zeros() {
        assert_eq!(super::plain_indices("features.+1.conv"), "features.1.conv");
        assert_eq!(super::plain_indices("features.007.00"), "features.7.0");
        assert_eq!(super::plain_indices("a.+.b0.-1"), "a.+.b0.-1");
    }

    #[test]
    fn indices_have_one_spelling() {
        assert_eq!(parse_index("0"), Some(0));
        assert_eq!(parse_index("12"), Some(12));
        for other in ["", "+1", "-1", "01", "00", " 1", "1 ", "1.0", "x", "99999999999999999999999"] {
            assert_eq!(parse_index(other), None, "{other:?}");
        }
    }
}
