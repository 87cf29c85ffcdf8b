//! Parsing of `distill!`. The body is split at its top-level `;` and each pair is parsed on its own,
//! so that every malformed pair is reported, not only the first.

use proc_macro2::{Span, TokenStream, TokenTree};
use syn::ext::IdentExt;
use syn::parse::{Parse, ParseStream, Parser};
use syn::spanned::Spanned;
use syn::{token, Attribute, Expr, Ident, LitStr, Token, Type, Visibility};

use super::ast::{
    Adapter, AdapterOption, Endpoint, Input, OptionKind, Pair, PairOption, Segment, Side, Target, Teacher, TypedPath,
};
use crate::ctxt::Ctxt;
use crate::util::{parse_crate, Krate};

mod kw {
    syn::custom_keyword!(with);
}

const HEADER: &str = "`pub struct Name for StudentType => TeacherType { … }`";
const TEACHERS: &str = "several teachers are named, each with its type: `=> (big: BigNet, wide: WideNet)`, and the \
                        pairs start their teacher side with the name (`big.features[1]`)";

/// Parses an invocation. The header's error is returned (nothing can be generated without it);
/// the errors of pairs and attributes go to `cx`, so that all of them are reported.
pub fn parse(cx: &Ctxt, tokens: TokenStream) -> syn::Result<Input> {
    let header = parse_header.parse2(tokens)?;
    let mut pairs = Vec::new();
    let chunks = split_pairs(header.body);
    let has_pairs = !chunks.is_empty();
    for chunk in chunks {
        match parse_pair.parse2(chunk) {
            Ok(pair) => pairs.push(pair),
            Err(error) => cx.syn_error(error),
        }
    }
    let (attrs, krate) = crate_attr(cx, header.attrs);
    Ok(Input {
        attrs,
        krate,
        vis: header.vis,
        name: header.name,
        student_ty: header.student_ty,
        teachers: header.teachers,
        several: header.several,
        pairs,
        has_pairs,
        body_span: header.body_span,
    })
}

/// Takes `#[distill(crate = "…")]` out of the attributes for the generated struct.
fn crate_attr(cx: &Ctxt, attrs: Vec<Attribute>) -> (Vec<Attribute>, Krate) {
    let (ours, theirs): (Vec<Attribute>, Vec<Attribute>) =
        attrs.into_iter().partition(|attr| attr.path().is_ident("distill"));
    let mut krate = None;
    for attr in &ours {
        let parsed = attr.parse_nested_meta(|meta| {
            if !meta.path.is_ident("crate") {
                return Err(meta.error(
                    "the one option of `#[distill(...)]` here is `crate = \"path\"`, for a renamed `distill` dependency",
                ));
            }
            let path = parse_crate(&meta)?;
            if krate.is_some() {
                cx.error_spanned_by(&meta.path, "duplicate `crate`");
            }
            krate = Some(path);
            Ok(())
        });
        if let Err(error) = parsed {
            cx.syn_error(error);
        }
    }
    (theirs, krate.map_or_else(Krate::default_path, Krate::given))
}

struct Header {
    attrs: Vec<Attribute>,
    vis: Visibility,
    name: Ident,
    student_ty: Type,
    teachers: Vec<Teacher>,
    several: bool,
    body: TokenStream,
    body_span: Span,
}

fn parse_header(input: ParseStream) -> syn::Result<Header> {
    if input.is_empty() {
        return Err(input.error(format_args!("`distill!` needs a declaration: {HEADER}")));
    }
    let attrs = Attribute::parse_outer(input)?;
    let vis: Visibility = input.parse()?;
    input.parse::<Token![struct]>().map_err(|e| {
        syn::Error::new(e.span(), format_args!("expected `struct`: a distillation is declared as {HEADER}"))
    })?;
    let name: Ident = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format_args!("expected the name of the distillation: {HEADER}")))?;
    if input.peek(Token![<]) {
        return Err(input.error(
            "a distillation takes no generic parameters: its student and teacher types are concrete \
             (`for Net<Conv2D> => Net<Conv2D>`)",
        ));
    }
    input.parse::<Token![for]>().map_err(|e| {
        syn::Error::new(e.span(), format_args!("expected `for StudentType => TeacherType` after the name: {HEADER}"))
    })?;
    let student_ty: Type = input.parse()?;
    input.parse::<Token![=>]>().map_err(|e| {
        syn::Error::new(e.span(), format_args!("expected `=>` between the student and the teacher type: {HEADER}"))
    })?;
    let (teachers, several) = if input.peek(token::Paren) {
        (parse_teachers(input)?, true)
    } else {
        let ty: Type = input.parse()?;
        (vec![Teacher { name: Ident::new("teacher", ty.span()), ty }], false)
    };
    if !input.peek(token::Brace) {
        return Err(input.error(format_args!("expected `{{` and the pairs of the distillation: {HEADER}")));
    }
    let content;
    let brace = syn::braced!(content in input);
    let body: TokenStream = content.parse()?;
    if !input.is_empty() {
        return Err(
            input.error("unexpected tokens after the distillation's `{ … }`: one `distill!` declares one distillation")
        );
    }
    Ok(Header { attrs, vis, name, student_ty, teachers, several, body, body_span: brace.span.join() })
}

