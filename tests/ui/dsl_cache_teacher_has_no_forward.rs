include!("common/models.rs");

// A distillation over a teacher cache reads the teacher's side from a batch of the cache: the
// forwards that would run the teacher do not exist for it.
distill! {
    struct Kd for Net => distill::cache::TeacherCache {
        a: student.features[0] => teacher["features.0"] with |s, t| (s - t).square().mean(None);
    }
}

fn run(kd: &Kd<'_>, xs: &tch::Tensor) {
    let _ = kd.forward_t(xs, true);
    let _ = kd.dry_run(xs);
}

fn main() {}
