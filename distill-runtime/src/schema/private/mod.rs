//! The [`Schema`] of a module type: what `#[derive(Distillable)]` and the layers state about their
//! trees, and what generated path checks read. Glue reached through `__private`, not public API.

/// The statically known shape of a module type's tree.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// Whether the module records its own output (a `distill::nn` layer, a `Seq`, a `Tap`).
    pub records: bool,
    /// Its children.
    pub children: Children,
}

/// The children of a [`Schema`].
#[derive(Clone, Copy, Debug)]
pub enum Children {
    /// A leaf: no children.
    None,
    /// Named fields (tuple fields are named `0`, `1`, …), in declaration order.
    Fields {
        /// The fields.
        fields: &'static [FieldSchema],
    },
    /// An enum: the children are those of the active variant, one of these.
    Variants {
        /// The fields of each variant.
        variants: &'static [&'static [FieldSchema]],
    },
    /// Elements `0`, `1`, … of one type.
    List {
        /// The schema of every element.
        item: &'static Schema,
        /// The length, when the type fixes it (arrays).
        len: Option<usize>,
        /// Whether the container records each element's call (`Seq`, `Sequential`; not `Vec`).
        slots_record: bool,
    },
    /// Known only at run time (`dyn Layer`, a hand-written `Distillable`).
    Dynamic,
}

/// A named child of a [`Schema`].
#[derive(Clone, Copy, Debug)]
pub struct FieldSchema {
    /// Its name in paths.
    pub name: &'static str,
    /// Its type's schema.
    pub schema: &'static Schema,
}

impl Schema {
    /// Nothing is known: paths into it are checked at run time only.
    pub const OPAQUE: Schema = Schema { records: false, children: Children::Dynamic };

    /// A module without children.
    pub const fn leaf(records: bool) -> Schema {
        Schema { records, children: Children::None }
    }

    /// The same tree, recording its own output (what `Tap<M>` does to `M`).
    pub(crate) const fn recording(self) -> Schema {
        Schema { records: true, children: self.children }
    }
}
