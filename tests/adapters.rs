//! Channel mapping, pruning-aware adapters and pruning helpers.

use distill::adapter::{
    conv1x1_adapter, conv2d_adapter, find_channel_mapping, find_conv2d_mapping, inverted_conv2d_adapter,
    learned_conv2d_adapter, learned_inverted_conv2d_adapter, learned_inverted_linear_adapter, learned_linear_adapter,
    linear_adapter, Adapter, AdapterError, ChannelMapError, ChannelMapping, Conv2DAdapter, InvertedConv2DAdapter,
    KeptChannels, Tolerance,
};
use distill::criterion::Mse;
use distill::nn::{self, Module, ModuleT, OptimizerConfig, VarStore};
use distill::prune::{keep_count, l1_keep, prune_batch_norm, prune_conv2d, prune_linear, PruneError};
use distill::{distill, DistillError, Distillable};
use tch::{Device, Kind, Tensor};

/// SplitMix64: a seeded generator for channel counts and kept subsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    /// `k` distinct indices of `0..n`, ascending or in random order.
    fn subset(&mut self, n: i64, k: i64, shuffled: bool) -> Vec<i64> {
        let mut all: Vec<i64> = (0..n).collect();
        for i in 0..k as usize {
            let j = i + (self.next() % (all.len() - i) as u64) as usize;
            all.swap(i, j);
        }
        let mut kept = all[..k as usize].to_vec();
        if !shuffled {
            kept.sort_unstable();
        }
        kept
    }
}

fn idx(indices: &[i64]) -> Tensor {
    Tensor::from_slice(indices)
}

fn complement(n: i64, kept: &[i64]) -> Vec<i64> {
    (0..n).filter(|i| !kept.contains(i)).collect()
}

fn conv_cfg(k: i64) -> nn::ConvConfig {
    nn::ConvConfig { padding: k / 2, ..Default::default() }
}

#[test]
fn random_prunings_are_recovered_exactly() {
    tch::manual_seed(7);
    let mut rng = Rng(2024);
    let mut shuffled_cases = 0;
    let mut input_pruned_cases = 0;
    for case in 0..120 {
        let k = if case % 2 == 0 { 1 } else { 3 };
        let (source_out, source_in) = (rng.range(1, 24), rng.range(1, 12));
        let prune_in = case % 3 != 0;
        let shuffled = case % 4 >= 2;
        let (out_count, in_count) =
            (rng.range(1, source_out), if prune_in { rng.range(1, source_in) } else { source_in });
        let out_kept = rng.subset(source_out, out_count, shuffled);
        let in_kept = if prune_in { rng.subset(source_in, in_count, shuffled) } else { (0..source_in).collect() };
        shuffled_cases += shuffled as usize;
        input_pruned_cases += prune_in as usize;
        let ctx = format!("case {case}: k={k} out {source_out}→{out_kept:?} in {source_in}→{in_kept:?}");

        let (teacher_vs, student_vs, kd_vs) =
            (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
        let teacher = nn::conv2d(teacher_vs.root() / "conv", source_in, source_out, k, conv_cfg(k));
        let student =
            prune_conv2d(student_vs.root() / "conv", &teacher, &out_kept, prune_in.then_some(in_kept.as_slice()))
                .unwrap();
        let sliced = teacher.ws.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept));
        assert!(student.ws.equal(&sliced), "{ctx}: pruned weight");
        assert!(student.bs.as_ref().unwrap().equal(&teacher.bs.as_ref().unwrap().index_select(0, &idx(&out_kept))));

        let mapping = find_conv2d_mapping(&teacher.ws, &student.ws, Tolerance::default()).unwrap();
        assert_eq!(mapping, ChannelMapping { output: out_kept.clone(), input: in_kept.clone() }, "{ctx}");

        let adapter = conv2d_adapter(kd_vs.root() / "narrow", &teacher, &student).build().unwrap();
        let inverted = inverted_conv2d_adapter(kd_vs.root() / "widen", &teacher, &student).build().unwrap();
        assert_eq!(adapter.mapping(), &mapping, "{ctx}");
        assert_eq!(inverted.mapping(), &mapping, "{ctx}");

        let xs = Tensor::randn([2, source_in, 5, 4], (Kind::Float, Device::Cpu));
        let teacher_out = teacher.forward(&xs);
        let narrowed = adapter.forward(&teacher_out);
        assert!(narrowed.equal(&teacher_out.index_select(1, &idx(&out_kept))), "{ctx}: conv2d_adapter");

        let student_out = student.forward(&xs.index_select(1, &idx(&in_kept)));
        let widened = inverted.forward(&student_out);
        assert_eq!(widened.size(), [2, source_out, 5, 4], "{ctx}");
        assert!(widened.index_select(1, &idx(&out_kept)).equal(&student_out), "{ctx}: inverted, kept channels");
        let others = complement(source_out, &out_kept);
        if !others.is_empty() {
            let rest = widened.index_select(1, &idx(&others));
            assert!(rest.equal(&rest.zeros_like()), "{ctx}: inverted, pruned channels are zero");
        }

        if !prune_in {
            let expected = teacher_out.index_select(1, &idx(&out_kept));
            assert!(student_out.allclose(&expected, 1e-6, 1e-7, false), "{ctx}: pruned conv output");
        }
    }
    assert!(shuffled_cases >= 50 && input_pruned_cases >= 50);
}

