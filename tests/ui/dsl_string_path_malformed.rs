include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: "" => teacher with |s, t| (s - t).square().mean(None);
        b: "features..conv" => "features.0 .conv" with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
