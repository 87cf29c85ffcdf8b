//! Unit tests of the two expansions (parse → check → expand, compared on key parts) and a property
//! test that feeds random and mutated token streams to both and checks that nothing panics.

mod corpus;
mod edges;
mod expand;
mod fuzz;

use proc_macro2::TokenStream;

/// Tokens printed with single spaces, for `contains` comparisons.
pub(crate) fn text(tokens: &TokenStream) -> String {
    tokens.to_string().split_whitespace().collect::<Vec<_>>().join(" ")
}