#[test]
fn larger_layers_and_other_layouts_map() {
    tch::manual_seed(11);
    let mut rng = Rng(5);
    // A realistic layer: 256×128 3×3 pruned to 64×32, shuffled.
    let source = Tensor::randn([256, 128, 3, 3], (Kind::Float, Device::Cpu));
    let (out_kept, in_kept) = (rng.subset(256, 64, true), rng.subset(128, 32, true));
    let target = source.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!((mapping.output, mapping.input), (out_kept, in_kept));

    // Linear weights ([out, in]) through the generic entry point.
    let source = Tensor::randn([40, 30], (Kind::Float, Device::Cpu));
    let (out_kept, in_kept) = (rng.subset(40, 10, true), rng.subset(30, 29, false));
    let target = source.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept));
    let mapping = find_channel_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!((mapping.output, mapping.input), (out_kept, in_kept));

    // Float64 teacher, float32 student: equal within the default tolerance only.
    let source = Tensor::randn([12, 6, 3, 3], (Kind::Double, Device::Cpu));
    let target = source.index_select(0, &idx(&[9, 2, 4])).to_kind(Kind::Float);
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!(mapping, ChannelMapping { output: vec![9, 2, 4], input: (0..6).collect() });
    assert!(matches!(
        find_conv2d_mapping(&source, &target, Tolerance::EXACT),
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping { .. }))
    ));
}

/// Checks that `mapping` is injective and reproduces `target` from `source` exactly.
fn assert_reproduces(source: &Tensor, target: &Tensor, mapping: &ChannelMapping) {
    for list in [&mapping.output, &mapping.input] {
        let mut sorted = list.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), list.len(), "indices must be distinct: {list:?}");
    }
    let gathered = source.index_select(0, &idx(&mapping.output)).index_select(1, &idx(&mapping.input));
    assert!(gathered.equal(target), "mapping {mapping:?} does not reproduce the target");
}

#[test]
fn identical_channels_are_interchangeable_other_ties_are_errors() {
    tch::manual_seed(3);
    // Duplicate output filters compute the same outputs: either copy is right, the lowest unused
    // index of the two is given.
    let source = Tensor::randn([6, 4, 3, 3], (Kind::Float, Device::Cpu));
    let source = Tensor::cat(&[source.shallow_clone(), source.narrow(0, 1, 1)], 0); // channel 6 = channel 1
    let target = source.index_select(0, &idx(&[6, 3, 1]));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_reproduces(&source, &target, &mapping);
    assert_eq!(mapping.output, [1, 3, 6]);
    // … unless their biases differ: then they are distinct, and the target's bias decides.
    let vs = VarStore::new(Device::Cpu);
    let mut teacher = nn::conv2d(vs.root() / "teacher", 4, 7, 3, Default::default());
    let mut student = nn::conv2d(vs.root() / "student", 4, 2, 3, Default::default());
    teacher.ws = source.copy();
    teacher.bs = Some(Tensor::randn([7], (Kind::Float, Device::Cpu))); // tch initialises biases to 0
    student.ws = source.index_select(0, &idx(&[6, 3]));
    student.bs = Some(teacher.bs.as_ref().unwrap().index_select(0, &idx(&[6, 3])));
    let adapter = conv2d_adapter(vs.root() / "a", &teacher, &student).build().unwrap();
    assert_eq!(adapter.mapping().output, [6, 3]);
    // Without the target's bias, channels 1 and 6 differ (by their biases) and the weights cannot tell.
    student.bs = None;
    match conv2d_adapter(vs.root() / "b", &teacher, &student).build() {
        Err(DistillError::ChannelMap(ChannelMapError::Ambiguous {
            what: "output channel",
            channel: 0,
            first: 1,
            second: 6,
            ..
        })) => {}
        other => panic!("{other:?}"),
    }

    // Input channels equal on the kept rows only: the target cannot tell them apart, and they feed
    // different source rows, so the mapping is ambiguous.
    let source = Tensor::randn([5, 3, 1, 1], (Kind::Float, Device::Cpu));
    tch::no_grad(|| source.narrow(0, 0, 2).narrow(1, 1, 1).copy_(&source.narrow(0, 0, 2).narrow(1, 0, 1)));
    let target = source.index_select(0, &idx(&[1, 0])).index_select(1, &idx(&[1, 2]));
    let err = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap_err();
    assert!(
        matches!(
            err,
            DistillError::ChannelMap(ChannelMapError::Ambiguous {
                what: "input channel",
                channel: 0,
                first: 0,
                second: 1,
                ..
            })
        ),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(message.contains("teacher channel 0 or 1") && message.contains("Conv2DAdapter::from_kept"), "{message}");

    // Same weights, but the kept rows now include one where channels 0 and 1 differ: unique again.
    let target = source.index_select(0, &idx(&[4, 1, 0])).index_select(1, &idx(&[1, 2]));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!(mapping, ChannelMapping { output: vec![4, 1, 0], input: vec![1, 2] });

    // All zeros: every channel is identical to every other, so any selection is the same one.
    let source = Tensor::zeros([16, 8, 3, 3], (Kind::Float, Device::Cpu));
    let target = Tensor::zeros([5, 3, 3, 3], (Kind::Float, Device::Cpu));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!(mapping, ChannelMapping { output: (0..5).collect(), input: (0..3).collect() });

    // 1×1 kernels of ±1: an answer is the kept channels (up to identical ones) or an error.
    let source = Tensor::randn([12, 10, 1, 1], (Kind::Float, Device::Cpu)).sign();
    let mut rng = Rng(9);
    let (mut found, mut ambiguous) = (0, 0);
    for _ in 0..10 {
        let (out_kept, in_kept) = (rng.subset(12, 5, true), rng.subset(10, 4, true));
        let target = source.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept));
        match find_conv2d_mapping(&source, &target, Tolerance::default()) {
            Ok(mapping) => {
                assert_reproduces(&source, &target, &mapping);
                for (list, kept, axis) in [(&mapping.output, &out_kept, 0), (&mapping.input, &in_kept, 1)] {
                    let (got, want) = (source.index_select(axis, &idx(list)), source.index_select(axis, &idx(kept)));
                    assert!(got.equal(&want), "identical channels only: {mapping:?} for {out_kept:?} {in_kept:?}");
                }
                found += 1;
            }
            Err(DistillError::ChannelMap(ChannelMapError::Ambiguous { .. })) => ambiguous += 1,
            Err(other) => panic!("{other}"),
        }
    }
    assert!(ambiguous > 0, "{found} found");
    // Larger binary 1×1 weights make the search combinatorial: it ends within its budget, with an
    // answer or a typed error, never a guess and never a hang.
    let source = Tensor::randn([64, 64, 1, 1], (Kind::Float, Device::Cpu)).sign();
    let (out_kept, in_kept) = (rng.subset(64, 32, true), rng.subset(64, 32, true));
    let target = source.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept));
    match find_conv2d_mapping(&source, &target, Tolerance::default()) {
        Ok(mapping) => assert_eq!((mapping.output, mapping.input), (out_kept, in_kept)),
        Err(
            DistillError::ChannelMap(ChannelMapError::Ambiguous { .. })
            | DistillError::ChannelMap(ChannelMapError::Undecided { .. }),
        ) => {}
        Err(other) => panic!("{other}"),
    }
}

