// Shared by the ui cases through `include!`: a small module tree with every kind of child.

#[allow(unused_imports)]
use distill::prelude::*;
#[allow(unused_imports)]
use tch::Tensor;

#[derive(Debug, Distillable)]
pub struct Block {
    pub conv: nn::Conv2D,
    pub bn: nn::BatchNorm,
}

#[derive(Debug, Distillable)]
pub struct Net {
    pub features: nn::Seq<Block>,
    pub blocks: Vec<Block>,
    pub layers: nn::Sequential,
    pub block: Block,
    pub classifier: nn::Linear,
    pub heads: [nn::Linear; 2],
    #[distill(skip)]
    pub width: i64,
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}
