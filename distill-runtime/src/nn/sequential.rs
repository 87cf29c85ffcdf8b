//! `Sequential`: a heterogeneous sequence of layers and closures, like tch's `SequentialT`.

use std::fmt;
use std::ops::Index;

use tch::nn::ModuleT;
use tch::Tensor;

use super::chain::forward_chain;
use super::Element;
use crate::module::{Child, Distillable, Recordable};
use crate::nn::capture::TapId;
use crate::point::Slot;
use crate::schema::{Children, Schema, StaticSchema};

/// A module that can be an element of a [`Sequential`]: any `ModuleT` that is `Distillable`.
pub trait Layer: ModuleT + Distillable {}

impl<M: ModuleT + Distillable> Layer for M {}

/// A sequence of layers of any types, applied in order; each element is a distillation point.
///
/// Built like tch's: `nn::seq().add(nn::conv2d(p / "0", 1, 8, 3, cfg)).add_fn(|xs| xs.relu())`.
/// Element types are erased, so `seq[i]` is a `dyn Layer`: distill into one of its fields by string
/// path (`"layers.0.conv"`), or use a typed [`Seq`](super::Seq) instead.
pub struct Sequential {
    layers: Vec<Box<dyn Layer>>,
    taps: Vec<TapId>,
    tap: TapId,
}

/// An empty [`Sequential`].
pub fn seq() -> Sequential {
    Sequential { layers: Vec::new(), taps: Vec::new(), tap: TapId::fresh() }
}

impl Sequential {
    /// Appends a layer.
    #[allow(clippy::should_implement_trait)]
    pub fn add<M: Layer + 'static>(mut self, layer: M) -> Self {
        self.layers.push(Box::new(layer));
        self.taps.push(TapId::fresh());
        self
    }

    /// Appends a closure as a layer (ignores the train flag).
    pub fn add_fn<F>(self, f: F) -> Self
    where
        F: Fn(&Tensor) -> Tensor + Send + 'static,
    {
        self.add_fn_t(move |xs, _train| f(xs))
    }

    /// Appends a closure that takes the train flag as a layer.
    pub fn add_fn_t<F>(self, f: F) -> Self
    where
        F: Fn(&Tensor, bool) -> Tensor + Send + 'static,
    {
        self.add(Func(Box::new(f)))
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The element at `index`, if any.
    pub fn get(&self, index: usize) -> Option<&dyn Layer> {
        self.layers.get(index).map(|layer| &**layer)
    }

    /// Runs element `index` on `xs`, recorded as this sequence's own forward would record it; see
    /// [`Seq::forward_at`](super::Seq::forward_at).
    ///
    /// # Panics
    /// If `index` is out of range; [`element`](Self::element) returns `None` instead.
    pub fn forward_at(&self, index: usize, xs: &Tensor, train: bool) -> Tensor {
        match self.element(index) {
            Some(element) => element.forward_t(xs, train),
            None => panic!("Sequential::forward_at: index {index} is out of range for {} elements", self.len()),
        }
    }

    /// Element `index` as a call site that records its calls, if in range.
    pub fn element(&self, index: usize) -> Option<Element<'_, dyn Layer>> {
        Some(Element::new(&**self.layers.get(index)?, *self.taps.get(index)?, index))
    }

    /// Every element as a call site that records its calls, in order.
    pub fn elements(&self) -> impl ExactSizeIterator<Item = Element<'_, dyn Layer>> + '_ {
        self.layers.iter().zip(&self.taps).enumerate().map(|(index, (layer, tap))| Element::new(&**layer, *tap, index))
    }

    /// The distillation point of element `index`; see [`Seq::slot`](super::Seq::slot).
    pub fn slot(&self, index: usize) -> Slot {
        Slot { container: self.tap, index, len: self.len(), tap: self.taps.get(index).copied() }
    }
}

impl Default for Sequential {
    fn default() -> Self {
        seq()
    }
}

impl fmt::Debug for Sequential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.layers).finish()
    }
}

impl Index<usize> for Sequential {
    type Output = dyn Layer;
    fn index(&self, index: usize) -> &(dyn Layer + 'static) {
        &*self.layers[index]
    }
}

impl ModuleT for Sequential {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        let layers = self.layers.iter().map(|layer| &**layer as &dyn Layer);
        forward_chain(self.tap, layers.zip(self.taps.iter().copied()), xs, train)
    }
}

impl Distillable for Sequential {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(Child<'a>)) {
        for (index, (layer, tap)) in self.layers.iter().zip(&self.taps).enumerate() {
            visit(Child::indexed(index, Some(*tap), &**layer));
        }
    }
    fn own_tap(&self) -> Option<TapId> {
        Some(self.tap)
    }
}

/// Elements are recorded by their slots; what is inside them is known at run time only.
impl StaticSchema for Sequential {
    const SCHEMA: Schema =
        Schema { records: true, children: Children::List { item: &Schema::OPAQUE, len: None, slots_record: true } };
}

/// Known only at run time.
impl StaticSchema for dyn Layer {}

impl Recordable for Sequential {
    fn tap_id(&self) -> TapId {
        self.tap
    }
}

/// A closure element of a [`Sequential`]; recorded by its slot.
struct Func(Box<FuncT>);

type FuncT = dyn Fn(&Tensor, bool) -> Tensor + Send;

impl fmt::Debug for Func {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Func")
    }
}

impl ModuleT for Func {
    fn forward_t(&self, xs: &Tensor, train: bool) -> Tensor {
        (self.0)(xs, train)
    }
}

impl Distillable for Func {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
    fn module_type(&self) -> &'static str {
        "closure"
    }
}
