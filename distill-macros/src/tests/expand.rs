//! Expansion unit tests (cxx style): expand a known input and compare the key parts of the output.

use proc_macro2::TokenStream;

use super::corpus::{DERIVE, DSL};
use super::text;
use crate::{derive, dsl};

pub(super) fn dsl(input: &str) -> String {
    text(&dsl::expand(input.parse::<TokenStream>().expect("test input lexes")))
}

fn derive(input: &str) -> String {
    text(&derive::expand(input.parse::<TokenStream>().expect("test input lexes")))
}

pub(super) fn errors(output: &str) -> usize {
    output.matches("compile_error").count()
}

pub(super) fn assert_contains(haystack: &str, needles: &[&str]) {
    for needle in needles {
        assert!(haystack.contains(needle), "missing `{needle}` in:\n{haystack}");
    }
}

#[test]
fn the_readme_example_expands_to_the_documented_items() {
    let out = dsl(DSL[0]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            // The user's doc comment and visibility reach the struct.
            "# [doc = \" Distills the 64-channel net into its pruned 32-channel copy.\"]",
            "pub struct PrunedKd < 'm > { student : & 'm Net , teachers : (& 'm Net ,) , distillation : :: distill :: __private :: Distillation < 'm > , }",
            "pub struct PrunedKdOutput < 'd >",
            "pub f0 : :: distill :: __private :: Pair < 'd >",
            "pub features_2_bn : :: distill :: __private :: Pair < 'd >",
            "pub student_output : :: distill :: __private :: tch :: Tensor",
            "pub struct PrunedKdLosses",
            "pub const LABELS : [& 'static str ; 5usize] = [\"f0\" , \"f1\" , \"at2\" , \"features_2_bn\" , \"logits\"]",
            // Inner index: a checked child; last segment: a recording module.
            ":: distill :: __private :: child (& (* student) . features , 0 , :: distill :: __private :: Side :: Student , \"features\") ?",
            ":: distill :: __private :: module (& (* :: distill :: __private :: child",
            // Adapters get path / label, then the teacher module, then the student module.
            "conv2d_adapter (__distill_path / \"f0\" , & (* :: distill :: __private :: child (& (* teacher) . features , 0",
            "inverted_conv2d_adapter (__distill_path / \"f1\" , & (* :: distill :: __private :: child (& (* teacher) . features , 1",
            // A final index selects the slot.
            ":: distill :: __private :: slot (& (* student) . features , 2 , :: distill :: __private :: Side :: Student , \"features\") ?",
            // String paths: resolved at run time and checked at compile time.
            ":: distill :: __private :: Endpoint :: path (\"features.2.bn\")",
            ":: distill :: __private :: check_path (:: distill :: __private :: schema_of :: < Net > () , \"teacher\" , \"features.2.bn\")",
            // The bare root.
            ":: distill :: __private :: Endpoint :: root ()",
            ":: distill :: __private :: criterion (KlDiv :: new (4.0))",
            ":: distill :: __private :: criterion (AttentionTransfer :: default () * 100.0)",
            "impl :: core :: fmt :: Display for PrunedKdLosses",
        ],
    );
    // Only the adapted pairs build adapters.
    assert_eq!(out.matches(":: distill :: __private :: adapter (").count(), 2);
}

#[test]
fn options_closures_tuple_fields_and_computed_indices() {
    let out = dsl(DSL[1]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "pub (crate) struct Kd < 'm >",
            "# [derive (Debug)]",
            // `.0.1` (lexed as a float) is two tuple indices.
            ":: distill :: __private :: module (& (* student) . pair . 0 . 1)",
            "[\"pair_0_1\" , \"hidden\" , \"input\"]",
            ":: distill :: __private :: closure_criterion (| s , t | (s - t) . abs () . mean (None))",
            "__distill_student . resolve (& __distill_student_endpoint . all_calls ()) ?",
            "__distill_student . resolve (& __distill_student_endpoint . input ()) ?",
            "resolve_in (:: core :: option :: Option :: None , & __distill_teacher_0 , & __distill_teacher_endpoint . all_calls ()",
            // A computed index is used as written, its path text too.
             ":: distill :: __private :: child (& (* student) . body , LAST , :: distill :: __private :: Side :: Student , \"body\")",
            "model :: Net < Conv2D >",
        ],
    );
    // No adapter: the path is not bound, and allowed to be unused.
    assert_contains(&out, &["# [allow (unused_variables)] pub fn new"]);
    assert!(!out.contains("__distill_path"), "{out}");
}

#[test]
fn adapters_on_both_sides_get_sub_paths_and_raw_labels_stay_raw() {
    let out = dsl(DSL[2]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "adapters :: learned (& (__distill_path / \"x\") / \"student\"",
            "< X as Y > :: make (& (__distill_path / \"x\") / \"teacher\"",
            ":: distill :: __private :: slot (& (* student) , 0 , :: distill :: __private :: Side :: Student , \"\")",
            "pub r#type : :: distill :: __private :: Pair < 'd >",
            "[\"x\" , \"_0\" , \"type\"]",
            "# [doc = \" a doc\"]",
        ],
    );
}

