include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        student.block => teacher.block with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
