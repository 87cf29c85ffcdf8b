//! The `PairSpec { … }` that `new()` builds for one pair: both endpoints resolved against their
//! models, the criterion boxed, the adapter constructed.

use proc_macro2::{Group, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::Expr;

use super::endpoint::{endpoint_expr, helper_call, module_ref};
use super::Items;
use crate::dsl::ast::{OptionKind, Pair, Side, Target};
use crate::util::unraw;

/// The expression (`Vec<PairSpec>`, `?` allowed) that `new()` builds its pairs with: one closure per
/// pair, each building its `PairSpec`, handed as `&dyn Fn` to one runtime loop. Each pair's code is a
/// function of its own that the optimizer sees alone, so that compiling `new()` takes time linear in
/// the number of pairs; one body building them all would give it a function quadratic to optimise
/// (each `?` dropping every pair built before it).
pub(super) fn build_pairs(items: &Items) -> TokenStream {
    let p = &items.p;
    let specs = items
        .input
        .pairs
        .iter()
        .zip(&items.label_strs)
        .enumerate()
        .map(|(index, (pair, label))| spec(items, pair, label, items.teacher_of.get(index).copied().unwrap_or(0)));
    quote! {
        #p::build_pairs(&[#(
            &|| -> ::core::result::Result<#p::PairSpec<'m>, #p::DistillError> {
                ::core::result::Result::Ok(#specs)
            } as &dyn ::core::ops::Fn() -> ::core::result::Result<#p::PairSpec<'m>, #p::DistillError>
        ),*])?
    }
}

/// The `PairSpec { … }` expression of one pair, evaluated in `new()` (where `__distill_student` and
/// `__distill_teacher_<i>` are the resolvers of the student and of teacher `i`).
pub(super) fn spec(items: &Items, pair: &Pair, label: &str, teacher: usize) -> TokenStream {
    let p = &items.p;
    let student_endpoint = endpoint_expr(items, &pair.student.target, Side::Student);
    let teacher_endpoint = endpoint_expr(items, &pair.teacher.target, Side::Teacher);
    let student_options = options(pair, Side::Student);
    let teacher_options = options(pair, Side::Teacher);
    let [student_adapter, teacher_adapter] =
        [Side::Student, Side::Teacher].map(|side| match adapter(items, pair, side, label) {
            Some(adapter) => quote!(::core::option::Option::Some(#adapter)),
            None => quote!(::core::option::Option::None),
        });
    let criterion = criterion(items, &pair.criterion);
    // Each pair's teacher endpoint is resolved by its teacher's resolver; an error names the teacher
    // when there are several.
    let resolver = format_ident!("__distill_teacher_{}", teacher);
    let name = match items.input.teachers.get(teacher) {
        Some(found) if items.input.several => {
            let name = unraw(&found.name);
            quote!(::core::option::Option::Some(#name))
        }
        _ => quote!(::core::option::Option::None),
    };
    let resolve_teacher = quote!(#p::resolve_in(#name, &#resolver, &__distill_teacher_endpoint #teacher_options)?);
    quote! {
        {
            let __distill_student_endpoint: #p::Endpoint<'static> = #student_endpoint;
            let __distill_teacher_endpoint: #p::Endpoint<'static> = #teacher_endpoint;
            #p::PairSpec {
                label: ::std::borrow::Cow::Borrowed(#label),
                student: __distill_student.resolve(&__distill_student_endpoint #student_options)?,
                teacher: #resolve_teacher,
                criterion: ::core::option::Option::Some(#criterion),
                student_adapter: #student_adapter,
                teacher_adapter: #teacher_adapter,
            }
        }
    }
}

/// `.input()` / `.all_calls()` for `side`.
fn options(pair: &Pair, side: Side) -> TokenStream {
    let mut tokens = TokenStream::new();
    if pair.has_option(OptionKind::Input, side) {
        tokens.extend(quote!(.input()));
    }
    if pair.has_option(OptionKind::AllCalls, side) {
        tokens.extend(quote!(.all_calls()));
    }
    tokens
}

/// `criterion(expr)`; a closure goes through `closure_criterion` so that its parameter types are
/// inferred, also when `macro_rules!` handed it over as an `$c:expr` fragment (an invisible group).
fn criterion(items: &Items, expr: &Expr) -> TokenStream {
    let func = if is_closure(expr) { "closure_criterion" } else { "criterion" };
    helper_call(items, expr.span(), func, expr.to_token_stream())
}

fn is_closure(expr: &Expr) -> bool {
    match expr {
        Expr::Closure(_) => true,
        Expr::Group(group) => is_closure(&group.expr),
        _ => false,
    }
}

/// `adapter(f(path / "label", &teacher.x, &student.y))?` when `side` has an adapter. The constructor
/// receives the modules of both endpoints; an endpoint written as a string path has no typed module
/// and gives `&StringPath::new("path")`, at the string's span, so that a constructor that needs a
/// module's type is a type error at the path.
fn adapter(items: &Items, pair: &Pair, side: Side, label: &str) -> Option<TokenStream> {
    let adapter = pair.endpoint(side).adapter.as_ref()?;
    let func = &adapter.func;
    // With an adapter on each side, each gets its own sub-path.
    let path = if pair.student.adapter.is_some() && pair.teacher.adapter.is_some() {
        let sub = side.name();
        quote!(&(__distill_path / #label) / #sub)
    } else {
        quote!(__distill_path / #label)
    };
    let module = |target: &Target, side: Side| match target {
        Target::Typed(path) => module_ref(items, path, side),
        Target::Str(lit) => {
            let p = items.input.krate.private(lit.span());
            quote_spanned!(lit.span()=> &#p::StringPath::new(#lit))
        }
    };
    let teacher = module(&pair.teacher.target, Side::Teacher);
    let student = module(&pair.student.target, Side::Student);
    let span = func.path.segments.last().map_or_else(|| func.span(), |segment| segment.ident.span());
    let mut args = Group::new(proc_macro2::Delimiter::Parenthesis, quote!(#path, #teacher, #student));
    args.set_span(span);
    let options = adapter.options.iter().map(|option| {
        let (dot, method, args) = (&option.dot, &option.method, &option.args);
        let mut group = Group::new(proc_macro2::Delimiter::Parenthesis, args.to_token_stream());
        group.set_span(option.paren.span.join());
        quote!(#dot #method #group)
    });
    let call = helper_call(items, span, "adapter", quote!(#func #args #(#options)*));
    let question = quote_spanned!(span=> ?);
    Some(quote!(#call #question))
}
