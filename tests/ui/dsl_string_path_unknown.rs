include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: "features.0.cnv" => "features.0.conv" with |s, t| (s - t).square().mean(None);
        b: "classifier" => "clasifier" with |s, t| (s - t).square().mean(None);
        c: "features.first" => "features.0" with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
