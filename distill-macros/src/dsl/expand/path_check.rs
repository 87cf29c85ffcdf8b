//! The compile-time checks of string paths: `const` evaluation of each path against its model's
//! schema, failing the build at the literal with a message naming the path.

use proc_macro2::TokenStream;
use quote::{quote_spanned, ToTokens};

use super::Items;
use crate::dsl::ast::{Side, Target};
use crate::util::respan;

/// One `const _: () = { … };` per string-path endpoint of the invocation.
pub(super) fn path_checks(items: &Items) -> TokenStream {
    let input = items.input;
    let mut checks = TokenStream::new();
    for pair in &input.pairs {
        for (side, ty) in [(Side::Student, &input.student_ty), (Side::Teacher, &input.teacher_ty)] {
            let Target::Str(lit) = &pair.endpoint(side).target else {
                continue;
            };
            let span = lit.span();
            let p = input.krate.private(span);
            let ty = respan(ty.to_token_stream(), span);
            let side_name = side.name();
            checks.extend(quote_spanned! {span=>
                const _: () = {
                    const __DISTILL_CHECK: #p::PathCheck = #p::check_path(#p::schema_of::<#ty>(), #side_name, #lit);
                    if let ::core::option::Option::Some(message) = __DISTILL_CHECK.error() {
                        ::core::panic!("{}", message)
                    }
                };
            });
        }
    }
    checks
}
