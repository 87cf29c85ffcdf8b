include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: "blocks.1" => "features.1" with |s, t| (s - t).square().mean(None);
        b: "classifier.weight" => "classifier" with |s, t| (s - t).square().mean(None);
        c: "heads.1" => "heads.2" with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
