//! What a forward of a [`Distillation`](super::Distillation) gives: every pair after its adapters,
//! the models' outputs, and the pairs' weighted losses.

use std::fmt;

use tch::Tensor;

use super::private::losses::{f_loss_terms, total, write_terms};
use crate::dsl::Pair;
use crate::error::Result;
use crate::schedule::LossTerm;

/// One forward of a [`Distillation`](super::Distillation): every model's output and every pair in
/// declaration order. A `distill!` model's output is a typed view of this one, with a field per
/// pair.
#[derive(Debug)]
pub struct DistillationOutput<'d> {
    /// The student's output; undefined for a TorchScript student with several named outputs and
    /// none chosen as its own ([`jit::Module::with_output`](crate::jit::Module::with_output)).
    pub student_output: Tensor,
    /// Each teacher's output in declaration order, on the student's device; undefined for a
    /// teacher that did not run (one of several, without pairs), a cache that does not store it,
    /// or a TorchScript teacher with several named outputs and none chosen as its own.
    pub teacher_outputs: Vec<Tensor>,
    /// Each pair's tensors after its adapters, with its criterion, in declaration order.
    pub pairs: Vec<Pair<'d>>,
}

impl<'d> DistillationOutput<'d> {
    /// The pair labelled `label`.
    pub fn get(&self, label: &str) -> Option<&Pair<'d>> {
        self.pairs.iter().find(|pair| pair.label() == label)
    }

    /// Gives the batch's targets (class indices) to every pair, for criteria that use them
    /// (`Dkd`, the token-level losses).
    pub fn with_targets(mut self, targets: &Tensor) -> Self {
        for pair in &mut self.pairs {
            pair.set_targets(targets);
        }
        self
    }

    /// The sum of the pairs' weighted (and, where the distillation rescales, rescaled) losses.
    ///
    /// # Panics
    /// Where a pair's criterion cannot compute its loss (targets it needs and were not given,
    /// targets of another batch size); [`f_loss`](Self::f_loss) returns that error instead.
    pub fn loss(&self) -> Tensor {
        self.losses().total()
    }

    /// As [`loss`](Self::loss), with the first pair that cannot compute its loss as an error
    /// instead of a panic.
    pub fn f_loss(&self) -> Result<Tensor> {
        Ok(self.f_losses()?.total())
    }

    /// Each pair's loss by label: weighted at the distillation's step and rescaled where it
    /// rescales its terms.
    ///
    /// # Panics
    /// As [`loss`](Self::loss); [`f_losses`](Self::f_losses) returns the error instead.
    pub fn losses(&self) -> Losses {
        self.f_losses().unwrap_or_else(|error| panic!("{error}"))
    }

    /// As [`losses`](Self::losses), with the first pair that cannot compute its loss as an error
    /// instead of a panic.
    pub fn f_losses(&self) -> Result<Losses> {
        let pairs: Vec<&Pair<'_>> = self.pairs.iter().collect();
        let terms = f_loss_terms(&pairs)?;
        Ok(Losses { terms: self.pairs.iter().map(|pair| pair.label().to_owned()).zip(terms).collect() })
    }
}

/// The named loss terms of a [`DistillationOutput`], in declaration order.
pub struct Losses {
    terms: Vec<(String, LossTerm)>,
}

impl Losses {
    /// The sum of the weighted terms (a scalar zero without pairs).
    pub fn total(&self) -> Tensor {
        total(&self.terms.iter().map(|(_, term)| &term.weighted).collect::<Vec<_>>())
    }

    /// `(label, weighted loss)` for each pair, in declaration order: what enters the total.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Tensor)> {
        self.terms.iter().map(|(label, term)| (label.as_str(), &term.weighted))
    }

    /// The weighted loss of the pair labelled `label`.
    pub fn get(&self, label: &str) -> Option<&Tensor> {
        self.terms.iter().find(|(term, _)| term == label).map(|(_, term)| &term.weighted)
    }

    /// `(label, term)` for each pair: the weighted and the unweighted loss, the weight at the step
    /// and the rescaling factor.
    pub fn terms(&self) -> impl ExactSizeIterator<Item = (&str, &LossTerm)> {
        self.terms.iter().map(|(label, term)| (label.as_str(), term))
    }
}

impl fmt::Display for Losses {
    /// `f1=0.1234 kd=0.5678`; a term whose weight is not 1 or that is rescaled adds its unweighted
    /// value and factors.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let terms: Vec<(&str, &LossTerm)> = self.terms().collect();
        write_terms(f, &terms)
    }
}

impl fmt::Debug for Losses {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Losses({self})")
    }
}
