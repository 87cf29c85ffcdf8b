//! The payload a configuration gives each pair of its [`Mapping`](crate::Mapping): the criterion,
//! the weight and the adapters, and the losses of a forward.

use std::fmt;

use tch::Tensor;

use super::adapters::ConfiguredAdapter;
use super::criteria::CriterionConfig;
use super::weight::WeightConfig;
use crate::cache::TeacherBatch;
use crate::captured::Captured;
use crate::criterion::{check_pair, name_pair, Criterion};
use crate::dry_run::{DryRun, PairShapes};
use crate::error::{DistillError, Result};
use crate::mapping::{DistillModel, DistillOutput};
use crate::point::Side;
use crate::schedule::Schedule;
use crate::side::{LiveTeacher, SideModel};

/// One pair of a configuration, built against the models: its name, criterion, weight and adapters.
/// The payload of the [`Mapping`](crate::Mapping) that [`Config::mapping`](super::Config::mapping)
/// returns.
pub struct ConfiguredPair {
    pub(super) name: String,
    pub(super) criterion: CriterionConfig,
    pub(super) boxed: Box<dyn Criterion>,
    pub(super) weight: WeightConfig,
    pub(super) student_adapter: Option<ConfiguredAdapter>,
    pub(super) teacher_adapter: Option<ConfiguredAdapter>,
}

impl ConfiguredPair {
    /// The pair's `name`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The criterion with its parameters, as configured.
    pub fn criterion(&self) -> &dyn Criterion {
        &*self.boxed
    }

    /// The criterion as its type `C` (`KlDiv`, `Mse`…), if it is one: to read its parameters.
    pub fn criterion_as<C: Criterion + 'static>(&self) -> Option<&C> {
        self.criterion.as_any().downcast_ref()
    }

    /// The constant weight of the pair's loss (`weight = 0.5`; 1 when the file gives none, and then
    /// the loss is not multiplied at all); `None` when the weight follows a [`schedule`](Self::schedule).
    pub fn weight(&self) -> Option<f64> {
        match &self.weight {
            WeightConfig::Unset => Some(1.0),
            WeightConfig::Constant(weight) => Some(*weight),
            WeightConfig::Schedule(_) => None,
        }
    }

    /// The schedule the pair's weight follows (`weight = { kind = "warmup", … }`), if any.
    pub fn schedule(&self) -> Option<&Schedule> {
        self.weight.schedule()
    }

    /// The pair's weight at training step `step`.
    pub fn weight_at(&self, step: u64) -> f64 {
        match &self.weight {
            WeightConfig::Schedule(schedule) => schedule.value(step),
            _ => self.weight().unwrap_or(1.0),
        }
    }

    /// The adapter applied to the student's tensor, if any.
    pub fn student_adapter(&self) -> Option<&ConfiguredAdapter> {
        self.student_adapter.as_ref()
    }

    /// The adapter applied to the teacher's tensor, if any.
    pub fn teacher_adapter(&self) -> Option<&ConfiguredAdapter> {
        self.teacher_adapter.as_ref()
    }

    /// The pair's two tensors after their adapters. An endpoint that captured every call gives its
    /// calls concatenated along the batch dimension, as `distill!` does.
    pub fn adapt(&self, student: &Captured, teacher: &Captured) -> Result<(Tensor, Tensor)> {
        let student = self.adapt_side(student.joined()?, Side::Student)?;
        let teacher = self.adapt_side(teacher.joined()?, Side::Teacher)?;
        Ok((student, teacher))
    }

    /// The pair's weighted loss: its criterion on the adapted tensors (with the batch's `targets`
    /// for a criterion that uses them), times its weight. Errors name the pair; a pair whose weight
    /// follows a schedule needs the step ([`f_loss_at`](Self::f_loss_at)).
    pub fn f_loss(&self, student: &Captured, teacher: &Captured, targets: Option<&Tensor>) -> Result<Tensor> {
        self.loss_with(student, teacher, |s, t| self.boxed.f_loss_with_targets(s, t, targets))
    }

    /// [`f_loss`](Self::f_loss) at training step `step`: a scheduled weight takes its value there.
    pub fn f_loss_at(
        &self,
        step: u64,
        student: &Captured,
        teacher: &Captured,
        targets: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.loss_with(student, teacher, |s, t| self.boxed.f_loss_at(step, s, t, targets))
    }

    fn loss_with(
        &self,
        student: &Captured,
        teacher: &Captured,
        loss: impl FnOnce(&Tensor, &Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (student, teacher) = self.adapt(student, teacher)?;
        let loss = loss(&student, &teacher).map_err(|err| name_pair(err, &self.name))?;
        Ok(match self.weight {
            WeightConfig::Constant(weight) => loss * weight,
            // Unset: not multiplied; a schedule: applied by the scheduled criterion.
            WeightConfig::Unset | WeightConfig::Schedule(_) => loss,
        })
    }

    fn adapt_side(&self, tensor: Tensor, side: Side) -> Result<Tensor> {
        let adapter = match side {
            Side::Student => &self.student_adapter,
            Side::Teacher => &self.teacher_adapter,
        };
        match adapter {
            Some(adapter) => adapter.f_forward(&tensor).map_err(|error| DistillError::AdapterInput {
                pair: self.name.clone(),
                side,
                source: Box::new(error),
            }),
            None => Ok(tensor),
        }
    }

    /// Fits a fitted adapter of this pair to the other side's width, then reports the shapes after
    /// the adapters and checks them against the criterion.
    fn dry_run(&self, student: &Captured, teacher: &Captured) -> Result<PairShapes> {
        let (s, t) = (student.joined()?, teacher.joined()?);
        if let Some(ConfiguredAdapter::Fitted(fitted)) = &self.student_adapter {
            let other = self.adapt_side(t.shallow_clone(), Side::Teacher)?;
            fit(fitted, &s, &other).map_err(|error| self.adapter_error(Side::Student, error))?;
        }
        if let Some(ConfiguredAdapter::Fitted(fitted)) = &self.teacher_adapter {
            let other = self.adapt_side(s.shallow_clone(), Side::Student)?;
            fit(fitted, &t, &other).map_err(|error| self.adapter_error(Side::Teacher, error))?;
        }
        let (student_raw, teacher_raw) = (s.size(), t.size());
        let (student, teacher) = (self.adapt_side(s, Side::Student)?.size(), self.adapt_side(t, Side::Teacher)?.size());
        check_pair(&*self.boxed, &self.name, &student, &teacher)?;
        Ok(PairShapes { label: self.name.clone(), student, teacher, student_raw, teacher_raw })
    }

    fn adapter_error(&self, side: Side, error: DistillError) -> DistillError {
        DistillError::AdapterInput { pair: self.name.clone(), side, source: Box::new(error) }
    }
}