/// `(big: BigNet, wide: WideNet)`: several teachers, each named.
fn parse_teachers(input: ParseStream) -> syn::Result<Vec<Teacher>> {
    let content;
    let paren = syn::parenthesized!(content in input);
    if content.is_empty() {
        return Err(syn::Error::new(paren.span.join(), format_args!("expected the teachers: {TEACHERS}")));
    }
    let mut teachers = Vec::new();
    while !content.is_empty() {
        if !(content.peek(Ident) && content.peek2(Token![:]) && !content.peek2(Token![::])) {
            return Err(content.error(format_args!("expected a teacher's name and `:`: {TEACHERS}")));
        }
        let name: Ident = content.parse()?;
        content.parse::<Token![:]>()?;
        let ty: Type = content.parse()?;
        teachers.push(Teacher { name, ty });
        if content.is_empty() {
            break;
        }
        content
            .parse::<Token![,]>()
            .map_err(|e| syn::Error::new(e.span(), format_args!("expected `,` between the teachers: {TEACHERS}")))?;
    }
    Ok(teachers)
}

/// The body's top-level `;`-separated chunks, empty ones dropped (a trailing `;` is optional).
fn split_pairs(body: TokenStream) -> Vec<TokenStream> {
    let mut chunks = Vec::new();
    let mut current = Vec::new();
    for token in body {
        match &token {
            TokenTree::Punct(p) if p.as_char() == ';' => {
                if !current.is_empty() {
                    chunks.push(current.drain(..).collect());
                }
            }
            _ => current.push(token),
        }
    }
    if !current.is_empty() {
        chunks.push(current.into_iter().collect());
    }
    chunks
}

fn parse_pair(input: ParseStream) -> syn::Result<Pair> {
    let docs = Attribute::parse_outer(input)?;
    for attr in &docs {
        if !attr.path().is_ident("doc") {
            return Err(syn::Error::new_spanned(
                attr,
                "only doc comments can annotate a pair; options follow the criterion: `with Mse, input`",
            ));
        }
    }
    let span = input.span();
    let label = if input.peek(Ident::peek_any) && input.peek2(Token![:]) && !input.peek2(Token![::]) {
        let label = Ident::parse_any(input)?;
        input.parse::<Token![:]>()?;
        Some(label)
    } else {
        None
    };
    let student = parse_endpoint(input)?;
    if !input.peek(Token![=>]) {
        return Err(expected(input, student.end_span(), "expected `=>` between the student and the teacher endpoint"));
    }
    let arrow = input.parse::<Token![=>]>()?;
    if input.is_empty() || input.peek(kw::with) {
        return Err(syn::Error::new(arrow.spans[1], "expected the teacher endpoint after `=>`"));
    }
    let teacher = parse_endpoint(input)?;
    if !input.peek(kw::with) {
        return Err(expected(
            input,
            teacher.end_span(),
            "expected `with` and the criterion after the teacher endpoint, e.g. `with Mse`",
        ));
    }
    let with = input.parse::<kw::with>()?;
    if input.is_empty() || input.peek(Token![,]) {
        return Err(syn::Error::new(with.span, "expected a criterion after `with`, e.g. `with Mse`"));
    }
    let criterion: Expr = input.parse()?;
    let mut options = Vec::new();
    while input.peek(Token![,]) {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        options.push(parse_option(input)?);
    }
    if !input.is_empty() {
        return Err(input.error("expected `;` after the pair (or `, input` / `, all_calls` options)"));
    }
    Ok(Pair { docs, label, student, teacher, criterion, options, span })
}

