//! What a file reads into, before any model is involved: each criterion with its parameters, each
//! adapter with its options, each weight or schedule. (Building against models, and running, is
//! tested from outside the crate.)

use super::adapters::AdapterConfig;
use super::weight::WeightConfig;
use super::Config;
use crate::adapter::Tolerance;
use crate::criterion::{
    AttentionTransfer, Cosine, Criterion, Dist, Divergence, Dkd, KlDiv, Mse, Pkt, Rkd, SampledKl, SequenceKd,
    SimilarityPreserving, SmoothL1, SoftCrossEntropy, TokenReduction, TopKKl, TopKKlDiv, L1,
};
use crate::schedule::Schedule;

/// A file of one pair per criterion (`criterion = …`, `weight = i` for the `i`-th), read.
fn read_criteria(criteria: &[&str], weighted: bool) -> Config {
    let text: String = criteria
        .iter()
        .enumerate()
        .map(|(i, criterion)| {
            let weight = if weighted { format!("weight = {i}\n") } else { String::new() };
            format!("[[pair]]\nname = \"c{i}\"\nstudent = \"\"\nteacher = \"\"\ncriterion = {criterion}\n{weight}")
        })
        .collect();
    Config::parse(&text, "criteria.toml").unwrap()
}

/// Whether pair `index` of `config` reads as `expected`, parameters and all.
fn reads_as<C: Criterion + PartialEq + std::fmt::Debug + 'static>(config: &Config, index: usize, expected: &C) {
    let read = config.pairs[index].criterion.as_any().downcast_ref::<C>();
    assert_eq!(read, Some(expected), "pair {index}");
}

#[test]
fn every_criterion_reads_with_its_parameters() {
    let config = read_criteria(
        &[
            "\"Mse\"",
            "\"L1\"",
            "{ kind = \"SmoothL1\", beta = 0.5 }",
            "\"Cosine\"",
            "{ kind = \"KlDiv\", temperature = 2 }",
            "\"KlDiv\"",
            "{ kind = \"SoftCrossEntropy\", temperature = 3.0 }",
            "{ kind = \"AttentionTransfer\", p = 4.0 }",
            "\"SimilarityPreserving\"",
            "{ kind = \"Rkd\", distance_weight = 2.0, angle_weight = 3.0 }",
            "\"Pkt\"",
            "{ kind = \"Dist\", beta = 2.0, gamma = 3.0, tau = 1.5 }",
            "{ kind = \"Dkd\", alpha = 0.5, temperature = 2.0 }",
            "{ kind = \"TopKKlDiv\", temperature = 3.0 }",
            "\"TopKKlDiv\"",
        ],
        true,
    );
    reads_as(&config, 0, &Mse);
    reads_as(&config, 1, &L1);
    reads_as(&config, 2, &SmoothL1 { beta: 0.5 });
    reads_as(&config, 3, &Cosine);
    reads_as(&config, 4, &KlDiv { temperature: 2.0 });
    reads_as(&config, 5, &KlDiv::default());
    reads_as(&config, 6, &SoftCrossEntropy { temperature: 3.0 });
    reads_as(&config, 7, &AttentionTransfer { p: 4.0 });
    reads_as(&config, 8, &SimilarityPreserving);
    reads_as(&config, 9, &Rkd { distance_weight: 2.0, angle_weight: 3.0 });
    reads_as(&config, 10, &Pkt);
    reads_as(&config, 11, &Dist { beta: 2.0, gamma: 3.0, tau: 1.5 });
    reads_as(&config, 12, &Dkd { alpha: 0.5, temperature: 2.0, ..Dkd::default() });
    reads_as(&config, 13, &TopKKlDiv { temperature: 3.0 });
    reads_as(&config, 14, &TopKKlDiv::default());
    // Only the pair that says `Mse` reads as one.
    for (index, pair) in config.pairs.iter().enumerate() {
        assert_eq!(pair.criterion.as_any().downcast_ref::<Mse>().is_some(), index == 0, "pair {index}");
        assert_eq!(pair.weight, WeightConfig::Constant(index as f64), "pair {index}");
        assert_eq!(pair.name, format!("c{index}"));
    }
}

