//! `#[derive(Distillable)]`: parse (`ast`, `attr`) → check → expand, as serde_derive does.
//!
//! The derive implements `Distillable` (a visitor over the non-skipped fields, named by their field
//! names or `#[distill(rename = "…")]`; tuple fields as `0`, `1`, …; for an enum, the fields of the
//! active variant) and `StaticSchema` (the same tree as a `const`, for compile-time string paths).
//! Each field type is checked against `DistillField` at the field's type span. Container types
//! (`Vec`, arrays, `Option`, `Box`) work through the runtime's blanket impls: no type name is
//! ever matched here.

mod ast;
mod attr;
mod check;
mod expand;

use proc_macro2::TokenStream;

use crate::ctxt::Ctxt;

/// The derive, from the item's tokens to the impls (or `compile_error!`s). Never panics.
pub fn expand(input: TokenStream) -> TokenStream {
    let input: syn::DeriveInput = match syn::parse2(input) {
        Ok(input) => input,
        Err(error) => return error.to_compile_error(),
    };
    match derive(&input) {
        Ok(tokens) => tokens,
        Err(error) => error.to_compile_error(),
    }
}

fn derive(input: &syn::DeriveInput) -> syn::Result<TokenStream> {
    let cx = Ctxt::new();
    let container = ast::Container::from_ast(&cx, input);
    if let Some(container) = &container {
        check::check(&cx, container);
    }
    cx.check()?;
    match container {
        Some(container) => Ok(expand::expand(&container)),
        None => Ok(TokenStream::new()),
    }
}
