//! The expressions of typed endpoints: real field accesses on the declared models, with a checked
//! call for every `[i]`, so that rustc and the runtime's traits judge each segment at its token.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{quote, quote_spanned, ToTokens};
use syn::{Ident, Member};

use super::Items;
use crate::dsl::ast::{member_span, Segment, Side, Target, TypedPath};
use crate::dsl::check::literal_index;
use crate::util::{pretty, unraw};

/// `<private>::<func>(args)` with every token of the call at `span`, so that a bound error of the
/// helper points at the user's token, not at the whole invocation.
pub(super) fn helper_call(items: &Items, span: Span, func: &str, args: TokenStream) -> TokenStream {
    let p = items.input.krate.private(span);
    let func = Ident::new(func, span);
    let mut group = Group::new(Delimiter::Parenthesis, args);
    group.set_span(span);
    quote_spanned!(span=> #p::#func #group)
}

/// The endpoint expression (`Endpoint<'static>`, `?` allowed) of a target.
pub(super) fn endpoint_expr(items: &Items, target: &Target, side: Side) -> TokenStream {
    let p = &items.p;
    match target {
        Target::Typed(path) => typed_endpoint(items, path, side),
        Target::Str(lit) => quote_spanned!(lit.span()=> #p::Endpoint::path(#lit)),
    }
}

/// The endpoint of a typed path: the root, a recording module, or a container's slot.
fn typed_endpoint(items: &Items, path: &TypedPath, side: Side) -> TokenStream {
    let p = &items.p;
    let Some((last, init)) = path.segments.split_last() else {
        return quote_spanned!(path.root.span()=> #p::Endpoint::root());
    };
    let container = place(items, path, init, side);
    let amp = quote_spanned!(path.root.span()=> &);
    match last {
        Segment::Field(member) => helper_call(items, member_span(member), "module", quote!(#amp #container.#member)),
        Segment::Index { expr, span } => index_call(items, "slot", quote!(#amp #container), expr, *span, side, init),
    }
}

/// A reference to the module at a typed path (an adapter's argument).
pub(super) fn module_ref(items: &Items, path: &TypedPath, side: Side) -> TokenStream {
    let root = &path.root;
    let Some((last, init)) = path.segments.split_last() else {
        return quote!(#root);
    };
    let container = place(items, path, init, side);
    let amp = quote_spanned!(root.span()=> &);
    match last {
        Segment::Field(member) => quote!(#amp #container.#member),
        Segment::Index { expr, span } => index_call(items, "child", quote!(#amp #container), expr, *span, side, init),
    }
}

/// `func(container, index, side, "path.of.container")?`, the checked `[index]` at the brackets' span:
/// `slot` for an endpoint, `child` for a module.
fn index_call(
    items: &Items,
    func: &str,
    container: TokenStream,
    index: &syn::Expr,
    span: Span,
    side: Side,
    container_path: &[Segment],
) -> TokenStream {
    let side = side_tokens(items, side);
    let text = path_text(container_path);
    let call = helper_call(items, span, func, quote!(#container, #index, #side, #text));
    let question = quote_spanned!(span=> ?);
    quote!(#call #question)
}

/// The place expression of `segments` (the first ones of `path`): field accesses, and for each `[i]`
/// a checked `child(&container, i, side, "container")?` (an index out of range is an error, not a
/// panic).
fn place(items: &Items, path: &TypedPath, segments: &[Segment], side: Side) -> TokenStream {
    let side = side_tokens(items, side);
    let mut place = root_place(path);
    for (i, segment) in segments.iter().enumerate() {
        place = match segment {
            Segment::Field(member) => quote!(#place.#member),
            Segment::Index { expr, span } => {
                let container = path_text(&segments[..i]);
                let amp = quote_spanned!(path.root.span()=> &);
                let call = helper_call(items, *span, "child", quote!(#amp #place, #expr, #side, #container));
                let star = quote_spanned!(path.root.span()=> *);
                let question = quote_spanned!(*span=> ?);
                let mut group = Group::new(Delimiter::Parenthesis, quote!(#star #call #question));
                group.set_span(*span);
                TokenTree::Group(group).into()
            }
        };
    }
    place
}

/// `(*student)` at the root token's span.
fn root_place(path: &TypedPath) -> TokenStream {
    let root = &path.root;
    let star = quote_spanned!(root.span()=> *);
    let mut group = Group::new(Delimiter::Parenthesis, quote!(#star #root));
    group.set_span(root.span());
    TokenTree::Group(group).into()
}

fn side_tokens(items: &Items, side: Side) -> TokenStream {
    let p = &items.p;
    match side {
        Side::Student => quote!(#p::Side::Student),
        Side::Teacher => quote!(#p::Side::Teacher),
    }
}

/// The dotted path of `segments` as written, for error messages (`features.0`).
fn path_text(segments: &[Segment]) -> String {
    segments
        .iter()
        .map(|segment| match segment {
            Segment::Field(Member::Named(ident)) => unraw(ident),
            Segment::Field(Member::Unnamed(index)) => index.index.to_string(),
            Segment::Index { expr, .. } => match literal_index(expr) {
                Some(index) => index.to_owned(),
                None => pretty(&expr.to_token_stream()),
            },
        })
        .collect::<Vec<_>>()
        .join(".")
}
