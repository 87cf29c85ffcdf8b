//! The `criterion` of a configured pair: a name of the catalogue (`"Mse"`), or a table with the
//! name under `kind` and the criterion's parameters (`{ kind = "KlDiv", temperature = 4.0 }`).
//! Parameters left out take the criterion's defaults.

use toml::de::DeValue;

use super::reader::{describe, kind_of, quoted, At, Source, Table};
use crate::criterion::{
    AttentionTransfer, Cosine, Criterion, Dist, Divergence, Dkd, KlDiv, Mse, Pkt, Rkd, SampledKl, SequenceKd,
    SimilarityPreserving, SmoothL1, SoftCrossEntropy, TokenReduction, TopKKl, TopKKlDiv, L1,
};
use crate::error::Result;
use crate::schedule::Schedule;
use crate::suggest::closest;

/// A criterion of the catalogue with its parameters, as a configuration names it. Not public: its
/// variants, named as the criteria, would make rustc spell every criterion with its full path in
/// messages that list them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum CriterionConfig {
    /// `"Mse"`.
    Mse(Mse),
    /// `"L1"`.
    L1(L1),
    /// `"SmoothL1"`; parameter `beta`.
    SmoothL1(SmoothL1),
    /// `"Cosine"`.
    Cosine(Cosine),
    /// `"KlDiv"`; parameter `temperature`.
    KlDiv(KlDiv),
    /// `"SoftCrossEntropy"`; parameter `temperature`.
    SoftCrossEntropy(SoftCrossEntropy),
    /// `"AttentionTransfer"`; parameter `p`.
    AttentionTransfer(AttentionTransfer),
    /// `"SimilarityPreserving"`.
    SimilarityPreserving(SimilarityPreserving),
    /// `"Rkd"`; parameters `distance_weight`, `angle_weight`.
    Rkd(Rkd),
    /// `"Pkt"`.
    Pkt(Pkt),
    /// `"Dist"`; parameters `beta`, `gamma`, `tau`.
    Dist(Dist),
    /// `"Dkd"`; parameters `alpha`, `beta`, `temperature` (uses the batch's targets).
    Dkd(Dkd),
    /// `"ForwardKl"`, `"ReverseKl"`, `"Jsd"` (`beta`), `"SkewKl"`, `"SkewReverseKl"` (`alpha`),
    /// `"TotalVariation"`; parameters `temperature`, `reduction` (uses the batch's token labels).
    Sequence(SequenceKd),
    /// `"TopKKl"`; parameters `temperature`, `reduction`.
    TopKKl(TopKKl),
    /// `"SampledKl"`; parameters `temperature`, `reduction`.
    SampledKl(SampledKl),
    /// `"TopKKlDiv"` (a classifier's logits against an image cache's top-k); parameter
    /// `temperature`.
    TopKKlDiv(TopKKlDiv),
}

/// Every kind, with its parameters.
const KINDS: [(&str, &[&str]); 21] = [
    ("Mse", &[]),
    ("L1", &[]),
    ("SmoothL1", &["beta"]),
    ("Cosine", &[]),
    ("KlDiv", &["temperature"]),
    ("SoftCrossEntropy", &["temperature"]),
    ("AttentionTransfer", &["p"]),
    ("SimilarityPreserving", &[]),
    ("Rkd", &["distance_weight", "angle_weight"]),
    ("Pkt", &[]),
    ("Dist", &["beta", "gamma", "tau"]),
    ("Dkd", &["alpha", "beta", "temperature"]),
    ("ForwardKl", &["temperature", "reduction"]),
    ("ReverseKl", &["temperature", "reduction"]),
    ("Jsd", &["beta", "temperature", "reduction"]),
    ("SkewKl", &["alpha", "temperature", "reduction"]),
    ("SkewReverseKl", &["alpha", "temperature", "reduction"]),
    ("TotalVariation", &["temperature", "reduction"]),
    ("TopKKl", &["temperature", "reduction"]),
    ("SampledKl", &["temperature", "reduction"]),
    ("TopKKlDiv", &["temperature"]),
];

