//! Pieces of error messages that several error types share: a suggestion, and libtorch's text
//! without its C++ backtrace.

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
