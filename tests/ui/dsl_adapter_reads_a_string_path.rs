include!("common/models.rs");

// `conv2d_adapter` reads both convs' weights: a string-path endpoint has no module to give it.
distill! {
    struct Kd for Net => Net {
        a: student.features[0].conv => conv2d_adapter("features.0.conv") with |s, t| (s - t).square().mean(None);
        b: "features.1.conv" => conv2d_adapter(teacher.features[1].conv) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
