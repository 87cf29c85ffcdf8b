//! The derive input, reduced to what the expansion needs.

use syn::{Ident, Member, Type};

use super::attr;
use crate::ctxt::Ctxt;
use crate::util::unraw;

/// A struct or an enum deriving `Distillable`.
pub struct Container<'a> {
    pub ident: &'a Ident,
    pub generics: &'a syn::Generics,
    pub attrs: attr::Container,
    pub data: Data<'a>,
}

pub enum Data<'a> {
    Struct(Vec<Field<'a>>),
    Enum(Vec<Variant<'a>>),
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Named,
    Tuple,
    Unit,
}

pub struct Variant<'a> {
    pub ident: &'a Ident,
    pub style: Style,
    pub fields: Vec<Field<'a>>,
}

/// A field; skipped fields are kept (enum patterns need to know them) but marked.
pub struct Field<'a> {
    /// `self.<member>`.
    pub member: Member,
    /// Its name in paths.
    pub name: String,
    /// Where the name comes from (the ident, the tuple index, or the `rename` literal).
    pub name_span: proc_macro2::Span,
    pub ty: &'a Type,
    pub attrs: attr::Field,
}

impl<'a> Container<'a> {
    /// The container; its errors go to `cx` (a union is reported there and read as a struct without
    /// fields, enough for the fallback items).
    pub fn from_ast(cx: &Ctxt, input: &'a syn::DeriveInput) -> Container<'a> {
        let attrs = attr::Container::from_attrs(cx, &input.attrs);
        let data = match &input.data {
            syn::Data::Struct(data) => Data::Struct(fields(cx, &data.fields).1),
            syn::Data::Enum(data) => Data::Enum(
                data.variants
                    .iter()
                    .map(|variant| {
                        attr::reject_on_variant(cx, &variant.attrs);
                        let (style, fields) = fields(cx, &variant.fields);
                        Variant { ident: &variant.ident, style, fields }
                    })
                    .collect(),
            ),
            syn::Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "`Distillable` cannot be derived for a union: only one of its fields exists at a time, and \
                     nothing says which; use an enum",
                );
                Data::Struct(Vec::new())
            }
        };
        Container { ident: &input.ident, generics: &input.generics, attrs, data }
    }
}

fn fields<'a>(cx: &Ctxt, fields: &'a syn::Fields) -> (Style, Vec<Field<'a>>) {
    let style = match fields {
        syn::Fields::Named(_) => Style::Named,
        syn::Fields::Unnamed(_) => Style::Tuple,
        syn::Fields::Unit => Style::Unit,
    };
    let fields = fields
        .iter()
        .enumerate()
        .map(|(index, field)| {
            let attrs = attr::Field::from_attrs(cx, &field.attrs);
            let member = match &field.ident {
                Some(ident) => Member::Named(ident.clone()),
                None => {
                    Member::Unnamed(syn::Index { index: index as u32, span: syn::spanned::Spanned::span(&field.ty) })
                }
            };
            let (name, name_span) = match (&attrs.rename, &field.ident) {
                (Some(rename), _) => (rename.value(), rename.span()),
                (None, Some(ident)) => (unraw(ident), ident.span()),
                (None, None) => (index.to_string(), syn::spanned::Spanned::span(&field.ty)),
            };
            Field { member, name, name_span, ty: &field.ty, attrs }
        })
        .collect();
    (style, fields)
}
