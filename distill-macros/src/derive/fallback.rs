//! What the derive emits after an error, beside the `compile_error!`s: impls of `Distillable` and
//! `StaticSchema` with the item's generics and no children, so that the type still satisfies the
//! bounds its uses need (`nn::Seq<Block>`, `Mapping::new(&net, …)`) and the one mistake stays one
//! error. They never run: the crate does not compile.

use proc_macro2::{Span, TokenStream};
use quote::quote;

use super::ast::Container;

pub fn expand(container: &Container) -> TokenStream {
    let p = container.attrs.krate.private(Span::call_site());
    let ident = container.ident;
    let (impl_generics, ty_generics, where_clause) = container.generics.split_for_impl();
    quote! {
        #[doc(hidden)]
        const _: () = {
            impl #impl_generics #p::Distillable for #ident #ty_generics #where_clause {
                fn visit_children<'__distill_a>(
                    &'__distill_a self,
                    _: &mut dyn ::core::ops::FnMut(#p::Child<'__distill_a>),
                ) {
                }
            }

            impl #impl_generics #p::StaticSchema for #ident #ty_generics #where_clause {}
        };
    }
}
