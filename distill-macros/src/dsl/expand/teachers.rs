//! The methods of a distillation with several named teachers, `=> (big: BigNet, wide: WideNet)`:
//! `new(path, &student, &big, &wide)`, each teacher's mode and model by its name, and the forward
//! that runs every teacher once.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::model::model_trait;
use super::{pair, Items};
use crate::util::unraw;

/// The per-teacher names of the generated code, for teacher `index`.
struct TeacherNames {
    /// The teacher's name, as declared (`big`): `new`'s parameter and the accessor.
    name: Ident,
    /// Its name without `r#`, in messages and docs.
    text: String,
    /// `big_grad`, `big_train`, `big_mode`.
    grad: Ident,
    train: Ident,
    mode: Ident,
    /// The field of the output, `big_output`.
    output: Ident,
    /// The index in `self.teachers`.
    index: syn::Index,
    /// `<BigNet as Model>`.
    model: TokenStream,
    ty: syn::Type,
}

/// The names of every teacher, in declaration order.
fn teacher_names(items: &Items) -> Vec<TeacherNames> {
    items
        .teachers
        .iter()
        .enumerate()
        .map(|(index, teacher)| {
            let text = unraw(&teacher.name);
            let span = teacher.name.span();
            TeacherNames {
                name: teacher.name.clone(),
                grad: format_ident!("{}_grad", text, span = span),
                train: format_ident!("{}_train", text, span = span),
                mode: format_ident!("{}_mode", text, span = span),
                output: output_field(&teacher.name),
                index: syn::Index::from(index),
                model: model_trait(items, &teacher.ty),
                ty: teacher.ty.clone(),
                text,
            }
        })
        .collect()
}

/// The output's field for the teacher named `name`: `big_output`.
pub(super) fn output_field(name: &Ident) -> Ident {
    format_ident!("{}_output", unraw(name), span = name.span())
}

