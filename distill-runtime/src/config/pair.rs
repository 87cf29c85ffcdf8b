//! The payload a configuration gives each pair of its [`Mapping`](crate::Mapping): the criterion,
//! the weight and the adapters, as read and built; and how it becomes a pair of the
//! [`Distillation`](crate::Distillation) the configuration builds.

use std::borrow::Cow;
use std::fmt;

use super::adapters::ConfiguredAdapter;
use super::criteria::CriterionConfig;
use super::weight::WeightConfig;
use crate::criterion::{Criterion, Weighted};
use crate::distillation::PairSpec;
use crate::schedule::Schedule;

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

    /// Makes `spec` (the pair as the mapping resolved it) this pair of a distillation: its name,
    /// its criterion with the constant weight (a schedule is already in the criterion) and its
    /// adapters.
    pub(super) fn into_spec(self, spec: &mut PairSpec<'_>) {
        spec.label = Cow::Owned(self.name);
        spec.criterion = Some(match self.weight {
            WeightConfig::Constant(weight) => Box::new(Weighted { criterion: self.boxed, weight }),
            // Unset: not multiplied; a schedule: applied by the scheduled criterion.
            WeightConfig::Unset | WeightConfig::Schedule(_) => self.boxed,
        });
        spec.student_adapter = self.student_adapter.map(ConfiguredAdapter::into_pair_adapter);
        spec.teacher_adapter = self.teacher_adapter.map(ConfiguredAdapter::into_pair_adapter);
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
