// Shared by the ui cases through `include!`: a small module tree with every kind of child, and an
// adapter constructor of the documented shape.

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

/// An adapter constructor of the documented shape (teacher conv → student conv).
#[allow(dead_code)]
pub fn conv2d_adapter<'a, P: std::borrow::Borrow<nn::Path<'a>>>(
    path: P,
    source: &nn::Conv2D,
    target: &nn::Conv2D,
) -> Result<nn::Conv2D, DistillError> {
    let (out, inp) = (target.ws.size()[0], source.ws.size()[0]);
    Ok(nn::conv2d(path, inp, out, 1, Default::default()))
}
