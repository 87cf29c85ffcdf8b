//! Pieces of error messages that several error types share: a suggestion, a path that may be the
//! root, and libtorch's text without its C++ backtrace.

/// A libtorch error's text without the C++ backtrace libtorch appends to it: the lines before
/// `Exception raised from …`, without `frame #…` lines. A TorchScript error keeps its TorchScript
/// traceback, which names the failing line of the model's code.
pub(crate) fn libtorch_message(text: &str) -> String {
    let kept: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim_start().starts_with("Exception raised from"))
        .filter(|line| !line.trim_start().starts_with("frame #"))
        .collect();
    let kept = kept.join("\n");
    let kept = kept.trim_end();
    if kept.is_empty() {
        text.lines().next().unwrap_or_default().to_owned()
    } else {
        kept.to_owned()
    }
}

pub(crate) fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

/// How a message names a path that may be empty (the model itself, the teacher's own output, no
/// prefix at all): `when_empty` for an empty `path`, else `path` between `before` and `after`.
pub(crate) fn named_or(path: &str, when_empty: &str, before: &str, after: &str) -> String {
    if path.is_empty() {
        when_empty.to_owned()
    } else {
        format!("{before}{path}{after}")
    }
}