impl CriterionConfig {
    /// The criterion as `Any`, to be downcast to its type.
    #[cfg(test)]
    pub(crate) fn as_any(&self) -> &dyn std::any::Any {
        match self {
            CriterionConfig::Mse(c) => c,
            CriterionConfig::L1(c) => c,
            CriterionConfig::SmoothL1(c) => c,
            CriterionConfig::Cosine(c) => c,
            CriterionConfig::KlDiv(c) => c,
            CriterionConfig::SoftCrossEntropy(c) => c,
            CriterionConfig::AttentionTransfer(c) => c,
            CriterionConfig::SimilarityPreserving(c) => c,
            CriterionConfig::Rkd(c) => c,
            CriterionConfig::Pkt(c) => c,
            CriterionConfig::Dist(c) => c,
            CriterionConfig::Dkd(c) => c,
            CriterionConfig::Sequence(c) => c,
            CriterionConfig::TopKKl(c) => c,
            CriterionConfig::SampledKl(c) => c,
            CriterionConfig::TopKKlDiv(c) => c,
        }
    }

    /// The criterion, boxed; weighted by `schedule` when one is given.
    pub(crate) fn boxed(&self, schedule: Option<&Schedule>) -> Box<dyn Criterion> {
        fn wrap<C: Criterion + 'static>(criterion: C, schedule: Option<&Schedule>) -> Box<dyn Criterion> {
            match schedule {
                Some(schedule) => Box::new(criterion.scheduled(schedule.clone())),
                None => Box::new(criterion),
            }
        }
        match *self {
            CriterionConfig::Mse(c) => wrap(c, schedule),
            CriterionConfig::L1(c) => wrap(c, schedule),
            CriterionConfig::SmoothL1(c) => wrap(c, schedule),
            CriterionConfig::Cosine(c) => wrap(c, schedule),
            CriterionConfig::KlDiv(c) => wrap(c, schedule),
            CriterionConfig::SoftCrossEntropy(c) => wrap(c, schedule),
            CriterionConfig::AttentionTransfer(c) => wrap(c, schedule),
            CriterionConfig::SimilarityPreserving(c) => wrap(c, schedule),
            CriterionConfig::Rkd(c) => wrap(c, schedule),
            CriterionConfig::Pkt(c) => wrap(c, schedule),
            CriterionConfig::Dist(c) => wrap(c, schedule),
            CriterionConfig::Dkd(c) => wrap(c, schedule),
            CriterionConfig::Sequence(c) => wrap(c, schedule),
            CriterionConfig::TopKKl(c) => wrap(c, schedule),
            CriterionConfig::SampledKl(c) => wrap(c, schedule),
            CriterionConfig::TopKKlDiv(c) => wrap(c, schedule),
        }
    }
}

/// Reads the `criterion` value at `at`, and checks its parameters.
pub(super) fn read(source: Source<'_>, value: &DeValue<'_>, at: &At) -> Result<CriterionConfig> {
    let criterion = match value {
        DeValue::String(kind) => from_kind(source, kind, at, None)?,
        DeValue::Table(table) => {
            let (kind, kind_at) = kind_of(source, table, at)?;
            let known: Vec<&str> = std::iter::once("kind").chain(parameters(&kind).unwrap_or(&[]).iter().copied()).collect();
            // An unknown kind is reported before the keys, which depend on it.
            if parameters(&kind).is_none() {
                return Err(unknown_kind(source, &kind, &kind_at));
            }
            let table = Table::new(source, at.key.clone(), table, &known)?;
            from_kind(source, &kind, &kind_at, Some(&table))?
        }
        other => {
            return Err(source.error(
                at,
                format!("expected a criterion name (\"Mse\") or a table (`{{ kind = \"KlDiv\", temperature = 4.0 }}`), found {}", describe(other)),
            ))
        }
    };
    criterion.boxed(None).validate().map_err(|reason| source.error(at, format!("invalid criterion: {reason}")))?;
    Ok(criterion)
}

fn parameters(kind: &str) -> Option<&'static [&'static str]> {
    KINDS.iter().find(|(name, _)| *name == kind).map(|(_, params)| *params)
}

