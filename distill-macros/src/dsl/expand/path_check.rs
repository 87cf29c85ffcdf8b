//! The compile-time checks of string paths: `const` evaluation of each path against its model's
//! schema, failing the build at the literal with a message naming the path.

use proc_macro2::TokenStream;
use quote::{quote_spanned, ToTokens};

use super::Items;
use crate::dsl::ast::{Side, Target};
use crate::util::{respan, unraw};

/// One `const _: () = { … };` per string-path endpoint of the invocation.
pub(super) fn path_checks(items: &Items) -> TokenStream {
    let input = items.input;
    let mut checks = TokenStream::new();
    for (index, pair) in input.pairs.iter().enumerate() {
        let teacher = input.teachers.get(items.teacher_of.get(index).copied().unwrap_or(0));
        let Some(teacher) = teacher else {
            continue;
        };
        // With several teachers a message names the pair's teacher: "the teacher `big` has no module …".
        let teacher_side =
            if input.several { format!("teacher `{}`", unraw(&teacher.name)) } else { Side::Teacher.name().to_owned() };
        for (side, ty, side_name) in [
            (Side::Student, &input.student_ty, Side::Student.name().to_owned()),
            (Side::Teacher, &teacher.ty, teacher_side),
        ] {
            let Target::Str(lit) = &pair.endpoint(side).target else {
                continue;
            };
            let span = lit.span();
            let p = input.krate.private(span);
            let ty = respan(ty.to_token_stream(), span);
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