pub(super) fn methods(items: &Items) -> TokenStream {
    let Items { input, name, output, p, labels, label_strs, .. } = items;
    let student_ty = &input.student_ty;
    let n = labels.len();
    let student_model = model_trait(items, student_ty);
    let teachers = teacher_names(items);
    let count = teachers.len();
    let names: Vec<&Ident> = teachers.iter().map(|teacher| &teacher.name).collect();
    let texts: Vec<&str> = teachers.iter().map(|teacher| teacher.text.as_str()).collect();
    let tys: Vec<&syn::Type> = teachers.iter().map(|teacher| &teacher.ty).collect();
    let models: Vec<&TokenStream> = teachers.iter().map(|teacher| &teacher.model).collect();
    let indices: Vec<&syn::Index> = teachers.iter().map(|teacher| &teacher.index).collect();
    let has_adapters = input.pairs.iter().any(|pair| pair.student.adapter.is_some() || pair.teacher.adapter.is_some());
    let path_unused = (!has_adapters).then(|| quote!(#[allow(unused_variables)]));
    let new_body = items.body(|| {
        let path = has_adapters
            .then(|| quote!(let __distill_path: &#p::tch::nn::Path<'p> = ::core::borrow::Borrow::borrow(&path);));
        let resolvers = teachers.iter().enumerate().map(|(index, teacher)| {
            let resolver = format_ident!("__distill_teacher_{}", index);
            let (model, name) = (&teacher.model, &teacher.name);
            quote!(let #resolver = #model::resolver(#name, #p::Side::Teacher);)
        });
        let specs = input
            .pairs
            .iter()
            .zip(label_strs)
            .zip(&items.teacher_of)
            .map(|((pair, label), &teacher)| pair::spec(items, pair, label, teacher));
        let teacher_of = &items.teacher_of;
        quote! {
            #path
            let __distill_student = #student_model::resolver(student, #p::Side::Student);
            #(#resolvers)*
            let __distill_pairs = ::std::vec![#(#specs),*];
            let __distill_core = #p::Core::with_teachers(__distill_pairs, &[#(#teacher_of),*], &[#(#texts),*])?;
            // Criteria parameters (a temperature ≤ 0, a negative β…) are errors here, before any step.
            __distill_core.validate()?;
            ::core::result::Result::Ok(#name { student, teachers: (#(#names,)*), core: __distill_core })
        }
    });
    let sides = quote!(&[#(#models::as_side(self.teachers.#indices)),*]);
    let forward_body = items.body(|| {
        let pair_vars: Vec<Ident> = (0..n).map(|i| format_ident!("__distill_pair_{}", i)).collect();
        let output_vars: Vec<Ident> = (0..count).map(|i| format_ident!("__distill_output_{}", i)).collect();
        let output_fields = teachers.iter().map(|teacher| &teacher.output);
        quote! {
            let __distill_forward = self.core.forward_teachers(
                #student_model::as_side(self.student),
                #sides,
                student_xs,
                teacher_xs,
                train,
            )?;
            let [#(#pair_vars),*] = #p::into_array::<#n>(__distill_forward.pairs)?;
            let [#(#output_vars),*] = #p::into_outputs::<#count>(__distill_forward.teacher_outputs)?;
            ::core::result::Result::Ok(#output {
                #(#labels: #pair_vars,)*
                student_output: __distill_forward.student_output,
                #(#output_fields: #output_vars,)*
            })
        }
    });
    let dry_run_body =
        items.body(|| quote!(self.core.dry_run_teachers(#student_model::as_side(self.student), #sides, xs)));
    let per_teacher = teachers.iter().map(|teacher| per_teacher_methods(items, teacher));
    let new_doc = format!(
        "Builds the distillation of `student` from the teachers {}: creates the adapters under `path / <label>` \
         (so that an optimizer over `path`'s VarStore trains them), and checks every endpoint against its model — \
         indices in range, string paths that exist, modules that record — before any step. Every teacher runs \
         without gradient and in evaluation mode until its `<name>_grad` / `<name>_train` says otherwise.",
        texts.iter().map(|text| format!("`{text}`")).collect::<Vec<_>>().join(", ")
    );
    let allows = items.fallback_allows();
    let balance = super::model::balance_methods(items);
    let run = super::model::run_methods(
        items,
        super::model::RunDocs {
            engine: "The capture engine, with the resolved endpoints of every side in pair order and each pair's \
                     teacher.",
            forward: "Runs each teacher once, then the student (with `train`), on `xs`, and returns every pair \
                      after its adapter, with every model's output.",
            forward_errors: "; a teacher's problem names the teacher",
            models: "every model",
        },
        dry_run_body,
    );
    quote! {
        #[automatically_derived]
        #allows
        impl<'m> #name<'m> {
            /// The labels of the pairs, in declaration order.
            pub const LABELS: [&'static str; #n] = [#(#label_strs),*];

            #[doc = #new_doc]
            #path_unused
            pub fn new<'p>(
                path: impl ::core::borrow::Borrow<#p::tch::nn::Path<'p>>,
                student: &'m #student_ty,
                #(#names: &'m #tys,)*
            ) -> ::core::result::Result<Self, #p::DistillError> {
                #new_body
            }

            /// Whether gradients flow into every teacher (default `false`: each runs under
            /// no-grad); each teacher's own `<name>_grad` sets one.
            pub fn teacher_grad(mut self, grad: bool) -> Self {
                for __distill_index in 0..#count {
                    let mut mode = self.core.mode_of(__distill_index);
                    mode.grad = grad;
                    self.core.set_mode_of(__distill_index, mode);
                }
                self
            }

            /// Whether every teacher runs in training mode (default `false`: evaluation mode,
            /// whatever the student's flag); each teacher's own `<name>_train` sets one.
            pub fn teacher_train(mut self, train: bool) -> Self {
                for __distill_index in 0..#count {
                    let mut mode = self.core.mode_of(__distill_index);
                    mode.train = train;
                    self.core.set_mode_of(__distill_index, mode);
                }
                self
            }

            #(#per_teacher)*

            #balance

            #run

            /// As [`forward_t`](Self::forward_t), with a separate input for the teachers (every
            /// teacher gets `teacher_xs`).
            pub fn forward_t_with(
                &self,
                student_xs: &#p::tch::Tensor,
                teacher_xs: &#p::tch::Tensor,
                train: bool,
            ) -> ::core::result::Result<#output<'_>, #p::DistillError> {
                #forward_body
            }
        }
    }
}

/// `big()`, `big_grad(bool)`, `big_train(bool)`, `big_mode()` for the teacher named `big`.
fn per_teacher_methods(items: &Items, teacher: &TeacherNames) -> TokenStream {
    let p = &items.p;
    let TeacherNames { name, text, grad, train, mode, index, ty, .. } = teacher;
    let model_doc = format!("The teacher `{text}`.");
    let grad_doc =
        format!("Whether gradients flow into the teacher `{text}` (default `false`: it runs under no-grad).");
    let train_doc = format!(
        "Whether the teacher `{text}` runs in training mode (default `false`: evaluation mode, whatever the \
         student's flag)."
    );
    let mode_doc = format!("How the teacher `{text}` runs.");
    quote! {
        #[doc = #model_doc]
        pub fn #name(&self) -> &'m #ty {
            self.teachers.#index
        }

        #[doc = #grad_doc]
        pub fn #grad(mut self, grad: bool) -> Self {
            let mut mode = self.core.mode_of(#index);
            mode.grad = grad;
            self.core.set_mode_of(#index, mode);
            self
        }

        #[doc = #train_doc]
        pub fn #train(mut self, train: bool) -> Self {
            let mut mode = self.core.mode_of(#index);
            mode.train = train;
            self.core.set_mode_of(#index, mode);
            self
        }

        #[doc = #mode_doc]
        pub fn #mode(&self) -> #p::TeacherMode {
            self.core.mode_of(#index)
        }
    }
}
