//! `#[derive(Distillable)]`: parse (`ast`, `attr`) → check → expand, as serde_derive does.
//!
//! The derive implements `Distillable` (a visitor over the non-skipped fields, named by their field
//! names or `#[distill(rename = "…")]`; tuple fields as `0`, `1`, …; for an enum, the fields of the
//! active variant) and `StaticSchema` (the same tree as a `const`, for compile-time string paths).
//! Each field type is checked against `StaticSchema` at the field's type span. Container types
//! (`Vec`, arrays, `Option`, `Box`) work through the runtime's blanket impls: no type name is
//! ever matched here. After an error, `fallback` stands in for the impls (thiserror's idea), so that
//! the one mistake is the one error.

mod ast;
mod attr;
mod check;
mod expand;
mod fallback;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

/// The derive, from the item's tokens to the impls — or, after an error, the `compile_error!`s and
/// stand-in impls that keep later uses of the type from adding errors of their own. Never panics.
pub fn expand(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    let cx = Ctxt::new();
    let container = ast::Container::from_ast(&cx, &input);
    check::check(&cx, &container);
    match cx.check() {
        Ok(()) => expand::expand(&container),
        Err(error) => {
            let mut tokens = error.to_compile_error();
            tokens.extend(fallback::expand(&container));
            tokens
        }
    }
}
