include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        student.features[0].cnv => teacher.features[0].conv with |s, t| (s - t).square().mean(None);
        head: student.clasifier => teacher.classifier with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
