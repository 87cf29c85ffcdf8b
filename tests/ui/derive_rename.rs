use distill::prelude::*;

#[derive(Distillable)]
struct Net {
    #[distill(rename = "features.conv")]
    conv: nn::Conv2D,
    #[distill(rename = "")]
    bn: nn::BatchNorm,
    #[distill(rename = "head")]
    fc: nn::Linear,
    head: nn::Linear,
}

fn main() {}
