//! The per-teacher items of a distillation: for `=> (big: BigNet, wide: WideNet)` the methods
//! `big()`, `big_grad`, `big_train`, `big_mode` and the output field `big_output`; for the one
//! teacher of `=> Net`, named `teacher`, `teacher()`, `teacher_grad`, … and `teacher_output`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::Ident;

use super::Items;
use crate::util::unraw;

/// The per-teacher names of the generated code, for teacher `index`.
pub(super) struct TeacherNames {
    /// The teacher's name, as declared (`big`): `new`'s parameter and the accessor.
    pub(super) name: Ident,
    /// Its name without `r#`, in messages and docs.
    pub(super) text: String,
    /// `big_grad`, `big_train`, `big_mode`.
    pub(super) grad: Ident,
    pub(super) train: Ident,
    pub(super) mode: Ident,
    /// The index in `self.teachers`.
    pub(super) index: syn::Index,
    /// `<BigNet as Model>`.
    pub(super) model: TokenStream,
    pub(super) ty: syn::Type,
}

/// The names of every teacher, in declaration order.
pub(super) fn teacher_names(items: &Items) -> Vec<TeacherNames> {
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

/// `big()`, `big_grad(bool)`, `big_train(bool)`, `big_mode()` for the teacher named `big`.
/// For the one teacher (`several` false) these are `teacher()`, `teacher_grad`, `teacher_train` and
/// `teacher_mode`.
pub(super) fn per_teacher_methods(items: &Items, teacher: &TeacherNames, several: bool) -> TokenStream {
    let p = &items.p;
    let TeacherNames { name, text, grad, train, mode, index, ty, .. } = teacher;
    let who = if several { format!("the teacher `{text}`") } else { "the teacher".to_owned() };
    let model_doc = if several { format!("The teacher `{text}`.") } else { "The teacher model.".to_owned() };
    let grad_doc = format!("Whether gradients flow into {who} (default `false`: it runs under no-grad).");
    let train_doc =
        format!("Whether {who} runs in training mode (default `false`: evaluation mode, whatever the student's flag).");
    let mode_doc = format!("How {who} runs.");
    quote! {
        #[doc = #model_doc]
        pub fn #name(&self) -> &'m #ty {
            self.teachers.#index
        }

        #[doc = #grad_doc]
        pub fn #grad(mut self, grad: bool) -> Self {
            let mut mode = #p::mode_of(&self.distillation, #index);
            mode.grad = grad;
            #p::set_mode_of(&mut self.distillation, #index, mode);
            self
        }

        #[doc = #train_doc]
        pub fn #train(mut self, train: bool) -> Self {
            let mut mode = #p::mode_of(&self.distillation, #index);
            mode.train = train;
            #p::set_mode_of(&mut self.distillation, #index, mode);
            self
        }

        #[doc = #mode_doc]
        pub fn #mode(&self) -> #p::TeacherMode {
            #p::mode_of(&self.distillation, #index)
        }
    }
}

/// `<Ty as Model>` at the type's span: a model missing `ModuleT` or `Distillable` is one error
/// there (rustc merges the identical diagnostics of each use).
pub(super) fn model_trait(items: &Items, ty: &syn::Type) -> TokenStream {
    let p = &items.p;
    quote_spanned!(ty.span()=> <#ty as #p::Model>)
}