/// An all-zero 1×1 conv of 2048 channels pruned to half: every channel is identical, which is one
/// class, not a search (it took seconds and gigabytes at 1024 channels, and ran out of memory at
/// 2048, when it was a search).
#[test]
fn identical_channels_cost_no_search_at_2048_channels() {
    let source = Tensor::zeros([2048, 2048, 1, 1], (Kind::Float, Device::Cpu));
    let target = Tensor::zeros([1024, 1024, 1, 1], (Kind::Float, Device::Cpu));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!(mapping, ChannelMapping { output: (0..1024).collect(), input: (0..1024).collect() });
    // One channel apart from the others: it is found, the rest are interchangeable.
    let source = source.copy();
    let _ = tch::no_grad(|| source.get(700).get(5).fill_(2.0));
    let target = source.index_select(0, &idx(&[3, 700, 9])).index_select(1, &idx(&[5, 1]));
    let mapping = find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap();
    assert_eq!(mapping, ChannelMapping { output: vec![0, 700, 1], input: vec![5, 0] });
}

/// A ternary (−1, 0, 1) 1×1 teacher conv of 24 filters over 16 inputs, its student keeping 8 filters
/// and 3 inputs: the kept weights are 24 small integers, which many other selections reproduce.
#[test]
fn weights_that_fit_several_selections_are_an_error_never_a_guess() {
    let mut ambiguous = 0;
    for seed in 0..8u64 {
        tch::manual_seed(seed as i64);
        let mut rng = Rng(seed);
        let vs = VarStore::new(Device::Cpu);
        let cfg = nn::ConvConfig { bias: false, ..Default::default() };
        let teacher = nn::conv2d(vs.root() / "teacher", 16, 24, 1, cfg);
        tch::no_grad(|| {
            teacher.ws.shallow_clone().copy_(&Tensor::randint_low(-1, 2, [24, 16, 1, 1], (Kind::Float, Device::Cpu)))
        });
        let (out_kept, in_kept) = (rng.subset(24, 8, true), rng.subset(16, 3, true));
        let student = nn::conv2d(vs.root() / "student", 3, 8, 1, cfg);
        tch::no_grad(|| {
            student
                .ws
                .shallow_clone()
                .copy_(&teacher.ws.index_select(0, &idx(&out_kept)).index_select(1, &idx(&in_kept)))
        });
        match conv2d_adapter(vs.root() / "adapter", &teacher, &student).build() {
            Ok(adapter) => {
                // Only when every selection that fits computes the same outputs.
                let xs = Tensor::randn([2, 16, 3, 3], (Kind::Float, Device::Cpu));
                let teacher_out = teacher.forward(&xs);
                let expected = teacher_out.index_select(1, &idx(&out_kept));
                assert!(
                    adapter.forward(&teacher_out).equal(&expected),
                    "seed {seed}: {:?} for {out_kept:?}",
                    adapter.mapping()
                );
            }
            Err(DistillError::ChannelMap(ChannelMapError::Ambiguous { .. })) => ambiguous += 1,
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
    assert!(ambiguous > 0, "three kept inputs cannot identify ternary filters");
}

#[test]
fn mapping_errors_are_typed() {
    tch::manual_seed(5);
    let randn = |shape: &[i64]| Tensor::randn(shape, (Kind::Float, Device::Cpu));
    let source = randn(&[8, 4, 3, 3]);

    match find_conv2d_mapping(&source, &randn(&[9, 4, 3, 3]), Tolerance::default()) {
        Err(DistillError::ChannelMap(ChannelMapError::StudentWider {
            what: "output channels",
            teacher_size: 8,
            student_size: 9,
        })) => {}
        other => panic!("{other:?}"),
    }
    match find_conv2d_mapping(&source, &randn(&[2, 5, 3, 3]), Tolerance::default()) {
        Err(DistillError::ChannelMap(ChannelMapError::StudentWider {
            what: "input channels",
            teacher_size: 4,
            student_size: 5,
        })) => {}
        other => panic!("{other:?}"),
    }
    match find_conv2d_mapping(&source, &source.narrow(2, 0, 1).narrow(3, 0, 1), Tolerance::default()) {
        Err(DistillError::ChannelMap(error @ ChannelMapError::IncompatibleShapes { .. })) => {
            let msg = error.to_string();
            assert!(msg.contains("[8, 4, 3, 3]") && msg.contains("[8, 4, 1, 1]"), "{msg}")
        }
        other => panic!("{other:?}"),
    }
    match find_conv2d_mapping(&source, &randn(&[8, 4]), Tolerance::default()) {
        Err(DistillError::ChannelMap(error @ ChannelMapError::NotConv2d { .. })) => {
            assert!(error.to_string().contains("4-D"), "{error}")
        }
        other => panic!("{other:?}"),
    }
    // Unrelated weights: the first target output channel already matches nothing.
    match find_conv2d_mapping(&source, &randn(&[3, 2, 3, 3]), Tolerance::default()) {
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping {
            what: "output channel", channel: 0, ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // A pruned copy with one weight changed beyond tolerance.
    let target = source.index_select(0, &idx(&[5, 1, 2])).copy();
    let _ = tch::no_grad(|| target.get(2).get(0).get(1).get(1).g_add_scalar_(1e-3));
    match find_conv2d_mapping(&source, &target, Tolerance::default()) {
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping {
            what: "output channel", channel: 2, ..
        })) => {}
        other => panic!("{other:?}"),
    }
    // … and within tolerance.
    let target = source.index_select(0, &idx(&[5, 1, 2])).copy();
    let _ = tch::no_grad(|| target.get(2).get(0).get(1).get(1).g_add_scalar_(1e-8));
    assert_eq!(find_conv2d_mapping(&source, &target, Tolerance::default()).unwrap().output, [5, 1, 2]);
    // Two target channels copied from one source channel: no injective mapping.
    let target = source.index_select(0, &idx(&[3, 3]));
    assert!(matches!(
        find_conv2d_mapping(&source, &target, Tolerance::default()),
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping { .. }))
    ));

    // Odd inputs are errors, not panics.
    let nan = source.index_select(0, &idx(&[1])).fill_(f64::NAN);
    assert!(matches!(
        find_conv2d_mapping(&source, &nan, Tolerance::default()),
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping { .. }))
    ));
    let nan_source = randn(&[2, 2, 3, 3]).fill_(f64::NAN);
    assert!(find_conv2d_mapping(&nan_source, &randn(&[1, 1, 3, 3]), Tolerance::default()).is_err());
    assert!(matches!(
        find_conv2d_mapping(&randn(&[0, 4, 3, 3]), &randn(&[0, 4, 3, 3]), Tolerance::default()),
        Err(DistillError::ChannelMap(ChannelMapError::EmptyWeights { .. }))
    ));
    assert!(matches!(
        find_conv2d_mapping(&Tensor::new(), &randn(&[1, 1, 1, 1]), Tolerance::default()),
        Err(DistillError::ChannelMap(ChannelMapError::UndefinedWeight { role: "teacher" }))
    ));
    assert!(matches!(
        find_conv2d_mapping(&randn(&[2, 2, 1, 1]), &randn(&[1, 1, 1, 1]), Tolerance::new(-1.0, 0.0)),
        Err(DistillError::ChannelMap(ChannelMapError::InvalidTolerance { .. }))
    ));

    // The adapters report the same typed errors.
    let vs = VarStore::new(Device::Cpu);
    let teacher = nn::conv2d(vs.root() / "t", 4, 8, 3, Default::default());
    let wider = nn::conv2d(vs.root() / "s", 4, 16, 3, Default::default());
    let unrelated = nn::conv2d(vs.root() / "u", 4, 4, 3, Default::default());
    assert!(matches!(
        conv2d_adapter(vs.root() / "a", &teacher, &wider).build(),
        Err(DistillError::ChannelMap(ChannelMapError::StudentWider { .. }))
    ));
    assert!(matches!(
        inverted_conv2d_adapter(vs.root() / "b", &teacher, &unrelated).build(),
        Err(DistillError::ChannelMap(ChannelMapError::NoChannelMapping { .. }))
    ));
    // A wrongly shaped input to an adapter is an error from `f_adapt`.
    let pruned = prune_conv2d(vs.root() / "p", &teacher, &[1, 2], None).unwrap();
    let adapter = conv2d_adapter(vs.root() / "c", &teacher, &pruned).build().unwrap();
    assert!(matches!(
        adapter.f_adapt(&randn(&[1, 3, 4, 4]), false),
        Err(DistillError::Adapter(AdapterError::InputChannels { channels: 8, .. }))
    ));
}

