//! Checks that need no types: sides, string path syntax, adapter placement, labels, options.
//! Everything typed (fields, indices, recordability, adapter argument types, string paths against
//! the models' schemas) is left to rustc by the expansion.

use proc_macro2::Span;
use syn::{Expr, Ident, Lit, Member};

use super::ast::{Adapter, Input, OptionKind, Pair, Segment, Side, Target, TypedPath};
use super::teachers;
use crate::ctxt::Ctxt;
use crate::util::{make_ident, not_a_field_name, unraw};

/// What the checks found: one label per pair (a placeholder where the label is in error), and the
/// index of each pair's teacher (`0` where it is in error).
pub struct Checked {
    pub labels: Vec<Ident>,
    pub teacher_of: Vec<usize>,
}

/// The labels that would collide with the output's own fields: `student_output` and each
/// teacher's output (`teacher_output`, or `big_output` for a teacher named `big`).
pub fn reserved_labels(input: &Input) -> Vec<String> {
    let mut reserved = vec!["student_output".to_owned()];
    reserved.extend(input.teachers.iter().map(|teacher| format!("{}_output", unraw(&teacher.name))));
    reserved
}

/// Checks `input`.
pub fn check(cx: &Ctxt, input: &Input) -> Checked {
    if !input.has_pairs {
        cx.error_at(
            input.body_span,
            "a distillation needs at least one pair: `label: student.path => teacher.path with Mse;`",
        );
    }
    if input.several {
        teachers::check_declarations(cx, input);
    }
    let mut teacher_of = Vec::with_capacity(input.pairs.len());
    for pair in &input.pairs {
        check_endpoint(cx, input, pair, Side::Student);
        check_endpoint(cx, input, pair, Side::Teacher);
        check_options(cx, pair);
        teacher_of.push(if input.several { teachers::teacher_of(input, pair) } else { Some(0) });
    }
    if input.several && teacher_of.iter().all(Option::is_some) {
        teachers::check_every_teacher_has_pairs(cx, input, &teacher_of);
    }
    Checked { labels: labels(cx, input), teacher_of: teacher_of.into_iter().map(|index| index.unwrap_or(0)).collect() }
}

fn check_endpoint(cx: &Ctxt, input: &Input, pair: &Pair, side: Side) {
    let endpoint = pair.endpoint(side);
    if let Some(adapter) = &endpoint.adapter {
        if !check_adapter(cx, input, adapter) {
            return;
        }
    }
    if let Target::Typed(path) = &endpoint.target {
        check_segments(cx, path);
    }
    if input.several {
        teachers::check_root(cx, input, endpoint, side);
        if let Target::Str(lit) = &endpoint.target {
            check_string_path(cx, lit);
        }
        return;
    }
    match &endpoint.target {
        Target::Typed(path) => check_root(cx, path, side),
        Target::Str(lit) => {
            if let Some(named_on) = &endpoint.named_on {
                check_side_name(cx, named_on, side);
            }
            check_string_path(cx, lit)
        }
    }
}

/// Checks an adapter on `side`; `false` when it is not an adapter at all (`student(…)`), so that its
/// inside is not checked as an endpoint.
fn check_adapter(cx: &Ctxt, input: &Input, adapter: &Adapter) -> bool {
    let func = &adapter.func;
    if func.qself.is_none() && func.path.segments.len() == 1 {
        let name = unraw(&func.path.segments[0].ident);
        let is_teacher = input.several && input.teachers.iter().any(|teacher| unraw(&teacher.name) == name);
        if name == "student" || name == "teacher" || is_teacher {
            cx.error_spanned_by(
                &func.path,
                format_args!("`{name}(…)` is not an endpoint: write `{name}.field`, `{name}[0]` or `{name}`"),
            );
            return false;
        }
    }
    true
}

/// Each `.name` is a field name as rustc reads it: a keyword is written `r#type` (`.type` would be a
/// syntax error of the generated code, which loses every item of the invocation).
fn check_segments(cx: &Ctxt, path: &TypedPath) {
    for segment in &path.segments {
        if let Segment::Field(Member::Named(ident)) = segment {
            if let Some(message) = not_a_field_name(ident, "field") {
                cx.error_at(ident.span(), message);
            }
        }
    }
}

fn check_root(cx: &Ctxt, path: &TypedPath, side: Side) {
    check_side_name(cx, &path.root, side);
}

/// The `student`/`teacher` that starts an endpoint names the side it stands on.
fn check_side_name(cx: &Ctxt, ident: &syn::Ident, side: Side) {
    // `r#student` is the identifier `student`, as with several teachers.
    let root = unraw(ident);
    if root == side.name() {
        return;
    }
    let position = match side {
        Side::Student => "left",
        Side::Teacher => "right",
    };
    if root == side.other().name() {
        cx.error_at(
            ident.span(),
            format_args!(
                "`{root}` on the {} side: the endpoint {position} of `=>` belongs to the {}; write `{}.…` here (pairs \
                 are `student… => teacher…`)",
                side.name(),
                side.name(),
                side.name()
            ),
        );
    } else {
        cx.error_at(
            ident.span(),
            format_args!(
                "unknown endpoint `{root}`: an endpoint {position} of `=>` starts with `{}` (or is a string path, or \
                 an adapter call)",
                side.name()
            ),
        );
    }
}

