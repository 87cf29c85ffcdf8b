//! What is known about a module tree before any model exists: the [`Schema`] of a type.
//!
//! `#[derive(Distillable)]` implements [`StaticSchema`] from the field types, and every `distill::nn`
//! type, tch leaf and blanket container implements it too, so that `distill!` can check a string path
//! such as `"features.2.bn"` at compile time with [`check_path`] (a `const fn`), down to the first part
//! that only exists at run time (the elements of a `Sequential`, a `dyn Layer`): that remainder is
//! checked when the distillation is built.

use crate::module::Distillable;

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
    pub const fn recording(self) -> Schema {
        Schema { records: true, children: self.children }
    }
}

/// A type whose module tree is (partly) known at compile time.
///
/// Derived by `#[derive(Distillable)]`. A hand-written `Distillable` implements it in one line,
/// `impl StaticSchema for MyModule {}`, which makes paths into it checked at run time only.
#[diagnostic::on_unimplemented(
    message = "`{Self}` has no static schema, so string paths into it cannot be checked",
    label = "no `StaticSchema`",
    note = "`#[derive(Distillable)]` implements it; for a hand-written `Distillable`, add `impl distill::schema::StaticSchema for {Self} {{}}`"
)]
pub trait StaticSchema {
    /// The schema; the default says nothing is known.
    const SCHEMA: Schema = Schema::OPAQUE;
}

/// `schema_of::<T>()` is `T::SCHEMA`, usable in `const` contexts with the bound checked at the caller.
pub const fn schema_of<T: StaticSchema + ?Sized>() -> &'static Schema {
    &T::SCHEMA
}

// ---- the path check ----------------------------------------------------------------------------

/// Capacity of a [`PathCheck`] message.
const MESSAGE_CAPACITY: usize = 480;

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

/// A message built in a `const fn` (a fixed buffer; an overlong message ends with `…`).
#[derive(Clone, Copy, Debug)]
struct Message {
    buf: [u8; MESSAGE_CAPACITY],
    len: usize,
    full: bool,
}

impl Message {
    const fn new() -> Message {
        Message { buf: [0; MESSAGE_CAPACITY], len: 0, full: false }
    }

    /// Appends `s` whole, or marks the message full (never cuts inside a string: stays UTF-8).
    const fn push(mut self, s: &str) -> Message {
        self = self.push_bytes(s.as_bytes());
        self
    }

