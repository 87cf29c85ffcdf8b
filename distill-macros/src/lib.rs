//! Procedural macros of `distill`: `#[derive(Distillable)]` and `distill!`. Use them through the
//! `distill` crate, which re-exports them and whose documentation describes them.
//!
//! Each macro is a thin shell over a `proc_macro2` function (`derive::expand`, `dsl::expand`) that
//! goes parse → check → expand, collects every error of one invocation, and never panics; the
//! generated code names the runtime only as `::distill::__private::…`.

mod ctxt;
mod derive;
mod dsl;
mod util;

#[cfg(test)]
mod tests;

use proc_macro::TokenStream;

/// Implements `distill::Distillable` (and `distill::StaticSchema`) for a struct or an enum
/// of modules. See the `distill` crate's documentation.
#[proc_macro_derive(Distillable, attributes(distill))]
pub fn derive_distillable(input: TokenStream) -> TokenStream {
    derive::expand(input.into()).into()
}

/// Declares a typed, compile-time-checked distillation. See the `distill` crate's documentation.
#[proc_macro]
pub fn distill(input: TokenStream) -> TokenStream {
    dsl::expand(input.into()).into()
}
