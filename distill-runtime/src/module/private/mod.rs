//! [`resolve`]: a path looked up in a module tree, as endpoint resolution, the configuration front
//! end and the decoder's importance measurement reach it. Glue reached through `__private`, not
//! public API.

use std::fmt;

use super::{parse_index, suggest, ChildName, Distillable};
use crate::error::{PathError, Result};
use crate::point::{Side, TapId};

/// A module found by [`resolve`]: glue of the endpoint resolution.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct Resolved<'a> {
    /// The module.
    pub module: &'a dyn Distillable,
    /// The tap that records it (`None` for the root, whose output is the model's own).
    pub tap: Option<TapId>,
}

/// Finds the module at the dotted `path` of `root` (`""` is the root): the check `Mapping::add`
/// makes for a path, glue that the configuration front end and the decoder's importance
/// measurement call too.
///
/// Errors name the side and the path: an unknown segment gets the closest existing path as a
/// suggestion, and an index past the end of a container reports the container's length. Indices are
/// written as plain decimal numbers (`features.1`; `features.01` and `features.+1` are unknown).
#[doc(hidden)]
pub fn resolve<'a>(root: &'a dyn Distillable, side: Side, path: &str) -> Result<Resolved<'a>> {
    let mut current = Resolved { module: root, tap: root.own_tap() };
    if path.is_empty() {
        return Ok(current);
    }
    let mut walked = String::new();
    for segment in path.split('.') {
        let mut found = None;
        let mut indexed = 0usize;
        current.module.visit_children(&mut |child| {
            if matches!(child.name, ChildName::Index(_)) {
                indexed += 1;
            }
            if found.is_none() && child.name.matches(segment) {
                found = Some(Resolved { module: child.module, tap: child.tap });
            }
        });
        match found {
            Some(next) => current = next,
            None => {
                if let (Some(index), true) = (parse_index(segment), indexed > 0) {
                    return Err(PathError::IndexOutOfRange { side, container: walked, index, len: indexed }.into());
                }
                return Err(
                    PathError::UnknownPath { side, path: path.to_owned(), suggestion: suggest(root, path) }.into()
                );
            }
        }
        walked = if walked.is_empty() { segment.to_owned() } else { format!("{walked}.{segment}") };
    }
    Ok(current)
}

impl fmt::Debug for Resolved<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolved").field("type", &self.module.module_type()).field("tap", &self.tap).finish()
    }
}
