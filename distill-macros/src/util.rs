//! Small helpers shared by both macros.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{quote_spanned, ToTokens};
use syn::ext::IdentExt;

/// The path generated code names the `distill` crate by: `::distill`, or the path given with
/// `#[distill(crate = "…")]` when the dependency is renamed.
#[derive(Clone)]
pub struct Krate(Option<syn::Path>);

impl Krate {
    /// `::distill`.
    pub fn default_path() -> Krate {
        Krate(None)
    }

    /// The path given in `crate = "…"`.
    pub fn given(path: syn::Path) -> Krate {
        Krate(Some(path))
    }

    /// The crate's path as an intra-doc link prefix in generated docs (`distill`, or the given path).
    pub fn doc_path(&self) -> String {
        match &self.0 {
            None => "distill".to_owned(),
            Some(path) => path.to_token_stream().to_string().replace(' ', ""),
        }
    }

    /// `<crate>::__private` at `span`: the only way generated code names the runtime. Every token is
    /// set to `span`, so that an error of a generated call points at the user's token.
    pub fn private(&self, span: Span) -> TokenStream {
        match &self.0 {
            None => quote_spanned!(span=> ::distill::__private),
            Some(path) => {
                let path = respan(path.to_token_stream(), span);
                quote_spanned!(span=> #path::__private)
            }
        }
    }
}

/// Parses `crate = "path"` inside `#[distill(...)]` (the caller has matched the `crate` key).
pub fn parse_crate(meta: &syn::meta::ParseNestedMeta) -> syn::Result<syn::Path> {
    let lit: syn::LitStr = meta.value()?.parse().map_err(|e| {
        syn::Error::new(e.span(), "expected the crate's path as a string: `crate = \"name\"` (or `\"::name\"`)")
    })?;
    lit.parse::<syn::Path>()
        .map_err(|_| syn::Error::new(lit.span(), format_args!("`{}` is not a path to a crate", lit.value())))
}

/// An identifier's name without its `r#` (`r#type` → `type`).
pub fn unraw(ident: &Ident) -> String {
    ident.unraw().to_string()
}

/// `tokens` with every span set to `span` (so that a type's error lands on a chosen token).
pub fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Group(group) => {
                let mut new = Group::new(group.delimiter(), respan(group.stream(), span));
                new.set_span(span);
                TokenTree::Group(new)
            }
            mut other => {
                other.set_span(span);
                other
            }
        })
        .collect()
}

/// Why `ident`, written as it is, cannot name a field: the error message for a keyword without `r#`
/// (or `_`); `None` for an identifier that can (raw ones included). `what` is the thing named, for
/// the message: "label", "field".
pub fn not_a_field_name(ident: &Ident, what: &str) -> Option<String> {
    // syn's `Ident` parser rejects exactly the keywords and `_`; `r#type` passes.
    if syn::parse2::<Ident>(TokenStream::from(TokenTree::Ident(ident.clone()))).is_ok() {
        return None;
    }
    let name = ident.to_string();
    Some(match name.as_str() {
        // Keywords that `r#` cannot escape either.
        "self" | "Self" | "super" | "crate" | "_" => {
            format!("`{name}` cannot be a {what}: it is not an identifier, even as `r#{name}`")
        }
        _ => format!("`{name}` is a keyword: write the {what} as `r#{name}`"),
    })
}

/// Whether `s` can be an identifier, keywords included: letters (any script, as Rust identifiers),
/// digits and `_`, not starting with a digit, not `_` alone. A first filter only: `make_ident` lets
/// the lexer decide the rest.
pub fn is_ident_like(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s != "_" && chars.all(|c| c.is_alphanumeric() || c == '_')
}

/// An identifier from `s`, never panicking: `None` when `s` cannot be one; a keyword gets a
/// trailing `_` (`type` → `type_`). Non-ASCII identifiers (`größe`) are identifiers too.
pub fn make_ident(s: &str, span: Span) -> Option<Ident> {
    if !is_ident_like(s) {
        return None;
    }
    // The lexer judges what `is_ident_like` lets through (`Ident::new` would panic on a letter that
    // cannot start or continue an identifier); the text must come back unchanged, as one identifier
    // (rustc normalises identifiers to NFC).
    let lex = |text: &str| {
        syn::parse_str::<Ident>(text).ok().filter(|ident| *ident == text).map(|mut ident| {
            ident.set_span(span);
            ident
        })
    };
    lex(s).or_else(|| lex(&format!("{s}_")))
}

/// Tokens as compact Rust-looking text for generated docs (`student.features[0].conv`).
pub fn pretty(tokens: &TokenStream) -> String {
    let mut out = String::new();
    write_pretty(tokens, &mut out);
    out
}

