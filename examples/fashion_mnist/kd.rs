//! The distillation fine-tune: cross-entropy + MSE between the student's conv outputs of blocks 1–3
//! and the teacher's, narrowed to the student's channels by `conv2d_adapter`, + Hinton KD on logits.

use distill::nn;
use distill::{distill, DistillError, Mapping};
use tch::Tensor;

use crate::model::Net;
use crate::train::Terms;
use shim::{conv2d_adapter, KlDiv, Mse};

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
            out.pairs().map(|(s, t, adapter)| Mse.loss(s, &t.apply_t(adapter, true))).collect();
        let logits = kd.loss(&out.student_output, &out.teacher_output);
        let loss = features.iter().fold(&ce + &logits, |acc, f| acc + f);
        let mut terms: Terms = vec![("loss", loss.double_value(&[])), ("ce", ce.double_value(&[]))];
        terms.extend(LABELS.iter().zip(&features).map(|(l, f)| (*l, f.double_value(&[]))));
        terms.push(("kd", logits.double_value(&[])));
        (loss, terms)
    })
}

/// TEMPORARY stand-ins for `distill::adapter` and `distill::criterion` (issue 3), replaced when they
/// land on main.
mod shim {
    use distill::nn;
    use distill::DistillError;
    use tch::{Kind, Reduction, Tensor};

    pub struct Mse;
    impl Mse {
        pub fn loss(&self, s: &Tensor, t: &Tensor) -> Tensor {
            s.mse_loss(t, Reduction::Mean)
        }
    }

    pub struct KlDiv(f64);
    impl KlDiv {
        pub fn new(t: f64) -> Self {
            KlDiv(t)
        }
        pub fn loss(&self, s: &Tensor, t: &Tensor) -> Tensor {
            let temp = self.0;
            let n = s.size()[0] as f64;
            let ls = (s / temp).log_softmax(-1, Kind::Float);
            let lt = (t / temp).log_softmax(-1, Kind::Float);
            ls.kl_div(&lt, Reduction::Sum, true) * (temp * temp / n)
        }
    }

    /// 1×1 selection conv from `source` channels to `target` channels: target channel j reads the
    /// source channel its filter was pruned from (found by comparing weights, kept order ascending).
    pub fn conv2d_adapter(p: nn::Path, source: &nn::Conv2D, target: &nn::Conv2D) -> Result<nn::Conv2D, DistillError> {
        let (ss, ts) = (source.ws.size(), target.ws.size());
        let (so, si, to, ti, k2) = (ss[0] as usize, ss[1] as usize, ts[0] as usize, ts[1] as usize, (ss[2] * ss[3]) as usize);
        let sw = Vec::<f32>::try_from(source.ws.detach().flatten(0, -1)).expect("float weights");
        let tw = Vec::<f32>::try_from(target.ws.detach().flatten(0, -1)).expect("float weights");
        let slice = |w: &[f32], inputs: usize, o: usize, i: usize| w[(o * inputs + i) * k2..(o * inputs + i + 1) * k2].to_vec();
        let same = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-6 + 1e-5 * y.abs());
        let conv = nn::conv2d(p, so as i64, to as i64, 1, nn::ConvConfig { bias: false, ..Default::default() });
        let weight = Tensor::zeros([to as i64, so as i64, 1, 1], (Kind::Float, source.ws.device()));
        for j in 0..to {
            let found = (0..so).find(|&k| {
                let mut i = 0;
                (0..ti).all(|c| {
                    let t = slice(&tw, ti, j, c);
                    while i < si && !same(&slice(&sw, si, k, i), &t) {
                        i += 1;
                    }
                    i += 1;
                    i <= si
                })
            });
            let k = found.expect("temporary shim: no channel mapping");
            let _ = weight.get(j as i64).get(k as i64).fill_(1.0);
        }
        tch::no_grad(|| conv.ws.shallow_clone().copy_(&weight));
        Ok(conv)
    }
}