#[test]
fn the_pruning_record_builds_the_adapters_without_weights() {
    tch::manual_seed(8);
    let vs = VarStore::new(Device::Cpu);
    let teacher = nn::conv2d(vs.root() / "teacher", 6, 10, 3, conv_cfg(3));
    let (out_kept, in_kept) = (vec![7, 2, 9, 4], vec![5, 0, 3]);
    let student = prune_conv2d(vs.root() / "student", &teacher, &out_kept, Some(&in_kept)).unwrap();
    let kept = student.pruned_from().expect("a pruned conv carries its record").clone();
    assert_eq!((kept.source_shape(), kept.output(), kept.input()), (&[10, 6, 3, 3][..], &out_kept[..], &in_kept[..]));

    // Weights changed beyond any tolerance (training, say): the record still gives the channels.
    perturb(&student.ws, 1.0);
    let narrow = conv2d_adapter(vs.root() / "narrow", &teacher, &student).build().unwrap();
    let widen = inverted_conv2d_adapter(vs.root() / "widen", &teacher, &student).build().unwrap();
    assert_eq!(narrow.mapping(), &kept.mapping());
    assert_eq!(widen.mapping(), &kept.mapping());
    // From the record alone, the same adapters.
    let from_kept = Conv2DAdapter::from_kept(vs.root() / "from_kept", &kept).unwrap();
    let inverted_from_kept = InvertedConv2DAdapter::from_kept(vs.root() / "inverted_from_kept", &kept).unwrap();
    assert!(from_kept.weight().equal(narrow.weight()) && inverted_from_kept.weight().equal(widen.weight()));
    let xs = teacher.forward(&Tensor::randn([2, 6, 4, 4], (Kind::Float, Device::Cpu)));
    assert!(from_kept.forward(&xs).equal(&xs.index_select(1, &idx(&out_kept))));

    // A record is checked against the teacher it is used with.
    let other_teacher = nn::conv2d(vs.root() / "other", 6, 12, 3, conv_cfg(3));
    let err = conv2d_adapter(vs.root() / "mismatch", &other_teacher, &student).build().unwrap_err();
    assert!(
        matches!(&err, DistillError::ChannelMap(ChannelMapError::RecordSourceMismatch { .. }))
            && err.to_string().contains("[10, 6, 3, 3]")
            && err.to_string().contains("[12, 6, 3, 3]"),
        "{err}"
    );
    // … and against the layer it is attached to.
    let mut fresh = nn::conv2d(vs.root() / "fresh", 3, 4, 3, conv_cfg(3));
    fresh.set_pruned_from(kept.clone()).unwrap();
    assert_eq!(fresh.pruned_from(), Some(&kept));
    let mut wrong = nn::conv2d(vs.root() / "wrong", 3, 5, 3, conv_cfg(3));
    assert!(matches!(
        wrong.set_pruned_from(kept.clone()),
        Err(DistillError::ChannelMap(ChannelMapError::RecordPrunedMismatch { .. }))
    ));
    assert!(wrong.pruned_from().is_none());
    assert!(KeptChannels::new(&[10, 6, 3, 3], vec![10], vec![0]).is_err());
}

