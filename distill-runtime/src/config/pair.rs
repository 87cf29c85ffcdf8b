//! The payload a configuration gives each pair of its [`Mapping`](crate::Mapping): the criterion,
//! the weight and the adapters, as read and built; and how it becomes a pair of the
//! [`Distillation`](crate::Distillation) the configuration builds.

use std::borrow::Cow;

use super::weight::WeightConfig;
use crate::adapter::Adapter;
use crate::criterion::{Criterion, Weighted};
use crate::distillation::PairSpec;

/// One pair of a configuration, built against the models: its name, criterion, weight and adapters,
/// the payload of the [`Mapping`](crate::Mapping) a configuration builds on its way to a
/// [`Distillation`](crate::Distillation).
pub(super) struct ConfiguredPair {
    pub(super) name: String,
    pub(super) criterion: Box<dyn Criterion>,
    pub(super) weight: WeightConfig,
    pub(super) student_adapter: Option<Box<dyn Adapter>>,
    pub(super) teacher_adapter: Option<Box<dyn Adapter>>,
}

impl ConfiguredPair {
    /// Makes `spec` (the pair as the mapping resolved it) this pair of a distillation: its name,
    /// its criterion with the constant weight (a schedule is already in the criterion) and its
    /// adapters.
    pub(super) fn into_spec(self, spec: &mut PairSpec<'_>) {
        spec.label = Cow::Owned(self.name);
        spec.criterion = Some(match self.weight {
            WeightConfig::Constant(weight) => Box::new(Weighted { criterion: self.criterion, weight }),
            // Unset: not multiplied; a schedule: applied by the scheduled criterion.
            WeightConfig::Unset | WeightConfig::Schedule(_) => self.criterion,
        });
        spec.student_adapter = self.student_adapter;
        spec.teacher_adapter = self.teacher_adapter;
    }
}
