use distill::prelude::*;

#[derive(Distillable)]
enum Head {
    Linear(nn::Linear, f64),
    Conv { conv: nn::Conv2D, stride: usize },
    Identity,
}

fn main() {}