/// A conv of 8 output channels, and a copy of its channels 6, 0 and 3 (no pruning record) nudged by
/// 1e-5: beyond the default tolerance, within `Tolerance::new(1e-4, 1e-3)`.
fn perturbed_copy(vs: &VarStore) -> (nn::Conv2D, nn::Conv2D) {
    let teacher = nn::conv2d(vs.root() / "teacher", 4, 8, 3, conv_cfg(3));
    let student = nn::conv2d(vs.root() / "student", 4, 3, 3, conv_cfg(3));
    tch::no_grad(|| {
        student.ws.shallow_clone().copy_(&teacher.ws.index_select(0, &idx(&[6, 0, 3])));
        student
            .bs
            .as_ref()
            .unwrap()
            .shallow_clone()
            .copy_(&teacher.bs.as_ref().unwrap().index_select(0, &idx(&[6, 0, 3])));
    });
    perturb(&student.ws, 1e-5);
    (teacher, student)
}

#[test]
fn a_perturbed_copy_maps_with_a_looser_tolerance() {
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let (teacher, student) = perturbed_copy(&vs);
    let err = conv2d_adapter(vs.root() / "strict", &teacher, &student).build().unwrap_err();
    assert!(matches!(err, DistillError::ChannelMap(ChannelMapError::NoChannelMapping { .. })), "{err}");
    assert!(err.to_string().contains("conv2d_adapter(…).tolerance(…)"), "{err}");
    let loose = Tolerance::new(1e-4, 1e-3);
    let narrow = conv2d_adapter(vs.root() / "narrow", &teacher, &student).tolerance(loose).build().unwrap();
    let widen = inverted_conv2d_adapter(vs.root() / "widen", &teacher, &student).tolerance(loose).build().unwrap();
    assert_eq!(narrow.mapping().output, [6, 0, 3]);
    assert_eq!(widen.mapping().output, [6, 0, 3]);
    assert!(matches!(
        conv2d_adapter(vs.root() / "bad", &teacher, &student).tolerance(Tolerance::new(f64::NAN, 0.0)).build(),
        Err(DistillError::ChannelMap(ChannelMapError::InvalidTolerance { .. }))
    ));
}

/// One conv, as a model `distill!` can pair.
#[derive(Debug, Distillable)]
struct OneConv {
    conv: nn::Conv2D,
}

impl Module for OneConv {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.conv)
    }
}

distill! {
    /// The selection adapter at its default tolerance.
    struct StrictKd for OneConv => OneConv {
        c: student.conv => conv2d_adapter(teacher.conv) with Mse;
    }
}

distill! {
    /// The same pair with the builder's option written after the adapter.
    struct LooseKd for OneConv => OneConv {
        c: student.conv => conv2d_adapter(teacher.conv).tolerance(Tolerance::new(1e-4, 1e-3)) with Mse;
    }
}

#[test]
fn an_adapter_option_in_distill_reaches_the_builder() {
    tch::manual_seed(9);
    let vs = VarStore::new(Device::Cpu);
    let (teacher, student) = perturbed_copy(&vs);
    let (teacher, student) = (OneConv { conv: teacher }, OneConv { conv: student });
    let Err(err) = StrictKd::new(vs.root() / "strict", &student, &teacher) else {
        panic!("a copy nudged beyond the default tolerance mapped");
    };
    assert!(err.to_string().contains("no channel mapping"), "{err}");

    let kd = LooseKd::new(vs.root() / "loose", &student, &teacher).unwrap();
    assert!(vs.variables().contains_key("loose.c.weight"));
    let xs = Tensor::randn([2, 4, 5, 5], (Kind::Float, Device::Cpu));
    let out = kd.forward_t(&xs, false).unwrap();
    // Before training, the adapter selects exactly the teacher channels the student was copied from.
    let selected = teacher.forward(&xs).index_select(1, &idx(&[6, 0, 3]));
    assert!(out.c.teacher.equal(&selected));
    assert!(out.c.student.equal(&student.forward(&xs)));
}

#[test]
fn layers_of_the_wrong_rank_are_errors() {
    let vs = VarStore::new(Device::Cpu);
    let teacher = nn::conv2d(vs.root() / "teacher", 4, 8, 3, Default::default());
    let mut flat = nn::conv2d(vs.root() / "flat", 4, 8, 3, Default::default());
    flat.ws = Tensor::zeros([8, 4], (Kind::Float, Device::Cpu));
    assert!(matches!(
        conv2d_adapter(vs.root() / "a", &teacher, &flat).build(),
        Err(DistillError::ChannelMap(ChannelMapError::ConvNot4d { role: "student", .. }))
    ));
    assert!(matches!(
        inverted_conv2d_adapter(vs.root() / "b", &flat, &teacher).build(),
        Err(DistillError::ChannelMap(ChannelMapError::ConvNot4d { role: "teacher", .. }))
    ));
    assert!(matches!(
        prune_conv2d(vs.root() / "c", &flat, &[0], None),
        Err(DistillError::Prune(PruneError::TensorRank { dims: 4, .. }))
    ));
    let mut linear = nn::linear(vs.root() / "linear", 4, 3, Default::default());
    linear.ws = Tensor::zeros([3], (Kind::Float, Device::Cpu));
    assert!(matches!(
        prune_linear(vs.root() / "d", &linear, Some(&[0]), None),
        Err(DistillError::Prune(PruneError::TensorRank { dims: 2, .. }))
    ));
    let mut bn = nn::batch_norm2d(vs.root() / "bn", 4, Default::default());
    bn.running_mean = Tensor::from(0.0f32);
    assert!(matches!(
        prune_batch_norm(vs.root() / "e", &bn, &[0]),
        Err(DistillError::Prune(PruneError::TensorRank { dims: 1, .. }))
    ));
}

