use distill::prelude::*;

// A hand-written module tree: usable with typed endpoints, but a string path into it needs a schema.
#[derive(Debug)]
struct Custom {
    fc: nn::Linear,
}

impl Distillable for Custom {
    fn visit_children<'a>(&'a self, visit: &mut dyn FnMut(distill::Child<'a>)) {
        visit(distill::Child::field("fc", &self.fc));
    }
}

impl nn::ModuleT for Custom {
    fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor {
        self.fc.forward_t(xs, train)
    }
}

distill! {
    struct Kd for Custom => Custom {
        "fc" => teacher.fc with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