    const fn push_bytes(mut self, bytes: &[u8]) -> Message {
        const ELLIPSIS: &[u8] = "…".as_bytes();
        if self.full {
            return self;
        }
        if self.len + bytes.len() + ELLIPSIS.len() > MESSAGE_CAPACITY {
            let mut i = 0;
            while i < ELLIPSIS.len() {
                self.buf[self.len] = ELLIPSIS[i];
                self.len += 1;
                i += 1;
            }
            self.full = true;
            return self;
        }
        let mut i = 0;
        while i < bytes.len() {
            self.buf[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }

    const fn push_usize(self, mut n: usize) -> Message {
        let mut digits = [0u8; 20];
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push_bytes(digits.split_at(start).1)
    }

    const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.buf.split_at(self.len).0) {
            Ok(s) => s,
            Err(_) => "invalid path",
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
/// fields. The error message names the path, the failing segment and the existing children.
pub const fn check_path(schema: &'static Schema, side: &str, path: &str) -> PathCheck {
    let bytes = path.as_bytes();
    let walk = walk(schema, bytes, 0, 0);
    let message = match walk {
        Walk::Found { recorded: true } | Walk::Dynamic => return PathCheck { message: None },
        Walk::Found { recorded: false } => Message::new().push("the ").push(side).push(" module `").push(path).push(
            "` cannot record its output: make it a `distill::nn` layer, wrap it in \
                 `distill::nn::Tap`, or hold it in a `distill::nn::Seq`",
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
            let message = Message::new()
                .push("the ")
                .push(side)
                .push(" has no module `")
                .push(path)
                .push("`: ")
                .push_parent(prefix);
            match parent.children {
                Children::List { .. } => message.push(" is a list, whose children are indices `0`, `1`, …"),
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
        let recorded;
        match schema.children {
            Children::None => return Walk::NoChild { segment, parent: schema },
            Children::Dynamic => return Walk::Dynamic,
            Children::Fields { fields } => match find(fields, name) {
                Some(field) => {
                    schema = field.schema;
                    recorded = schema.records;
                }
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
                schema = item;
                recorded = slots_record || item.records;
            }
        }
        if end == path.len() {
            return Walk::Found { recorded };
        }
        start = end + 1;
        segment += 1;
        if start == path.len() {
            return Walk::Malformed;
        }
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
    let mut best = Walk::NoChild { segment, parent };
    let mut i = 0;
    while i < variants.len() {
        let fields = variants[i];
        let walked = match find(fields, path.split_at(segment_end(path, start)).0.split_at(start).1) {
            None => Walk::NoChild { segment, parent },
            Some(_) => {
                // Walk this variant as a struct of its fields.
                let variant = VariantSchema { fields };
                walk_fields(variant, path, start, segment)
            }
        };
        match walked {
            Walk::Found { recorded: true } | Walk::Dynamic => return walked,
            Walk::Found { recorded: false } => best = walked,
            Walk::NoChild { segment: s, .. } | Walk::OutOfRange { segment: s, .. } => {
                if let Walk::NoChild { segment: b, .. } | Walk::OutOfRange { segment: b, .. } = best {
                    if s > b {
                        best = walked;
                    }
                }
            }
            Walk::Malformed => return walked,
        }
        i += 1;
    }
    best
}

#[derive(Clone, Copy)]
struct VariantSchema {
    fields: &'static [FieldSchema],
}

/// Walks one variant: its first segment names a field, the rest continues from that field's schema.
const fn walk_fields(variant: VariantSchema, path: &[u8], start: usize, segment: usize) -> Walk {
    let end = segment_end(path, start);
    let Some(field) = find(variant.fields, path.split_at(end).0.split_at(start).1) else {
        return Walk::Malformed;
    };
    if end == path.len() {
        return Walk::Found { recorded: field.schema.records };
    }
    if end + 1 == path.len() {
        return Walk::Malformed;
    }
    walk(field.schema, path, end + 1, segment + 1)
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

const fn parse_index(name: &[u8]) -> Option<usize> {
    if name.is_empty() || name.len() > 18 || (name.len() > 1 && name[0] == b'0') {
        return None;
    }
    let mut value = 0usize;
    let mut i = 0;
    while i < name.len() {
        if !name[i].is_ascii_digit() {
            return None;
        }
        value = value * 10 + (name[i] - b'0') as usize;
        i += 1;
    }
    Some(value)
}

/// The field name closest to `name` by edit distance, if close enough to be a likely typo.
const fn closest(fields: &'static [FieldSchema], name: &[u8]) -> Option<&'static str> {
    let threshold = if name.len() / 3 > 2 { name.len() / 3 } else { 2 };
    let mut best: Option<&'static str> = None;
    let mut best_distance = usize::MAX;
    let mut i = 0;
    while i < fields.len() {
        if let Some(d) = edit_distance(fields[i].name.as_bytes(), name) {
            if d <= threshold && d < best_distance {
                best = Some(fields[i].name);
                best_distance = d;
            }
        }
        i += 1;
    }
    best
}

/// Levenshtein distance over bytes, for names of at most 64 bytes.
const fn edit_distance(a: &[u8], b: &[u8]) -> Option<usize> {
    const MAX: usize = 64;
    if a.len() > MAX || b.len() > MAX {
        return None;
    }
    let mut row = [0usize; MAX + 1];
    let mut j = 0;
    while j <= b.len() {
        row[j] = j;
        j += 1;
    }
    let mut i = 0;
    while i < a.len() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        let mut j = 0;
        while j < b.len() {
            let substitute = diagonal + if a[i] == b[j] { 0 } else { 1 };
            diagonal = row[j + 1];
            let mut best = substitute;
            if row[j] + 1 < best {
                best = row[j] + 1;
            }
            if row[j + 1] + 1 < best {
                best = row[j + 1] + 1;
            }
            row[j + 1] = best;
            j += 1;
        }
        i += 1;
    }
    Some(row[b.len()])
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

/// Known only at run time.
impl StaticSchema for dyn crate::nn::Layer {}

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
        assert!(check("features.01").unwrap().contains("is a list"));
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
        assert!(e.len() <= MESSAGE_CAPACITY);
    }
}