#[test]
fn every_error_of_an_invocation_is_reported() {
    let out = dsl(r#"
        struct Kd for Net => Net {
            a: teacher.x => student.x with Mse;
            a: student.y => teacher.y with Mse;
            student.z => teacher.z;
            "" => "a..b" with Mse;
            c: student.q => conv2d_adapter("q") with Mse, input, input(student), bogus;
        }
    "#);
    // teacher on the student side, student on the teacher side, duplicate label (+ note), missing
    // `with`, empty path, empty segment, unknown option. (An adapter on a string path is no error:
    // its constructor receives a `StringPath`.)
    assert_eq!(errors(&out), 8, "{out}");
    // Stand-ins for the items, with the labels of the pairs that parsed (the duplicate once), and
    // nothing that could fail to compile: no endpoint, criterion or adapter expression.
    assert_contains(
        &out,
        &[
            "struct Kd < 'm >",
            "pub a : :: distill :: __private :: Pair < 'd > , __distill_pairs : :: core :: marker :: PhantomData < & 'd () > ,",
            "pub const LABELS : [& 'static str ; 1usize] = [\"a\"]",
            "# [allow (unused_variables , unused_mut , unreachable_code)] impl < 'm > Kd < 'm >",
        ],
    );
    assert_eq!(
        out.matches("unreachable !").count(),
        6,
        "`new`, `dry_run`, `forward_t_with`, `forward_cached`, `forward_cached_by` and `dry_run_cached`: {out}"
    );
    for absent in ["criterion (", "PairSpec", "check_path", "conv2d_adapter ("] {
        assert!(!out.contains(absent), "`{absent}` in the stand-ins: {out}");
    }
}

#[test]
fn several_teachers_are_parameters_fields_and_methods_by_name() {
    let out = dsl(r#"
        pub struct Ens for Net => (big: BigNet, wide: WideNet) {
            f1: student.features[1] => big.features[1] with Mse;
            "head" => wide["head"] with Mse;
            kd: student => wide with KlDiv::new(4.0);
        }
    "#);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "teachers : (& 'm BigNet , & 'm WideNet ,)",
            "student : & 'm Net , big : & 'm BigNet , wide : & 'm WideNet ,",
            "let __distill_teacher_1 = < WideNet as :: distill :: __private :: Model > :: resolver (wide",
            ":: distill :: __private :: resolve_in (:: core :: option :: Option :: Some (\"big\") , & __distill_teacher_0",
            ":: distill :: __private :: resolve_in (:: core :: option :: Option :: Some (\"wide\") , & __distill_teacher_1",
            "& [\"big\" , \"wide\"] , __distill_pairs , & [0usize , 1usize , 1usize] ,) ?",
            "pub fn big (& self) -> & 'm BigNet",
            "pub fn wide_grad (mut self , grad : bool) -> Self",
            "pub fn big_train (mut self , train : bool) -> Self",
            "pub fn wide_mode (& self)",
            "pub big_output : :: distill :: __private :: tch :: Tensor",
            "pub wide_output : :: distill :: __private :: tch :: Tensor",
            "check_path (:: distill :: __private :: schema_of :: < WideNet > () , \"teacher `wide`\" , \"head\")",
        ],
    );
    assert!(!out.contains("pub teacher_output"), "{out}");
    assert!(out.contains("Pair `\\\"head\\\"` ⇒ `wide[\\\"head\\\"]` with `Mse`."), "{out}");
}

#[test]
fn several_teachers_errors_are_collected_and_the_stand_ins_keep_valid_names() {
    let out = dsl(r#"
        struct Ens for Net => (big: Net, big: Net, wide: Net, student: Net) {
            a: student.x => bgi.x with Mse;
            b: student.y => teacher.y with Mse;
            c: student.z => "z" with Mse;
            wide_output: student.w => wide.w with Mse;
        }
    "#);
    // The duplicate (+ note), the reserved name, the unknown teacher, `teacher` among several, the
    // string path without its teacher, the reserved label.
    assert_eq!(errors(&out), 7, "{out}");
    assert_contains(&out, &["teachers : (& 'm Net , & 'm Net ,)", "pub fn big (& self)", "pub wide_output"]);
    let out = dsl(r#"
        struct Ens for Net => (big: Net, wide: Net) {
            a: learned_linear_adapter(student.x) => wide["x"] with Mse;
            b: student.y => big.y with Mse;
        }
    "#);
    // An adapter beside a string path is fine: the constructor receives a `StringPath` for it.
    assert_eq!(errors(&out), 0, "{out}");
    assert!(out.contains("StringPath :: new (\"x\")"), "{out}");
    assert_eq!(out.matches("pub fn big (").count(), 1, "{out}");
    assert!(
        !out.contains("pub student_output : :: distill :: __private :: tch :: Tensor , pub student_output"),
        "{out}"
    );
}

#[test]
fn derive_named_struct() {
    let out = derive(DERIVE[0]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "const _ : () = {",
            "impl :: distill :: __private :: Distillable for Net {",
            "__distill_visit (:: distill :: __private :: Child :: field (\"features\" , < nn :: Seq < Block > as :: distill :: __private :: StaticSchema > :: __distill_field (& self . features))) ;",
            "Child :: field (\"fc\" , < nn :: Linear as :: distill :: __private :: StaticSchema > :: __distill_field (& self . classifier))",
            "impl :: distill :: __private :: StaticSchema for Net {",
            ":: distill :: __private :: FieldSchema { name : \"features\" , schema : & < nn :: Seq < Block > as :: distill :: __private :: StaticSchema > :: SCHEMA }",
        ],
    );
    assert!(!out.contains("width"), "skipped fields are left out");
    assert!(!out.contains("where"), "no bounds without generics");
}

#[test]
fn derive_generics_bound_only_the_fields_that_use_parameters() {
    let out = derive(DERIVE[1]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "impl < 'a , M : Clone , const N : usize > :: distill :: __private :: Distillable for Wrapper < 'a , M , N >",
            "where M : Send , M : :: distill :: __private :: StaticSchema , [nn :: Seq < M > ; N] : :: distill :: __private :: StaticSchema ,",
        ],
    );
    assert!(!out.contains("nn :: Linear : :: distill"), "concrete fields are checked in the body");
    assert!(!out.contains("marker"));
}

