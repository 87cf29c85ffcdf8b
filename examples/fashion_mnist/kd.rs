//! The distillation fine-tune, declared once with `distill!`: cross-entropy + MSE between the
//! student's conv outputs of blocks 1–3 and the teacher's, narrowed to the student's channels by
//! `conv2d_adapter` (initialised from the pruning), + Hinton KD on the logits. `kd.toml` declares the
//! same distillation in a file (`--config`).

use distill::config::Config;
use distill::prelude::*;
use tch::Tensor;

use crate::model::Net;
use crate::train::{ce_and_pairs, Terms};

distill! {
    /// The teacher distilled into its pruned copy. The adapters select, for each student
    /// channel, the teacher channel it was pruned from; they train with the student.
    pub struct PrunedKd for Net => Net {
        /// Block 1's conv output (stride 2, 14×14).
        f1: student.features[1].conv => conv2d_adapter(teacher.features[1].conv) with Mse;
        /// Block 2's conv output (7×7).
        f2: student.features[2].conv => conv2d_adapter(teacher.features[2].conv) with Mse;
        /// Block 3's conv output (4×4).
        f3: student.features[3].conv => conv2d_adapter(teacher.features[3].conv) with Mse;
        /// The logits (Hinton KD, T = 4).
        kd: student => teacher with KlDiv::new(4.0);
    }
}

/// One training step: the batch's input and labels → the loss to minimise and its named terms.
pub type Step<'m> = Box<dyn FnMut(&Tensor, &Tensor) -> (Tensor, Terms) + 'm>;

/// Builds the distillation model under `p` (its adapters are variables there, trained by the
/// caller's optimizer) and returns a step function computing the named loss terms of a batch:
/// `loss` (the total), `ce`, then one term per pair (`f1`, `f2`, `f3`, `kd`).
pub fn kd_step<'m>(p: &nn::Path, student: &'m Net, teacher: &'m Net) -> Result<Step<'m>, DistillError> {
    let kd = PrunedKd::new(p, student, teacher)?;
    Ok(Box::new(move |xs: &Tensor, ys: &Tensor| {
        let out = kd.forward_t(xs, true).expect("endpoints were checked by PrunedKd::new");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let losses = out.losses();
        ce_and_pairs(ce, losses.total(), losses.iter())
    }))
}

/// [`kd_step`] with the pairs of a configuration file (`--config kd.toml`): the same adapters under
/// the same path, the same losses.
pub fn config_step<'m>(
    p: &nn::Path,
    student: &'m Net,
    teacher: &'m Net,
    config: Config,
) -> Result<Step<'m>, DistillError> {
    let kd = config.distill(p, student, teacher)?;
    // The report keys curves by `&'static str`; a run has a handful of pairs, named once.
    let names: Vec<&'static str> = config.names().map(|name| &*Box::leak(name.to_owned().into_boxed_str())).collect();
    Ok(Box::new(move |xs: &Tensor, ys: &Tensor| {
        let out = kd.forward_t(xs, true).expect("endpoints were checked by Config::distill");
        let ce = out.student_output.cross_entropy_for_logits(ys);
        let losses = out.f_losses().expect("pairs were checked by Config::distill");
        ce_and_pairs(ce, losses.total(), names.iter().zip(losses.iter()).map(|(name, (_, value))| (*name, value)))
    }))
}
