//! The compile-time check of a string path in `distill!`: [`check_path`] walks a dotted path through
//! a type's [`Schema`] in a `const fn`, so that a wrong path fails the build at the literal.

use super::message::Message;
use crate::schema::{Children, FieldSchema, Schema, StaticSchema};
use crate::suggest::typo_distance;

/// A model whose string paths `distill!` can check: it has a [`StaticSchema`]. Generated code reaches
/// the schema through this trait so that a model without one is one error at the string path.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no static schema, so string paths into it cannot be checked",
    label = "no `StaticSchema`",
    note = "`#[derive(Distillable)]` implements it; for a hand-written `Distillable`, add \
            `impl distill::StaticSchema for {Self} {{}}` (paths into it are then checked by `new()`), or \
            name the module with a typed path (`student.field`)"
)]
pub trait PathSchema {
    /// The model's schema.
    const PATH_SCHEMA: &'static Schema;
}

#[diagnostic::do_not_recommend]
impl<T: StaticSchema + ?Sized> PathSchema for T {
    const PATH_SCHEMA: &'static Schema = &T::SCHEMA;
}

/// A TorchScript module's outputs are known once its file is loaded: string paths into it (its
/// output names) are checked by `new()`, not at compile time.
impl PathSchema for crate::jit::Module {
    const PATH_SCHEMA: &'static Schema = &Schema::OPAQUE;
}

/// A teacher cache stands for a teacher that need not be in memory: its endpoints are known once its
/// manifest is read, so string paths into it are checked by `new()` against the stored endpoints.
impl PathSchema for crate::cache::TeacherCache {
    const PATH_SCHEMA: &'static Schema = &Schema::OPAQUE;
}

/// A token cache stores the teacher's distribution only (the teacher itself, no module), so `new()`
/// rejects every string path into it, naming the path.
impl PathSchema for crate::cache::TokenCache {
    const PATH_SCHEMA: &'static Schema = &Schema::OPAQUE;
}

/// `T`'s schema, for [`check_path`] in a `const` item.
pub const fn schema_of<T: PathSchema + ?Sized>() -> &'static Schema {
    T::PATH_SCHEMA
}

/// The result of [`check_path`]: `None` or the message that explains what is wrong.
#[derive(Clone, Copy, Debug)]
pub struct PathCheck {
    message: Option<Message>,
}

impl PathCheck {
    /// The error message, if the path is wrong.
    pub const fn error(&self) -> Option<&str> {
        match &self.message {
            Some(message) => Some(message.as_str()),
            None => None,
        }
    }
}

/// What walking a path found.
#[derive(Clone, Copy)]
enum Walk {
    /// The path exists; whether its last module is recorded.
    Found { recorded: bool },
    /// A part known only at run time was reached.
    Dynamic,
    /// `segment` is not a child of what precedes it.
    NoChild { segment: usize, parent: &'static Schema },
    /// `segment` is an index past the end of an array of fixed length.
    OutOfRange { segment: usize, len: usize },
    /// The path has an empty segment.
    Malformed,
}

/// Checks the dotted `path` against `schema` (the `side` model's, `side` being `"student"` or
/// `"teacher"`) as far as it is statically known. Numeric segments are indices into lists or tuple
/// fields, written as plain decimal numbers (`1`, not `01` or `+1`). The error message names the
/// path, the failing segment and the existing children.
pub const fn check_path(schema: &'static Schema, side: &str, path: &str) -> PathCheck {
    let bytes = path.as_bytes();
    let message = match walk(schema, bytes, 0, 0) {
        Walk::Found { recorded: true } | Walk::Dynamic => return PathCheck { message: None },
        Walk::Found { recorded: false } => Message::new().push("the ").push(side).push(" module `").push(path).push(
            "` cannot record its output: make it a `distill::nn` layer, wrap it in `distill::nn::Tap`, or hold it in a \
             `distill::nn::Seq`",
        ),
        Walk::Malformed => {
            Message::new().push("`").push(path).push("` is not a dotted module path like `features.2.conv`")
        }
        Walk::OutOfRange { segment, len } => {
            let (prefix, name) = segment_bounds(bytes, segment);
            Message::new()
                .push("the ")
                .push(side)
                .push(" has no module `")
                .push(path)
                .push("`: index ")
                .push_bytes(name)
                .push(" is out of range for ")
                .push_parent(prefix)
                .push(", which has ")
                .push_usize(len)
                .push(" elements")
        }
        Walk::NoChild { segment, parent } => {
            let (prefix, name) = segment_bounds(bytes, segment);
            let message =
                Message::new().push("the ").push(side).push(" has no module `").push(path).push("`: ").push_parent(prefix);
            match parent.children {
                Children::List { .. } => {
                    let message = message.push(" is a list, whose children are indices `0`, `1`, …");
                    match canonical_index(name) {
                        Some(index) => message.push(" (did you mean `").push_usize(index).push("`?)"),
                        None => message,
                    }
                }
                Children::Fields { fields } => {
                    let message = message.push(" has no child `").push_bytes(name).push("`");
                    let message = match closest(fields, name) {
                        Some(best) => message.push(" (did you mean `").push(best).push("`?)"),
                        None => message,
                    };
                    message.push("; its children are ").push_names(fields)
                }
                Children::Variants { .. } => message.push(" has no variant with a child `").push_bytes(name).push("`"),
                Children::None | Children::Dynamic => message.push(" has no children"),
            }
        }
    };
    PathCheck { message: Some(message) }
}

impl Message {
    const fn push_parent(self, prefix: &[u8]) -> Message {
        if prefix.is_empty() {
            self.push("the model")
        } else {
            self.push("`").push_bytes(prefix).push("`")
        }
    }