/// Adds noise to a variable in place, outside autograd.
fn perturb(var: &Tensor, scale: f64) {
    tch::no_grad(|| {
        let _ = var.shallow_clone().g_add_(&(var.randn_like() * scale));
    });
}

#[test]
fn a_pair_through_a_selection_adapter_trains() {
    tch::manual_seed(1);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = nn::conv2d(teacher_vs.root() / "conv", 3, 8, 3, conv_cfg(3));
    let kept = [6, 1, 4, 3];
    let xs = Tensor::randn([8, 3, 6, 6], (Kind::Float, Device::Cpu));
    let teacher_out = tch::no_grad(|| teacher.forward(&xs));

    // Teacher side: criterion(student_out, adapter(teacher_out)).
    let vs = VarStore::new(Device::Cpu);
    let student = prune_conv2d(vs.root() / "student", &teacher, &kept, None).unwrap();
    let adapter = conv2d_adapter(vs.root() / "kd" / "f0", &teacher, &student).build().unwrap();
    perturb(&student.ws, 0.5); // a fine-tuned student no longer matches exactly
    let initial = adapter.weight().copy();
    let mut sgd = tch::nn::Sgd::default().build(&vs, 0.05).unwrap();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = student.forward(&xs).mse_loss(&adapter.forward(&teacher_out), tch::Reduction::Mean);
        sgd.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    assert!(!adapter.weight().equal(&initial), "the adapter weights did not change");
    assert!(losses[29] < 0.5 * losses[0], "loss did not fall: {losses:?}");

    // Student side: criterion(inverted(student_out), teacher_out).
    let vs = VarStore::new(Device::Cpu);
    let student = prune_conv2d(vs.root() / "student", &teacher, &kept, None).unwrap();
    let inverted = inverted_conv2d_adapter(vs.root() / "kd" / "f1", &teacher, &student).build().unwrap();
    perturb(&student.ws, 0.5);
    let initial = inverted.weight().copy();
    let mut sgd = tch::nn::Sgd::default().build(&vs, 0.05).unwrap();
    let mut losses = Vec::new();
    for _ in 0..30 {
        let loss = inverted.forward(&student.forward(&xs)).mse_loss(&teacher_out, tch::Reduction::Mean);
        sgd.backward_step(&loss);
        losses.push(loss.double_value(&[]));
    }
    assert!(!inverted.weight().equal(&initial), "the inverted adapter weights did not change");
    assert!(losses[29] < losses[0], "loss did not fall: {losses:?}");
}

#[test]
fn adapter_variables_live_under_the_given_path() {
    tch::manual_seed(2);
    let teacher_vs = VarStore::new(Device::Cpu);
    let teacher = nn::conv2d(teacher_vs.root() / "conv", 3, 8, 3, Default::default());
    let teacher_fc = nn::linear(teacher_vs.root() / "fc", 8, 10, Default::default());
    let student_vs = VarStore::new(Device::Cpu);
    let student = prune_conv2d(student_vs.root() / "conv", &teacher, &[0, 5, 7], None).unwrap();
    let student_fc = nn::linear(student_vs.root() / "fc", 3, 6, Default::default());

    let vs = VarStore::new(Device::Cpu);
    let kd = vs.root() / "kd";
    let f0 = conv2d_adapter(&kd / "f0", &teacher, &student).build().unwrap();
    let f1 = inverted_conv2d_adapter(&kd / "f1", &teacher, &student).build().unwrap();
    let f2 = learned_conv2d_adapter(&kd / "f2", &teacher, &student).unwrap();
    let f3 = learned_inverted_conv2d_adapter(&kd / "f3", &teacher, &student).unwrap();
    let f4 = learned_linear_adapter(&kd / "f4", &teacher_fc, &student_fc).unwrap();
    let f5 = learned_inverted_linear_adapter(&kd / "f5", &teacher_fc, &student_fc).unwrap();
    let f6 = conv1x1_adapter(&kd / "f6", 5, 7).unwrap();
    let f7 = linear_adapter(&kd / "f7", 5, 7).unwrap();

    let variables = vs.variables();
    let expected: [(&str, &Tensor, &[i64]); 8] = [
        ("kd.f0.weight", f0.weight(), &[3, 8, 1, 1]),
        ("kd.f1.weight", f1.weight(), &[8, 3, 1, 1]),
        ("kd.f2.weight", f2.weight(), &[3, 8, 1, 1]),
        ("kd.f3.weight", f3.weight(), &[8, 3, 1, 1]),
        ("kd.f4.weight", f4.weight(), &[6, 10]),
        ("kd.f5.weight", f5.weight(), &[10, 6]),
        ("kd.f6.weight", f6.weight(), &[7, 5, 1, 1]),
        ("kd.f7.weight", f7.weight(), &[7, 5]),
    ];
    assert_eq!(variables.len(), expected.len(), "no other variables (no bias): {:?}", variables.keys());
    for (name, weight, shape) in expected {
        let var = &variables[name];
        assert_eq!(var.size(), shape, "{name}");
        assert!(var.requires_grad(), "{name} is trainable");
        assert_eq!(var.data_ptr(), weight.data_ptr(), "{name} is the adapter's weight");
    }
    assert_eq!(vs.trainable_variables().len(), 8);

    // Selection weights: one-hot rows at the mapping.
    let mut expected = vec![0f32; 3 * 8];
    for (o, s) in [0, 5, 7].into_iter().enumerate() {
        expected[o * 8 + s] = 1.0;
    }
    assert!(f0.weight().view([3, 8]).equal(&Tensor::from_slice(&expected).view([3, 8])));
    assert!(f1.weight().view([8, 3]).equal(&Tensor::from_slice(&expected).view([3, 8]).tr()));

    // Learned weights: tch's Kaiming-uniform, |w| ≤ √(6 / in), and not all equal.
    for (weight, fan_in) in [(f2.weight(), 8.0), (f3.weight(), 3.0), (f4.weight(), 10.0), (f7.weight(), 5.0)] {
        let bound = (6.0f64 / fan_in).sqrt();
        assert!(weight.abs().max().double_value(&[]) <= bound);
        assert!(weight.std(true).double_value(&[]) > 0.0);
    }
    let xs = Tensor::randn([2, 5, 3, 3], (Kind::Float, Device::Cpu));
    assert!(f6.forward(&xs).allclose(
        &xs.conv2d(f6.weight(), None::<Tensor>, [1, 1], [0, 0], [1, 1], 1),
        1e-6,
        1e-6,
        false
    ));
    let xs = Tensor::randn([4, 5], (Kind::Float, Device::Cpu));
    assert!(f7.forward(&xs).allclose(&xs.matmul(&f7.weight().tr()), 1e-6, 1e-6, false));

    // Adapters are distillable leaves with their own capture point.
    assert!(f0.own_tap().is_some() && f0.own_tap() != f1.own_tap());
    let mut children = 0;
    f0.visit_children(&mut |_| children += 1);
    assert_eq!(children, 0);

    assert!(matches!(
        conv1x1_adapter(vs.root() / "bad", 0, 3),
        Err(DistillError::Adapter(AdapterError::EmptyWidth { input: 0, output: 3 }))
    ));
    assert!(matches!(
        linear_adapter(vs.root() / "bad", 3, -1),
        Err(DistillError::Adapter(AdapterError::EmptyWidth { input: 3, output: -1 }))
    ));
}

