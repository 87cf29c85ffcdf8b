include!("common/models.rs");

// One malformed pair: the one error is reported, and the items `distill!` would have generated still
// exist, so the code below — which uses them all — adds no error of its own.
distill! {
    /// A distillation.
    pub struct Kd for Net => Net {
        f0: student.features[0] => teacher.features[0] with |s, t| (s - t).square().mean(None);
        f1: student.features[1] => teacher.features[1] |s, t| (s - t).square().mean(None);
    }
}

fn step(student: &Net, teacher: &Net, xs: &Tensor) -> Result<Tensor, DistillError> {
    let vs = nn::VarStore::new(tch::Device::Cpu);
    let kd: Kd<'_> = Kd::new(vs.root() / "kd", student, teacher)?.teacher_grad(false).teacher_train(false);
    let out: KdOutput<'_> = kd.forward_t(xs, true)?.with_targets(xs);
    let losses: KdLosses = out.losses();
    println!("{losses} {:?} {}", Kd::LABELS, out.f0.student.size()[0]);
    Ok(out.loss() + losses.total() + &out.student_output)
}

fn main() {
    let _ = step;
}
