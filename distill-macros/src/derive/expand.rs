//! The impls of `Distillable` and `StaticSchema`, inside a `const _: () = { … };`.

use std::collections::BTreeSet;

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit::Visit;

use super::ast::{Container, Data, Field, Style, Variant};
use crate::util::Krate;

pub fn expand(container: &Container) -> TokenStream {
    let krate = &container.attrs.krate;
    let p = krate.private(Span::call_site());
    let ident = container.ident;
    let (impl_generics, ty_generics, where_clause) = container.generics.split_for_impl();
    let where_clause = bounds(container, where_clause);

    let (visit, schema) = match &container.data {
        Data::Struct(fields) => (visit_struct(krate, fields), struct_schema(krate, fields)),
        Data::Enum(variants) => (visit_enum(krate, ident, variants), enum_schema(krate, variants)),
    };

    quote! {
        #[doc(hidden)]
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl #impl_generics #p::Distillable for #ident #ty_generics #where_clause {
                fn visit_children<'__distill_a>(
                    &'__distill_a self,
                    __distill_visit: &mut dyn ::core::ops::FnMut(#p::Child<'__distill_a>),
                ) {
                    #visit
                }
            }

            #[automatically_derived]
            impl #impl_generics #p::StaticSchema for #ident #ty_generics #where_clause {
                const SCHEMA: #p::Schema = #schema;
            }
        };
    }
}

