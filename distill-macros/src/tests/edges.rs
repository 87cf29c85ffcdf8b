//! The expansion of inputs at the edges of the grammar: fragments `macro_rules!` hands over, indices
//! too large for `usize`, named outputs inside adapters, and labels or fields that are keywords.

use proc_macro2::TokenStream;

use super::expand::{assert_contains, dsl, errors};
use super::text;
use crate::dsl;

/// `input` with each `FRAGMENT` replaced by `fragment` in an invisible group, as `macro_rules!`
/// hands over an `$e:expr` or `$l:literal` fragment.
fn with_fragment(input: &str, fragment: &str) -> TokenStream {
    use proc_macro2::{Delimiter, Group, TokenTree};
    fn replace(stream: TokenStream, fragment: &TokenStream) -> TokenStream {
        stream
            .into_iter()
            .map(|token| match token {
                TokenTree::Ident(ident) if ident == "FRAGMENT" => {
                    TokenTree::Group(Group::new(Delimiter::None, fragment.clone()))
                }
                TokenTree::Group(group) => {
                    TokenTree::Group(Group::new(group.delimiter(), replace(group.stream(), fragment)))
                }
                other => other,
            })
            .collect()
    }
    replace(input.parse().expect("test input lexes"), &fragment.parse().expect("fragment lexes"))
}

#[test]
fn macro_rules_fragments_are_read_through_their_invisible_groups() {
    // A literal index names the label as written out.
    let out = text(&dsl::expand(with_fragment(
        "struct Kd for Net => Net { student.features[FRAGMENT] => teacher.features[1] with Mse; }",
        "3",
    )));
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(&out, &["[\"features_3\"]"]);
    // A closure criterion still has its parameter types inferred.
    let out = text(&dsl::expand(with_fragment(
        "struct Kd for Net => Net { student => teacher with FRAGMENT; }",
        "|s, t| (s - t).abs().mean(None)",
    )));
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(&out, &[":: distill :: __private :: closure_criterion ("]);
}

#[test]
fn an_index_too_large_still_names_its_label() {
    // rustc reports the literal's range at the literal; the label is not "computed".
    let out = dsl("struct Kd for Net => Net {
        student.features[99999999999999999999] => teacher.features[0x10] with Mse;
        student => teacher with Mse;
    }");
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "[\"features_99999999999999999999\" , \"output\"]",
            ":: slot (& (* student) . features , 99999999999999999999 ,",
        ],
    );
}

#[test]
fn a_named_output_inside_an_adapter_is_a_string_path_of_that_teacher() {
    let out = dsl(r#"
        struct Ens for Net => (big: Net, wide: Net) {
            a: student.x => learned_linear_adapter(big["layer3"]) with Mse;
            b: student.y => conv2d_adapter(wide["features.0.conv"]).tolerance(t) with Mse;
        }
    "#);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "learned_linear_adapter (__distill_path / \"a\" , & :: distill :: __private :: StringPath :: new (\"layer3\")",
            "let __distill_teacher_endpoint : :: distill :: __private :: Endpoint < 'static > = :: distill :: __private :: Endpoint :: path (\"layer3\")",
            "resolve_in (:: core :: option :: Option :: Some (\"wide\")",
            "check_path (:: distill :: __private :: schema_of :: < Net > () , \"teacher `big`\" , \"layer3\")",
            "& [0usize , 1usize]",
        ],
    );
    let out = dsl(r#"struct Kd for Net => Net { a: student.x => learned_linear_adapter(student["x"]) with Mse; }"#);
    assert_eq!(errors(&out), 1, "the side is checked as outside an adapter: {out}");
}

#[test]
fn labels_and_fields_that_are_keywords_are_errors_of_the_macro() {
    let out = dsl(r#"
        struct Kd for Net => Net {
            type: student.a => teacher.a with Mse;
            self: student.b => teacher.b with Mse;
            _: student.c => teacher.c with Mse;
            __distill_terms: student.d => teacher.d with Mse;
            student.__distill_x => teacher.e with Mse;
            f: student.type.Self => teacher.match with Mse;
            r#loop: student.r#loop => teacher.r#loop with Mse;
            student.größe => teacher.größe with Mse;
            r#student.g => r#teacher.g with Mse;
        }
    "#);
    // Five unusable labels, three keyword fields.
    assert_eq!(errors(&out), 8, "{out}");
    assert_contains(
        &out,
        &[
            "`type` is a keyword: write the label as `r#type`",
            "`self` cannot be a label: it is not an identifier, even as `r#self`",
            "`_` cannot be a label",
            "labels starting with `__distill` are reserved for the generated code; choose another\"",
            "choose another (it is derived from the student's path: give the pair a label)",
            "`type` is a keyword: write the field as `r#type`",
            "`Self` cannot be a field",
            "`match` is a keyword: write the field as `r#match`",
            // The stand-ins keep the usable labels only, so that they parse.
            "pub const LABELS : [& 'static str ; 4usize] = [\"f\" , \"loop\" , \"größe\" , \"g\"]",
        ],
    );
    for absent in ["pub type", "pub self", "pub _", "pub __distill_terms : :: distill :: __private :: Pair"] {
        assert!(!out.contains(absent), "`{absent}` in the stand-ins: {out}");
    }
}