#[test]
fn l1_keep_and_keep_count() {
    // Filter L1 norms: 6, 1, 9, 6, 0.5 → the 3 largest are 2, 0, 3 (0 before 3 on the tie).
    let weight = Tensor::from_slice(&[3.0f32, -3.0, 1.0, 0.0, 4.0, -5.0, -6.0, 0.0, 0.5, 0.0]).view([5, 2, 1, 1]);
    assert_eq!(l1_keep(&weight, 3).unwrap(), [0, 2, 3]);
    assert_eq!(l1_keep(&weight, 1).unwrap(), [2]);
    assert_eq!(l1_keep(&weight, 5).unwrap(), [0, 1, 2, 3, 4]);
    assert!(matches!(
        l1_keep(&weight, 0),
        Err(DistillError::Prune(PruneError::KeepOutOfRange { keep: 0, filters: 5, .. }))
    ));
    assert!(matches!(
        l1_keep(&weight, 6),
        Err(DistillError::Prune(PruneError::KeepOutOfRange { keep: 6, filters: 5, .. }))
    ));

    assert_eq!(keep_count(64, 0.25).unwrap(), 16);
    assert_eq!(keep_count(10, 0.33).unwrap(), 3);
    assert_eq!(keep_count(3, 0.01).unwrap(), 1);
    assert_eq!(keep_count(7, 1.0).unwrap(), 7);
    for (channels, ratio) in [(0, 0.5), (8, 0.0), (8, 1.5), (8, f64::NAN)] {
        assert!(
            matches!(keep_count(channels, ratio), Err(DistillError::Prune(PruneError::KeepRatio { .. }))),
            "{channels} {ratio}"
        );
    }
}

#[test]
fn pruned_layers_compute_the_kept_channels() {
    tch::manual_seed(4);
    let teacher_vs = VarStore::new(Device::Cpu);
    let root = teacher_vs.root();
    let cfg = nn::ConvConfig { stride: 2, padding: 1, bias: false, ..Default::default() };
    let conv = nn::conv2d(&root / "conv", 3, 16, 3, cfg);
    let bn = nn::batch_norm2d(&root / "bn", 16, nn::BatchNormConfig { eps: 1e-3, ..Default::default() });
    let fc = nn::linear(&root / "fc", 16, 10, Default::default());
    // Non-trivial running statistics.
    perturb(&bn.running_mean, 1.0);
    tch::no_grad(|| bn.running_var.shallow_clone().copy_(&(bn.running_var.rand_like() + 0.5)));

    let keep = l1_keep(&conv.ws, keep_count(16, 0.25).unwrap()).unwrap();
    assert_eq!(keep.len(), 4);
    let student_vs = VarStore::new(Device::Cpu);
    let root = student_vs.root();
    let s_conv = prune_conv2d(&root / "conv", &conv, &keep, None).unwrap();
    let s_bn = prune_batch_norm(&root / "bn", &bn, &keep).unwrap();
    let s_fc = prune_linear(&root / "fc", &fc, None, Some(&keep)).unwrap();

    let mut names: Vec<String> = student_vs.variables().into_keys().collect();
    names.sort();
    assert_eq!(
        names,
        ["bn.bias", "bn.running_mean", "bn.running_var", "bn.weight", "conv.weight", "fc.bias", "fc.weight"]
    );
    assert_eq!(s_conv.config().map(|c| (c.stride, c.padding, c.bias)), Some(([2, 2], [1, 1], false)));
    assert_eq!(s_bn.config().map(|c| c.eps), Some(1e-3));

    let xs = Tensor::randn([4, 3, 8, 8], (Kind::Float, Device::Cpu));
    let t_conv = conv.forward(&xs);
    let s_conv_out = s_conv.forward(&xs);
    assert_eq!(s_conv_out.size(), [4, 4, 4, 4]);
    assert!(s_conv_out.allclose(&t_conv.index_select(1, &idx(&keep)), 1e-6, 1e-7, false));
    let t_bn = bn.forward_t(&t_conv, false);
    let s_bn_out = s_bn.forward_t(&t_conv.index_select(1, &idx(&keep)), false);
    assert!(s_bn_out.allclose(&t_bn.index_select(1, &idx(&keep)), 1e-6, 1e-7, false));

    // A linear layer whose pruned inputs carried zeros computes the same as the original.
    let features = Tensor::randn([4, 16], (Kind::Float, Device::Cpu));
    let masked = features.zeros_like().index_copy(1, &idx(&keep), &features.index_select(1, &idx(&keep)));
    assert!(s_fc.forward(&features.index_select(1, &idx(&keep))).allclose(&fc.forward(&masked), 1e-5, 1e-6, false));
    // Pruned outputs of a linear layer, shuffled order.
    let s_fc_out = prune_linear(&root / "head", &fc, Some(&[9, 0, 4]), None).unwrap();
    let expected = fc.forward(&features).index_select(1, &idx(&[9, 0, 4]));
    assert!(s_fc_out.forward(&features).allclose(&expected, 1e-6, 1e-7, false));

    // Copies are detached from the original.
    assert_ne!(s_conv.ws.data_ptr(), conv.ws.data_ptr());
    perturb(&conv.ws, 1.0);
    assert!(!s_conv.forward(&xs).allclose(&conv.forward(&xs).index_select(1, &idx(&keep)), 1e-3, 1e-3, false));
}

