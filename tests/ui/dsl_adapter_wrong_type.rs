include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        bn: student.features[0].bn => conv2d_adapter(teacher.features[0].bn) with |s, t| (s - t).square().mean(None);
        fc: student.classifier => conv2d_adapter(teacher.features[0].conv) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