/// An error at the next token, or right after `after` when the pair ended early.
fn expected(input: ParseStream, after: Span, message: &str) -> syn::Error {
    if input.is_empty() {
        syn::Error::new(after, message)
    } else {
        input.error(message)
    }
}

const ENDPOINT: &str = "expected an endpoint: `student.path`, `teacher.path`, the bare `student`/`teacher` (the \
                        model's output), a string path \"features.2.conv\", or an adapter `f(teacher.path)`";

fn parse_endpoint(input: ParseStream) -> syn::Result<Endpoint> {
    if !input.peek(LitStr) && !input.peek(Ident::peek_any) && !input.peek(Token![::]) && !input.peek(Token![<]) {
        return Err(input.error(ENDPOINT));
    }
    let is_adapter = !input.peek(LitStr)
        && (input.peek(Token![::]) || input.peek(Token![<]) || input.peek2(token::Paren) || input.peek2(Token![::]));
    if !is_adapter {
        if let Some((named_on, name)) = parse_named_output(input)? {
            return Ok(Endpoint { adapter: None, target: Target::Str(name), named_on: Some(named_on) });
        }
        return Ok(Endpoint { adapter: None, target: parse_target(input)?, named_on: None });
    }
    let func: syn::ExprPath = input.parse()?;
    if !input.peek(token::Paren) {
        return Err(
            input.error("expected `(` and the endpoint the adapter applies to, e.g. `conv2d_adapter(teacher.conv)`")
        );
    }
    let content;
    let paren = syn::parenthesized!(content in input);
    let paren = paren.span.join();
    if content.is_empty() {
        return Err(syn::Error::new(
            paren,
            "an adapter wraps the endpoint it applies to: `conv2d_adapter(teacher.features[0].conv)`",
        ));
    }
    if content.peek2(token::Paren) || content.peek(Token![::]) || content.peek(Token![<]) || content.peek2(Token![::]) {
        return Err(content.error("adapters do not nest: one adapter per side, applied to that side's tensor"));
    }
    // `big["layer3"]` inside an adapter is the named output, as outside one: with several teachers
    // it is the only way to write an adapted string path, and a `[…]` segment would be a type error.
    let (target, named_on) = match parse_named_output(&content)? {
        Some((named_on, name)) => (Target::Str(name), Some(named_on)),
        None => (parse_target(&content)?, None),
    };
    if !content.is_empty() {
        return Err(content
            .error("an adapter takes exactly one endpoint; `new()` passes it the path and both endpoint modules"));
    }
    let options = parse_adapter_options(input)?;
    Ok(Endpoint { adapter: Some(Adapter { func, paren, options }), target, named_on })
}

/// `.tolerance(Tolerance::new(1e-4, 1e-3))…` after an adapter's constructor: calls on the builder it
/// returns, kept as written so that a wrong method or argument is a type error at its token.
fn parse_adapter_options(input: ParseStream) -> syn::Result<Vec<AdapterOption>> {
    let mut options = Vec::new();
    while input.peek(Token![.]) {
        let dot: Token![.] = input.parse()?;
        if !input.peek(Ident) {
            return Err(input.error(
                "expected an option of the adapter after `.`, a method call such as `.tolerance(Tolerance::new(1e-4, 1e-3))`",
            ));
        }
        let method: Ident = input.parse()?;
        if !input.peek(token::Paren) {
            return Err(input.error("expected `(` and the option's arguments: an adapter option is a method call"));
        }
        let content;
        let paren = syn::parenthesized!(content in input);
        let args = content.parse_terminated(Expr::parse, Token![,])?;
        options.push(AdapterOption { dot, method, paren, args });
    }
    Ok(options)
}

/// `teacher["layer3"]`: a side and one of its outputs by name (a TorchScript module's dict key, or
/// any string path). `None`, consuming nothing, when the input is not of that form.
fn parse_named_output(input: ParseStream) -> syn::Result<Option<(Ident, LitStr)>> {
    let fork = input.fork();
    if Ident::parse_any(&fork).is_err() || !fork.peek(token::Bracket) {
        return Ok(None);
    }
    let content;
    syn::bracketed!(content in fork);
    if !content.peek(LitStr) {
        return Ok(None);
    }
    let side = Ident::parse_any(input)?;
    let content;
    syn::bracketed!(content in input);
    let name: LitStr = content.parse()?;
    if !content.is_empty() {
        return Err(content.error("expected `]` after the output's name"));
    }
    if input.peek(Token![.]) || input.peek(token::Bracket) {
        return Err(input.error("a named output ends the endpoint: `teacher[\"layer3\"]` names a whole output"));
    }
    Ok(Some((side, name)))
}