/// The criterion `kind` with the parameters of `table` (defaults without one).
fn from_kind(source: Source<'_>, kind: &str, at: &At, table: Option<&Table<'_, '_>>) -> Result<CriterionConfig> {
    let param = |name: &str, default: f64| -> Result<f64> {
        Ok(match table {
            Some(table) => table.float(name)?.map_or(default, |(value, _)| value),
            None => default,
        })
    };
    let reduction = || -> Result<TokenReduction> {
        let Some((name, at)) = table.map(|t| t.string("reduction")).transpose()?.flatten() else {
            return Ok(TokenReduction::default());
        };
        TokenReduction::from_name(&name).ok_or_else(|| {
            source.error(
                &at,
                format!("unknown reduction `{name}`; the reductions are \"token\", \"sequence\", \"batch\", \"sum\""),
            )
        })
    };
    let sequence = |divergence: Divergence| -> Result<CriterionConfig> {
        let d = SequenceKd::default();
        Ok(CriterionConfig::Sequence(
            SequenceKd::new(divergence, param("temperature", d.temperature)?).with_reduction(reduction()?),
        ))
    };
    Ok(match kind {
        "ForwardKl" => sequence(Divergence::ForwardKl)?,
        "ReverseKl" => sequence(Divergence::ReverseKl)?,
        "Jsd" => sequence(Divergence::Jsd { beta: param("beta", 0.5)? })?,
        "SkewKl" => sequence(Divergence::SkewKl { alpha: param("alpha", 0.1)? })?,
        "SkewReverseKl" => sequence(Divergence::SkewReverseKl { alpha: param("alpha", 0.1)? })?,
        "TotalVariation" => sequence(Divergence::TotalVariation)?,
        "TopKKl" => CriterionConfig::TopKKl(
            TopKKl::new(param("temperature", TopKKl::default().temperature)?).with_reduction(reduction()?),
        ),
        "SampledKl" => CriterionConfig::SampledKl(
            SampledKl::new(param("temperature", SampledKl::default().temperature)?).with_reduction(reduction()?),
        ),
        "Mse" => CriterionConfig::Mse(Mse),
        "L1" => CriterionConfig::L1(L1),
        "SmoothL1" => CriterionConfig::SmoothL1(SmoothL1 { beta: param("beta", SmoothL1::default().beta)? }),
        "Cosine" => CriterionConfig::Cosine(Cosine),
        "KlDiv" => CriterionConfig::KlDiv(KlDiv { temperature: param("temperature", KlDiv::default().temperature)? }),
        "TopKKlDiv" => CriterionConfig::TopKKlDiv(TopKKlDiv {
            temperature: param("temperature", TopKKlDiv::default().temperature)?,
        }),
        "SoftCrossEntropy" => CriterionConfig::SoftCrossEntropy(SoftCrossEntropy {
            temperature: param("temperature", SoftCrossEntropy::default().temperature)?,
        }),
        "AttentionTransfer" => {
            CriterionConfig::AttentionTransfer(AttentionTransfer { p: param("p", AttentionTransfer::default().p)? })
        }
        "SimilarityPreserving" => CriterionConfig::SimilarityPreserving(SimilarityPreserving),
        "Rkd" => {
            let d = Rkd::default();
            CriterionConfig::Rkd(Rkd {
                distance_weight: param("distance_weight", d.distance_weight)?,
                angle_weight: param("angle_weight", d.angle_weight)?,
            })
        }
        "Pkt" => CriterionConfig::Pkt(Pkt),
        "Dist" => {
            let d = Dist::default();
            CriterionConfig::Dist(Dist {
                beta: param("beta", d.beta)?,
                gamma: param("gamma", d.gamma)?,
                tau: param("tau", d.tau)?,
            })
        }
        "Dkd" => {
            let d = Dkd::default();
            CriterionConfig::Dkd(Dkd {
                alpha: param("alpha", d.alpha)?,
                beta: param("beta", d.beta)?,
                temperature: param("temperature", d.temperature)?,
            })
        }
        unknown => return Err(unknown_kind(source, unknown, at)),
    })
}

fn unknown_kind(source: Source<'_>, kind: &str, at: &At) -> crate::DistillError {
    let names: Vec<&str> = KINDS.iter().map(|(name, _)| *name).collect();
    let hint = match closest(kind, names.iter().copied()) {
        Some(name) => format!(" (did you mean `{name}`?)"),
        None => format!("; the criteria are {}", quoted(&names)),
    };
    source.error(at, format!("unknown criterion `{kind}`{hint}"))
}
