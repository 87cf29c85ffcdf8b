//! Looking endpoints up in a model: [`Resolver`] checks an [`Endpoint`] against one side's model and
//! turns it into a [`ResolvedEndpoint`] for the capture engine.
//!
//! Endpoints given by reference or by slot carry a tap id, which only a walk of the model can turn
//! into a path; paths can name any module. So the resolver walks the model once, on first need, and
//! indexes every module by path and by tap: adding thousands of pairs stays linear in their number.

use std::cell::OnceCell;
use std::collections::HashMap;

use crate::endpoint::{Endpoint, ResolvedEndpoint, Target};
use crate::error::{PathError, Result};
use crate::module::{join, resolve, Distillable};
use crate::point::{Side, TapId};

/// Resolves endpoints against one model of a distillation. Used by `Mapping` and by the `new()` that
/// `distill!` generates.
pub(crate) struct Resolver<'m> {
    model: &'m dyn Distillable,
    side: Side,
    index: OnceCell<Index<'m>>,
}

/// Every module of a model, by path and by the taps that record it.
struct Index<'m> {
    by_path: HashMap<String, Located<'m>>,
    by_tap: HashMap<TapId, String>,
}

/// A module of the tree and the tap that records it (its own, or its container's slot).
#[derive(Clone, Copy)]
struct Located<'m> {
    module: &'m dyn Distillable,
    tap: Option<TapId>,
}

impl<'m> Resolver<'m> {
    /// A resolver for `model`, the `side` model of a distillation. Nothing is walked yet.
    pub(crate) fn new(model: &'m dyn Distillable, side: Side) -> Self {
        Resolver { model, side, index: OnceCell::new() }
    }

    /// Checks `endpoint` against the model and finds what to record: the path exists and records, the
    /// module given by reference or the container of the slot is part of this model, the slot's index
    /// is in range.
    pub(crate) fn resolve(&self, endpoint: &Endpoint<'_>) -> Result<ResolvedEndpoint> {
        let side = self.side;
        let (path, tap, container) = match &endpoint.target {
            Target::Path(path) if path.is_empty() => (String::new(), None, None),
            Target::Path(path) => {
                let found = match self.index().by_path.get(path.as_ref()) {
                    Some(found) => *found,
                    // Not a canonical path of the model: the walk says precisely why.
                    None => {
                        let found = resolve(self.model, side, path)?;
                        Located { module: found.module, tap: found.tap }
                    }
                };
                let tap = found.tap.ok_or_else(|| PathError::NotRecordable {
                    side,
                    path: path.to_string(),
                    type_name: found.module.module_type(),
                })?;
                // A tap other than the module's own is its container's slot.
                let container = (Some(tap) != found.module.own_tap()).then(|| parent(path).to_owned());
                (path.to_string(), Some(tap), container)
            }
            Target::Tap { tap, type_name } => {
                let path = self.path_of(*tap).ok_or(PathError::NotInModel { side, type_name })?;
                (path.to_owned(), Some(*tap), None)
            }
            Target::Slot(slot) => {
                let container =
                    self.path_of(slot.container).ok_or(PathError::NotInModel { side, type_name: "container slot" })?;
                let tap = slot.tap.ok_or_else(|| PathError::IndexOutOfRange {
                    side,
                    container: container.to_owned(),
                    index: slot.index,
                    len: slot.len,
                })?;
                let path =
                    if container.is_empty() { slot.index.to_string() } else { format!("{container}.{}", slot.index) };
                (path, Some(tap), Some(container.to_owned()))
            }
        };
        Ok(ResolvedEndpoint {
            side,
            path,
            tap,
            container,
            output: None,
            port: endpoint.port,
            all_calls: endpoint.all_calls,
        })
    }

    /// Frees the index; the next resolution walks the model again.
    pub(crate) fn forget_index(&mut self) {
        self.index.take();
    }

    /// The path of the module recorded by `tap` (its own tap, or the slot of the container holding
    /// it), if it is part of the model.
    fn path_of(&self, tap: TapId) -> Option<&str> {
        self.index().by_tap.get(&tap).map(String::as_str)
    }

    fn index(&self) -> &Index<'m> {
        self.index.get_or_init(|| Index::of(self.model))
    }
}

impl std::fmt::Debug for Resolver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("model", &self.model.module_type())
            .field("side", &self.side)
            .field("indexed", &self.index.get().is_some())
            .finish()
    }
}

impl<'m> Index<'m> {
    fn of(root: &'m dyn Distillable) -> Index<'m> {
        let mut index = Index { by_path: HashMap::new(), by_tap: HashMap::new() };
        index.add(String::new(), Located { module: root, tap: root.own_tap() });
        index.walk(root, "");
        index
    }

    fn walk(&mut self, module: &'m dyn Distillable, prefix: &str) {
        module.visit_children(&mut |child| {
            let path = join(prefix, child.name);
            self.add(path.clone(), Located { module: child.module, tap: child.tap });
            self.walk(child.module, &path);
        });
    }

    /// Indexes `located` under `path` and under both its recording tap and its own (which differ for
    /// an element of a `Seq`: the slot records every call through the container, the element's own
    /// tap — a `Seq<nn::Linear>`'s layer given by reference — every call of the layer).
    fn add(&mut self, path: String, located: Located<'m>) {
        for tap in [located.tap, located.module.own_tap()].into_iter().flatten() {
            self.by_tap.entry(tap).or_insert_with(|| path.clone());
        }
        self.by_path.entry(path).or_insert(located);
    }
}

/// `features` for `features.3`; `""` for a child of the root.
fn parent(path: &str) -> &str {
    path.rsplit_once('.').map_or("", |(parent, _)| parent)
}
