//! Pruning residual networks (`distill::vision::prune`): the pruned blocks are channel slices of the
//! teacher's, so the selection adapters recover the teacher's kept channels exactly — through
//! `distill!` with PyTorch paths for ResNet, and through `Mapping` for MobileNetV2's inner layers.

use distill::adapter::{conv2d_adapter, inverted_conv2d_adapter, ChannelMapError};
use distill::prelude::*;
use distill::prune::PruneError;
use distill::vision::prune::{prune_depthwise_conv2d, prune_mobilenet_v2, prune_resnet, PruneInner};
use distill::vision::{self, BasicBlock, MobileNetV2, MobileNetV2Config, MobileNetV2Feature, ResNet, ResNetConfig};
use nn::{Module, ModuleT};
use tch::{nn::VarStore, Device, Kind, Tensor};

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    (a - b).abs().max().double_value(&[])
}

fn index(keep: &[i64]) -> Tensor {
    Tensor::from_slice(keep)
}

fn parameter_count(vs: &VarStore) -> i64 {
    vs.trainable_variables().iter().map(Tensor::numel).sum::<usize>() as i64
}

fn small_resnet18(vs: &VarStore) -> ResNet<BasicBlock> {
    let config = ResNetConfig { in_channels: 1, small_input: true, ..Default::default() };
    vision::resnet18_with(vs.root(), 10, config).unwrap()
}

/// The stem's output (conv1, bn1, relu; no max pool with the small-input stem).
fn stem<B>(net: &ResNet<B>, xs: &Tensor) -> Tensor {
    xs.apply(&net.conv1).apply_t(&net.bn1, false).relu()
}

distill! {
    /// A ResNet-18 distilled into its pruned copy, by PyTorch's module paths.
    struct ResNetKd for ResNet<BasicBlock> => ResNet<BasicBlock> {
        l1: student.layer1[0].conv1 => conv2d_adapter(teacher.layer1[0].conv1) with Mse;
        l3: inverted_conv2d_adapter(student.layer3[1].conv1) => teacher.layer3[1].conv1 with Mse;
        stage2: student.layer2 => teacher.layer2 with Mse;
        "layer3.1.conv2" => "layer3.1.conv2" with Mse;
        "layer2.0.downsample.0" => "layer2.0.downsample.0" with Mse;
        kd: student => teacher with KlDiv::new(4.0);
    }
}

