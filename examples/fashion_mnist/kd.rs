//! The distillation fine-tune: cross-entropy + MSE between the student's conv outputs of blocks 1–3
//! and the teacher's, narrowed to the student's channels by `conv2d_adapter`, + Hinton KD on logits.

use distill::adapter::conv2d_adapter;
use distill::criterion::{Criterion, KlDiv, Mse};
use distill::nn::{self, Module};
use distill::{distill, DistillError, Mapping};
use tch::Tensor;

use crate::model::Net;
use crate::train::Terms;

/// The blocks whose conv outputs are paired.
pub const FEATURE_BLOCKS: [usize; 3] = [1, 2, 3];
const LABELS: [&str; 3] = ["f1", "f2", "f3"];

/// Builds the adapters under `p` (trained with the student by the caller's optimizer) and returns a
/// step function computing the named loss terms of a batch: `loss` (the total), `ce`, `f1`–`f3`, `kd`.
pub fn kd_step<'m>(
    p: &nn::Path,
    student: &'m Net,
    teacher: &'m Net,
) -> Result<impl FnMut(&Tensor, &Tensor) -> (Tensor, Terms) + 'm, DistillError> {
    let mut mapping = Mapping::new(student, teacher);
    for &i in &FEATURE_BLOCKS {
        let adapter = conv2d_adapter(p / format!("f{i}"), &teacher.features[i].conv, &student.features[i].conv)?;
        mapping.add(&student.features[i].conv, &teacher.features[i].conv, adapter)?;
    }
    let model = distill(student, teacher, mapping);
    let kd = KlDiv::new(4.0);
    Ok(move |xs: &Tensor, ys: &Tensor| {
        let out = model.forward_t(xs, true).expect("the mapping was checked when it was built");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let features: Vec<Tensor> =
            out.pairs().map(|(s, t, adapter)| Mse.loss(s, &adapter.forward(t))).collect();
        let logits = kd.loss(&out.student_output, &out.teacher_output);
        let loss = features.iter().fold(&ce + &logits, |acc, f| acc + f);
        let mut terms: Terms = vec![("loss", loss.double_value(&[])), ("ce", ce.double_value(&[]))];
        terms.extend(LABELS.iter().zip(&features).map(|(l, f)| (*l, f.double_value(&[]))));
        terms.push(("kd", logits.double_value(&[])));
        (loss, terms)
    })
}