#[test]
fn token_criteria_read_with_their_parameters() {
    let config = read_criteria(
        &[
            "\"ForwardKl\"",
            "{ kind = \"ReverseKl\", temperature = 2.0, reduction = \"sum\" }",
            "{ kind = \"Jsd\", beta = 0.9, reduction = \"sequence\" }",
            "{ kind = \"SkewKl\", alpha = 0.2 }",
            "\"SkewReverseKl\"",
            "{ kind = \"TotalVariation\", reduction = \"batch\" }",
            "{ kind = \"TopKKl\", temperature = 2.0 }",
            "{ kind = \"SampledKl\", reduction = \"sum\" }",
        ],
        false,
    );
    let seq = |d: Divergence, t: f64, r: TokenReduction| SequenceKd::new(d, t).with_reduction(r);
    reads_as(&config, 0, &seq(Divergence::ForwardKl, 1.0, TokenReduction::Token));
    reads_as(&config, 1, &seq(Divergence::ReverseKl, 2.0, TokenReduction::Sum));
    reads_as(&config, 2, &seq(Divergence::Jsd { beta: 0.9 }, 1.0, TokenReduction::Sequence));
    reads_as(&config, 3, &seq(Divergence::SkewKl { alpha: 0.2 }, 1.0, TokenReduction::Token));
    reads_as(&config, 4, &seq(Divergence::SkewReverseKl { alpha: 0.1 }, 1.0, TokenReduction::Token));
    reads_as(&config, 5, &seq(Divergence::TotalVariation, 1.0, TokenReduction::Batch));
    reads_as(&config, 6, &TopKKl::new(2.0));
    reads_as(&config, 7, &SampledKl::new(1.0).with_reduction(TokenReduction::Sum));
    assert!(config.pairs.iter().all(|pair| pair.weight == WeightConfig::Unset));
}

#[test]
fn every_adapter_reads_with_its_options() {
    let pair = |side: &str, adapter: &str| {
        format!(
            "[[pair]]\nname = \"p\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\n{side}_adapter = {adapter}\n"
        )
    };
    let read = |side: &str, adapter: &str| {
        let config = Config::parse(&pair(side, adapter), "adapters.toml").unwrap();
        let entry = &config.pairs[0];
        let (student, teacher) =
            (entry.student_adapter.as_ref().map(|(a, _)| *a), entry.teacher_adapter.as_ref().map(|(a, _)| *a));
        match side {
            "student" => (student.unwrap(), teacher.is_none()),
            _ => (teacher.unwrap(), student.is_none()),
        }
    };
    let cases = [
        (
            "teacher",
            "{ kind = \"conv2d_adapter\", atol = 1e-5, rtol = 0.0 }",
            AdapterConfig::Conv2d(Tolerance::new(1e-5, 0.0)),
        ),
        ("teacher", "\"conv2d_adapter\"", AdapterConfig::Conv2d(Tolerance::default())),
        ("student", "\"inverted_conv2d_adapter\"", AdapterConfig::InvertedConv2d(Tolerance::default())),
        ("teacher", "\"learned_conv2d_adapter\"", AdapterConfig::LearnedConv2d),
        ("student", "\"learned_inverted_conv2d_adapter\"", AdapterConfig::LearnedInvertedConv2d),
        ("teacher", "\"learned_linear_adapter\"", AdapterConfig::LearnedLinear),
        ("student", "\"learned_inverted_linear_adapter\"", AdapterConfig::LearnedInvertedLinear),
        (
            "student",
            "{ kind = \"conv1x1_adapter\", in = 32, out = 128 }",
            AdapterConfig::Conv1x1 { inputs: 32, outputs: 128 },
        ),
        (
            "teacher",
            "{ kind = \"linear_adapter\", in = 10, out = 3 }",
            AdapterConfig::Linear { inputs: 10, outputs: 3 },
        ),
        ("teacher", "\"fitted_linear_adapter\"", AdapterConfig::FittedLinear),
        ("student", "\"fitted_conv1x1_adapter\"", AdapterConfig::FittedConv1x1),
    ];
    for (side, adapter, expected) in cases {
        assert_eq!(read(side, adapter), (expected, true), "{side}_adapter = {adapter}");
    }
}

#[test]
fn weights_read_as_constants_or_schedules() {
    let text = "[[pair]]\nname = \"p\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\n\
                weight = { kind = \"warmup\", from = 0.0, to = 2.0, steps = 100 }\n\
                [[pair]]\nname = \"q\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\nweight = 0.5\n\
                [[pair]]\nname = \"r\"\nstudent = \"\"\nteacher = \"\"\ncriterion = \"Mse\"\n";
    let config = Config::parse(text, "weights.toml").unwrap();
    let weights: Vec<&WeightConfig> = config.pairs.iter().map(|pair| &pair.weight).collect();
    assert_eq!(
        weights,
        [&WeightConfig::Schedule(Schedule::warmup(0.0, 2.0, 100)), &WeightConfig::Constant(0.5), &WeightConfig::Unset]
    );
}
