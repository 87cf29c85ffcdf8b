//! Checks of a derive input that need no type information: names usable in paths, and unique.

use super::ast::{Container, Data, Field};
use crate::ctxt::Ctxt;

pub fn check(cx: &Ctxt, container: &Container) {
    match &container.data {
        Data::Struct(fields) => check_fields(cx, fields),
        Data::Enum(variants) => variants.iter().for_each(|variant| check_fields(cx, &variant.fields)),
    }
}

fn check_fields(cx: &Ctxt, fields: &[Field]) {
    let mut seen: Vec<&Field> = Vec::new();
    for field in fields.iter().filter(|field| field.attrs.skip.is_none()) {
        if field.attrs.rename.is_some() {
            if field.name.is_empty() {
                cx.error_at(field.name_span, "a module name cannot be empty");
            } else if field.name.contains('.') {
                cx.error_at(field.name_span, "a module name cannot contain `.`, which separates the segments of paths");
            } else if field.name.chars().any(char::is_whitespace) {
                cx.error_at(field.name_span, "a module name cannot contain whitespace");
            }
        }
        if let Some(first) = seen.iter().find(|other| other.name == field.name) {
            let mut error = syn::Error::new(
                field.name_span,
                format_args!("two children are named `{}`: paths could not tell them apart; rename one", field.name),
            );
            error.combine(syn::Error::new(first.name_span, "first named here"));
            cx.syn_error(error);
        }
        seen.push(field);
    }
}
