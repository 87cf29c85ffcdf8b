use distill::prelude::*;

#[derive(Distillable)]
struct Wrapper<M> {
    inner: M,
    layers: nn::Seq<M>,
}

fn needs_module<T: Distillable>() {}

fn main() {
    needs_module::<Wrapper<nn::Linear>>();
    needs_module::<Wrapper<f32>>();
}
