//! Loss schedules and balancing: a term's weight as a function of the training step ([`Schedule`]),
//! the per-term values a distillation reports ([`LossTerm`]), and the cap on rescaling a term to
//! the magnitude of a reference term ([`MAX_RESCALE`], set with
//! [`Distillation::set_rescale_to`](crate::Distillation::set_rescale_to)).
//!
//! A criterion follows a schedule through [`Scheduled`](crate::criterion::Scheduled), built by
//! `criterion * schedule` for the catalogue (`Mse * Schedule::warmup(0.0, 1.0, 500)`) or
//! [`Criterion::scheduled`](crate::criterion::Criterion::scheduled) for any criterion. Its loss needs
//! the step: a `distill!` model takes it from `set_step(step)` (a forward of a model with a scheduled
//! pair and no step is an error, never step 0), a criterion called directly from
//! [`Scheduled::loss_at`](crate::criterion::Scheduled::loss_at) (or `loss_at` of a `dyn Criterion`).
//!
//! ```
//! # extern crate distill_runtime as distill;
//! use distill::schedule::Schedule;
//!
//! let warmup = Schedule::warmup(0.0, 1.0, 100);           // 0 → 1 over steps 0..100, then 1
//! assert_eq!(warmup.value(50), 0.5);
//! let decay = Schedule::steps(1.0, [(1000, 0.1), (2000, 0.01)]);
//! let both = warmup.clone() * decay;                      // the product at each step
//! assert_eq!(both.value(1500), 0.1);
//! let ramp = Schedule::constant(0.0).then(200, Schedule::cosine(0.0, 2.0, 0, 100));
//! assert_eq!(ramp.value(150), 0.0);                       // before step 200
//! assert!((ramp.value(250) - 1.0).abs() < 1e-12);         // halfway along the cosine ramp
//! ```

use std::f64::consts::PI;
use std::ops::Mul;

mod terms;

pub(crate) use terms::rescale_factor;
pub use terms::{LossTerm, MAX_RESCALE};

/// A weight as a function of the training step (the optimizer step count, from 0).
///
/// Built by the constructors ([`constant`](Self::constant), [`warmup`](Self::warmup),
/// [`linear`](Self::linear), [`cosine`](Self::cosine), [`steps`](Self::steps)) and composed with
/// `a * b` (the product at each step), `a * 0.5` (scaled) and [`then`](Self::then) (one schedule
/// after another). Parameters that are not finite, or ramps that end before they start, are reported
/// by [`validate`](Self::validate) (`distill!` models check it in `new()`).
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The same value at every step.
    Constant(f64),
    /// `from` up to step `start`, then linearly to `to` at step `end`, then `to`.
    Linear {
        /// The value up to `start`.
        from: f64,
        /// The value from `end` on.
        to: f64,
        /// The step at which the ramp starts.
        start: u64,
        /// The step at which the ramp reaches `to` (≥ `start`).
        end: u64,
    },
    /// `from` up to step `start`, then along a half cosine to `to` at step `end`, then `to`:
    /// `from + (to − from) · (1 − cos(π · (step − start) / (end − start))) / 2`, flat at both ends.
    Cosine {
        /// The value up to `start`.
        from: f64,
        /// The value from `end` on.
        to: f64,
        /// The step at which the ramp starts.
        start: u64,
        /// The step at which the ramp reaches `to` (≥ `start`).
        end: u64,
    },
    /// Piecewise constant: `initial`, then from each change's step on, its value.
    Steps {
        /// The value before the first change.
        initial: f64,
        /// `(step, value)` pairs, by strictly increasing step.
        changes: Vec<(u64, f64)>,
    },
    /// The product of two schedules at each step.
    Product(Box<Schedule>, Box<Schedule>),
    /// `first` before step `at`; from `at` on, `then` at `step − at` (so `then` starts at its own
    /// step 0).
    Then {
        /// The schedule before `at`.
        first: Box<Schedule>,
        /// The step at which `then` takes over.
        at: u64,
        /// The schedule from `at` on, counted from `at`.
        then: Box<Schedule>,
    },
}

impl Schedule {
    /// `value` at every step.
    pub const fn constant(value: f64) -> Self {
        Schedule::Constant(value)
    }

    /// A linear warm-up from `from` at step 0 to `to` at step `steps`, then `to`.
    pub const fn warmup(from: f64, to: f64, steps: u64) -> Self {
        Schedule::Linear { from, to, start: 0, end: steps }
    }

    /// `from` up to step `start`, linearly to `to` at step `end`, then `to`.
    pub const fn linear(from: f64, to: f64, start: u64, end: u64) -> Self {
        Schedule::Linear { from, to, start, end }
    }

    /// `from` up to step `start`, along a half cosine to `to` at step `end`, then `to`.
    pub const fn cosine(from: f64, to: f64, start: u64, end: u64) -> Self {
        Schedule::Cosine { from, to, start, end }
    }