#[test]
fn pruning_errors_are_typed() {
    let vs = VarStore::new(Device::Cpu);
    let conv = nn::conv2d(vs.root() / "conv", 4, 8, 3, Default::default());
    let bn = nn::batch_norm2d(vs.root() / "bn", 8, Default::default());
    let fc = nn::linear(vs.root() / "fc", 8, 5, Default::default());
    let p = vs.root() / "p";
    match prune_conv2d(&p / "a", &conv, &[0, 8], None) {
        Err(DistillError::ChannelMap(ChannelMapError::ChannelOutOfRange {
            what: "output channel",
            index: 8,
            channels: 8,
        })) => {}
        other => panic!("{other:?}"),
    }
    match prune_conv2d(&p / "b", &conv, &[1], Some(&[-1])) {
        Err(DistillError::ChannelMap(ChannelMapError::ChannelOutOfRange {
            what: "input channel",
            index: -1,
            channels: 4,
        })) => {}
        other => panic!("{other:?}"),
    }
    match prune_batch_norm(&p / "c", &bn, &[3, 1, 3]) {
        Err(DistillError::ChannelMap(ChannelMapError::DuplicateChannel { what: "channel", index: 3 })) => {}
        other => panic!("{other:?}"),
    }
    match prune_linear(&p / "d", &fc, Some(&[]), None) {
        Err(DistillError::ChannelMap(ChannelMapError::NoneKept { what: "output feature" })) => {}
        other => panic!("{other:?}"),
    }
    match prune_linear(&p / "e", &fc, None, Some(&[0, 9])) {
        Err(DistillError::ChannelMap(ChannelMapError::ChannelOutOfRange {
            what: "input feature",
            index: 9,
            channels: 8,
        })) => {}
        other => panic!("{other:?}"),
    }
    // tch keeps a layer's config private: a conv wrapped without it cannot be copied faithfully.
    let bare = nn::Conv2D::from_tch(tch::nn::conv2d(vs.root() / "bare", 4, 8, 3, Default::default()));
    assert!(bare.config().is_none());
    assert!(matches!(
        prune_conv2d(&p / "f", &bare, &[0], None),
        Err(DistillError::Prune(PruneError::UnknownConfig { layer: "conv", .. }))
    ));
    let grouped = nn::conv2d(vs.root() / "grouped", 4, 8, 3, nn::ConvConfig { groups: 2, ..Default::default() });
    assert!(matches!(
        prune_conv2d(&p / "g", &grouped, &[0], None),
        Err(DistillError::Prune(PruneError::Grouped { groups: 2 }))
    ));
}

/// Two linear layers, both `width` wide, as a model a `Mapping` can pair.
#[derive(Debug, Distillable)]
struct TwoLinear {
    a: nn::Linear,
    b: nn::Linear,
}

impl Module for TwoLinear {
    fn forward(&self, xs: &Tensor) -> Tensor {
        xs.apply(&self.a).relu().apply(&self.b)
    }
}

fn two_linear(p: nn::Path, width: i64) -> TwoLinear {
    TwoLinear {
        a: nn::linear(&p / "a", 4, width, Default::default()),
        b: nn::linear(&p / "b", width, width, Default::default()),
    }
}

#[test]
fn one_adapter_serves_several_pairs_by_reference() -> Result<(), DistillError> {
    use distill::adapter::linear_selection_adapter;
    use distill::{Adapted, Distillation, Mapping};
    tch::manual_seed(3);
    let vs = VarStore::new(Device::Cpu);
    let (teacher, student) = (two_linear(vs.root() / "t", 8), two_linear(vs.root() / "s", 3));
    let kept = [6, 0, 3];
    let selection = linear_selection_adapter(vs.root() / "selection", 8, &kept)?;
    let mut mapping = Mapping::new(&student, &teacher);
    mapping.add("a", "a", Adapted::new(Mse).teacher_adapter(&selection))?;
    mapping.add("b", "b", Adapted::new(Mse).teacher_adapter(&selection))?;
    let kd = Distillation::from_mapping(&student, mapping)?;
    let xs = Tensor::randn([5, 4], (Kind::Float, Device::Cpu));
    kd.dry_run(&xs)?;
    let out = kd.forward_t(&xs, true)?;
    let hidden = xs.apply(&teacher.a);
    let wanted = [hidden.shallow_clone(), hidden.relu().apply(&teacher.b)];
    for (pair, teacher_tensor) in out.pairs.iter().zip(&wanted) {
        assert!(pair.teacher.equal(&teacher_tensor.index_select(-1, &idx(&kept))), "{}", pair.label());
        assert_eq!(pair.student.size(), [5, 3]);
    }
    Ok(())
}
