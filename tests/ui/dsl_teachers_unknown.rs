include!("common/models.rs");

distill! {
    struct Ens for Net => (big: Net, wide: Net) {
        f0: student.block.conv => bgi.block.conv with Mse;
        f1: student.block.conv => teacher.block.conv with Mse;
        f2: student.block.conv => student.block.conv with Mse;
        f3: wide.block.conv => wide.block.conv with Mse;
        "classifier" => "classifier" with Mse;
        f4: student.classifier => conv2d_adapter(wdie.block.conv) with Mse;
    }
}

fn main() {}
