//! The `student_adapter` / `teacher_adapter` of a configured pair: a constructor of
//! `distill::adapter` by name (`"conv2d_adapter"`), or a table with the name under `kind` and its
//! options (`{ kind = "linear_adapter", in = 64, out = 128 }`), and the adapter it builds.

use tch::nn::Path;
use toml::de::DeValue;

use super::reader::{describe, kind_of, quoted, At, Source, Table};
use crate::adapter::{
    conv1x1_adapter, conv2d_adapter, fitted_conv1x1_adapter, fitted_linear_adapter, inverted_conv2d_adapter,
    learned_conv2d_adapter, learned_inverted_conv2d_adapter, learned_inverted_linear_adapter, learned_linear_adapter,
    linear_adapter, Adapter, AdapterError, Tolerance,
};
use crate::error::{DistillError, Result};
use crate::module::Distillable;
use crate::nn::{Conv2D, Linear};
use crate::point::Side;
use crate::suggest::closest;

/// An adapter constructor of `distill::adapter` with its options, as a configuration names it. Not
/// public, as the criteria's (its variants would shadow layer names in rustc's messages).
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AdapterConfig {
    /// `"conv2d_adapter"` on the teacher: the selection adapter from the teacher conv to its pruned
    /// student conv; options `atol`, `rtol` (the weight comparison's tolerance).
    Conv2d(Tolerance),
    /// `"inverted_conv2d_adapter"` on the student; options `atol`, `rtol`.
    InvertedConv2d(Tolerance),
    /// `"learned_conv2d_adapter"` on the teacher: a learned 1×1 conv, teacher conv channels → student's.
    LearnedConv2d,
    /// `"learned_inverted_conv2d_adapter"` on the student: student conv channels → teacher's.
    LearnedInvertedConv2d,
    /// `"learned_linear_adapter"` on the teacher: teacher linear features → student's.
    LearnedLinear,
    /// `"learned_inverted_linear_adapter"` on the student: student linear features → teacher's.
    LearnedInvertedLinear,
    /// `"conv1x1_adapter"` on either side; options `in`, `out` (channels).
    Conv1x1 {
        /// Input channels.
        inputs: i64,
        /// Output channels.
        outputs: i64,
    },
    /// `"linear_adapter"` on either side; options `in`, `out` (features).
    Linear {
        /// Input features.
        inputs: i64,
        /// Output features.
        outputs: i64,
    },
    /// `"fitted_linear_adapter"` on either side: widths from a dry run.
    FittedLinear,
    /// `"fitted_conv1x1_adapter"` on either side: channels from a dry run.
    FittedConv1x1,
}

/// Every constructor, the side it must wrap (`None`: either), and its options.
const KINDS: [(&str, Option<Side>, &[&str]); 10] = [
    ("conv2d_adapter", Some(Side::Teacher), &["atol", "rtol"]),
    ("inverted_conv2d_adapter", Some(Side::Student), &["atol", "rtol"]),
    ("learned_conv2d_adapter", Some(Side::Teacher), &[]),
    ("learned_inverted_conv2d_adapter", Some(Side::Student), &[]),
    ("learned_linear_adapter", Some(Side::Teacher), &[]),
    ("learned_inverted_linear_adapter", Some(Side::Student), &[]),
    ("conv1x1_adapter", None, &["in", "out"]),
    ("linear_adapter", None, &["in", "out"]),
    ("fitted_linear_adapter", None, &[]),
    ("fitted_conv1x1_adapter", None, &[]),
];

