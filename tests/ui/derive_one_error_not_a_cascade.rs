use distill::prelude::*;

// One mistake in the derive: its error alone, although `Block` is then used where a module is needed.
#[derive(Debug, Distillable)]
struct Block {
    #[distill(skp)]
    conv: nn::Conv2D,
}

#[derive(Debug, Distillable)]
struct Net {
    blocks: nn::Seq<Block>,
}

impl nn::ModuleT for Net {
    fn forward_t(&self, xs: &tch::Tensor, train: bool) -> tch::Tensor {
        self.blocks.forward_t(xs, train)
    }
}

impl nn::ModuleT for Block {
    fn forward_t(&self, xs: &tch::Tensor, _train: bool) -> tch::Tensor {
        self.conv.forward(xs)
    }
}

fn main() {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let blocks = (0..2).map(|i| Block { conv: nn::conv2d(vs.root() / i, 1, 1, 1, Default::default()) }).collect();
    let net = Net { blocks };
    let mut mapping = Mapping::new(&net, &net);
    let _ = mapping.add(&net.blocks[0].conv, "blocks.0", ());
}