impl fmt::Debug for ConfiguredPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfiguredPair")
            .field("name", &self.name)
            .field("criterion", &self.criterion)
            .field("weight", &self.weight)
            .field("student_adapter", &self.student_adapter)
            .field("teacher_adapter", &self.teacher_adapter)
            .finish()
    }
}

/// Sizes `fitted` from the width of `own` (its input) to the width of `other`.
fn fit(fitted: &crate::adapter::FittedAdapter, own: &Tensor, other: &Tensor) -> Result<()> {
    let (own_size, other_size) = (own.size(), other.size());
    let kind = fitted.kind();
    match kind.axis(own_size.len()).zip(kind.axis(other_size.len())) {
        Some((own_axis, other_axis)) => fitted.fit(own_size[own_axis], other_size[other_axis]),
        None => Err(DistillError::InvalidArgument(format!(
            "`{}` cannot map between tensors of shapes {own_size:?} and {other_size:?}",
            kind.constructor()
        ))),
    }
}

/// The named, weighted loss of each pair of a configured distillation's forward, in file order.
pub struct ConfiguredLosses {
    terms: Vec<(String, Tensor)>,
}

impl ConfiguredLosses {
    /// The sum of the terms (a scalar zero without pairs).
    pub fn total(&self) -> Tensor {
        crate::__private::total(&self.terms.iter().map(|(_, loss)| loss).collect::<Vec<_>>())
    }

    /// `(name, weighted loss)` for each pair, in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Tensor)> {
        self.terms.iter().map(|(name, loss)| (name.as_str(), loss))
    }

    /// The loss of the pair named `name`.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.terms.iter().find(|(term, _)| term == name).map(|(_, loss)| loss)
    }
}

impl fmt::Display for ConfiguredLosses {
    /// `f1=0.1234 kd=0.5678`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<(&str, &Tensor)> = self.iter().collect();
        crate::__private::write_losses(f, &terms)
    }
}

impl fmt::Debug for ConfiguredLosses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConfiguredLosses({self})")
    }
}

/// Every pair's weighted loss for a forward of a configured distillation, with the batch's
/// `targets` for criteria that use them (`Dkd`). A pair whose weight follows a schedule makes this
/// an error ([`DistillError::MissingStep`]): use [`losses_at`].
pub fn losses(out: &DistillOutput<'_, ConfiguredPair>, targets: Option<&Tensor>) -> Result<ConfiguredLosses> {
    collect_losses(out, |pair, student, teacher| pair.f_loss(student, teacher, targets))
}

/// [`losses`] at training step `step`: scheduled weights take their value there.
pub fn losses_at(
    out: &DistillOutput<'_, ConfiguredPair>,
    step: u64,
    targets: Option<&Tensor>,
) -> Result<ConfiguredLosses> {
    collect_losses(out, |pair, student, teacher| pair.f_loss_at(step, student, teacher, targets))
}

fn collect_losses(
    out: &DistillOutput<'_, ConfiguredPair>,
    loss: impl Fn(&ConfiguredPair, &Captured, &Captured) -> Result<Tensor>,
) -> Result<ConfiguredLosses> {
    let terms = out
        .pairs()
        .map(|(student, teacher, pair)| Ok((pair.name.clone(), loss(pair, student, teacher)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(ConfiguredLosses { terms })
}

/// Runs both models once on `xs` — in evaluation mode, without gradient — sizes the fitted adapters
/// from the pairs' tensors, and checks every pair against its criterion after its adapters. Every
/// problem is reported at once. Call it before building the optimizer when the configuration has a
/// fitted adapter, so that the optimizer sees its variables.
pub fn dry_run<S: SideModel, T: SideModel + LiveTeacher>(
    model: &DistillModel<'_, S, T, ConfiguredPair>,
    xs: &Tensor,
) -> Result<DryRun> {
    let _no_grad = tch::no_grad_guard();
    let out = model.forward_t(xs, false)?;
    DryRun::from_pairs(out.pairs().map(|(student, teacher, pair)| pair.dry_run(student, teacher)))
}

/// As [`dry_run`], with the teacher's side read from a teacher cache `batch` (the student runs on
/// `xs` with each sample's stored view applied): a configuration over a cache sizes its fitted
/// adapters and checks its pairs with the teacher never loaded.
pub fn dry_run_cached<S: SideModel, T: SideModel>(
    model: &DistillModel<'_, S, T, ConfiguredPair>,
    xs: &Tensor,
    batch: &dyn TeacherBatch,
) -> Result<DryRun> {
    let _no_grad = tch::no_grad_guard();
    let out = model.forward_cached(xs, batch, false)?;
    DryRun::from_pairs(out.pairs().map(|(student, teacher, pair)| pair.dry_run(student, teacher)))
}