    const fn push_names(mut self, fields: &[FieldSchema]) -> Message {
        if fields.is_empty() {
            return self.push("none");
        }
        let mut i = 0;
        while i < fields.len() {
            if i > 0 {
                self = self.push(", ");
            }
            self = self.push("`").push(fields[i].name).push("`");
            i += 1;
        }
        self
    }
}

/// Walks `path[start..]`, whose first segment is number `segment`, from `schema`.
const fn walk(mut schema: &'static Schema, path: &[u8], mut start: usize, mut segment: usize) -> Walk {
    loop {
        let end = segment_end(path, start);
        if end == start {
            return Walk::Malformed;
        }
        let name = path.split_at(end).0.split_at(start).1;
        match schema.children {
            Children::None => return Walk::NoChild { segment, parent: schema },
            Children::Dynamic => return Walk::Dynamic,
            Children::Fields { fields } => match find(fields, name) {
                Some(field) => schema = field.schema,
                None => return Walk::NoChild { segment, parent: schema },
            },
            Children::Variants { variants } => return walk_variants(variants, path, start, segment, schema),
            Children::List { item, len, slots_record } => {
                let Some(index) = parse_index(name) else {
                    return Walk::NoChild { segment, parent: schema };
                };
                if let Some(len) = len {
                    if index >= len {
                        return Walk::OutOfRange { segment, len };
                    }
                }
                // The element is recorded by its slot (a `Seq`) or by itself.
                if end == path.len() {
                    return Walk::Found { recorded: slots_record || item.records };
                }
                schema = item;
            }
        }
        if end == path.len() {
            return Walk::Found { recorded: schema.records };
        }
        start = end + 1;
        segment += 1;
    }
}

/// An enum: the path is fine if it is fine in some variant; otherwise the error that got furthest.
const fn walk_variants(
    variants: &'static [&'static [FieldSchema]],
    path: &[u8],
    start: usize,
    segment: usize,
    parent: &'static Schema,
) -> Walk {
    let end = segment_end(path, start);
    let name = path.split_at(end).0.split_at(start).1;
    let mut best = Walk::NoChild { segment, parent };
    let mut i = 0;
    while i < variants.len() {
        let walked = match find(variants[i], name) {
            None => Walk::NoChild { segment, parent },
            Some(field) if end == path.len() => Walk::Found { recorded: field.schema.records },
            Some(field) => walk(field.schema, path, end + 1, segment + 1),
        };
        match walked {
            Walk::Found { recorded: true } | Walk::Dynamic | Walk::Malformed => return walked,
            Walk::Found { recorded: false } => best = walked,
            Walk::NoChild { segment: s, .. } | Walk::OutOfRange { segment: s, .. } => {
                if let Walk::NoChild { segment: b, .. } | Walk::OutOfRange { segment: b, .. } = best {
                    if s > b {
                        best = walked;
                    }
                }
            }
        }
        i += 1;
    }
    best
}

const fn segment_end(path: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < path.len() && path[end] != b'.' {
        end += 1;
    }
    end
}

/// The path before segment `segment` (without its trailing dot) and the segment itself.
const fn segment_bounds(path: &[u8], segment: usize) -> (&[u8], &[u8]) {
    let mut start = 0;
    let mut n = 0;
    while n < segment {
        start = segment_end(path, start) + 1;
        n += 1;
    }
    let end = segment_end(path, start);
    let prefix = if start == 0 { path.split_at(0).0 } else { path.split_at(start - 1).0 };
    (prefix, path.split_at(end).0.split_at(start).1)
}

