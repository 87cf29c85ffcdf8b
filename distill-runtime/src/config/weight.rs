//! The `weight` of a configured pair: a number, or a [`Schedule`] of the training step given as a
//! table with the schedule's name under `kind` (`{ kind = "warmup", from = 0.0, to = 1.0, steps = 500 }`).

use toml::de::DeValue;

use super::reader::{describe, kind_of, quoted, At, Table};
use crate::error::Result;
use crate::schedule::Schedule;
use crate::suggest::closest;

/// A pair's weight as a configuration gives it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum WeightConfig {
    /// No `weight`: the loss is not multiplied at all.
    Unset,
    /// A number.
    Constant(f64),
    /// A schedule of the step.
    Schedule(Schedule),
}

/// Every schedule kind, with its keys.
const KINDS: [(&str, &[&str]); 5] = [
    ("constant", &["value"]),
    ("warmup", &["from", "to", "steps"]),
    ("linear", &["from", "to", "start", "end"]),
    ("cosine", &["from", "to", "start", "end"]),
    ("steps", &["initial", "changes"]),
];

/// Reads the pair's `weight` (absent: [`WeightConfig::Unset`]).
pub(super) fn read(table: &Table<'_, '_>) -> Result<WeightConfig> {
    let source = table.source();
    let Some((value, at)) = table.get("weight") else { return Ok(WeightConfig::Unset) };
    let weight = match value {
        DeValue::Table(schedule) => {
            let (kind, kind_at) = kind_of(source, schedule, &at)?;
            let Some(&(_, keys)) = KINDS.iter().find(|(name, _)| *name == kind) else {
                let names: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
                let hint = match closest(&kind, names.iter().copied()) {
                    Some(name) => format!(" (did you mean `{name}`?)"),
                    None => format!("; the schedules are {}", quoted(&names)),
                };
                return Err(source.error(&kind_at, format!("unknown schedule `{kind}`{hint}")));
            };
            let known: Vec<&str> = std::iter::once("kind").chain(keys.iter().copied()).collect();
            let schedule_table = Table::new(source, at.key.clone(), schedule, &known)?;
            WeightConfig::Schedule(read_schedule(&schedule_table, &kind, &at)?)
        }
        _ => {
            let weight = table.float("weight")?.map(|(weight, _)| weight);
            WeightConfig::Constant(weight.ok_or_else(|| source.error(&at, "expected a number"))?)
        }
    };
    let invalid = match &weight {
        WeightConfig::Constant(weight) if !weight.is_finite() => {
            Some(format!("the weight must be finite, got {weight}"))
        }
        WeightConfig::Constant(weight) if *weight < 0.0 => Some(negative(*weight)),
        WeightConfig::Schedule(schedule) => {
            schedule.validate().err().or_else(|| lowest_value(schedule).filter(|v| *v < 0.0).map(negative))
        }
        _ => None,
    };
    match invalid {
        Some(reason) => Err(source.error(&at, reason)),
        None => Ok(weight),
    }
}

/// The message for a negative weight.
fn negative(weight: f64) -> String {
    format!(
        "a weight must be ≥ 0, got {weight}: a negative weight rewards the student for moving away from the teacher \
         (write 0 to switch a term off)"
    )
}

/// The lowest value a schedule's parameters give (its ramps stay between their ends), if any.
fn lowest_value(schedule: &Schedule) -> Option<f64> {
    let lowest = match schedule {
        Schedule::Constant(value) => *value,
        Schedule::Linear { from, to, .. } | Schedule::Cosine { from, to, .. } => from.min(*to),
        Schedule::Steps { initial, changes } => changes.iter().fold(*initial, |low, (_, value)| low.min(*value)),
        Schedule::Product(a, b) => lowest_value(a)?.min(lowest_value(b)?),
        Schedule::Then { first, then, .. } => lowest_value(first)?.min(lowest_value(then)?),
    };
    Some(lowest)
}

fn read_schedule(table: &Table<'_, '_>, kind: &str, at: &At) -> Result<Schedule> {
    let source = table.source();
    let number = |key: &str| -> Result<f64> {
        table.float(key)?.map(|(value, _)| value).ok_or_else(|| source.error(at, format!("missing key `{key}`")))
    };
    let step = |key: &str| -> Result<u64> {
        let (value, value_at) = table.required_integer(key, at)?;
        u64::try_from(value).map_err(|_| source.error(&value_at, format!("a step must be ≥ 0, got {value}")))
    };
    Ok(match kind {
        "constant" => Schedule::constant(number("value")?),
        "warmup" => Schedule::warmup(number("from")?, number("to")?, step("steps")?),
        "linear" => Schedule::linear(number("from")?, number("to")?, step("start")?, step("end")?),
        "cosine" => Schedule::cosine(number("from")?, number("to")?, step("start")?, step("end")?),
        _ => Schedule::steps(number("initial")?, read_changes(table, at)?),
    })
}

/// `changes = [[1000, 0.1], [2000, 0.01]]`: `(step, value)` pairs.
fn read_changes(table: &Table<'_, '_>, at: &At) -> Result<Vec<(u64, f64)>> {
    let source = table.source();
    let (value, changes_at) = table.get("changes").ok_or_else(|| source.error(at, "missing key `changes`"))?;
    let expected = |found: &DeValue<'_>, at: &At| {
        source.error(at, format!("expected `[[step, value], …]`, e.g. `[[1000, 0.1]]`, found {}", describe(found)))
    };
    let DeValue::Array(changes) = value else { return Err(expected(value, &changes_at)) };
    changes
        .iter()
        .enumerate()
        .map(|(i, change)| {
            let change_at = At { key: format!("{}[{i}]", changes_at.key), span: change.span() };
            let pair = match change.get_ref() {
                DeValue::Array(pair) if pair.len() == 2 => pair,
                other => return Err(expected(other, &change_at)),
            };
            let step =
                pair[0].get_ref().as_integer().and_then(|int| i64::from_str_radix(int.as_str(), int.radix()).ok());
            let step = step.and_then(|step| u64::try_from(step).ok());
            let value = match pair[1].get_ref() {
                DeValue::Float(float) => float.as_str().parse::<f64>().ok(),
                DeValue::Integer(int) => i64::from_str_radix(int.as_str(), int.radix()).ok().map(|v| v as f64),
                _ => None,
            };
            match (step, value) {
                (Some(step), Some(value)) => Ok((step, value)),
                _ => Err(source.error(&change_at, "expected `[step, value]` with a step ≥ 0 and a number")),
            }
        })
        .collect()
}

impl WeightConfig {
    /// The schedule, if the weight follows one.
    pub(crate) fn schedule(&self) -> Option<&Schedule> {
        match self {
            WeightConfig::Schedule(schedule) => Some(schedule),
            _ => None,
        }
    }
}
