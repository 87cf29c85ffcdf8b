//! `distill!`: parse → check → expand (cxx style), over `proc_macro2` so that tests can drive it.
//!
//! The grammar is in [`ast`]. Parsing splits the body at top-level `;` and parses each pair on its
//! own; parse and check errors of one invocation are all reported together; nothing here panics.

mod ast;
mod check;
mod expand;
mod parse;
mod teachers;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

/// The macro, from its input tokens to the generated items — or, after an error, the
/// `compile_error!`s and stand-ins for the items, so that later uses of `Name` do not add errors of
/// their own. A header too broken to name the items gives its error alone.
pub fn expand(input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = match parse::parse(&cx, input) {
        Ok(parsed) => parsed,
        Err(error) => return error.to_compile_error(),
    };
    let checked = check::check(&cx, &parsed);
    match cx.check() {
        Ok(()) => expand::expand(&parsed, &checked),
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(expand::fallback(&parsed, &checked));
            tokens
        }
    }
}
