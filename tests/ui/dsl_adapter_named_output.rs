include!("common/models.rs");

// `big["…"]` inside an adapter is the named output, as outside one: with several teachers it is the
// only way to adapt a teacher's string path. Its path is checked against that teacher's type, and
// the constructor receives a `StringPath` for it: `a` is no error, `b` only its path's.
distill! {
    struct Kd for Net => (big: Net, wide: Net) {
        a: student.block.conv => fitted_conv1x1_adapter(big["block.conv"]) with |s, t| (s - t).square().mean(None);
        b: student.classifier => fitted_linear_adapter(wide["block.cnv"]) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