const fn find(fields: &'static [FieldSchema], name: &[u8]) -> Option<&'static FieldSchema> {
    let mut i = 0;
    while i < fields.len() {
        if bytes_eq(fields[i].name.as_bytes(), name) {
            return Some(&fields[i]);
        }
        i += 1;
    }
    None
}

const fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The index `name` writes in its one canonical form (`0`, `12`; not `01` or `+1`).
const fn parse_index(name: &[u8]) -> Option<usize> {
    if name.len() > 1 && name[0] == b'0' {
        return None;
    }
    parse_digits(name)
}

/// The index a segment probably means when it is written another way: `01` and `+1` mean `1`.
const fn canonical_index(name: &[u8]) -> Option<usize> {
    match name {
        [b'+', digits @ ..] => parse_digits(digits),
        _ => parse_digits(name),
    }
}

/// Decimal digits only, at least one; `None` on overflow.
const fn parse_digits(digits: &[u8]) -> Option<usize> {
    if digits.is_empty() {
        return None;
    }
    let mut value: usize = 0;
    let mut i = 0;
    while i < digits.len() {
        if !digits[i].is_ascii_digit() {
            return None;
        }
        value = match value.checked_mul(10) {
            Some(v) => match v.checked_add((digits[i] - b'0') as usize) {
                Some(v) => v,
                None => return None,
            },
            None => return None,
        };
        i += 1;
    }
    Some(value)
}

/// The field name closest to `name`, if close enough to be a likely typo.
const fn closest(fields: &'static [FieldSchema], name: &[u8]) -> Option<&'static str> {
    let mut best: Option<&'static str> = None;
    let mut best_distance = usize::MAX;
    let mut i = 0;
    while i < fields.len() {
        if let Some(distance) = typo_distance(name, fields[i].name.as_bytes()) {
            if distance < best_distance {
                best = Some(fields[i].name);
                best_distance = distance;
            }
        }
        i += 1;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONV: Schema = Schema::leaf(true);
    const PLAIN: Schema = Schema::leaf(false);
    const BLOCK: Schema = Schema {
        records: false,
        children: Children::Fields {
            fields: &[FieldSchema { name: "conv", schema: &CONV }, FieldSchema { name: "bn", schema: &CONV }],
        },
    };
    const SEQ: Schema =
        Schema { records: true, children: Children::List { item: &BLOCK, len: None, slots_record: true } };
    const VEC: Schema =
        Schema { records: false, children: Children::List { item: &BLOCK, len: Some(3), slots_record: false } };
    const DYN: Schema =
        Schema { records: true, children: Children::List { item: &Schema::OPAQUE, len: None, slots_record: true } };
    const NET: Schema = Schema {
        records: false,
        children: Children::Fields {
            fields: &[
                FieldSchema { name: "features", schema: &SEQ },
                FieldSchema { name: "blocks", schema: &VEC },
                FieldSchema { name: "layers", schema: &DYN },
                FieldSchema { name: "plain", schema: &PLAIN },
            ],
        },
    };

    fn check(path: &str) -> Option<String> {
        check_path(&NET, "student", path).error().map(str::to_owned)
    }

    #[test]
    fn accepts_recorded_paths() {
        for ok in ["features", "features.0", "features.12.conv", "blocks.2.bn", "layers.7", "layers.0.anything.9"] {
            assert_eq!(check(ok), None, "{ok}");
        }
    }

    #[test]
    fn explains_wrong_paths() {
        let e = check("features.0.cnv").unwrap();
        assert_eq!(
            e,
            "the student has no module `features.0.cnv`: `features.0` has no child `cnv` (did you mean `conv`?); \
             its children are `conv`, `bn`"
        );
        let e = check("feature").unwrap();
        assert!(e.contains("the model has no child `feature` (did you mean `features`?)"), "{e}");
        assert!(check("features.x").unwrap().contains("`features` is a list"));
        let e = check("blocks.3.conv").unwrap();
        assert!(e.contains("index 3 is out of range for `blocks`, which has 3 elements"), "{e}");
        assert!(check("blocks.1").unwrap().contains("cannot record its output"));
        assert!(check("plain").unwrap().contains("cannot record its output"));
        assert!(check("plain.x").unwrap().contains("`plain` has no children"));
        assert!(check("features..conv").unwrap().contains("is not a dotted module path"));
        assert!(check("features.").unwrap().contains("is not a dotted module path"));
        let e = check("features.01.conv").unwrap();
        assert!(e.contains("`features` is a list, whose children are indices `0`, `1`, … (did you mean `1`?)"), "{e}");
        let e = check("features.+1.conv").unwrap();
        assert!(e.contains("(did you mean `1`?)"), "{e}");
        assert!(check("features.x").unwrap().ends_with("indices `0`, `1`, …"));
        let e = check("blocks.007").unwrap();
        assert!(e.contains("(did you mean `7`?)"), "{e}");
    }

    #[test]
    fn enums_accept_any_variant() {
        const E: Schema = Schema {
            records: false,
            children: Children::Variants {
                variants: &[&[FieldSchema { name: "a", schema: &CONV }], &[FieldSchema { name: "b", schema: &BLOCK }]],
            },
        };
        assert!(check_path(&E, "teacher", "a").error().is_none());
        assert!(check_path(&E, "teacher", "b.conv").error().is_none());
        let e = check_path(&E, "teacher", "b.cnv").error().unwrap().to_owned();
        assert!(e.contains("`b` has no child `cnv`"), "{e}");
        let e = check_path(&E, "teacher", "c").error().unwrap().to_owned();
        assert!(e.contains("has no variant with a child `c`"), "{e}");
    }

    #[test]
    fn long_messages_are_cut_cleanly() {
        let long = "x".repeat(1000);
        let e = check(&long).unwrap();
        assert!(e.ends_with('…'));
        assert!(e.len() <= super::super::message::MESSAGE_CAPACITY);
    }
}