/// Reads the adapter value at `at`, given for `side`'s endpoint.
pub(super) fn read(source: Source<'_>, value: &DeValue<'_>, at: &At, side: Side) -> Result<AdapterConfig> {
    let (kind, kind_at, table) = match value {
        DeValue::String(kind) => (kind.to_string(), at.clone(), None),
        DeValue::Table(table) => {
            let (kind, kind_at) = kind_of(source, table, at)?;
            (kind, kind_at, Some(table))
        }
        other => {
            return Err(source.error(
                at,
                format!(
                    "expected an adapter constructor (\"conv2d_adapter\") or a table (`{{ kind = \"linear_adapter\", in = 64, out = 128 }}`), found {}",
                    describe(other)
                ),
            ))
        }
    };
    let Some(&(_, wraps, options)) = KINDS.iter().find(|(name, _, _)| *name == kind) else {
        let names: Vec<&str> = KINDS.iter().map(|(name, _, _)| *name).collect();
        let hint = match closest(&kind, names.iter().copied()) {
            Some(name) => format!(" (did you mean `{name}`?)"),
            None => format!("; the adapters are {}", quoted(&names)),
        };
        return Err(source.error(&kind_at, format!("unknown adapter `{kind}`{hint}")));
    };
    if let Some(wraps) = wraps.filter(|&wraps| wraps != side) {
        return Err(source.error(
            &kind_at,
            format!(
                "`{kind}` maps the {} tensor ({}), so it is a `{}_adapter`, not a `{side}_adapter`",
                wraps,
                if wraps == Side::Teacher {
                    "teacher widths → student widths"
                } else {
                    "student widths → teacher widths"
                },
                wraps
            ),
        ));
    }
    let known: Vec<&str> = std::iter::once("kind").chain(options.iter().copied()).collect();
    let table = table.map(|table| Table::new(source, at.key.clone(), table, &known)).transpose()?;
    let tolerance = || -> Result<Tolerance> {
        let default = Tolerance::default();
        let Some(table) = &table else { return Ok(default) };
        let atol = table.float("atol")?.map_or(default.atol, |(value, _)| value);
        let rtol = table.float("rtol")?.map_or(default.rtol, |(value, _)| value);
        let tolerance = Tolerance::new(atol, rtol);
        tolerance.validate().map_err(|err| source.caused(at, err))?;
        Ok(tolerance)
    };
    let widths = || -> Result<(i64, i64)> {
        let Some(table) = &table else {
            return Err(
                source.error(at, format!("`{kind}` needs its widths: `{{ kind = \"{kind}\", in = …, out = … }}`"))
            );
        };
        let (inputs, in_at) = table.required_integer("in", at)?;
        let (outputs, out_at) = table.required_integer("out", at)?;
        for (width, width_at) in [(inputs, in_at), (outputs, out_at)] {
            if width < 1 {
                return Err(source.error(&width_at, format!("a width must be at least 1, got {width}")));
            }
        }
        Ok((inputs, outputs))
    };
    Ok(match kind.as_str() {
        "conv2d_adapter" => AdapterConfig::Conv2d(tolerance()?),
        "inverted_conv2d_adapter" => AdapterConfig::InvertedConv2d(tolerance()?),
        "learned_conv2d_adapter" => AdapterConfig::LearnedConv2d,
        "learned_inverted_conv2d_adapter" => AdapterConfig::LearnedInvertedConv2d,
        "learned_linear_adapter" => AdapterConfig::LearnedLinear,
        "learned_inverted_linear_adapter" => AdapterConfig::LearnedInvertedLinear,
        "conv1x1_adapter" => {
            let (inputs, outputs) = widths()?;
            AdapterConfig::Conv1x1 { inputs, outputs }
        }
        "linear_adapter" => {
            let (inputs, outputs) = widths()?;
            AdapterConfig::Linear { inputs, outputs }
        }
        "fitted_linear_adapter" => AdapterConfig::FittedLinear,
        _ => AdapterConfig::FittedConv1x1,
    })
}

/// The two endpoint modules an adapter constructor receives: `None` for a side that has no module
/// tree (a TorchScript model).
pub(super) struct EndpointModules<'a> {
    pub teacher: Option<(&'a dyn Distillable, &'a str)>,
    pub student: Option<(&'a dyn Distillable, &'a str)>,
}

impl AdapterConfig {
    /// Checks that the pair's endpoint modules are the layers the constructor takes, without
    /// building anything: the error [`build`](Self::build) would give for them.
    pub(super) fn check(&self, modules: &EndpointModules<'_>) -> Result<()> {
        match *self {
            AdapterConfig::Conv2d(_) => convs(modules, "conv2d_adapter").map(drop),
            AdapterConfig::InvertedConv2d(_) => convs(modules, "inverted_conv2d_adapter").map(drop),
            AdapterConfig::LearnedConv2d => convs(modules, "learned_conv2d_adapter").map(drop),
            AdapterConfig::LearnedInvertedConv2d => convs(modules, "learned_inverted_conv2d_adapter").map(drop),
            AdapterConfig::LearnedLinear => linears(modules, "learned_linear_adapter").map(drop),
            AdapterConfig::LearnedInvertedLinear => linears(modules, "learned_inverted_linear_adapter").map(drop),
            AdapterConfig::Conv1x1 { .. }
            | AdapterConfig::Linear { .. }
            | AdapterConfig::FittedLinear
            | AdapterConfig::FittedConv1x1 => Ok(()),
        }
    }

