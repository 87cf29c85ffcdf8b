//! `Seq<T>`: a typed, homogeneous sequence of modules whose every element is a distillation point.

use std::ops::{Index, IndexMut};

use tch::nn::ModuleT;
use tch::Tensor;

use super::chain::forward_chain;
use super::Element;
use crate::module::{Child, Distillable, Recordable};
use crate::nn::capture::TapId;
use crate::point::Slot;
use crate::schema::{Children, Schema, StaticSchema};

/// A sequence of modules of one type, applied in order.
///
/// Unlike a `Vec<T>`, a `Seq` records the call of each element: `features.3` is a distillation point
/// even when `T` is a user struct that records nothing itself. The whole sequence is one too.
/// `seq[i]` is the `i`-th module (typed), `seq.slot(i)` the `i`-th distillation point.
///
/// Elements are recorded when the `Seq` runs them: through its own `forward_t`, or, in a forward that
/// walks the elements itself (extra arguments, a mask, early exit), through
/// [`forward_at`](Self::forward_at) and [`elements`](Self::elements). Calling `seq[i]` or the items of
/// `seq.iter()` directly runs the module unrecorded, and a pair on that element reports that it did
/// not run.
#[derive(Debug)]
pub struct Seq<T> {
    items: Vec<T>,
    taps: Vec<TapId>,
    tap: TapId,
}

impl<T> Seq<T> {
    /// An empty sequence.
    pub fn new() -> Self {
        Seq { items: Vec::new(), taps: Vec::new(), tap: TapId::fresh() }
    }

    /// Appends a module.
    pub fn push(&mut self, item: T) {
        self.items.push(item);
        self.taps.push(TapId::fresh());
    }

    /// Appends a module, builder style (like tch's `Sequential::add`).
    #[allow(clippy::should_implement_trait)]
    pub fn add(mut self, item: T) -> Self {
        self.push(item);
        self
    }

    /// Number of modules.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are no modules.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The module at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&T> {
        self.items.get(index)
    }

    /// The module at `index`, mutably, if any.
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.items.get_mut(index)
    }

    /// The modules, in order. Calling them directly records nothing: see [`elements`](Self::elements).
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// Runs element `index` on `xs`, recorded as this sequence's own forward would record it.
    ///
    /// # Panics
    /// If `index` is out of range, like `seq[index]`; [`element`](Self::element) returns `None`
    /// instead.
    pub fn forward_at(&self, index: usize, xs: &Tensor, train: bool) -> Tensor
    where
        T: ModuleT,
    {
        match self.element(index) {
            Some(element) => element.forward_t(xs, train),
            None => panic!("Seq::forward_at: index {index} is out of range for a Seq of {} elements", self.len()),
        }
    }

    /// Element `index` as a call site that records its calls ([`Element::forward_t`],
    /// [`Element::call`] for extra arguments), if in range.
    pub fn element(&self, index: usize) -> Option<Element<'_, T>> {
        Some(Element::new(self.items.get(index)?, *self.taps.get(index)?, index))
    }

    /// Every element as a call site that records its calls, in order:
    /// `for block in self.blocks.elements() { xs = block.forward_t(&xs, train) }`.
    pub fn elements(&self) -> impl ExactSizeIterator<Item = Element<'_, T>> + '_ {
        self.items.iter().zip(&self.taps).enumerate().map(|(index, (item, tap))| Element::new(item, *tap, index))
    }

    /// The distillation point of element `index`, usable as a `Mapping` endpoint. An index past the
    /// end is reported by `Mapping::add` as `PathError::IndexOutOfRange`.
    pub fn slot(&self, index: usize) -> Slot {
        Slot { container: self.tap, index, len: self.len(), tap: self.taps.get(index).copied() }
    }
}

impl<T> Default for Seq<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> FromIterator<T> for Seq<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut seq = Seq::new();
        iter.into_iter().for_each(|item| seq.push(item));
        seq
    }
}

impl<T> From<Vec<T>> for Seq<T> {
    fn from(items: Vec<T>) -> Self {
        items.into_iter().collect()
    }
}

impl<T> Index<usize> for Seq<T> {
    type Output = T;
    fn index(&self, index: usize) -> &T {
        &self.items[index]
    }
}

impl<T> IndexMut<usize> for Seq<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        &mut self.items[index]
    }
}

impl<'a, T> IntoIterator for &'a Seq<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.items.iter()
    }
}

impl<T: ModuleT> ModuleT for Seq<T> {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        forward_chain(self.tap, self.items.iter().zip(self.taps.iter().copied()), xs, train)
    }
}

impl<T: Distillable> Distillable for Seq<T> {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        for (index, (item, tap)) in self.items.iter().zip(&self.taps).enumerate() {
            visit(Child::indexed(index, Some(*tap), item));
        }
    }
    fn own_tap(&self) -> Option<TapId> {
        Some(self.tap)
    }
}

/// Elements `0`, `1`, … of `T`'s schema, each recorded by its slot.
impl<T: StaticSchema> StaticSchema for Seq<T> {
    const SCHEMA: Schema =
        Schema { records: true, children: Children::List { item: &T::SCHEMA, len: None, slots_record: true } };
}

impl<T> Recordable for Seq<T> {
    fn tap_id(&self) -> TapId {
        self.tap
    }
}
