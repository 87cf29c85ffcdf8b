//! tch's own layers as leaves of the module tree: they cannot record themselves, but they can sit in
//! a `#[derive(Distillable)]` struct and be made distillation points with `Tap`.

use crate::module::{Child, Distillable};
use crate::schema::{Schema, StaticSchema};

macro_rules! leaf {
    ($($ty:ty),* $(,)?) => {$(
        impl Distillable for $ty {
            fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
            fn as_any(&self) -> Option<&dyn std::any::Any> {
                Some(self)
            }
        }
        impl StaticSchema for $ty {
            const SCHEMA: Schema = Schema::leaf(false);
        }
    )*};
}

leaf!(
    tch::nn::Linear,
    tch::nn::BatchNorm,
    tch::nn::LayerNorm,
    tch::nn::Embedding,
    tch::nn::Sequential,
    tch::nn::SequentialT,
    tch::nn::GroupNorm,
);

impl<ND: 'static> Distillable for tch::nn::Conv<ND> {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

impl<ND: 'static> StaticSchema for tch::nn::Conv<ND> {
    const SCHEMA: Schema = Schema::leaf(false);
}

impl<ND> Distillable for tch::nn::ConvTransposeND<ND> {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
}

impl<ND> StaticSchema for tch::nn::ConvTransposeND<ND> {
    const SCHEMA: Schema = Schema::leaf(false);
}

impl Distillable for tch::nn::Func<'_> {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
}

impl StaticSchema for tch::nn::Func<'_> {
    const SCHEMA: Schema = Schema::leaf(false);
}

impl Distillable for tch::nn::FuncT<'_> {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(Child<'a>)) {}
}

impl StaticSchema for tch::nn::FuncT<'_> {
    const SCHEMA: Schema = Schema::leaf(false);
}