    /// Builds the adapter under `path` from the pair's endpoint modules.
    pub(super) fn build(&self, path: &Path<'_>, modules: &EndpointModules<'_>) -> Result<Box<dyn Adapter>> {
        Ok(match *self {
            AdapterConfig::Conv2d(tolerance) => {
                let (teacher, student) = convs(modules, "conv2d_adapter")?;
                Box::new(conv2d_adapter(path, teacher, student).tolerance(tolerance).build()?)
            }
            AdapterConfig::InvertedConv2d(tolerance) => {
                let (teacher, student) = convs(modules, "inverted_conv2d_adapter")?;
                Box::new(inverted_conv2d_adapter(path, teacher, student).tolerance(tolerance).build()?)
            }
            AdapterConfig::LearnedConv2d => {
                let (teacher, student) = convs(modules, "learned_conv2d_adapter")?;
                Box::new(learned_conv2d_adapter(path, teacher, student)?)
            }
            AdapterConfig::LearnedInvertedConv2d => {
                let (teacher, student) = convs(modules, "learned_inverted_conv2d_adapter")?;
                Box::new(learned_inverted_conv2d_adapter(path, teacher, student)?)
            }
            AdapterConfig::LearnedLinear => {
                let (teacher, student) = linears(modules, "learned_linear_adapter")?;
                Box::new(learned_linear_adapter(path, teacher, student)?)
            }
            AdapterConfig::LearnedInvertedLinear => {
                let (teacher, student) = linears(modules, "learned_inverted_linear_adapter")?;
                Box::new(learned_inverted_linear_adapter(path, teacher, student)?)
            }
            AdapterConfig::Conv1x1 { inputs, outputs } => Box::new(conv1x1_adapter(path, inputs, outputs)?),
            AdapterConfig::Linear { inputs, outputs } => Box::new(linear_adapter(path, inputs, outputs)?),
            AdapterConfig::FittedLinear => Box::new(fitted_linear_adapter(path, &(), &())?),
            AdapterConfig::FittedConv1x1 => Box::new(fitted_conv1x1_adapter(path, &(), &())?),
        })
    }
}

/// The teacher's and the student's endpoint modules as the `Conv2D`s `constructor` takes.
fn convs<'a>(modules: &EndpointModules<'a>, constructor: &str) -> Result<(&'a Conv2D, &'a Conv2D)> {
    let teacher = layer::<Conv2D>(modules.teacher, Side::Teacher, constructor, "Conv2D")?;
    Ok((teacher, layer::<Conv2D>(modules.student, Side::Student, constructor, "Conv2D")?))
}

/// The teacher's and the student's endpoint modules as the `Linear`s `constructor` takes.
fn linears<'a>(modules: &EndpointModules<'a>, constructor: &str) -> Result<(&'a Linear, &'a Linear)> {
    let teacher = layer::<Linear>(modules.teacher, Side::Teacher, constructor, "Linear")?;
    Ok((teacher, layer::<Linear>(modules.student, Side::Student, constructor, "Linear")?))
}

/// The endpoint module of `side` as the layer type `L` the constructor `constructor` takes.
fn layer<'a, L: 'static>(
    module: Option<(&'a dyn Distillable, &'a str)>,
    side: Side,
    constructor: &str,
    wanted: &'static str,
) -> Result<&'a L> {
    let Some((module, path)) = module else {
        return Err(AdapterError::NoLayers { constructor: constructor.to_owned(), side, wanted }.into());
    };
    module.as_any().and_then(|any| any.downcast_ref::<L>()).ok_or_else(|| {
        DistillError::from(AdapterError::WrongLayer {
            constructor: constructor.to_owned(),
            side,
            wanted,
            path: if path.is_empty() { "(model itself)" } else { path }.to_owned(),
            found: module.module_type(),
        })
    })
}