/// The item's where clause plus `FieldType: StaticSchema` for each field type that mentions a type
/// or const parameter (concrete field types are checked in the body, at their own span).
fn bounds(container: &Container, where_clause: Option<&syn::WhereClause>) -> TokenStream {
    let p = container.attrs.krate.private(Span::call_site());
    let params: BTreeSet<String> = container
        .generics
        .params
        .iter()
        .filter_map(|param| match param {
            syn::GenericParam::Type(t) => Some(t.ident.to_string()),
            syn::GenericParam::Const(c) => Some(c.ident.to_string()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut predicates = Vec::new();
    for field in all_fields(container) {
        if mentions(field.ty, &params) && seen.insert(quote_ty(field.ty)) {
            let ty = field.ty;
            predicates.push(quote_spanned!(ty.span()=> #ty: #p::StaticSchema));
        }
    }
    let existing = where_clause.map(|w| {
        let predicates = w.predicates.iter();
        quote!(#(#predicates,)*)
    });
    if predicates.is_empty() && existing.is_none() {
        return TokenStream::new();
    }
    quote!(where #existing #(#predicates,)*)
}

fn quote_ty(ty: &syn::Type) -> String {
    quote!(#ty).to_string()
}

fn all_fields<'c, 'a>(container: &'c Container<'a>) -> Vec<&'c Field<'a>> {
    let fields: Vec<&Field> = match &container.data {
        Data::Struct(fields) => fields.iter().collect(),
        Data::Enum(variants) => variants.iter().flat_map(|variant| variant.fields.iter()).collect(),
    };
    fields.into_iter().filter(|field| field.attrs.skip.is_none()).collect()
}

/// Whether `ty` names one of `params` (or `Self`, or is a macro: conservatively yes).
fn mentions(ty: &syn::Type, params: &BTreeSet<String>) -> bool {
    struct Finder<'p> {
        params: &'p BTreeSet<String>,
        found: bool,
    }
    impl<'ast> Visit<'ast> for Finder<'_> {
        fn visit_path(&mut self, path: &'ast syn::Path) {
            if path.leading_colon.is_none() {
                if let Some(first) = path.segments.first() {
                    let name = first.ident.to_string();
                    if name == "Self" || self.params.contains(&name) {
                        self.found = true;
                    }
                }
            }
            syn::visit::visit_path(self, path);
        }
        fn visit_type_macro(&mut self, _: &'ast syn::TypeMacro) {
            self.found = true;
        }
        fn visit_expr(&mut self, expr: &'ast syn::Expr) {
            // Array lengths and const arguments: a bare const parameter is a path expression.
            if let syn::Expr::Path(path) = expr {
                self.visit_path(&path.path);
            } else {
                syn::visit::visit_expr(self, expr);
            }
        }
    }
    let mut finder = Finder { params, found: false };
    finder.visit_type(ty);
    finder.found
}

/// `__distill_visit(Child::field("name", <Ty as StaticSchema>::__distill_field(value)))`, the trait
/// path at the field type's span so that a field that is not a module is an error there (one: the
/// schema below names the same trait at the same span).
fn visit_field(krate: &Krate, field: &Field, value: TokenStream) -> TokenStream {
    let p = krate.private(Span::call_site());
    let ty = field.ty;
    let name = &field.name;
    let at_ty = krate.private(ty.span());
    let as_module = quote_spanned!(ty.span()=> <#ty as #at_ty::StaticSchema>::__distill_field);
    quote! {
        __distill_visit(#p::Child::field(#name, #as_module(#value)));
    }
}

fn visit_struct(krate: &Krate, fields: &[Field]) -> TokenStream {
    let visits = fields.iter().filter(|field| field.attrs.skip.is_none()).map(|field| {
        let member = &field.member;
        visit_field(krate, field, quote!(&self.#member))
    });
    quote!(#(#visits)*)
}

fn visit_enum(krate: &Krate, ident: &syn::Ident, variants: &[Variant]) -> TokenStream {
    if variants.is_empty() {
        return quote!(match *self {});
    }
    let arms = variants.iter().map(|variant| {
        let name = variant.ident;
        let binding = |i: usize| format_ident!("__distill_{}", i);
        let visits =
            variant.fields.iter().enumerate().filter(|(_, field)| field.attrs.skip.is_none()).map(|(i, field)| {
                let binding = binding(i);
                visit_field(krate, field, quote!(#binding))
            });
        let pattern = match variant.style {
            Style::Unit => quote!(#ident::#name),
            Style::Named => {
                let bound = variant.fields.iter().enumerate().filter(|(_, field)| field.attrs.skip.is_none()).map(
                    |(i, field)| {
                        let member = &field.member;
                        let binding = binding(i);
                        quote!(#member: #binding)
                    },
                );
                quote!(#ident::#name { #(#bound,)* .. })
            }
            Style::Tuple => {
                let bound = variant.fields.iter().enumerate().map(|(i, field)| {
                    if field.attrs.skip.is_some() {
                        quote!(_)
                    } else {
                        let binding = binding(i);
                        quote!(#binding)
                    }
                });
                quote!(#ident::#name(#(#bound),*))
            }
        };
        quote!(#pattern => { #(#visits)* })
    });
    quote! {
        match self {
            #(#arms)*
        }
    }
}

fn field_schemas(krate: &Krate, fields: &[Field]) -> TokenStream {
    let p = krate.private(Span::call_site());
    let entries = fields.iter().filter(|field| field.attrs.skip.is_none()).map(|field| {
        let name = &field.name;
        let ty = field.ty;
        let at_ty = krate.private(ty.span());
        let schema = quote_spanned!(ty.span()=> <#ty as #at_ty::StaticSchema>::SCHEMA);
        quote!(#p::FieldSchema { name: #name, schema: &#schema })
    });
    quote!(&[#(#entries),*])
}

fn struct_schema(krate: &Krate, fields: &[Field]) -> TokenStream {
    let p = krate.private(Span::call_site());
    let fields = field_schemas(krate, fields);
    quote! {
        #p::Schema { records: false, children: #p::Children::Fields { fields: #fields } }
    }
}

fn enum_schema(krate: &Krate, variants: &[Variant]) -> TokenStream {
    let p = krate.private(Span::call_site());
    let variants = variants.iter().map(|variant| field_schemas(krate, &variant.fields));
    quote! {
        #p::Schema { records: false, children: #p::Children::Variants { variants: &[#(#variants),*] } }
    }
}
