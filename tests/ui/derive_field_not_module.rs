use distill::prelude::*;

#[derive(Distillable)]
struct Net {
    conv: nn::Conv2D,
    width: i64,
    name: String,
}

fn main() {}
