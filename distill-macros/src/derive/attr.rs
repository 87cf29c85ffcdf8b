//! `#[distill(...)]` attributes: `crate = "…"` on the container, `skip` and `rename = "…"` on fields,
//! nothing on variants (an error says so).

use proc_macro2::Span;
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;
use crate::util::{parse_crate, Krate};

/// The container's options.
pub struct Container {
    /// `#[distill(crate = "…")]`: how generated code names the `distill` crate.
    pub krate: Krate,
}

impl Container {
    pub fn from_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> Container {
        let mut krate: Option<syn::Path> = None;
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("distill")) {
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("crate") {
                    let path = parse_crate(&meta)?;
                    if krate.is_some() {
                        cx.error_spanned_by(&meta.path, "duplicate `crate`");
                    }
                    krate = Some(path);
                    Ok(())
                } else {
                    Err(meta.error(format_args!(
                        "unknown container option `{}`: the one option of a container is `crate = \"path\"`, for a \
                         renamed `distill` dependency; `skip` and `rename = \"…\"` go on fields",
                        path_text(&meta.path)
                    )))
                }
            });
            if let Err(error) = parsed {
                cx.syn_error(error);
            }
        }
        Container { krate: krate.map_or_else(Krate::default_path, Krate::given) }
    }
}

/// A field's options.
#[derive(Default)]
pub struct Field {
    /// `#[distill(skip)]`: not a module; left out of the tree.
    pub skip: Option<Span>,
    /// `#[distill(rename = "…")]`: its name in paths.
    pub rename: Option<syn::LitStr>,
}

impl Field {
    pub fn from_attrs(cx: &Ctxt, attrs: &[syn::Attribute]) -> Field {
        let mut field = Field::default();
        for attr in attrs.iter().filter(|attr| attr.path().is_ident("distill")) {
            if !matches!(attr.meta, syn::Meta::List(_)) {
                cx.error_spanned_by(attr, "expected `#[distill(skip)]` or `#[distill(rename = \"name\")]`");
                continue;
            }
            let parsed = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("skip") {
                    if field.skip.is_some() {
                        cx.error_spanned_by(&meta.path, "duplicate `skip`");
                    }
                    field.skip = Some(meta.path.span());
                    Ok(())
                } else if meta.path.is_ident("rename") {
                    let value = meta.value()?;
                    let lit: syn::LitStr = value.parse().map_err(|e| {
                        syn::Error::new(e.span(), "expected the new name as a string: `rename = \"name\"`")
                    })?;
                    if field.rename.is_some() {
                        cx.error_spanned_by(&meta.path, "duplicate `rename`");
                    }
                    field.rename = Some(lit);
                    Ok(())
                } else {
                    Err(meta.error(format_args!(
                        "unknown field option `{}`: use `#[distill(skip)]` for a field that is not a module, or \
                         `#[distill(rename = \"name\")]` to change its name in paths",
                        path_text(&meta.path)
                    )))
                }
            });
            if let Err(error) = parsed {
                cx.syn_error(error);
            }
        }
        if let (Some(skip), Some(rename)) = (field.skip, &field.rename) {
            let mut error = syn::Error::new(rename.span(), "a skipped field has no name to rename");
            error.combine(syn::Error::new(skip, "skipped here"));
            cx.syn_error(error);
        }
        field
    }
}

/// Rejects `#[distill(...)]` on a variant, where no option exists.
pub fn reject_on_variant(cx: &Ctxt, attrs: &[syn::Attribute]) {
    for attr in attrs.iter().filter(|attr| attr.path().is_ident("distill")) {
        cx.error_spanned_by(
            attr,
            "`#[distill(...)]` has no options for a variant: `skip` and `rename = \"…\"` go on fields",
        );
    }
}

fn path_text(path: &syn::Path) -> String {
    path.segments.iter().map(|s| s.ident.to_string()).collect::<Vec<_>>().join("::")
}
