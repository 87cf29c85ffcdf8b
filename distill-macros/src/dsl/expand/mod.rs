//! The generated items of a `distill!`, one module per item: the distillation (`model`), its output
//! and losses (`output`), a pair's construction in `new()` (`pair`) with its endpoints (`endpoint`),
//! the compile-time string-path checks (`path_check`) and the generated docs (`docs`).
//!
//! Endpoints become real expressions on the declared types, built from the user's own tokens
//! (`student`, field names, indices keep their spans), so rustc reports unknown fields, wrong index
//! types and wrong adapter arguments at the user's token. Every trait a generated expression needs
//! (`Model`, `SlotIndex`, `ChildAt`, `Recordable`, `Criterion`, `IntoAdapter`, `PathSchema`) has an
//! `on_unimplemented` message in the runtime that says what to write instead.
//!
//! After a macro-level error the same items are emitted as stand-ins ([`fallback`]): same names,
//! fields and signatures, bodies that never run. Later uses of `Name`, `NameOutput` and their
//! methods then type-check, so the one mistake is the one error (thiserror's fallback idea).

mod cached;
mod docs;
mod endpoint;
mod model;
mod output;
mod pair;
mod path_check;
mod teachers;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote};
use syn::Ident;

use super::ast::Input;
use super::check::{reserved_labels, Checked};
use crate::util::unraw;

/// The items of a checked invocation.
pub fn expand(input: &Input, checked: &Checked) -> TokenStream {
    Items::new(input, checked.labels.clone(), checked.teacher_of.clone(), Mode::Real).tokens()
}

/// Stand-ins for the items of an invocation with errors, after its `compile_error!`s. Only the
/// labels that are usable field names become fields (one each).
pub fn fallback(input: &Input, checked: &Checked) -> TokenStream {
    let reserved = reserved_labels(input);
    let mut usable: Vec<Ident> = Vec::new();
    for label in &checked.labels {
        let name = unraw(label);
        if !name.starts_with("__distill") && !reserved.contains(&name) && !usable.iter().any(|l| unraw(l) == name) {
            usable.push(label.clone());
        }
    }
    Items::new(input, usable, Vec::new(), Mode::Fallback).tokens()
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The working items.
    Real,
    /// Stand-ins after an error.
    Fallback,
}

/// What every item's expansion needs.
struct Items<'a> {
    input: &'a Input,
    mode: Mode,
    /// The fields of the output and of the losses, in declaration order.
    labels: Vec<Ident>,
    /// The labels as written in `LABELS` and in `Display` (without `r#`).
    label_strs: Vec<String>,
    /// The index of each pair's teacher (empty for stand-ins, which build no pairs).
    teacher_of: Vec<usize>,
    /// `Name`, `NameOutput`, `NameLosses`.
    name: &'a Ident,
    output: Ident,
    losses: Ident,
    /// `::distill::__private` (or the given crate's).
    p: TokenStream,
}

impl<'a> Items<'a> {
    fn new(input: &'a Input, labels: Vec<Ident>, teacher_of: Vec<usize>, mode: Mode) -> Self {
        let name = &input.name;
        Items {
            input,
            mode,
            teacher_of,
            label_strs: labels.iter().map(unraw).collect(),
            labels,
            name,
            output: format_ident!("{}Output", name, span = name.span()),
            losses: format_ident!("{}Losses", name, span = name.span()),
            p: input.krate.private(Span::call_site()),
        }
    }

    /// `real()` as a method body, or a body that never runs for a stand-in.
    fn body(&self, real: impl FnOnce() -> TokenStream) -> TokenStream {
        match self.mode {
            Mode::Real => real(),
            // Never run: the crate does not compile.
            Mode::Fallback => quote!(::core::unreachable!("`distill!` reported an error")),
        }
    }

    /// Lints to allow on the stand-ins' impls, whose bodies ignore their parameters.
    fn fallback_allows(&self) -> TokenStream {
        match self.mode {
            Mode::Real => TokenStream::new(),
            Mode::Fallback => quote!(#[allow(unused_variables, unused_mut, unreachable_code)]),
        }
    }

    fn tokens(&self) -> TokenStream {
        let cfgs = self.input.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
        let definitions = [model::definition(self), output::output_definition(self), output::losses_definition(self)];
        let path_checks = match self.mode {
            Mode::Real => path_check::path_checks(self),
            Mode::Fallback => TokenStream::new(),
        };
        let impls =
            [model::methods(self), cached::methods(self), output::output_methods(self), output::losses_methods(self)];
        quote! {
            #(#definitions)*

            #(#cfgs)*
            #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
            const _: () = {
                #path_checks
                #(#impls)*
            };
        }
    }
}
