//! The distillation struct `Name<'m>`: `new()`, the teachers' modes, and the forward. One teacher
//! is the list of one, named `teacher`: the same code as several.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::Ident;

use super::teachers::{model_trait, output_field, per_teacher_methods, teacher_names};
use super::{docs, pair, Items};

pub(super) fn definition(items: &Items) -> TokenStream {
    let Items { input, name, p, .. } = items;
    let (attrs, vis) = (&input.attrs, &input.vis);
    let student_ty = &input.student_ty;
    // One teacher is a list of one.
    let tys = items.teachers.iter().map(|teacher| &teacher.ty);
    let doc = docs::model_doc(items);
    quote! {
        #(#attrs)*
        #[doc = #doc]
        #vis struct #name<'m> {
            student: &'m #student_ty,
            teachers: (#(&'m #tys,)*),
            distillation: #p::Distillation<'m>,
        }
    }
}

/// The teacher type of a one-teacher distillation; `None` with several teachers.
pub(super) fn one_teacher<'a>(items: &Items<'a>) -> Option<&'a syn::Type> {
    match (items.input.several, items.teachers.as_slice()) {
        (false, [teacher]) => Some(&teacher.ty),
        _ => None,
    }
}

/// `new`, the teachers' modes and models, the balance and run methods and the forward: the same
/// code for one teacher (the list of one, named `teacher`) and several.
pub(super) fn methods(items: &Items) -> TokenStream {
    let Items { input, name, output, p, labels, label_strs, .. } = items;
    let several = input.several;
    let student_ty = &input.student_ty;
    let n = labels.len();
    let student_model = model_trait(items, student_ty);
    let teachers = teacher_names(items);
    let count = teachers.len();
    let names: Vec<&Ident> = teachers.iter().map(|teacher| &teacher.name).collect();
    let texts: Vec<&str> = teachers.iter().map(|teacher| teacher.text.as_str()).collect();
    let tys: Vec<&syn::Type> = teachers.iter().map(|teacher| &teacher.ty).collect();
    let has_adapters = input.pairs.iter().any(|pair| pair.student.adapter.is_some() || pair.teacher.adapter.is_some());
    // Without adapters `new` has no use for the path; it stays in the signature all the same, so that
    // adding an adapter later changes no call.
    let path_unused = (!has_adapters).then(|| quote!(#[allow(unused_variables)]));
    let new_sides = {
        let sides = teachers.iter().map(|teacher| {
            let (model, name) = (&teacher.model, &teacher.name);
            quote!(#model::as_side(#name))
        });
        quote!(#(#sides),*)
    };
    let new_body = items.body(|| {
        let path = has_adapters
            .then(|| quote!(let __distill_path: &#p::tch::nn::Path<'p> = ::core::borrow::Borrow::borrow(&path);));
        let resolvers = teachers.iter().enumerate().map(|(index, teacher)| {
            let resolver = format_ident!("__distill_teacher_{}", index);
            let (model, name) = (&teacher.model, &teacher.name);
            quote!(let #resolver = #model::resolver(#name, #p::Side::Teacher);)
        });
        let pairs = pair::build_pairs(items);
        let teacher_of = &items.teacher_of;
        quote! {
            #path
            let __distill_student = #student_model::resolver(student, #p::Side::Student);
            #(#resolvers)*
            let __distill_pairs = #pairs;
            // Criteria parameters (a temperature ≤ 0, a negative β…) are errors here, before any step,
            // and so is a pair whose criterion reads an encoding its teacher (a cache) does not store.
            let __distill_distillation = #p::Distillation::from_pairs(
                #student_model::as_side(student),
                ::std::vec![#new_sides],
                &[#(#texts),*],
                __distill_pairs,
                &[#(#teacher_of),*],
            )?;
            ::core::result::Result::Ok(#name { student, teachers: (#(#names,)*), distillation: __distill_distillation })
        }
    });
    let live = live_teachers(items);
    let forward_body =
        items.body(|| output_from(items, quote!(self.distillation.forward_t_with(student_xs, teacher_xs, train))));
    let dry_run_body = items.body(|| quote!(self.distillation.dry_run(xs)));
    let per_teacher = teachers.iter().map(|teacher| per_teacher_methods(items, teacher, several));
    let new_doc = if several {
        format!(
            "Builds the distillation of `student` from the teachers {}: creates the adapters under `path / <label>` \
             (so that an optimizer over `path`'s VarStore trains them), and checks every endpoint against its model \
             — indices in range, string paths that exist, modules that record — before any step. Every teacher runs \
             without gradient and in evaluation mode until its `<name>_grad` / `<name>_train` says otherwise.",
            texts.iter().map(|text| format!("`{text}`")).collect::<Vec<_>>().join(", ")
        )
    } else {
        "Builds the distillation of `student` from `teacher`: creates the adapters under `path / <label>` (so that \
         an optimizer over `path`'s VarStore trains them), and checks every endpoint against the models — indices \
         in range, string paths that exist, modules that record — before any step."
            .to_owned()
    };
    // With several teachers, `teacher_grad` / `teacher_train` set them all; the one teacher's own
    // methods have these names already.
    let all_teachers = several.then(|| {
        quote! {
            /// Whether gradients flow into every teacher (default `false`: each runs under
            /// no-grad); each teacher's own `<name>_grad` sets one.
            pub fn teacher_grad(mut self, grad: bool) -> Self {
                for __distill_index in 0..#count {
                    let mut mode = #p::mode_of(&self.distillation, __distill_index);
                    mode.grad = grad;
                    #p::set_mode_of(&mut self.distillation, __distill_index, mode);
                }
                self
            }

            /// Whether every teacher runs in training mode (default `false`: evaluation mode,
            /// whatever the student's flag); each teacher's own `<name>_train` sets one.
            pub fn teacher_train(mut self, train: bool) -> Self {
                for __distill_index in 0..#count {
                    let mut mode = #p::mode_of(&self.distillation, __distill_index);
                    mode.train = train;
                    #p::set_mode_of(&mut self.distillation, __distill_index, mode);
                }
                self
            }
        }
    });
    let allows = items.fallback_allows();
    let balance = balance_methods(items);
    let run = run_methods(items, dry_run_body);
    let forward_with_doc = if several {
        "As [`forward_t`](Self::forward_t), with a separate input for the teachers (every teacher gets `teacher_xs`)."
    } else {
        "As [`forward_t`](Self::forward_t), with a separate input for the teacher."
    };
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

            #all_teachers

            #(#per_teacher)*

            #balance

            #run

            #[doc = #forward_with_doc]
            pub fn forward_t_with(
                &self,
                student_xs: &#p::tch::Tensor,
                teacher_xs: &#p::tch::Tensor,
                train: bool,
            ) -> ::core::result::Result<#output<'_>, #p::DistillError> #live {
                #forward_body
            }
        }
    }
}

/// `set_step`, `step`, `rescale_to` and `rescaled_to`: how the pairs' losses are balanced, the same
/// for one teacher and several.
pub(super) fn balance_methods(items: &Items) -> TokenStream {
    let p = &items.p;
    quote! {
        /// Sets the training step (the optimizer step count, from 0) at which the pairs'
        /// scheduled weights (`criterion * Schedule::…`) are read. Set it before every step's
        /// forward; a forward of a model with a scheduled pair and no step is an error, never
        /// step 0. Save it with a checkpoint ([`step`](Self::step)) to resume a run exactly.
        pub fn set_step(&mut self, step: u64) {
            self.distillation.set_step(step);
        }

        /// The training step last set with [`set_step`](Self::set_step), if any.
        pub fn step(&self) -> ::core::option::Option<u64> {
            self.distillation.step()
        }

        /// Rescales every other pair's loss to the magnitude of pair `label`'s (usually the
        /// logits term) in `losses()` and `loss()`: each such term's unweighted loss is
        /// multiplied by `|reference| / |own|`, both detached (a factor without gradient,
        /// recomputed at every step, so that a resumed run needs no state for it), then by its
        /// weight. Pair values (`out.label.loss()`) are not rescaled.
        ///
        /// # Errors
        /// `DistillError::Setup(SetupError::UnknownLabel)` when no pair has that label.
        pub fn rescale_to(mut self, label: &str) -> ::core::result::Result<Self, #p::DistillError> {
            self.distillation.set_rescale_to(::core::option::Option::Some(label))?;
            ::core::result::Result::Ok(self)
        }

        /// The label of the pair the other pairs are rescaled to ([`rescale_to`](Self::rescale_to)),
        /// if any.
        pub fn rescaled_to(&self) -> ::core::option::Option<&'static str> {
            let label = self.distillation.rescale_to()?;
            Self::LABELS.iter().copied().find(|known| *known == label)
        }
    }
}

/// The body that turns `forward` (an expression giving a `Result<Forward>`) into the output
/// struct: the pairs by label, the student's output and each teacher's.
pub(super) fn output_from(items: &Items, forward: TokenStream) -> TokenStream {
    let Items { output, p, labels, .. } = items;
    let n = labels.len();
    let count = items.teachers.len();
    let pair_vars: Vec<Ident> = (0..n).map(|i| format_ident!("__distill_pair_{}", i)).collect();
    let output_vars: Vec<Ident> = (0..count).map(|i| format_ident!("__distill_output_{}", i)).collect();
    let output_fields = items.teachers.iter().map(|teacher| output_field(&teacher.name));
    quote! {
        let __distill_forward = #forward?;
        let [#(#pair_vars),*] = #p::into_array::<#n>(__distill_forward.pairs)?;
        let [#(#output_vars),*] = #p::into_outputs::<#count>(__distill_forward.teacher_outputs)?;
        ::core::result::Result::Ok(#output {
            #(#labels: #pair_vars,)*
            student_output: __distill_forward.student_output,
            #(#output_fields: #output_vars,)*
        })
    }
}

/// `where for<'l> Teacher: LiveTeacher, …` for every teacher type: the methods that run the teachers
/// exist only where each teacher can run, so that a forward of a distillation over a cache is a
/// compile error at the call (naming `forward_cached`). The higher-ranked binder keeps the bound from
/// being checked where it is written, where a cache teacher would fail it for every caller.
pub(super) fn live_teachers(items: &Items) -> TokenStream {
    let p = &items.p;
    let tys = items.teachers.iter().map(|teacher| &teacher.ty);
    quote!(where #(for<'__distill_live> #tys: #p::LiveTeacher),*)
}

/// `student()`, `distillation()`, `forward_t` and `dry_run` (whose body is `dry_run_body`).
fn run_methods(items: &Items, dry_run_body: TokenStream) -> TokenStream {
    let Items { input, output, p, .. } = items;
    let live = live_teachers(items);
    let student_ty = &input.student_ty;
    let (forward, forward_errors, models) = if input.several {
        (
            "Runs each teacher once, then the student (with `train`), on `xs`, and returns every pair after its \
             adapter, with every model's output.",
            "; a teacher's problem names the teacher",
            "every model",
        )
    } else {
        (
            "Runs the teacher, then the student (with `train`), on `xs`, and returns every pair after its adapter, \
             with both outputs.",
            "",
            "both models",
        )
    };
    let forward_doc = format!(
        "{forward}\n\n# Errors\nA module that did not run or ran more than once, a captured tensor modified in place, \
         or a pair whose shapes its criterion does not accept{forward_errors}."
    );
    let dry_run_doc = format!(
        "Runs {models} once on a sample batch `xs` (evaluation mode, no gradient: no running statistic moves), \
         fits the fitted adapters (`fitted_linear_adapter(…)`) to their pairs, and checks every pair's shapes \
         against its criterion: every problem at once, before training. Call it before building the optimizer \
         and before loading a checkpoint when the distillation has fitted adapters.\n\n# Errors\n\
         `DistillError::DryRun` listing each pair that does not fit, with the adapters that would; or what a \
         forward can fail with."
    );
    quote! {
        /// The student model.
        pub fn student(&self) -> &'m #student_ty {
            self.student
        }

        /// The distillation this typed model wraps: the pairs with their criteria and adapters,
        /// the step, the rescaling and the teachers' modes, as every front end builds them.
        pub fn distillation(&self) -> &#p::Distillation<'m> {
            &self.distillation
        }

        #[doc = #forward_doc]
        pub fn forward_t(
            &self,
            xs: &#p::tch::Tensor,
            train: bool,
        ) -> ::core::result::Result<#output<'_>, #p::DistillError> #live {
            self.forward_t_with(xs, xs, train)
        }

        #[doc = #dry_run_doc]
        pub fn dry_run(&self, xs: &#p::tch::Tensor) -> ::core::result::Result<#p::DryRun, #p::DistillError> #live {
            #dry_run_body
        }
    }
}
