use distill::prelude::*;

// `Block` holds modules but forgot `#[derive(Distillable)]`: the error names `Block`, not the
// container holding it.
#[derive(Debug)]
struct Block {
    conv: nn::Conv2D,
}

#[derive(Distillable)]
struct Net {
    features: nn::Seq<Block>,
    extra: Vec<Option<Block>>,
    head: nn::Linear,
}

fn main() {}
