include!("common/models.rs");

distill! {
    struct Kd for Net => Net {
        student_output: student => teacher with |s, t| (s - t).square().mean(None);
    }
}

fn main() {}
