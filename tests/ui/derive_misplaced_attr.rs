use distill::prelude::*;

#[derive(Distillable)]
#[distill(skip)]
enum Head {
    #[distill(rename = "linear")]
    Linear(nn::Linear),
    Conv { conv: nn::Conv2D },
}

fn main() {}
