//! `NameOutput<'d>` (one `Pair` per label and both models' outputs) and `NameLosses` (one scalar per
//! label), with their methods.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::{docs, teachers, Items, Mode};
use crate::util::unraw;

pub(super) fn output_definition(items: &Items) -> TokenStream {
    let Items { input, output, p, labels, .. } = items;
    let vis = &input.vis;
    let cfgs = input.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
    let doc = docs::output_doc(items);
    let fields = labels.iter().enumerate().map(|(index, label)| {
        let (user_docs, generated) = docs::pair_doc(items, index);
        let separator = (!user_docs.is_empty()).then(|| quote!(#[doc = ""]));
        quote!(#(#user_docs)* #separator #[doc = #generated] pub #label: #p::Pair<'d>,)
    });
    // A stand-in may have no pair left to use its lifetime.
    let marker = (items.mode == Mode::Fallback).then(|| quote!(__distill_pairs: ::core::marker::PhantomData<&'d ()>,));
    let teacher_outputs = teacher_output_fields(items);
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[derive(Debug)]
        #vis struct #output<'d> {
            #(#fields)*
            #marker
            /// The student's own output; undefined for a TorchScript student with several named
            /// outputs and none chosen as its own (`jit::Module::with_output`).
            pub student_output: #p::tch::Tensor,
            #teacher_outputs
        }
    }
}

/// One `<name>_output` per teacher: `teacher_output` for the one teacher, `big_output` for the
/// teacher `big` of several.
fn teacher_output_fields(items: &Items) -> TokenStream {
    let p = &items.p;
    let several = items.input.several;
    let fields = items.teachers.iter().map(|teacher| {
        let field = teachers::output_field(&teacher.name);
        let doc = if several {
            format!("The teacher `{}`'s own output, on the student's device.", unraw(&teacher.name))
        } else {
            "The teacher's own output, on the student's device.".to_owned()
        };
        // A TorchScript model with several named outputs has no own output until one is chosen.
        let doc = format!("{doc} Undefined for a TorchScript teacher with several named outputs and none chosen as its own (`jit::Module::with_output`).");
        quote!(#[doc = #doc] pub #field: #p::tch::Tensor,)
    });
    quote!(#(#fields)*)
}

pub(super) fn losses_definition(items: &Items) -> TokenStream {
    let Items { input, losses, p, labels, .. } = items;
    let vis = &input.vis;
    let cfgs = input.attrs.iter().filter(|attr| attr.path().is_ident("cfg"));
    let doc = docs::losses_doc(items);
    let loss_docs = (0..labels.len()).map(|index| docs::loss_doc(items, index));
    quote! {
        #(#cfgs)*
        #[doc = #doc]
        #[derive(Debug)]
        #vis struct #losses {
            #(#[doc = #loss_docs] pub #labels: #p::tch::Tensor,)*
            #[doc(hidden)]
            __distill_terms: ::std::vec::Vec<#p::LossTerm>,
        }
    }
}

pub(super) fn output_methods(items: &Items) -> TokenStream {
    let Items { output, losses, p, labels, .. } = items;
    let n = labels.len();
    let vars: Vec<Ident> = (0..n).map(|i| format_ident!("__distill_weighted_{}", i)).collect();
    let allows = items.fallback_allows();
    quote! {
        #[automatically_derived]
        #allows
        impl<'d> #output<'d> {
            /// The sum of the pairs' (weighted) losses.
            ///
            /// # Panics
            /// Where a pair's criterion cannot compute its loss (targets a criterion needs and
            /// were not given, targets of another batch size); [`f_loss`](Self::f_loss) returns
            /// that error instead.
            pub fn loss(&self) -> #p::tch::Tensor {
                self.losses().total()
            }

            /// As [`loss`](Self::loss), with the first pair that cannot compute its loss as an
            /// error instead of a panic.
            pub fn f_loss(&self) -> ::core::result::Result<#p::tch::Tensor, #p::DistillError> {
                ::core::result::Result::Ok(self.f_losses()?.total())
            }

            /// Each pair's loss, by label: weighted (at the model's step) and, when the model
            /// rescales its terms, rescaled; `terms()` and `unweighted()` give the rest.
            ///
            /// # Panics
            /// As [`loss`](Self::loss); [`f_losses`](Self::f_losses) returns the error instead.
            pub fn losses(&self) -> #losses {
                match self.f_losses() {
                    ::core::result::Result::Ok(losses) => losses,
                    ::core::result::Result::Err(error) => ::core::panic!("{}", error),
                }
            }

            /// As [`losses`](Self::losses), with the first pair that cannot compute its loss as
            /// an error instead of a panic.
            pub fn f_losses(&self) -> ::core::result::Result<#losses, #p::DistillError> {
                let __distill_terms = #p::f_loss_terms(&[#(&self.#labels),*])?;
                let [#(#vars),*] = #p::weighted_array::<#n>(&__distill_terms)?;
                ::core::result::Result::Ok(#losses { #(#labels: #vars,)* __distill_terms })
            }

            /// The pairs, in declaration order.
            pub fn pairs(&self) -> [&#p::Pair<'d>; #n] {
                [#(&self.#labels),*]
            }

            /// Gives the batch's targets (class indices) to every pair, for criteria that use
            /// them (`Criterion::loss_with_targets`).
            pub fn with_targets(mut self, targets: &#p::tch::Tensor) -> Self {
                #(self.#labels.set_targets(targets);)*
                self
            }
        }
    }
}

pub(super) fn losses_methods(items: &Items) -> TokenStream {
    let Items { losses, p, labels, label_strs, .. } = items;
    quote! {
        #[automatically_derived]
        impl #losses {
            /// The sum of all terms.
            pub fn total(&self) -> #p::tch::Tensor {
                #p::total(&[#(&self.#labels),*])
            }

            /// `(label, loss)` for each pair, in declaration order: the weighted values that
            /// enter the total.
            pub fn iter(&self) -> impl ::core::iter::Iterator<Item = (&'static str, &#p::tch::Tensor)> + '_ {
                [#((#label_strs, &self.#labels)),*].into_iter()
            }

            /// `(label, loss)` for each pair, in declaration order: the criteria's own values,
            /// before weights, schedules and rescaling.
            pub fn unweighted(&self) -> impl ::core::iter::Iterator<Item = (&'static str, &#p::tch::Tensor)> + '_ {
                self.terms().map(|(label, term)| (label, &term.unweighted))
            }

            /// `(label, term)` for each pair, in declaration order: weighted and unweighted value,
            /// weight at the step and rescaling factor.
            pub fn terms(&self) -> impl ::core::iter::Iterator<Item = (&'static str, &#p::LossTerm)> + '_ {
                [#(#label_strs),*].into_iter().zip(&self.__distill_terms)
            }
        }

        #[automatically_derived]
        impl ::core::fmt::Display for #losses {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                let __distill_terms: ::std::vec::Vec<_> = self.terms().collect();
                #p::write_terms(f, &__distill_terms)
            }
        }
    }
}
