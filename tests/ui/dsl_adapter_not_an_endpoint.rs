include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        c: student.features[2].conv => conv2d_adapter(conv2d_adapter(teacher.features[2].conv)) with |s, t| (s - t).square().mean(None);
        d: student.features[3].conv => student(teacher.features[3].conv) with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
