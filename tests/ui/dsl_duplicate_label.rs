include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        f0: student.features[0] => teacher.features[0] with |s, t| (s - t).square().mean(None);
        f0: student.features[1] => teacher.features[1] with |s, t| (s - t).square().mean(None);
        student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None);
        "classifier" => "classifier" with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
