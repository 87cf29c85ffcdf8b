//! Small helpers shared by both macros.

use proc_macro2::{Ident, Span, TokenStream};
use quote::quote_spanned;

/// `::distill::__private` at `span`: the only way generated code names the runtime.
pub fn private(span: Span) -> TokenStream {
    quote_spanned!(span=> ::distill::__private)
}

/// Whether `s` can be an identifier (ASCII only), keywords included.
pub fn is_ident_like(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    s != "_" && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// An identifier from `s`, never panicking: `None` when `s` cannot be one; a keyword gets a
/// trailing `_` (`type` → `type_`).
pub fn make_ident(s: &str, span: Span) -> Option<Ident> {
    if !is_ident_like(s) {
        return None;
    }
    if syn::parse_str::<Ident>(s).is_ok() {
        Some(Ident::new(s, span))
    } else {
        let escaped = format!("{s}_");
        syn::parse_str::<Ident>(&escaped).ok().map(|_| Ident::new(&escaped, span))
    }
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
