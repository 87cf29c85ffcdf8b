//! Compile-fail cases of `#[derive(Distillable)]` and `distill!`: each `tests/ui/*.rs` must fail to
//! compile with exactly the `.stderr` beside it (reviewed: the caret is on the offending token and the
//! message says what to do). Regenerate with `TRYBUILD=overwrite` after a deliberate change, then
//! read every diff. `tests/ui/pass/*.rs` must compile and run.

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
