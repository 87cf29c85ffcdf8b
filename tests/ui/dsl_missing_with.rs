include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: student.classifier => teacher.classifier;
        b: student.classifier => teacher.classifier with;
        c: student.classifier => teacher.classifier using |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
