use distill::prelude::*;

#[derive(Distillable)]
union Either {
    a: u32,
    b: f32,
}

fn main() {}
