//! `distill!`: parse → check → expand (cxx style), over `proc_macro2` so that tests can drive it.
//!
//! The grammar is in [`ast`]. Parsing splits the body at top-level `;` and parses each pair on its
//! own; parse and check errors of one invocation are all reported together; nothing here panics.

mod ast;
mod check;
mod expand;
mod parse;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

/// The macro, from its input tokens to the generated items (or `compile_error!`s).
pub fn expand(input: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let Some(parsed) = parse::parse(&cx, input) else {
        return errors(cx);
    };
    let labels = check::check(&cx, &parsed);
    if cx.has_errors() {
        return errors(cx);
    }
    expand::expand(&parsed, &labels)
}

fn errors(cx: Ctxt) -> TokenStream {
    match cx.check() {
        Ok(()) => TokenStream::new(),
        Err(error) => error.to_compile_error(),
    }
}
