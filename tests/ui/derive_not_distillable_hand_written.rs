use distill::prelude::*;

// A hand-written `Distillable` without `StaticSchema` cannot be a derived struct's field.
#[derive(Debug)]
struct Custom;

impl Distillable for Custom {
    fn visit_children<'a>(&'a self, _visit: &mut dyn FnMut(distill::Child<'a>)) {}
}

#[derive(Distillable)]
struct Net {
    custom: Custom,
}

fn main() {}