/// A string path, or `student`/`teacher` and segments.
fn parse_target(input: ParseStream) -> syn::Result<Target> {
    if input.peek(LitStr) {
        return Ok(Target::Str(input.parse()?));
    }
    if !input.peek(Ident::peek_any) {
        return Err(input.error(ENDPOINT));
    }
    let root = Ident::parse_any(input)?;
    let mut segments = Vec::new();
    loop {
        if input.peek(Token![.]) && !input.peek(Token![..]) {
            let dot = input.parse::<Token![.]>()?;
            segments.extend(parse_member(input, dot.span)?);
        } else if input.peek(token::Bracket) {
            let content;
            let bracket = syn::bracketed!(content in input);
            if content.is_empty() {
                return Err(syn::Error::new(bracket.span.join(), "expected an index inside `[]`, e.g. `[0]`"));
            }
            let expr: Expr = content.parse()?;
            if !content.is_empty() {
                return Err(content.error("expected `]` after the index"));
            }
            segments.push(Segment::Index { expr, span: bracket.span.join() });
        } else {
            break;
        }
    }
    Ok(Target::Typed(TypedPath { root, segments }))
}

/// After a `.`: a field name, a tuple index, or `0.1` (lexed as one float) as two tuple indices.
fn parse_member(input: ParseStream, dot: Span) -> syn::Result<Vec<Segment>> {
    if input.peek(Ident::peek_any) {
        return Ok(vec![Segment::Field(syn::Member::Named(Ident::parse_any(input)?))]);
    }
    if input.peek(syn::LitInt) {
        let lit: syn::LitInt = input.parse()?;
        return Ok(vec![Segment::Field(syn::Member::Unnamed(tuple_index(&lit.to_string(), lit.span())?))]);
    }
    if input.peek(syn::LitFloat) {
        let lit: syn::LitFloat = input.parse()?;
        let text = lit.to_string();
        let parts: Vec<&str> = text.split('.').collect();
        if parts.len() == 2 {
            return parts
                .iter()
                .map(|part| Ok(Segment::Field(syn::Member::Unnamed(tuple_index(part, lit.span())?))))
                .collect();
        }
        return Err(syn::Error::new(lit.span(), "expected tuple indices like `.0.1`"));
    }
    if input.is_empty() {
        return Err(syn::Error::new(dot, "expected a field name or a tuple index after `.`"));
    }
    Err(input.error("expected a field name or a tuple index after `.`"))
}

fn tuple_index(text: &str, span: Span) -> syn::Result<syn::Index> {
    let valid = !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    match text.parse::<u32>() {
        Ok(index) if valid => Ok(syn::Index { index, span }),
        _ => Err(syn::Error::new(span, format_args!("`{text}` is not a tuple index like `0`"))),
    }
}

fn parse_option(input: ParseStream) -> syn::Result<PairOption> {
    const OPTIONS: &str = "the options are `input` (capture the module's input), `all_calls` (every call, \
                           concatenated along the batch), each for both sides or one: `input(student)`";
    if !input.peek(Ident::peek_any) {
        return Err(input.error(format_args!("expected a pair option: {OPTIONS}")));
    }
    let name = Ident::parse_any(input)?;
    let kind = match name.to_string().as_str() {
        "input" => OptionKind::Input,
        "all_calls" => OptionKind::AllCalls,
        other => return Err(syn::Error::new(name.span(), format_args!("unknown pair option `{other}`: {OPTIONS}"))),
    };
    let side = if input.peek(token::Paren) {
        let content;
        let paren = syn::parenthesized!(content in input);
        let side = if content.peek(Ident::peek_any) { Some(Ident::parse_any(&content)?) } else { None };
        let side = match side.as_ref().map(|side| side.to_string()) {
            Some(s) if s == "student" && content.is_empty() => Side::Student,
            Some(s) if s == "teacher" && content.is_empty() => Side::Teacher,
            _ => {
                return Err(syn::Error::new(
                    paren.span.join(),
                    format_args!("expected `{0}(student)` or `{0}(teacher)`", kind.name()),
                ))
            }
        };
        Some((side, paren.span.join()))
    } else {
        None
    };
    Ok(PairOption { kind, side, span: name.span() })
}