#[test]
fn derive_enums_visit_the_active_variant() {
    let out = derive(DERIVE[2]);
    assert_eq!(errors(&out), 0, "{out}");
    assert_contains(
        &out,
        &[
            "match self {",
            "Head :: Linear (__distill_0 , _) => {",
            "Head :: Deep { first : __distill_0 , second : __distill_1 , .. } => {",
            "Child :: field (\"last\" ,",
            "Head :: Nothing => { }",
            "Children :: Variants { variants : & [& [",
        ],
    );
    let unit = derive(DERIVE[3]);
    assert_contains(&unit, &["Children :: Fields { fields : & [] }"]);
    let tuple = derive(DERIVE[4]);
    assert_contains(
        &tuple,
        &[
            "Child :: field (\"1\" ,",
            "< nn :: Linear as :: distill :: __private :: StaticSchema > :: __distill_field (& self . 1)",
        ],
    );
    let never = derive(DERIVE[5]);
    assert_contains(&never, &["match * self { }"]);
}

#[test]
fn derive_errors_are_collected() {
    let out = derive(
        r#"
        #[distill(skip)]
        struct Net {
            #[distill(skp)] a: nn::Linear,
            #[distill(rename = "x.y")] b: nn::Linear,
            #[distill(rename = "c")] c2: nn::Linear,
            c: nn::Linear,
        }
    "#,
    );
    // container option, unknown option, dotted name, duplicate name (+ note)
    assert_eq!(errors(&out), 5, "{out}");
    // Stand-in impls keep later uses of `Net` from adding errors.
    assert_contains(
        &out,
        &[
            "impl :: distill :: __private :: Distillable for Net { fn visit_children",
            "impl :: distill :: __private :: StaticSchema for Net { }",
        ],
    );
    let union = derive("union U { a: u32 }");
    assert_eq!(errors(&union), 1);
    assert_contains(&union, &["impl :: distill :: __private :: StaticSchema for U { }"]);
    let garbage = derive("fn f() {}");
    assert_eq!(errors(&garbage), 1);
}

#[test]
fn a_renamed_crate_is_named_by_its_given_path() {
    let out = dsl(r#"
        #[distill(crate = "kd")]
        #[derive(Debug)]
        struct Kd for Net => Net {
            "a.b" => teacher.a[0].b with Mse;
            x: student.x => conv2d_adapter(teacher.x) with Mse;
        }
    "#);
    assert_eq!(errors(&out), 0, "{out}");
    assert!(!out.contains("distill ::"), "the default path is never used: {out}");
    assert!(!out.contains("# [distill"), "the option is not passed on: {out}");
    assert_contains(
        &out,
        &["# [derive (Debug)]", "kd :: __private :: check_path", "kd :: __private :: child (", "[`Pair`](kd::Pair)"],
    );

    let out = derive(
        r#"
        #[distill(crate = "::kd")]
        struct Net<M> { a: nn::Linear, b: M }
    "#,
    );
    assert_eq!(errors(&out), 0, "{out}");
    assert!(!out.contains("distill ::"), "{out}");
    assert_contains(
        &out,
        &[
            "< nn :: Linear as :: kd :: __private :: StaticSchema > :: __distill_field",
            "M : :: kd :: __private :: StaticSchema",
        ],
    );

    let bad = derive(r#"#[distill(crate = "not a path")] struct Net { a: nn::Linear }"#);
    assert_eq!(errors(&bad), 1, "{bad}");
    let bad = dsl(r#"#[distill(krate = "kd")] struct Kd for A => B { student => teacher with Mse; }"#);
    assert_eq!(errors(&bad), 1, "{bad}");
    assert_contains(&bad, &["struct Kd < 'm >"]);
}
