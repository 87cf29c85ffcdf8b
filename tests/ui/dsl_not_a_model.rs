use distill::prelude::*;

#[derive(Debug, Distillable)]
struct NoForward {
    fc: nn::Linear,
}

#[derive(Debug)]
struct NotATree;

impl nn::ModuleT for NotATree {
    fn forward_t(&self, xs: &tch::Tensor, _train: bool) -> tch::Tensor {
        xs.shallow_clone()
    }
}

distill! {
    struct Kd for NoForward => NotATree {
        student => teacher with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