fn write_pretty(tokens: &TokenStream, out: &mut String) {
    use proc_macro2::{Delimiter, Spacing, TokenTree};
    // Whether the previous token forbids a space after it, and whether it was an operand.
    let mut glue_next = true;
    let mut prev_operand = false;
    let mut in_closure_params = false;
    let mut turbofish = 0usize;
    for token in tokens.clone() {
        let (glue_before, text_glue_after, operand) = match &token {
            // Generic arguments after `::`: `f::<T>(x)`.
            TokenTree::Punct(p) if p.as_char() == '<' && out.ends_with("::") => {
                turbofish += 1;
                (true, true, false)
            }
            TokenTree::Punct(p) if p.as_char() == '>' && turbofish > 0 => {
                turbofish -= 1;
                (true, false, true)
            }
            // Closure parameters: `|s, t|`.
            TokenTree::Punct(p) if p.as_char() == '|' && in_closure_params => {
                in_closure_params = false;
                (true, false, false)
            }
            TokenTree::Punct(p) if p.as_char() == '|' && !prev_operand => {
                in_closure_params = true;
                (false, true, false)
            }
            TokenTree::Punct(p) => {
                let c = p.as_char();
                let joint = p.spacing() == Spacing::Joint;
                let before = matches!(c, '.' | ',' | ';' | '?') || (c == ':' && (joint || out.ends_with(':')));
                let after = matches!(c, '.' | '&' | '!' | '#' | '\'') || joint || (c == ':' && out.ends_with(':'));
                (before, after, false)
            }
            TokenTree::Group(g) => {
                let call = prev_operand && matches!(g.delimiter(), Delimiter::Parenthesis | Delimiter::Bracket);
                (call, false, true)
            }
            _ => (false, false, true),
        };
        if !out.is_empty() && !glue_next && !glue_before {
            out.push(' ');
        }
        match &token {
            TokenTree::Group(g) => {
                let (open, close) = match g.delimiter() {
                    Delimiter::Parenthesis => ("(", ")"),
                    Delimiter::Bracket => ("[", "]"),
                    Delimiter::Brace => ("{ ", " }"),
                    Delimiter::None => ("", ""),
                };
                out.push_str(open);
                write_pretty(&g.stream(), out);
                out.push_str(close);
            }
            other => out.push_str(&other.to_string()),
        }
        glue_next = text_glue_after;
        prev_operand = operand;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;

    #[test]
    fn idents() {
        assert!(make_ident("features_5_conv", Span::call_site()).is_some());
        assert_eq!(make_ident("type", Span::call_site()).map(|i| i.to_string()), Some("type_".into()));
        assert!(make_ident("self", Span::call_site()).is_some());
        assert!(make_ident("5x", Span::call_site()).is_none());
        assert!(make_ident("_", Span::call_site()).is_none());
        assert!(make_ident("", Span::call_site()).is_none());
        assert!(make_ident("a-b", Span::call_site()).is_none());
        assert_eq!(make_ident("größe_0", Span::call_site()).map(|i| i.to_string()), Some("größe_0".into()));
        // Alphabetic, yet no identifier can start with it (a combining mark), or contain it.
        assert!(make_ident("\u{345}b", Span::call_site()).is_none());
        assert!(make_ident("a\u{2160}\u{b2}", Span::call_site()).is_none());
    }

    #[test]
    fn keywords_are_not_field_names() {
        let ident = |s: &str| syn::parse_str::<syn::Ident>(s).unwrap_or_else(|_| Ident::new(s, Span::call_site()));
        assert_eq!(not_a_field_name(&ident("x"), "label"), None);
        assert_eq!(not_a_field_name(&ident("r#type"), "label"), None);
        assert_eq!(not_a_field_name(&ident("größe"), "label"), None);
        assert_eq!(
            not_a_field_name(&ident("type"), "label").as_deref(),
            Some("`type` is a keyword: write the label as `r#type`")
        );
        for name in ["self", "Self", "super", "crate", "_"] {
            assert!(not_a_field_name(&ident(name), "field").is_some_and(|m| m.contains("cannot be a field")), "{name}");
        }
    }

    #[test]
    fn crate_paths() {
        let krate = Krate::given(syn::parse_str("kd").unwrap());
        assert_eq!(krate.private(Span::call_site()).to_string(), "kd :: __private");
        assert_eq!(Krate::default_path().private(Span::call_site()).to_string(), ":: distill :: __private");
        assert_eq!(unraw(&Ident::new_raw("type", Span::call_site())), "type");
    }

    #[test]
    fn pretty_prints_paths() {
        assert_eq!(pretty(&quote!(student.features[0].conv)), "student.features[0].conv");
        assert_eq!(pretty(&quote!(conv2d_adapter(teacher.a.0))), "conv2d_adapter(teacher.a.0)");
        assert_eq!(pretty(&quote!(KlDiv::new(4.0) * 2.0)), "KlDiv::new(4.0) * 2.0");
        assert_eq!(pretty(&quote!(|s, t| (s - t).abs().mean(None))), "|s, t| (s - t).abs().mean(None)");
        assert_eq!(pretty(&quote!(a::b::<T>(x))), "a::b::<T>(x)");
    }
}
