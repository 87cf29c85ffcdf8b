//! The checks of a `distill!` with several named teachers, `=> (big: BigNet, wide: WideNet)`: the
//! names themselves, and which teacher each pair's teacher side names.

use syn::Ident;

use super::ast::{Endpoint, Input, Pair, Side};
use crate::ctxt::Ctxt;
use crate::util::unraw;

/// Names a teacher cannot take: the student, the one-teacher name, the parameters of `new()`, and the
/// generated methods that are not per teacher.
const RESERVED: [&str; 15] = [
    "student",
    "teacher",
    "path",
    "new",
    "distillation",
    "forward_t",
    "forward_t_with",
    "forward_cached",
    "forward_cached_by",
    "dry_run",
    "dry_run_cached",
    "step",
    "set_step",
    "rescale_to",
    "rescaled_to",
];

/// The suffixes of the per-teacher methods (`big_grad`, `big_train`, `big_mode`).
const METHOD_SUFFIXES: [&str; 3] = ["_grad", "_train", "_mode"];

/// Each teacher's name: not reserved, not given twice, not one of another teacher's methods.
pub fn check_declarations(cx: &Ctxt, input: &Input) {
    for (index, problem) in problems(input).into_iter().enumerate() {
        let teacher = &input.teachers[index];
        let name = unraw(&teacher.name);
        match problem {
            None => {}
            Some(Problem::Reserved) => cx.error_at(
                teacher.name.span(),
                format_args!(
                    "a teacher cannot be named `{name}`, which the generated distillation uses already; name the \
                     teacher after what it is (`big`, `wide`)"
                ),
            ),
            Some(Problem::Duplicate { first }) => {
                let mut error = syn::Error::new(
                    teacher.name.span(),
                    format_args!("duplicate teacher `{name}`: each teacher needs its own name"),
                );
                error.combine(syn::Error::new(
                    input.teachers[first].name.span(),
                    format_args!("`{name}` first declared here"),
                ));
                cx.syn_error(error);
            }
            Some(Problem::Clash { other }) => cx.error_at(
                teacher.name.span(),
                format_args!(
                    "a teacher named `{name}` would clash with the method `{name}` that sets teacher `{other}`'s mode; \
                     choose another name"
                ),
            ),
        }
    }
}

/// Whether each teacher's declaration is free of problems: the stand-ins after an error keep only
/// those, so that a duplicate or reserved name is one error, not a cascade of duplicate items.
pub fn usable(input: &Input) -> Vec<bool> {
    problems(input).iter().map(Option::is_none).collect()
}

/// What is wrong with a teacher's name.
enum Problem {
    Reserved,
    Duplicate { first: usize },
    Clash { other: String },
}

fn problems(input: &Input) -> Vec<Option<Problem>> {
    let names: Vec<String> = input.teachers.iter().map(|teacher| unraw(&teacher.name)).collect();
    names
        .iter()
        .enumerate()
        .map(|(index, name)| {
            if RESERVED.contains(&name.as_str()) || name.starts_with("__distill") {
                Some(Problem::Reserved)
            } else if let Some(first) = names[..index].iter().position(|earlier| earlier == name) {
                Some(Problem::Duplicate { first })
            } else {
                names
                    .iter()
                    .find(|other| METHOD_SUFFIXES.iter().any(|suffix| *name == format!("{other}{suffix}")))
                    .map(|other| Problem::Clash { other: other.clone() })
            }
        })
        .collect()
}

/// The `student`/teacher name that starts an endpoint names the side it stands on: `student` left
/// of `=>`, one of the teachers right of it.
pub fn check_root(cx: &Ctxt, input: &Input, endpoint: &Endpoint, side: Side) {
    let names =
        || input.teachers.iter().map(|teacher| format!("`{}`", unraw(&teacher.name))).collect::<Vec<_>>().join(", ");
    let Some(root) = endpoint.root() else {
        if side == Side::Teacher {
            cx.error_at(
                endpoint.start_span(),
                format_args!(
                    "with several teachers, a string path names its teacher: `{}[\"features.2.conv\"]` (the teachers \
                     are {})",
                    first_name(input),
                    names()
                ),
            );
        }
        return;
    };
    let text = unraw(root);
    let teacher = find(input, root);
    match side {
        Side::Student if text == "student" => {}
        Side::Student if teacher.is_some() => cx.error_at(
            root.span(),
            format_args!(
                "`{text}` is a teacher: the endpoint left of `=>` belongs to the student; write `student.…` here \
                 (pairs are `student… => {text}…`)"
            ),
        ),
        Side::Student => cx.error_at(
            root.span(),
            format_args!(
                "unknown endpoint `{text}`: an endpoint left of `=>` starts with `student` (or is a string path, or an \
                 adapter call)"
            ),
        ),
        Side::Teacher if teacher.is_some() => {}
        Side::Teacher if text == "student" => cx.error_at(
            root.span(),
            format_args!(
                "`student` on the teacher side: the endpoint right of `=>` belongs to a teacher; start it with the \
                 teacher's name ({})",
                names()
            ),
        ),
        Side::Teacher if text == "teacher" => cx.error_at(
            root.span(),
            format_args!(
                "this distillation has several teachers: start the endpoint with the name of the pair's teacher ({}) \
                 instead of `teacher`",
                names()
            ),
        ),
        Side::Teacher => {
            let suggestion = closest(&text, input.teachers.iter().map(|teacher| unraw(&teacher.name)))
                .map(|best| format!(" (did you mean `{best}`?)"))
                .unwrap_or_default();
            cx.error_at(
                root.span(),
                format_args!("unknown teacher `{text}`{suggestion}: the teachers are {}", names()),
            );
        }
    }
}

/// The index of the teacher that `pair`'s teacher side names, if it names one.
pub fn teacher_of(input: &Input, pair: &Pair) -> Option<usize> {
    find(input, pair.teacher.root()?)
}

/// Every teacher has a pair: a teacher without pairs would never run, which is a mistake.
pub fn check_every_teacher_has_pairs(cx: &Ctxt, input: &Input, teacher_of: &[Option<usize>]) {
    let usable = usable(input);
    for (index, teacher) in input.teachers.iter().enumerate() {
        // A teacher whose name is in error was reported already.
        if usable[index] && !teacher_of.contains(&Some(index)) {
            cx.error_at(
                teacher.name.span(),
                format_args!(
                    "teacher `{}` has no pairs, so it would never run: give it a pair or remove it",
                    unraw(&teacher.name)
                ),
            );
        }
    }
}

fn find(input: &Input, root: &Ident) -> Option<usize> {
    let text = unraw(root);
    input.teachers.iter().position(|teacher| unraw(&teacher.name) == text)
}

fn first_name(input: &Input) -> String {
    input.teachers.first().map_or_else(|| "big".to_owned(), |teacher| unraw(&teacher.name))
}

/// The candidate closest to `typed` within a third of its length (at least two edits).
fn closest(typed: &str, candidates: impl Iterator<Item = String>) -> Option<String> {
    candidates
        .map(|candidate| (edit_distance(typed, &candidate), candidate))
        .filter(|(distance, _)| *distance <= (typed.len() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Levenshtein distance over chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitute = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitute.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_teacher_names() {
        let names = || ["big", "wide"].into_iter().map(str::to_owned);
        assert_eq!(closest("bgi", names()), Some("big".to_owned()));
        assert_eq!(closest("wdie", names()), Some("wide".to_owned()));
        assert_eq!(closest("enormous", names()), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
