include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        a: student.classifier -> teacher.classifier with |s, t| (s - t).square().mean(None);
        b: student.classifier => with |s, t| (s - t).square().mean(None);
        c: student.classifier. => teacher.classifier with |s, t| (s - t).square().mean(None);
        d: student.features[] => teacher.features[0] with |s, t| (s - t).square().mean(None);
        e: student.classifier => teacher.classifier with |s, t| (s - t).square().mean(None) extra;
        f: 42 => teacher.classifier with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
