//! Compile-fail cases of `#[derive(Distillable)]` and `distill!`: each `tests/ui/*.rs` must fail to
//! compile with exactly the `.stderr` beside it (reviewed: the caret is on the offending token and the
//! message says what to do). Regenerate with `TRYBUILD=overwrite` after a deliberate change, then
//! read every diff.
//!
//! Only compile-fail cases here: trybuild then `cargo check`s all of them in one invocation
//! (`--keep-going`), instead of building every dependency and then each case in turn, linked
//! against libtorch, as it does when a `pass` case is among them. The warning-free generated items
//! are `tests/generated_items_warning_free.rs`, an ordinary test.

/// The rustflags trybuild gives the compile-fail cases. It checks the dependencies first with the
/// same flags minus `--diagnostic-width=140`, and cargo reruns every build script whose rustflags
/// changed — torch-sys's C++ compile, twice per run. `CARGO_ENCODED_RUSTFLAGS` takes precedence
/// over trybuild's `--config` flags, so setting it to this one set makes both invocations agree.
const RUSTFLAGS: [&str; 6] = ["--cfg", "trybuild", "--verbose", "-A", "dead_code", "--diagnostic-width=140"];

#[test]
fn ui() {
    std::env::set_var("CARGO_ENCODED_RUSTFLAGS", RUSTFLAGS.join("\u{1f}"));
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
}