    /// `initial`, then each change's value from its step on (`changes` by strictly increasing step).
    pub fn steps(initial: f64, changes: impl IntoIterator<Item = (u64, f64)>) -> Self {
        Schedule::Steps { initial, changes: changes.into_iter().collect() }
    }

    /// This schedule before step `at`, then `next` counted from `at`.
    pub fn then(self, at: u64, next: Schedule) -> Self {
        Schedule::Then { first: Box::new(self), at, then: Box::new(next) }
    }

    /// The value at `step`.
    pub fn value(&self, step: u64) -> f64 {
        match self {
            Schedule::Constant(value) => *value,
            Schedule::Linear { from, to, start, end } => ramp(*from, *to, *start, *end, step, |x| x),
            Schedule::Cosine { from, to, start, end } => {
                ramp(*from, *to, *start, *end, step, |x| (1.0 - (PI * x).cos()) / 2.0)
            }
            Schedule::Steps { initial, changes } => {
                changes.iter().take_while(|(at, _)| *at <= step).last().map_or(*initial, |(_, value)| *value)
            }
            Schedule::Product(a, b) => a.value(step) * b.value(step),
            Schedule::Then { first, at, then } => {
                if step < *at {
                    first.value(step)
                } else {
                    then.value(step - at)
                }
            }
        }
    }

    /// Why this schedule is invalid (a value that is not finite, a ramp that ends before it starts,
    /// changes not by strictly increasing step), or `Ok`.
    pub fn validate(&self) -> Result<(), String> {
        let finite = |what: &str, value: f64| {
            if value.is_finite() {
                Ok(())
            } else {
                Err(format!("the schedule's {what} must be finite, got {value}"))
            }
        };
        match self {
            Schedule::Constant(value) => finite("value", *value),
            Schedule::Linear { from, to, start, end } | Schedule::Cosine { from, to, start, end } => {
                finite("start value", *from)?;
                finite("end value", *to)?;
                if !(to - from).is_finite() {
                    return Err(format!(
                        "the schedule's ramp from {from} to {to} spans more than a 64-bit float holds: its values \
                         between would be infinite"
                    ));
                }
                if end < start {
                    return Err(format!("the schedule's ramp ends (step {end}) before it starts (step {start})"));
                }
                Ok(())
            }
            Schedule::Steps { initial, changes } => {
                finite("initial value", *initial)?;
                for (at, value) in changes {
                    finite(&format!("value at step {at}"), *value)?;
                }
                if let Some(pair) = changes.windows(2).find(|pair| pair[0].0 >= pair[1].0) {
                    return Err(format!(
                        "the schedule's steps must strictly increase, got step {} after step {}",
                        pair[1].0, pair[0].0
                    ));
                }
                Ok(())
            }
            Schedule::Product(a, b) => {
                a.validate().and_then(|()| b.validate())?;
                let bound = a.bound() * b.bound();
                if bound.is_finite() {
                    Ok(())
                } else {
                    Err(format!(
                        "the product of two schedules reaching {:e} and {:e} would be infinite",
                        a.bound(),
                        b.bound()
                    ))
                }
            }
            Schedule::Then { first, then, .. } => first.validate().and_then(|()| then.validate()),
        }
    }
}

impl Schedule {
    /// The largest magnitude the schedule takes at any step (a ramp stays between its ends).
    fn bound(&self) -> f64 {
        match self {
            Schedule::Constant(value) => value.abs(),
            Schedule::Linear { from, to, .. } | Schedule::Cosine { from, to, .. } => from.abs().max(to.abs()),
            Schedule::Steps { initial, changes } => {
                changes.iter().fold(initial.abs(), |bound, (_, value)| bound.max(value.abs()))
            }
            Schedule::Product(a, b) => a.bound() * b.bound(),
            Schedule::Then { first, then, .. } => first.bound().max(then.bound()),
        }
    }
}

/// `from` before `start`, `to` from `end` on, and `from + (to − from) · shape(progress)` between,
/// `progress` in `[0, 1)`.
fn ramp(from: f64, to: f64, start: u64, end: u64, step: u64, shape: impl Fn(f64) -> f64) -> f64 {
    if step >= end {
        to
    } else if step <= start {
        from
    } else {
        let progress = (step - start) as f64 / (end - start) as f64;
        from + (to - from) * shape(progress)
    }
}

/// A constant is a schedule.
impl From<f64> for Schedule {
    fn from(value: f64) -> Self {
        Schedule::Constant(value)
    }
}

/// The product of two schedules at each step.
impl Mul for Schedule {
    type Output = Schedule;
    fn mul(self, other: Schedule) -> Schedule {
        Schedule::Product(Box::new(self), Box::new(other))
    }
}

/// The schedule scaled by a constant.
impl Mul<f64> for Schedule {
    type Output = Schedule;
    fn mul(self, factor: f64) -> Schedule {
        self * Schedule::Constant(factor)
    }
}

/// The schedule scaled by a constant, from the left.
impl Mul<Schedule> for f64 {
    type Output = Schedule;
    fn mul(self, schedule: Schedule) -> Schedule {
        Schedule::Constant(self) * schedule
    }
}