#[test]
fn a_pruned_resnet18_pairs_with_its_teacher_through_selection_adapters() {
    tch::manual_seed(1);
    let (teacher_vs, student_vs, kd_vs) =
        (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let teacher = small_resnet18(&teacher_vs);
    let student = prune_resnet(student_vs.root(), &teacher, 0.25).unwrap();

    // The blocks' inner widths are a quarter of the teacher's; block outputs keep their widths.
    let keep1 = teacher.layer1[0].l1_inner_keep(0.25).unwrap().remove(0);
    let keep3 = teacher.layer3[1].l1_inner_keep(0.25).unwrap().remove(0);
    assert_eq!((keep1.len(), keep3.len()), (16, 64));
    let sliced = teacher.layer1[0].conv1.ws.index_select(0, &index(&keep1));
    assert_eq!(max_abs_diff(&student.layer1[0].conv1.ws, &sliced), 0.0);
    let sliced = teacher.layer1[0].conv2.ws.index_select(1, &index(&keep1));
    assert_eq!(max_abs_diff(&student.layer1[0].conv2.ws, &sliced), 0.0);
    assert_eq!(student.layer1[0].bn1.running_mean.size(), [16]);
    assert_eq!(student.layer2[0].conv2.ws.size(), [128, 32, 3, 3]);
    assert!(parameter_count(&student_vs) * 2 < parameter_count(&teacher_vs));

    let kd = ResNetKd::new(kd_vs.root(), &student, &teacher).unwrap();
    let xs = Tensor::randn([2, 1, 28, 28], (Kind::Float, Device::Cpu));
    let out = kd.forward_t(&xs, false).unwrap();
    assert_eq!(out.student_output.size(), [2, 10]);

    // layer1.0.conv1: the student's output, and the adapter's output of the teacher's, are the
    // teacher's kept channels (the stem is copied, so both convs see the same input).
    let teacher_conv1 = tch::no_grad(|| stem(&teacher, &xs).apply(&teacher.layer1[0].conv1));
    let expected = teacher_conv1.index_select(1, &index(&keep1));
    assert!(max_abs_diff(&out.l1.teacher, &expected) <= 1e-6);
    assert!(max_abs_diff(&out.l1.student, &expected) <= 1e-5);
    assert!(out.losses().l1.double_value(&[]) <= 1e-10, "{}", out.losses());

    // layer3.1.conv1 through the inverted adapter: the teacher's width, zeros where the student has
    // no channel, the student's channels at their teacher indices.
    assert_eq!(out.l3.student.size(), out.l3.teacher.size());
    let dropped: Vec<i64> = (0..256).filter(|c| !keep3.contains(c)).collect();
    assert_eq!(out.l3.student.index_select(1, &index(&dropped)).abs().max().double_value(&[]), 0.0);
    assert!(out.l3.student.index_select(1, &index(&keep3)).abs().max().double_value(&[]) > 0.0);

    // Block outputs and full-width convs pair without adapters.
    assert_eq!(out.stage2.student.size(), [2, 128, 14, 14]);
    assert_eq!(out.layer3_1_conv2.student.size(), out.layer3_1_conv2.teacher.size());
    assert_eq!(out.layer2_0_downsample_0.student.size(), [2, 128, 14, 14]);
    assert!(out.loss().double_value(&[]).is_finite());
}

#[test]
fn a_pruned_resnet50_keeps_both_inner_widths_of_its_bottlenecks_consistent() {
    tch::manual_seed(2);
    let (teacher_vs, student_vs, adapter_vs) =
        (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let config = ResNetConfig { small_input: true, ..Default::default() };
    let teacher = vision::resnet50_with(teacher_vs.root(), 10, config).unwrap();
    let student = prune_resnet(student_vs.root(), &teacher, 0.5).unwrap();
    let (tb, sb) = (&teacher.layer1[0], &student.layer1[0]);
    let keep = tb.l1_inner_keep(0.5).unwrap();
    let (keep1, keep2) = (index(&keep[0]), index(&keep[1]));
    assert_eq!((keep[0].len(), keep[1].len()), (32, 32));
    // conv2 is sliced on both sides, conv3 on its inputs, bn3 and the projection are whole.
    let sliced = tb.conv2.ws.index_select(0, &keep2).index_select(1, &keep1);
    assert_eq!(max_abs_diff(&sb.conv2.ws, &sliced), 0.0);
    assert_eq!(max_abs_diff(&sb.conv3.ws, &tb.conv3.ws.index_select(1, &keep2)), 0.0);
    assert_eq!(max_abs_diff(&sb.bn2.running_var, &tb.bn2.running_var.index_select(0, &keep2)), 0.0);
    assert_eq!(sb.bn3.running_mean.size(), [256]);
    assert_eq!(sb.downsample.as_ref().unwrap().0.ws.size(), [256, 64, 1, 1]);

    // The adapter at conv2 (output and input channels pruned) finds the mapping from the weights.
    let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let inner = tch::no_grad(|| stem(&teacher, &xs).apply(&tb.conv1).apply_t(&tb.bn1, false).relu());
    let teacher_conv2 = tch::no_grad(|| inner.apply(&tb.conv2));
    let adapter = conv2d_adapter(adapter_vs.root() / "conv2", &tb.conv2, &sb.conv2).build().unwrap();
    let adapted = tch::no_grad(|| adapter.forward(&teacher_conv2));
    assert!(max_abs_diff(&adapted, &teacher_conv2.index_select(1, &keep2)) <= 1e-6);
    // The student's conv2 sees exactly the teacher's kept inner channels.
    let student_inner = tch::no_grad(|| stem(&student, &xs).apply(&sb.conv1).apply_t(&sb.bn1, false).relu());
    assert!(max_abs_diff(&student_inner, &inner.index_select(1, &keep1)) <= 1e-5);

    let logits = tch::no_grad(|| student.forward_t(&xs, false));
    assert_eq!(logits.size(), [2, 10]);
    assert!(parameter_count(&student_vs) < parameter_count(&teacher_vs));
}

fn inverted_residual(net: &MobileNetV2, i: usize) -> &vision::InvertedResidual {
    match &net.features[i] {
        MobileNetV2Feature::InvertedResidual(block) => block,
        other => panic!("features.{i} is {other:?}"),
    }
}

#[test]
fn a_pruned_mobilenet_v2_slices_expansion_depthwise_and_projection_together() {
    tch::manual_seed(3);
    let (teacher_vs, student_vs, adapter_vs) =
        (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let config = MobileNetV2Config { small_input: true, ..Default::default() };
    let teacher = vision::mobilenet_v2_with(teacher_vs.root(), 10, config).unwrap();
    let student = prune_mobilenet_v2(student_vs.root(), &teacher, 0.5).unwrap();

    // features.1 has no expansion: copied whole. features.2 is the first expanded block (16 → 96 → 24).
    assert_eq!(inverted_residual(&teacher, 1).inner_widths(), 0);
    let (tb, sb) = (inverted_residual(&teacher, 2), inverted_residual(&student, 2));
    let keep = tb.l1_inner_keep(0.5).unwrap().remove(0);
    assert_eq!(keep.len(), 48);
    let (t_expand, s_expand) = (tb.conv.expand().unwrap(), sb.conv.expand().unwrap());
    let (t_dw, s_dw) = (tb.conv.depthwise(), sb.conv.depthwise());
    assert_eq!(s_dw.0.ws.size(), [48, 1, 3, 3]);
    assert_eq!(s_dw.0.config().unwrap().groups, 48);
    assert_eq!(max_abs_diff(&s_dw.0.ws, &t_dw.0.ws.index_select(0, &index(&keep))), 0.0);
    assert_eq!(sb.conv.project().0.ws.size(), [24, 48, 1, 1]);
    assert_eq!(sb.conv.project().1.running_mean.size(), [24]);

    // Through the dynamic API, by PyTorch's paths, with adapters built from the typed layers: the
    // expansion's and the depthwise conv's outputs are the teacher's kept channels.
    let expand_adapter = conv2d_adapter(adapter_vs.root() / "expand", &t_expand.0, &s_expand.0).build().unwrap();
    let depthwise_adapter = conv2d_adapter(adapter_vs.root() / "depthwise", &t_dw.0, &s_dw.0).build().unwrap();
    let mut mapping: Mapping<&dyn Module> = Mapping::new(&student, &teacher);
    mapping.add("features.2.conv.0.0", "features.2.conv.0.0", &expand_adapter).unwrap();
    mapping.add("features.2.conv.1.0", "features.2.conv.1.0", &depthwise_adapter).unwrap();
    let typo = mapping.add("features.2.conv.1.0", "features.2.conv.1.9", &depthwise_adapter).unwrap_err();
    assert!(typo.to_string().contains("did you mean `features.2.conv.1.0`"), "{typo}");
    let xs = Tensor::randn([2, 3, 32, 32], (Kind::Float, Device::Cpu));
    let dm = distill::distill(&student, &teacher, mapping);
    let out = dm.forward_t(&xs, false).unwrap();
    assert_eq!(out.len(), 2);
    for (s, t, adapter) in out.pairs() {
        let adapted = tch::no_grad(|| adapter.forward(t));
        assert_eq!(adapted.size(), s.size());
        assert!(max_abs_diff(&adapted, s) <= 1e-5, "{}", max_abs_diff(&adapted, s));
    }

    let logits = tch::no_grad(|| student.forward_t(&xs, false));
    assert_eq!(logits.size(), [2, 10]);
}

#[test]
fn pruning_rejects_bad_arguments() {
    let (teacher_vs, student_vs) = (VarStore::new(Device::Cpu), VarStore::new(Device::Cpu));
    let teacher = small_resnet18(&teacher_vs);
    let invalid = |result: Result<(), DistillError>| match result {
        Err(DistillError::Prune(error)) => error,
        other => panic!("expected PruneError, got {other:?}"),
    };
    for ratio in [0.0, 1.5, f64::NAN] {
        let error = invalid(prune_resnet(student_vs.root() / "r", &teacher, ratio).map(drop));
        assert!(matches!(error, PruneError::KeepRatio { .. }), "{error}");
    }
    let block = &teacher.layer1[0];
    let error = invalid(block.prune_inner(student_vs.root() / "b", &[vec![0], vec![1]]).map(drop));
    assert!(matches!(error, PruneError::KeepLists { widths: 1, lists: 2, .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("BasicBlock has 1 inner width, so it takes 1 list of kept channels, not 2"), "{message}");
    assert!(matches!(
        block.prune_inner(student_vs.root() / "b", &[vec![0, 64]]),
        Err(DistillError::ChannelMap(ChannelMapError::ChannelOutOfRange { index: 64, .. }))
    ));
    assert!(matches!(
        prune_depthwise_conv2d(student_vs.root() / "dw", &block.conv1, &[0]),
        Err(error @ DistillError::Prune(PruneError::NotDepthwise { .. } | PruneError::DepthwiseGroups { .. }))
            if error.to_string().contains("not a depthwise conv")
    ));

    let net = vision::mobilenet_v2(teacher_vs.root() / "m", 10).unwrap();
    let dw = &inverted_residual(&net, 2).conv.depthwise().0;
    assert!(matches!(
        prune_depthwise_conv2d(student_vs.root() / "dw", dw, &[3, 3]),
        Err(DistillError::ChannelMap(ChannelMapError::DuplicateChannel { index: 3, .. }))
    ));
    let pruned = prune_depthwise_conv2d(student_vs.root() / "dw", dw, &[5, 2]).unwrap();
    assert_eq!(max_abs_diff(&pruned.ws, &dw.ws.index_select(0, &index(&[5, 2]))), 0.0);
}
