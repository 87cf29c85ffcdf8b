include!("common/models.rs");

/// A second teacher type, without `block` or `classifier`.
#[derive(Debug, Distillable)]
pub struct Wide {
    pub body: nn::Linear,
}

impl nn::ModuleT for Wide {
    fn forward_t(&self, xs: &Tensor, _train: bool) -> Tensor {
        xs.shallow_clone()
    }
}

distill! {
    struct Ens for Net => (big: Net, wide: Wide) {
        f0: student.block.conv => big.block.conv with Mse;
        f1: student.block.conv => wide.block.conv with Mse;
        cls_wide: "classifier" => wide["classifier"] with Mse;
        "classifier" => big["classifier"] with Mse;
        body: student.classifier => wide.body with Mse;
    }
}

fn main() {}