fn check_string_path(cx: &Ctxt, lit: &syn::LitStr) {
    let path = lit.value();
    if path.is_empty() {
        cx.error_at(lit.span(), "an empty path: the model's own output is the bare `student` or `teacher`");
    } else if path.split('.').any(str::is_empty) {
        cx.error_at(
            lit.span(),
            format_args!("`{path}` has an empty segment: write a dotted path like `features.2.conv`"),
        );
    } else if path.chars().any(char::is_whitespace) {
        cx.error_at(
            lit.span(),
            format_args!("`{path}` contains whitespace: write a dotted path like `features.2.conv`"),
        );
    }
}

fn check_options(cx: &Ctxt, pair: &Pair) {
    for (i, option) in pair.options.iter().enumerate() {
        let sides = |o: &super::ast::PairOption| match o.side {
            None => vec![Side::Student, Side::Teacher],
            Some((side, _)) => vec![side],
        };
        let overlaps = pair.options[..i]
            .iter()
            .any(|earlier| earlier.kind == option.kind && sides(earlier).iter().any(|s| sides(option).contains(s)));
        if overlaps {
            cx.error_at(option.span, format_args!("`{}` is given twice for the same side", option.kind.name()));
        }
    }
}

fn labels(cx: &Ctxt, input: &Input) -> Vec<Ident> {
    let reserved = reserved_labels(input);
    let mut labels: Vec<Ident> = Vec::with_capacity(input.pairs.len());
    let mut seen: Vec<(String, Span, bool)> = Vec::new();
    for pair in &input.pairs {
        let (label, derived) = match &pair.label {
            Some(label) => (Some(label.clone()), false),
            None => (derive_label(cx, pair), true),
        };
        let Some(label) = label else {
            labels.push(Ident::new("__distill_invalid", pair.span));
            continue;
        };
        let name = unraw(&label);
        // A label is a field name of the output and of the losses: a keyword would be a syntax error
        // of the generated code, and `__distill…` names the generated items' own fields. Either is
        // replaced by the placeholder, which the stand-ins leave out.
        let unusable = match not_a_field_name(&label, "label") {
            Some(message) => Some(message),
            None if name.starts_with("__distill") => {
                let hint = if derived { " (it is derived from the student's path: give the pair a label)" } else { "" };
                Some(format!(
                    "labels starting with `__distill` are reserved for the generated code; choose another{hint}"
                ))
            }
            None => None,
        };
        if let Some(message) = unusable {
            cx.error_at(label.span(), message);
            labels.push(Ident::new("__distill_invalid", label.span()));
            continue;
        }
        if reserved.contains(&name) {
            cx.error_at(
                label.span(),
                format_args!("`{name}` is a field of every distillation output already; choose another label"),
            );
        } else if let Some((_, first, first_derived)) = seen.iter().find(|(seen, _, _)| *seen == name) {
            let hint = if derived || *first_derived {
                " (labels are derived from the student's path when omitted; give one pair a label, `name: …`)"
            } else {
                ""
            };
            let mut error = syn::Error::new(
                label.span(),
                format_args!(
                    "duplicate label `{name}`: each pair is a field of the output, so labels must differ{hint}"
                ),
            );
            error.combine(syn::Error::new(*first, format_args!("`{name}` first used here")));
            cx.syn_error(error);
        }
        seen.push((name, label.span(), derived));
        labels.push(label);
    }
    labels
}

/// The label of an unlabelled pair: its student path with `_` for `.` (`features_5_conv`), or
/// `output` (`input`) for the model itself.
fn derive_label(cx: &Ctxt, pair: &Pair) -> Option<Ident> {
    let span = pair.student.start_span();
    let parts: Vec<String> = match &pair.student.target {
        Target::Typed(path) => {
            let mut parts = Vec::new();
            for segment in &path.segments {
                match segment {
                    Segment::Field(Member::Named(ident)) => parts.push(unraw(ident)),
                    Segment::Field(Member::Unnamed(index)) => parts.push(index.index.to_string()),
                    Segment::Index { expr, span } => match literal_index(expr) {
                        Some(index) => parts.push(index.to_owned()),
                        None => {
                            cx.error_at(
                                *span,
                                "cannot derive a label from a computed index: give the pair a label, `name: student…`",
                            );
                            return None;
                        }
                    },
                }
            }
            parts
        }
        Target::Str(lit) => lit.value().split('.').map(str::to_owned).collect(),
    };
    let text = if parts.is_empty() {
        if pair.has_option(OptionKind::Input, Side::Student) { "input" } else { "output" }.to_owned()
    } else {
        let joined = parts.join("_");
        if joined.starts_with(|c: char| c.is_ascii_digit()) {
            format!("_{joined}")
        } else {
            joined
        }
    };
    match make_ident(&text, span) {
        Some(ident) => Some(ident),
        None => {
            // A malformed string path was reported already; others need an explicit label.
            if !matches!(&pair.student.target, Target::Str(lit) if lit.value().split('.').any(str::is_empty)) {
                cx.error_at(
                    span,
                    format_args!("cannot derive a label from `{text}`: give the pair a label, `name: student…`"),
                );
            }
            None
        }
    }
}

/// The base-10 digits of `[3]` (`0x10` → `16`), also when `macro_rules!` handed the index over as an
/// `$i:literal` or `$i:expr` fragment (an invisible group). Not parsed into a number: a literal too
/// large for an index still names a label, and rustc reports its range at the literal.
pub fn literal_index(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Lit(syn::ExprLit { lit: Lit::Int(int), .. }) => Some(int.base10_digits()),
        Expr::Group(group) => literal_index(&group.expr),
        _ => None,
    }
}
