//! `forward_cached` and `forward_cached_by`: the forward of a `distill!` model whose teacher side
//! comes from a teacher cache batch instead of the teacher.

use proc_macro2::TokenStream;
use quote::quote;

use super::Items;

/// Nothing for a distillation from several teachers: a cache holds one teacher's side.
pub(super) fn methods(items: &Items) -> TokenStream {
    if super::model::one_teacher(items).is_none() {
        return TokenStream::new();
    }
    let Items { name, output, p, .. } = items;
    let body =
        items.body(|| super::model::output_from(items, quote!(self.distillation.forward_cached(xs, batch, train))));
    let by_body = items.body(|| {
        super::model::output_from(items, quote!(self.distillation.forward_cached_by(xs, batch, train, forward)))
    });
    let dry_run_body = items.body(|| quote!(self.distillation.dry_run_cached(xs, batch)));
    let allows = items.fallback_allows();
    quote! {
        #[automatically_derived]
        #allows
        impl<'m> #name<'m> {
            /// Runs the student (with `train`) on `xs` and reads the teacher's side of every pair
            /// from `batch` instead of running the teacher. `batch` is a batch of a teacher cache:
            /// a `CachedBatch` of an image cache (`xs` are the batch's raw inputs; each sample's
            /// stored augmentation view is applied first), or a `CachedTokens` of a token cache
            /// (`xs` are the batch's token ids; a pair whose criterion reads the stored
            /// distribution gets the batch's token mask as its labels, which `with_targets`
            /// replaces, and a pair on a stored hidden state is narrowed to the valid tokens). The output's `teacher_output` is the cached
            /// teacher output if the cache stores it, else undefined.
            ///
            /// # Errors
            /// `DistillError::CacheMismatch` for a teacher endpoint the cache does not store, in
            /// another encoding than a pair's criterion reads, or inputs of another shape than the
            /// cache's; what a forward can fail with.
            pub fn forward_cached(
                &self,
                xs: &#p::tch::Tensor,
                batch: &dyn #p::TeacherBatch,
                train: bool,
            ) -> ::core::result::Result<#output<'_>, #p::DistillError> {
                #body
            }

            /// As `forward_cached`, with the student run by `forward` instead of its
            /// `forward_t(xs, train)`: for a student whose forward takes more than a tensor, such as
            /// a decoder over packed sequences that must see the batch's document ids to attend
            /// within each document as the teacher did (`|| student.forward_inputs(&inputs)`).
            /// `forward` runs the student this model was built with, once; `xs` are the batch's
            /// inputs as `forward_cached` takes them; `train` is the adapters' mode.
            ///
            /// # Errors
            /// What `forward_cached` and `forward` fail with.
            pub fn forward_cached_by<__DistillE>(
                &self,
                xs: &#p::tch::Tensor,
                batch: &dyn #p::TeacherBatch,
                train: bool,
                forward: impl ::core::ops::FnOnce() -> ::core::result::Result<#p::tch::Tensor, __DistillE>,
            ) -> ::core::result::Result<#output<'_>, #p::DistillError>
            where
                __DistillE: ::core::convert::Into<#p::DistillError>,
            {
                #by_body
            }

            /// As `dry_run`, with the teacher's side read from `batch` (a batch of a teacher cache;
            /// the student runs on `xs` as in `forward_cached`): fits the fitted
            /// adapters and checks every pair against its criterion with the teacher never run or
            /// loaded. Call it before building the optimizer, as `dry_run`.
            ///
            /// # Errors
            /// `DistillError::DryRun` listing each pair that does not fit; what `forward_cached`
            /// fails with.
            pub fn dry_run_cached(
                &self,
                xs: &#p::tch::Tensor,
                batch: &dyn #p::TeacherBatch,
            ) -> ::core::result::Result<#p::DryRun, #p::DistillError> {
                #dry_run_body
            }
        }
    }
}
