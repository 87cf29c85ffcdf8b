use distill::prelude::*;

#[derive(Distillable)]
struct Net {
    #[distill(skp)]
    conv: nn::Conv2D,
    #[distill(rename = 5)]
    bn: nn::BatchNorm,
    #[distill]
    fc: nn::Linear,
    #[distill(skip, rename = "x")]
    width: i64,
}

fn main() {}
